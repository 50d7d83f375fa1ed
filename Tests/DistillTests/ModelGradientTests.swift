import XCTest
import Distill

/// Every backward pass of the model checked against central finite differences.
final class ModelGradientTests: XCTestCase {
    /// Tiny shapes with grouped-query heads, an untied head, and weights large enough that every
    /// nonlinearity (softmax, SiLU, RMSNorm) is far from linear.
    static func tinyConfig(tied: Bool = false, context: Int = 8, heads: Int = 2, kvHeads: Int = 1) -> LlamaConfig {
        LlamaConfig(hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 2, numAttentionHeads: heads,
                    numKeyValueHeads: kvHeads, vocabSize: 11, maxPositionEmbeddings: context, tieWordEmbeddings: tied)
    }

    static func model(_ config: LlamaConfig, seed: UInt64 = 1) throws -> LlamaModel {
        let model = try LlamaModel(config: config, seed: seed)
        var random = SeededRandom(seed: seed + 100)
        for i in 0..<model.parameterCount {
            model.parameters[i] = model.parameters[i] == 1 ? 1 + 0.3 * random.nextGaussian() : 0.4 * random.nextGaussian()
        }
        return model
    }

    /// loss = Σ logits·R + Σ hidden(block 0)·S + Σ finalHidden·U: a linear read-out, so d loss/d output
    /// is R, S, U, and the check isolates the model's own backward.
    func checkGradients(tied: Bool, batch: Int = 2, length: Int = 5, heads: Int = 2, kvHeads: Int = 1,
                        recomputingGateUp: Bool = false, intermediate: Int? = nil) throws {
        var config = Self.tinyConfig(tied: tied, context: max(8, length), heads: heads, kvHeads: kvHeads)
        if let intermediate { config.intermediateSize = intermediate }
        let model = try Self.model(config)
        model.recomputesGateUp = recomputingGateUp
        let rows = batch * length, c = config.hiddenSize
        var random = SeededRandom(seed: 7)
        let tokens: [Int32] = (0..<rows).map { _ in Int32(random.next() % UInt64(config.vocabSize)) }
        let readLogits = (0..<rows * config.vocabSize).map { _ in random.nextGaussian() }
        let readHidden = (0..<rows * c).map { _ in random.nextGaussian() }
        let readFinal = (0..<rows * c).map { _ in random.nextGaussian() }

        func loss() -> Double {
            let out = tokens.withUnsafeBufferPointer {
                model.forward(tokens: $0.baseAddress!, batch: batch, length: length, captureLayers: [0])
            }
            var total = 0.0
            for i in 0..<rows * config.vocabSize { total += Double(out.logits[i]) * Double(readLogits[i]) }
            for i in 0..<rows * c {
                total += Double(out.hidden[0]![i]) * Double(readHidden[i])
                total += Double(out.finalHidden[i]) * Double(readFinal[i])
            }
            return total
        }
        _ = loss()
        model.zeroGradients()
        readLogits.withUnsafeBufferPointer { dLogits in
            readHidden.withUnsafeBufferPointer { dHidden in
                readFinal.withUnsafeBufferPointer { dFinal in
                    model.backward(dLogits: dLogits.baseAddress!, dHidden: [0: dHidden.baseAddress!],
                                   dFinalHidden: dFinal.baseAddress!)
                }
            }
        }
        let analytic = Array(model.gradients!)
        for tensor in model.layout.tensors {
            var numeric = [Double](), exact = [Double]()
            for j in stride(from: 0, to: tensor.count, by: max(1, tensor.count / 12)) {
                let index = tensor.offset + j
                numeric.append(richardsonDerivative(at: model.parameters.baseAddress! + index, step: 5e-3, loss))
                exact.append(Double(analytic[index]))
            }
            let difference = zip(numeric, exact).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
            let size = numeric.map { $0 * $0 }.reduce(0, +).squareRoot()
            let relative = difference / max(size, 1e-6)
            XCTAssertLessThan(relative, 1e-3, "\(tensor.name): relative error \(relative)")
        }
    }

