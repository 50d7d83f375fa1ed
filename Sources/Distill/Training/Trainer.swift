import Foundation

/// What the training loop reports as it goes.
public enum TrainingEvent {
    /// A progress report: step (1-based) of total, loss terms, learning rate, gradient norm, speed.
    case step(step: Int, total: Int, terms: [String: Double], learningRate: Float, gradientNorm: Float,
              tokensPerSecond: Double, secondsLeft: Double)
    /// Validation terms averaged over the validation batches.
    case validation(step: Int, terms: [String: Double])
    case checkpoint(step: Int, directory: URL)
    case interrupted(step: Int)
}

/// The training loop shared by `train`, `student` and `mutual`: micro-batches with gradient accumulation,
/// global-norm clipping, AdamW with warm-up and cosine decay, validation and atomic checkpoints,
/// and an exact resume (the batch sampler's state is part of the checkpoint).
public final class Trainer {
    public let model: LlamaModel
    public let objective: TrainingObjective
    public let parameters: TrainingParameters
    public let optimizer: AdamW
    /// Optimizer steps done.
    public private(set) var step = 0
    /// Draws the training windows; saved and restored with the checkpoint.
    public var random: SeededRandom
    /// Tokenizer identity of the data, checked on resume.
    public let tokenizerHash: UInt64
    private var elapsedBefore: Double = 0

    public init(model: LlamaModel, objective: TrainingObjective, parameters: TrainingParameters, tokenizerHash: UInt64) throws {
        try parameters.validate()
        guard parameters.context <= model.config.maxPositionEmbeddings else {
            throw SettingError(.context, "is \(parameters.context), longer than the model's max_position_embeddings \(model.config.maxPositionEmbeddings)")
        }
        // A context or batch far beyond the machine fails here with a sentence, not in the allocator.
        let needed = model.activationBytes(batch: parameters.batchSize, length: parameters.context)
        let available = Double(ProcessInfo.processInfo.physicalMemory)
        guard needed < 0.8 * available else {
            throw SettingError(.batchSize, String(format: "is %d; a batch of %d × %d tokens needs about %.1f GB of activations but this machine has %.1f GB: lower the batch size or the context", parameters.batchSize,
                                                      parameters.batchSize, parameters.context, needed / 1e9, available / 1e9))
        }
        self.model = model
        self.objective = objective
        self.parameters = parameters
        self.tokenizerHash = tokenizerHash
        let total = model.parameterCount + objective.extraTensors.reduce(0) { $0 + $1.values.count }
        optimizer = AdamW(totalCount: total, beta1: parameters.beta1, beta2: parameters.beta2, weightDecay: parameters.weightDecay)
        random = SeededRandom(seed: parameters.seed &+ 0x5EED)
        model.zeroGradients()
    }

    /// The model's weights and the extra tensors, in optimizer order.
    var segments: [TrainableSegment] {
        let weights = model.parameters.baseAddress!, grads = model.gradients!.baseAddress!
        return model.layout.tensors.map {
            TrainableSegment(parameters: weights + $0.offset, gradients: grads + $0.offset, count: $0.count, decays: $0.decays)
        } + objective.extraTensors.map(\.segment)
    }

    /// Runs until `parameters.steps`, or until `shouldStop` says so (then saves and returns).
    /// `nextBatch` draws a training micro-batch from the trainer's generator.
    public func run(nextBatch: @escaping (inout SeededRandom) throws -> Batch, validation: [Batch], output: URL,
                    tokenizerModel: String, shouldStop: () -> Bool = { false },
                    report: (TrainingEvent) -> Void) throws {
        try Trainer.runTogether([self], nextBatches: [nextBatch], validation: validation, outputs: [output],
                                tokenizerModel: tokenizerModel, shouldStop: shouldStop) { _, event in report(event) }
    }

    /// Runs over random windows of `tokens` (a token file's training split), drawn from the trainer's
    /// own generator so that the checkpoint's sampler state resumes the same sequence of batches.
    public func run(trainingTokens tokens: TokenView, validation: [Batch], output: URL, tokenizerModel: String,
                    shouldStop: () -> Bool = { false }, report: (TrainingEvent) -> Void) throws {
        try Trainer.runTogether([self], trainingTokens: tokens, validation: validation, outputs: [output],
                                tokenizerModel: tokenizerModel, shouldStop: shouldStop) { _, event in report(event) }
    }

