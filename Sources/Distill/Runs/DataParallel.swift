import Foundation

// Data-parallel training under mpirun. Every rank holds the whole model and optimizer; each step every
// rank draws the same global batch from the same generator, runs forward and backward on its own rows,
// and the gradients are summed over the ranks (MPI_Allreduce over the model's one flat gradient buffer,
// plus one call per extra tensor and one small call for the loss terms). Every rank then clips and
// applies the same AdamW step to the same sum, so the weights stay identical without ever being sent;
// they are compared at each checkpoint. Rank 0 alone prints and writes.

extension Trainer {
    /// Sums the gradients over the ranks and returns the terms averaged over them (each rank's terms
    /// are means over its share of the batch, and the shares are equal). `stopRequested` travels with
    /// the terms, so that every rank learns in the same step whether any rank was asked to stop.
    func reduceAcrossRanks(_ terms: LossTerms, stopRequested: Bool) -> LossTerms {
        if ProcessGroup.separatesWaiting { group.barrier() }
        let before = group.communicationSeconds
        if let gradients = model.gradients, let base = gradients.baseAddress {
            group.sum(base, count: gradients.count)
        }
        for tensor in objective.extraTensors {
            if let base = tensor.gradients.baseAddress { group.sum(base, count: tensor.gradients.count) }
        }
        let present = terms.present
        var values = present.map(\.value) + [stopRequested ? 1 : 0]
        group.sum(&values)
        stopAgreed = (values.last ?? 0) > 0
        reduceSeconds += group.communicationSeconds - before
        return meanTerms(present.map(\.term), sums: values)
    }

    /// Terms averaged over the ranks.
    func meanOverRanks(_ terms: LossTerms) -> LossTerms {
        let present = terms.present
        var values = present.map(\.value)
        group.sum(&values)
        return meanTerms(present.map(\.term), sums: values)
    }

    /// The terms whose sums over the ranks are `sums` (in the same order), divided by the rank count.
    private func meanTerms(_ terms: [LossTerm], sums: [Double]) -> LossTerms {
        var result = LossTerms()
        for (term, sum) in zip(terms, sums) { result[term] = sum / Double(group.size) }
        return result
    }

    /// Compares a hash of every rank's weights and extra tensors with rank 0's: they must be equal, bit
    /// for bit, since every rank applies the same update to the same sums.
    func checkRanksAgreeOnWeights() throws {
        guard group.size > 1 else { return }
        var hash = weightsHash(UnsafeBufferPointer(model.parameters))
        for tensor in objective.extraTensors { hash ^= weightsHash(UnsafeBufferPointer(tensor.values)) &* 31 }
        let hashes = group.gather(withUnsafeBytes(of: hash) { Array($0) })
        if let differing = hashes.firstIndex(where: { $0 != hashes[0] }) {
            guard group.isRoot else { throw ParallelError.stoppedWithOthers }
            throw ParallelError.weightsDiverged(step: step, rank: differing)
        }
    }

    /// Sends rank 0's whole training state (weights, extra tensors, optimizer moments, step, sampler,
    /// time so far) to the other ranks: after a resume, which rank 0 alone reads.
    func shareState() {
        guard group.size > 1 else { return }
        var header: [UInt64] = [UInt64(step), UInt64(optimizer.step), elapsedBefore.bitPattern] + random.state
        header.withUnsafeMutableBytes { group.broadcast($0) }
        step = Int(header[0])
        optimizer.step = Int(header[1])
        elapsedBefore = Double(bitPattern: header[2])
        random.state = Array(header[3...])
        if let sampling = objective as? SamplingObjective {
            // Every rank draws the same row seeds and keeps its own (OnPolicyObjective): one state for all.
            var generation = sampling.generationRandom.state
            generation.withUnsafeMutableBytes { group.broadcast($0) }
            sampling.generationRandom.state = generation
        }
        group.broadcast(UnsafeMutableRawBufferPointer(model.parameters))
        for tensor in objective.extraTensors { group.broadcast(UnsafeMutableRawBufferPointer(tensor.values)) }
        optimizer.firstMoment.withUnsafeMutableBytes { group.broadcast($0) }
        optimizer.secondMoment.withUnsafeMutableBytes { group.broadcast($0) }
    }
}

extension Batch {
    /// `count` sequences starting at sequence `first` (with their starts in the token file, if known).
    public func rows(_ first: Int, count: Int) -> Batch {
        let range = first * contextLength ..< (first + count) * contextLength
        // Rows that came from a token file keep their positions (a cached teacher needs them).
        return Batch(batchSize: count, contextLength: contextLength, inputs: Array(inputs[range]), targets: Array(targets[range]),
                     starts: starts.count == batchSize ? Array(starts[first ..< first + count]) : [])
    }
}

extension TrainingRun {
    /// What every rank must agree on before a data-parallel run starts, by name: the program, the data,
    /// each model's shape and initial weights, each run's settings and objective, and whether it resumes.
    static func fingerprint(_ trainers: [Trainer], outputs: [ClaimedOutput], data: TokenFile) -> [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        func text<T: Encodable>(_ value: T) -> String { (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "?" }
        func hash(_ string: String) -> String { String(fnv1a64(Data(string.utf8)), radix: 16) }
        var print = ["command": "training", "program": DistillVersion.string, "data": dataFingerprint(data)]
        for (index, trainer) in trainers.enumerated() {
            print["model \(index)"] = text(trainer.model.config) + " " + String(weightsHash(UnsafeBufferPointer(trainer.model.parameters)), radix: 16)
            print["settings \(index)"] = hash(text(trainer.parameters) + text(trainer.objective.identity))
            print["resume \(index)"] = "\(outputs[index].resume)"
        }
        return print
    }

    /// A token file's identity without reading all of it: its header and 4096 tokens spread over it.
    static func dataFingerprint(_ data: TokenFile) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ value: UInt64) { hash = (hash ^ value) &* 0x100_0000_01B3 }
        for value in [data.tokenizerHash, UInt64(data.tokenCount), UInt64(data.splitIndex), UInt64(data.sourceByteCount),
                      UInt64(data.validationByteCount), UInt64(data.vocabSize)] { mix(value) }
        let samples = min(4096, data.tokenCount)
        for sample in 0..<samples { mix(UInt64(UInt32(bitPattern: data.token(at: sample * data.tokenCount / max(samples, 1))))) }
        return String(hash, radix: 16)
    }

    /// The difference `fingerprint` found, in words ("rank 1 ... than rank 0").
    static func describeDifference(_ name: String) -> String {
        switch name.split(separator: " ").first.map(String.init) ?? name {
        case "command": return "runs another command"
        case "program": return "runs another version of distill"
        case "data": return "reads another token file"
        case "model": return "builds another model (shape, seed, or the teacher it starts from)"
        case "settings": return "has other training settings or another objective (or other teachers)"
        case "resume": return "was asked to resume differently"
        default: return "differs in \(name)"
        }
    }
}