    func testGradientsUntied() throws { try checkGradients(tied: false) }
    func testGradientsTied() throws { try checkGradients(tied: true) }
    /// Gate/up recomputed in backward, with backward's scratch in the buffers dead at that moment.
    func testGradientsRecomputingGateUp() throws { try checkGradients(tied: false, recomputingGateUp: true) }
    /// F < C: backward's d normed, d attention output and d qkv do not fit in the SwiGLU and gate/up buffers
    /// and take buffers of their own.
    func testGradientsWithBackwardScratchOfItsOwn() throws { try checkGradients(tied: false, intermediate: 6) }

    /// Recomputing gate/up in backward gives the same bits as keeping it, whether every block but the last
    /// recomputes (`recomputesGateUp`) or only the first (the default), with the scratch in the shared
    /// buffers (F ≥ C) and in buffers of its own (F < C); and the kept buffers are smaller, as the estimate says.
    func testRecomputingGateUpGivesTheSameBits() throws {
        for intermediate in [24, 6] {
            var config = Self.tinyConfig(tied: false, context: 8)
            config.numHiddenLayers = 3
            config.intermediateSize = intermediate
            var random = SeededRandom(seed: 11)
            let tokens: [Int32] = (0..<2 * 7).map { _ in Int32(random.next() % UInt64(config.vocabSize)) }
            let dLogits = (0..<2 * 7 * config.vocabSize).map { _ in random.nextGaussian() }
            func gradients(recomputing: Bool, blocks: Int?) throws -> (gradients: [Float], held: Int, estimate: Double) {
                let model = try Self.model(config, seed: 3)
                model.recomputesGateUp = recomputing
                if let blocks { model.firstBlocksRecomputingGateUp = blocks }
                model.zeroGradients()
                model.forward(tokens: tokens, batch: 2, length: 7)
                dLogits.withUnsafeBufferPointer { model.backward(dLogits: $0.baseAddress!) }
                return (Array(model.gradients!), model.activationBytesHeld, model.activationBytes(batch: 2, length: 7))
            }
            let kept = try gradients(recomputing: false, blocks: 0), first = try gradients(recomputing: false, blocks: nil)
            let recomputed = try gradients(recomputing: true, blocks: nil)
            XCTAssertEqual(LlamaModel.defaultGateUpRecomputedBlocks, 1)
            XCTAssertEqual(kept.gradients, first.gradients, "F = \(intermediate)")
            XCTAssertEqual(kept.gradients, recomputed.gradients, "F = \(intermediate)")
            for run in [kept, first, recomputed] { XCTAssertEqual(Double(run.held), run.estimate) }
            // Each block that recomputes keeps one [B·T, 2F] buffer less.
            let gateUpBytes = 4 * ((2 * 7 * 2 * intermediate + 15) / 16 * 16)  // 64-byte aligned
            XCTAssertEqual(kept.held - first.held, gateUpBytes, "F = \(intermediate)")
            XCTAssertEqual(kept.held - recomputed.held, 2 * gateUpBytes, "F = \(intermediate)")
        }
    }
    /// Long enough for attention's causal blocks of 64 query rows to come in three pieces.
    func testGradientsLongSequence() throws { try checkGradients(tied: false, batch: 1, length: 130) }
    /// Attention recomputes its probabilities in backward: one head, a length (70) that leaves a short
    /// last block of query rows.
    func testGradientsOneHeadTwoBlocks() throws { try checkGradients(tied: true, batch: 1, length: 70, heads: 1, kvHeads: 1) }