    /// Trains several models in lockstep (online distillation: each objective may read the others'
    /// current weights), one optimizer step of each in turn, every one drawing windows of `tokens` from
    /// its own generator. `report` receives the trainer's index with each event.
    public static func runTogether(_ trainers: [Trainer], trainingTokens tokens: TokenView, validation: [Batch],
                                   outputs: [URL], tokenizerModel: String, shouldStop: () -> Bool = { false },
                                   report: (Int, TrainingEvent) -> Void) throws {
        let nextBatches = try trainers.map { trainer -> (inout SeededRandom) throws -> Batch in
            var sampler = try BatchSampler(tokens: tokens, batchSize: trainer.parameters.batchSize,
                                           contextLength: trainer.parameters.context, random: trainer.random)
            return { random in
                sampler.random = random
                let batch = sampler.next()
                random = sampler.random
                return batch
            }
        }
        try runTogether(trainers, nextBatches: nextBatches, validation: validation, outputs: outputs,
                        tokenizerModel: tokenizerModel, shouldStop: shouldStop, report: report)
    }

    static func runTogether(_ trainers: [Trainer], nextBatches: [(inout SeededRandom) throws -> Batch],
                            validation: [Batch], outputs: [URL], tokenizerModel: String, shouldStop: () -> Bool,
                            report: (Int, TrainingEvent) -> Void) throws {
        var clocks = trainers.map { _ in ReportClock() }
        while trainers.contains(where: { $0.step < $0.parameters.steps }) {
            if shouldStop() {
                for (index, trainer) in trainers.enumerated() {
                    try trainer.saveCheckpoint(to: outputs[index], tokenizerModel: tokenizerModel,
                                               elapsed: Date().timeIntervalSince(clocks[index].start))
                    report(index, .interrupted(step: trainer.step))
                }
                return
            }
            for (index, trainer) in trainers.enumerated() where trainer.step < trainer.parameters.steps {
                let result = try trainer.optimizerStep(nextBatch: nextBatches[index])
                try trainer.afterStep(result, clock: &clocks[index], validation: validation, output: outputs[index],
                                      tokenizerModel: tokenizerModel) { report(index, $0) }
            }
        }
    }

    /// When a run started and how many steps the current speed window holds.
    struct ReportClock {
        let start = Date()
        var windowStart = Date()
        var windowSteps = 0
    }

    /// What one optimizer step measured.
    struct StepResult {
        let terms: [String: Double]
        let learningRate: Float
        let gradientNorm: Float
    }

    /// One optimizer step on a given micro-batch, with no checkpoint or report (the benchmark's unit of work).
    public func singleStep(_ batch: Batch) throws {
        _ = try optimizerStep { _ in batch }
    }

    /// One optimizer step: the micro-batches' gradients added up, clipped, and applied by AdamW.
    func optimizerStep(nextBatch: (inout SeededRandom) throws -> Batch) throws -> StepResult {
        let segments = self.segments
        model.zeroGradients()
        for tensor in objective.extraTensors { tensor.gradients.update(repeating: 0) }
        var terms: [String: Double] = [:]
        let scale = 1 / Float(parameters.accumulationSteps)
        objective.prepare(step: step, totalSteps: parameters.steps)
        for _ in 0..<parameters.accumulationSteps {
            let batch = try nextBatch(&random)
            let micro = try objective.trainStep(model: model, batch: batch, gradientScale: scale)
            for (name, value) in micro { terms[name, default: 0] += value / Double(parameters.accumulationSteps) }
        }
        // Stop before a non-finite step reaches the weights; the last checkpoint stays as it was.
        guard let loss = terms["loss"], loss.isFinite else { throw TrainingError.diverged(step: step + 1, what: "loss") }
        let norm = clipGradientNorm(segments, maxNorm: parameters.gradientClip)
        guard norm.isFinite else { throw TrainingError.diverged(step: step + 1, what: "gradient norm") }
        let rate = learningRate(step: step, totalSteps: parameters.steps, peak: parameters.learningRate,
                                warmup: parameters.warmupSteps, minimumFraction: parameters.minimumLearningRateFraction)
        optimizer.update(segments, learningRate: rate)
        step += 1
        return StepResult(terms: terms, learningRate: rate, gradientNorm: norm)
    }

    /// Reports progress, validates and saves after a step, as the run's cadence says.
    func afterStep(_ result: StepResult, clock: inout ReportClock, validation: [Batch], output: URL,
                   tokenizerModel: String, report: (TrainingEvent) -> Void) throws {
        let tokensPerStep = parameters.batchSize * parameters.context * parameters.accumulationSteps
        clock.windowSteps += 1
        let last = step == parameters.steps
        if step % max(1, parameters.logEvery) == 0 || last {
            let seconds = Date().timeIntervalSince(clock.windowStart)
            let speed = Double(clock.windowSteps * tokensPerStep) / max(seconds, 1e-9)
            clock.windowStart = Date()
            clock.windowSteps = 0
            let left = Double((parameters.steps - step) * tokensPerStep) / max(speed, 1e-9)
            report(.step(step: step, total: parameters.steps, terms: result.terms, learningRate: result.learningRate,
                         gradientNorm: result.gradientNorm, tokensPerSecond: speed, secondsLeft: left))
            MetricsLog.append(["kind": "train", "step": step, "lr": Double(result.learningRate),
                           "grad_norm": Double(result.gradientNorm), "tokens_per_second": speed]
                .merging(result.terms) { a, _ in a }, to: output)
        }
        if (parameters.evalEvery > 0 && step % parameters.evalEvery == 0) || last, !validation.isEmpty {
            let terms = try evaluate(validation)
            report(.validation(step: step, terms: terms))
            MetricsLog.append(["kind": "validation", "step": step].merging(terms) { a, _ in a }, to: output)
        }
        if (parameters.saveEvery > 0 && step % parameters.saveEvery == 0) || last {
            try saveCheckpoint(to: output, tokenizerModel: tokenizerModel, elapsed: Date().timeIntervalSince(clock.start))
            report(.checkpoint(step: step, directory: output))
        }
    }