    /// A batch's gradient is the sum of its sequences' gradients (a row or a head written twice, or a
    /// sequence reading another's positions, breaks it). The two sides differ by float32 rounding only:
    /// each weight gradient is a sum over the batch's K = 2·70 rows (and the sums that feed it), which the
    /// batch takes in one product and the sequences in two, and OpenBLAS's kernels block it differently on
    /// each CPU. A float32 sum of K terms in another order differs by up to K·ε·Σ|terms|, and for terms of
    /// both signs Σ|terms| is about √K times the largest sum, so the bound is K^1.5·ε times the tensor's
    /// largest entry (1e-4 of it here; the Haswell/Zen kernels reach 1e-5, the SkylakeX ones less).
    /// `testTheBatchSumCheckCatchesARowCountedTwice` shows the bound still catches the bug.
    func testBatchGradientIsTheSumOfItsSequences() throws {
        let check = try BatchSumCheck()
        let both = try check.gradients(rows: 0..<(2 * check.length))
        let first = try check.gradients(rows: 0..<check.length)
        let second = try check.gradients(rows: check.length..<(2 * check.length))
        for (tensor, excess) in try check.excessOverRounding(both: both, first: first, second: second) {
            XCTAssertLessThanOrEqual(excess, 1, "\(tensor): the batch's gradient is not the sum of its sequences'")
        }
    }

    /// The check above fails when one row of a sequence counts twice: the first sequence's gradient is taken
    /// with one position's logit gradient doubled, as a backward that added that row's share twice would.
    func testTheBatchSumCheckCatchesARowCountedTwice() throws {
        let check = try BatchSumCheck()
        let both = try check.gradients(rows: 0..<(2 * check.length))
        let first = try check.gradients(rows: 0..<check.length, doubling: 37)
        let second = try check.gradients(rows: check.length..<(2 * check.length))
        let excess = try check.excessOverRounding(both: both, first: first, second: second)
        let caught = excess.filter { $0.value > 1 }.map(\.key)
        // The doubled row reaches every tensor on its path: all weights of the model see it.
        XCTAssertEqual(caught.count, excess.count, "tensors that missed the doubled row: \(excess.filter { $0.value <= 1 })")
    }

    /// Gradients of a tiny model (one head, so a head written twice would be the whole attention) for
    /// the rows of two 70-token sequences, against fixed random logit gradients.
    struct BatchSumCheck {
        /// A tensor whose gradient is all zeros, about which the check would say nothing.
        struct NoGradient: Error { let tensor: String }

        let config = ModelGradientTests.tinyConfig(tied: false, context: 70, heads: 1, kvHeads: 1)
        let length = 70
        let tokens: [Int32], readLogits: [Float]

        init() throws {
            var random = SeededRandom(seed: 7)
            let vocab = config.vocabSize
            tokens = (0..<2 * length).map { _ in Int32(random.next() % UInt64(vocab)) }
            readLogits = (0..<2 * length * vocab).map { _ in random.nextGaussian() }
        }

        /// The gradient of the rows `rows` (whole sequences), with row `doubling` (counted from the first
        /// of `rows`) given twice its logit gradient when set.
        func gradients(rows: Range<Int>, doubling: Int? = nil) throws -> [Float] {
            let vocab = config.vocabSize
            let model = try ModelGradientTests.model(config)
            model.zeroGradients()
            model.forward(tokens: Array(tokens[rows]), batch: rows.count / length, length: length)
            var dLogits = Array(readLogits[(rows.lowerBound * vocab)..<(rows.upperBound * vocab)])
            if let doubling { for v in 0..<vocab { dLogits[doubling * vocab + v] *= 2 } }
            model.backward(dLogits: dLogits)
            return Array(model.gradients!)
        }

        /// Per tensor, max |both − first − second| over the rounding bound K^1.5·ε·max |both| (see the test).
        func excessOverRounding(both: [Float], first: [Float], second: [Float]) throws -> [String: Float] {
            let terms = Float(2 * length)
            let bound = terms * terms.squareRoot() * Float.ulpOfOne / 2
            var excess: [String: Float] = [:]
            for tensor in try ModelGradientTests.model(config).layout.tensors {
                var worst: Float = 0, size: Float = 0
                for i in tensor.offset..<(tensor.offset + tensor.count) {
                    worst = max(worst, abs(both[i] - first[i] - second[i]))
                    size = max(size, abs(both[i]))
                }
                guard size > 0 else { throw NoGradient(tensor: tensor.name) }
                excess[tensor.name] = worst / (bound * size)
            }
            return excess
        }
    }

    /// Logits and every gradient of one forward and backward pass of a fresh model on tokens and logit
    /// gradients drawn from `seed`, on `threads` threads with `partsPerThread` parts a product.
    private func logitsAndGradients(_ config: LlamaConfig, batch: Int, length: Int, seed: UInt64, threads: Int,
                                    partsPerThread: Int? = nil) throws -> (logits: [Float], gradients: [Float]) {
        let rows = batch * length
        var random = SeededRandom(seed: seed)
        let tokens = (0..<rows).map { _ in Int32(random.next() % UInt64(config.vocabSize)) }
        let readLogits = (0..<rows * config.vocabSize).map { _ in random.nextGaussian() }
        Compute.fixedProductPartsPerThread = partsPerThread
        defer { Compute.fixedProductPartsPerThread = nil }
        return try Compute.withThreads(threads) {
            let model = try Self.model(config)
            model.zeroGradients()
            let acts = model.forward(tokens: tokens, batch: batch, length: length)
            let logits = Array(UnsafeBufferPointer(start: acts.logits, count: rows * config.vocabSize))
            model.backward(dLogits: readLogits)
            return (logits, Array(model.gradients!))
        }
    }

    private func assertBitwiseEqual(_ other: (logits: [Float], gradients: [Float]), _ one: (logits: [Float], gradients: [Float]),
                                    _ setting: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(one.gradients.contains { $0 != 0 }, file: file, line: line)
        XCTAssertEqual(zip(other.logits, one.logits).filter { $0 != $1 }.count, 0, "logits that differ \(setting)", file: file, line: line)
        XCTAssertEqual(zip(other.gradients, one.gradients).filter { $0 != $1 }.count, 0, "gradients that differ \(setting)",
                       file: file, line: line)
    }

    /// The products, attention and element-wise passes split their rows and heads over the compute
    /// team's threads, but every output is computed whole by one thread: logits and gradients are
    /// bitwise the same on 1, 2, 3 and 4 threads (the team grows with the count; 3 and 4 oversubscribe
    /// two cores, which must stay correct and finish).
    func testThreadCountsGiveBitwiseTheSameResult() throws {
        let config = LlamaConfig(hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 2, numAttentionHeads: 4,
                                 numKeyValueHeads: 2, vocabSize: 200, maxPositionEmbeddings: 70)
        let one = try logitsAndGradients(config, batch: 3, length: 70, seed: 5, threads: 1)
        for threads in 2...4 {
            assertBitwiseEqual(try logitsAndGradients(config, batch: 3, length: 70, seed: 5, threads: threads), one,
                               "on \(threads) threads")
        }
    }

    /// A step's gradients are zeroed split over the cores when there are enough of them (2¹⁷ floats a
    /// part at least; the other tests' models are smaller): every one of them, on 2 and 3 threads.
    func testZeroingGradientsClearsEveryOne() throws {
        let config = LlamaConfig(hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 1, numAttentionHeads: 4,
                                 numKeyValueHeads: 2, vocabSize: 4096, maxPositionEmbeddings: 16)
        for threads in [2, 3] {
            try Compute.withThreads(threads) {
                let model = try Self.model(config)
                XCTAssertGreaterThan(model.parameterCount, 3 << 16)
                model.zeroGradients()
                let rows = 2 * 16
                var random = SeededRandom(seed: 8)
                let tokens = (0..<rows).map { _ in Int32(random.next() % UInt64(config.vocabSize)) }
                let dLogits = (0..<rows * config.vocabSize).map { _ in random.nextGaussian() }
                _ = model.forward(tokens: tokens, batch: 2, length: 16)
                model.backward(dLogits: dLogits)
                XCTAssertGreaterThan(model.gradients!.filter { $0 != 0 }.count, model.parameterCount / 2)
                model.zeroGradients()
                XCTAssertEqual(model.gradients!.filter { $0 != 0 }.count, 0, "gradients left on \(threads) threads")
            }
        }
    }