    /// Validation terms averaged over `batches`, plus perplexity from the mean cross-entropy.
    public func evaluate(_ batches: [Batch]) throws -> [String: Double] {
        var totals: [String: Double] = [:]
        for batch in batches {
            for (name, value) in try objective.evaluate(model: model, batch: batch) { totals[name, default: 0] += value }
        }
        var terms = totals.mapValues { $0 / Double(max(batches.count, 1)) }
        if let ce = terms["ce"] { terms["perplexity"] = exp(ce) }
        return terms
    }

    // MARK: checkpoints

    /// Writes the resume state (under `training/`, swapped in atomically) and then the model (top level,
    /// for `sample`/`eval`).
    public func saveCheckpoint(to directory: URL, tokenizerModel: String, elapsed: Double = 0) throws {
        let weights = model.parameters
        var optimizerTensors = [
            SafetensorsTensor(name: "adamw.first_moment", shape: [optimizer.firstMoment.count], values: optimizer.firstMoment),
            SafetensorsTensor(name: "adamw.second_moment", shape: [optimizer.secondMoment.count], values: optimizer.secondMoment),
        ]
        for tensor in objective.extraTensors {
            optimizerTensors.append(SafetensorsTensor(name: "extra." + tensor.name, shape: tensor.shape, values: Array(tensor.values)))
        }
        let state = Checkpoint.State(step: step, optimizerStep: optimizer.step, random: random, parameters: parameters,
                                     tokenizerHash: String(tokenizerHash, radix: 16), elapsedSeconds: elapsedBefore + elapsed,
                                     extraTensors: objective.extraTensors.map(\.name), objective: objective.identity,
                                     weightsHash: String(weightsHash(UnsafeBufferPointer(weights)), radix: 16))
        try Checkpoint.write(state: state, weights: ModelDirectory.tensors(of: model), optimizer: optimizerTensors, to: directory)
        try ModelDirectory.save(model, tokenizerModel: tokenizerModel, to: directory)
    }

    /// Restores weights, optimizer moments, extra tensors, step and sampler state from `directory`,
    /// after checking that the run's settings and objective are the checkpoint's (only the length and
    /// the reporting cadence may change) and that the state belongs to the weights beside it.
    public func resume(from directory: URL) throws {
        let (state, stateFolder) = try Checkpoint.read(from: directory)
        try Checkpoint.checkCompatible(saved: state, parameters: parameters, objective: objective.identity,
                                       tokenizerHash: tokenizerHash)
        guard state.extraTensors == objective.extraTensors.map(\.name) else {
            throw TrainingError.cannotResume("the checkpoint's distillation terms differ from this run's")
        }
        try ModelDirectory.loadWeights(into: model, from: try SafetensorsFile(url: stateFolder.appendingPathComponent("model.safetensors")))
        guard String(weightsHash(UnsafeBufferPointer(model.parameters)), radix: 16) == state.weightsHash else {
            throw TrainingError.cannotResume("\(stateFolder.path)/state.json does not belong to the weights beside it (copied from another run?): start a new run")
        }
        let optimizerFile = try SafetensorsFile(url: stateFolder.appendingPathComponent("optimizer.safetensors"))
        let first = try optimizerFile.floats("adamw.first_moment"), second = try optimizerFile.floats("adamw.second_moment")
        guard first.count == optimizer.firstMoment.count, second.count == optimizer.secondMoment.count else {
            throw TrainingError.cannotResume("the optimizer state does not match the model's size")
        }
        optimizer.firstMoment = first
        optimizer.secondMoment = second
        optimizer.step = state.optimizerStep
        for tensor in objective.extraTensors {
            let values = try optimizerFile.floats("extra." + tensor.name)
            guard values.count == tensor.values.count else { throw TrainingError.cannotResume("tensor \(tensor.name) has the wrong size") }
            _ = tensor.values.update(fromContentsOf: values)
        }
        step = state.step
        random = state.random
        elapsedBefore = state.elapsedSeconds
        MetricsLog.truncate(after: step, in: directory)
    }

    /// Training time before this process, from the checkpoint (resumed runs).
    public var secondsBeforeResume: Double { elapsedBefore }
}