    /// Products large enough to split (rows 512): with other processes on the cores they split into more
    /// parts than threads (parts are claimed, so a slowed thread takes fewer). Logits and gradients are
    /// bitwise those of one thread whatever the number of parts: each part is one OpenBLAS call on rows
    /// at multiples of its row group (`openBLASRowGroup`), above its small-matrix kernel.
    func testProductPartsGiveBitwiseTheSameResult() throws {
        let config = LlamaConfig(hiddenSize: 128, intermediateSize: 344, numHiddenLayers: 2, numAttentionHeads: 4,
                                 numKeyValueHeads: 2, vocabSize: 512, maxPositionEmbeddings: 128)
        let one = try logitsAndGradients(config, batch: 4, length: 128, seed: 6, threads: 1)
        for parts in [1, 2, 3, 8] {
            assertBitwiseEqual(try logitsAndGradients(config, batch: 4, length: 128, seed: 6, threads: 2, partsPerThread: parts),
                               one, "at \(parts) parts a thread")
        }
    }

    /// The training step takes the LM head a chunk of rows at a time (`headInChunks`); its loss and every
    /// gradient are those of the whole [B·T, V] logits, with several chunks, a short last one and
    /// targets that do not count.
    /// The chunks live in activation buffers that are dead while the head runs when they fit there
    /// (vocabulary 11), else in buffers of their own (vocabulary 300): both paths are checked.
    func testChunkedHeadEqualsWholeLogits() throws {
        for (vocab, lent) in [(11, true), (300, false)] {
            var config = Self.tinyConfig(tied: true, context: 200, heads: 2, kvHeads: 2)
            config.vocabSize = vocab
            try checkChunkedHead(config, lent: lent)
        }
    }

    private func checkChunkedHead(_ config: LlamaConfig, lent: Bool) throws {
        let batch = 3, length = 200, rows = batch * length  // 600 rows: chunks of 256, 256, 88 (288, 288, 24 under 24-row groups)
        var random = SeededRandom(seed: 11)
        let inputs = (0..<rows).map { _ in Int32(random.next() % UInt64(config.vocabSize)) }
        let targets = (0..<rows).map { row in row % 7 == 3 ? -1 : Int32(random.next() % UInt64(config.vocabSize)) }
        let data = Batch(batchSize: batch, contextLength: length, inputs: inputs, targets: targets)

        let whole = try Self.model(config)
        whole.zeroGradients()
        let output = whole.forward(tokens: inputs, batch: batch, length: length)
        var dLogits = [Float](repeating: 0, count: rows * config.vocabSize)
        let wholeLoss = try targets.withUnsafeBufferPointer { targets in
            try crossEntropyForwardBackward(dLogits: &dLogits, logits: output.logits, targets: targets.baseAddress!,
                                            rows: rows, vocab: config.vocabSize, gradientScale: 0.5)
        }
        whole.backward(dLogits: dLogits)

        // Cross-entropy training writes d finalHidden over the final hidden states; the other objectives'
        // path adds it into a buffer of theirs; evaluation runs the head without a gradient.
        let chunked = try Self.model(config)
        chunked.zeroGradients()
        let terms = try CrossEntropyObjective().trainStep(model: chunked, batch: data, gradientScale: 0.5)
        XCTAssertEqual(chunked.headChunkPlacement(withGradient: true).lent, lent, "vocabulary \(config.vocabSize)")
        XCTAssertEqual(terms[.loss]!, Double(wholeLoss), accuracy: 1e-6 * Double(wholeLoss))
        let added = try Self.model(config)
        added.zeroGradients()
        added.forwardHidden(tokens: inputs, batch: batch, length: length)
        var dFinalHidden = [Float](repeating: 0, count: rows * config.hiddenSize)
        try targets.withUnsafeBufferPointer { targets in
            let share = try BatchShare(targets: targets, vocab: config.vocabSize)
            try dFinalHidden.withUnsafeMutableBufferPointer { dFinal in
                try added.headInChunks(dFinalHidden: dFinal.baseAddress!) { chunk, logits, dLogits in
                    _ = try crossEntropyForwardBackward(dLogits: dLogits, logits: logits, targets: targets.baseAddress! + chunk.lowerBound,
                                                        rows: chunk.count, vocab: config.vocabSize, gradientScale: 0.5, meanOver: share)
                }
            }
        }
        added.backward(dLogits: nil, dFinalHidden: dFinalHidden)
        let evaluated = try CrossEntropyObjective().evaluate(model: added, batch: data)
        XCTAssertEqual(added.headChunkPlacement(withGradient: false).lent, lent, "vocabulary \(config.vocabSize)")
        XCTAssertEqual(evaluated[.ce]!, Double(wholeLoss), accuracy: 1e-6 * Double(wholeLoss))
        for model in [chunked, added] {
            var largest: Float = 0, size: Float = 0
            for i in 0..<whole.parameterCount {
                largest = max(largest, abs(whole.gradients![i] - model.gradients![i]))
                size = max(size, abs(whole.gradients![i]))
            }
            XCTAssertGreaterThan(size, 0)
            XCTAssertLessThan(largest, 1e-5 * size, "largest gradient difference \(largest) of \(size)")
        }

        // A target outside the vocabulary in the second chunk is named by its row in the batch.
        var bad = targets
        bad[300] = Int32(config.vocabSize)
        XCTAssertThrowsError(try CrossEntropyObjective().trainStep(
            model: chunked, batch: Batch(batchSize: batch, contextLength: length, inputs: inputs, targets: bad), gradientScale: 1)) {
            XCTAssertEqual($0 as? DistillationError, .targetOutOfRange(row: 300, target: Int32(config.vocabSize), vocab: config.vocabSize))
        }
    }

    /// Changing a later token never changes an earlier position's logits.
    func testCausalMask() throws {
        let config = Self.tinyConfig()
        let model = try Self.model(config)
        var tokens: [Int32] = [1, 2, 3, 4, 5, 6]
        let first = Array(UnsafeBufferPointer(start: model.forward(tokens: tokens, batch: 1, length: 6).logits,
                                              count: 6 * config.vocabSize))
        tokens[4] = 9
        let second = Array(UnsafeBufferPointer(start: model.forward(tokens: tokens, batch: 1, length: 6).logits,
                                               count: 6 * config.vocabSize))
        let v = config.vocabSize
        XCTAssertEqual(Array(first[0..<(4 * v)]), Array(second[0..<(4 * v)]))
        XCTAssertNotEqual(Array(first[(4 * v)...]), Array(second[(4 * v)...]))
    }
}

/// ‖numeric − exact‖ / ‖numeric‖: how far a backward pass's gradient is from finite differences, over all
/// the entries checked at once.
/// (loss(x + h) − loss(x − h)) / 2h with the value at `pointer` as x, put back afterwards.
func centralDifference(at pointer: UnsafeMutablePointer<Float>, step h: Float, _ loss: () throws -> Double) rethrows -> Double {
    let saved = pointer.pointee
    defer { pointer.pointee = saved }
    pointer.pointee = saved + h
    let up = try loss()
    pointer.pointee = saved - h
    let down = try loss()
    return (up - down) / Double(2 * h)
}

/// The derivative of `loss` in the value at `pointer` by central differences at steps h and 2h, with
/// Richardson extrapolation ((4·D(h) − D(2h)) / 3), which cancels the h² error term so that Float's
/// coarse steps suffice.
func richardsonDerivative(at pointer: UnsafeMutablePointer<Float>, step h: Float, _ loss: () throws -> Double) rethrows -> Double {
    (4 * (try centralDifference(at: pointer, step: h, loss)) - (try centralDifference(at: pointer, step: 2 * h, loss))) / 3
}

func relativeGradientError(_ numeric: [Double], _ exact: [Double]) -> Double {
    let error = zip(numeric, exact).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
    let size = numeric.map { $0 * $0 }.reduce(0, +).squareRoot()
    return error / size
}
