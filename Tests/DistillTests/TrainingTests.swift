import XCTest
import Distill

final class TrainingTests: XCTestCase {
    static let config = LlamaConfig(hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2, numAttentionHeads: 2,
                                    vocabSize: 320, maxPositionEmbeddings: 32)

    static func parameters(steps: Int) -> TrainingParameters {
        var p = TrainingParameters()
        p.steps = steps
        p.batchSize = 4
        p.context = 32
        p.learningRate = 3e-3
        p.warmupSteps = 5
        p.evalEvery = 0
        p.evalBatches = 2
        p.saveEvery = 0
        p.logEvery = 1000
        return p
    }

    /// A cross-entropy trainer of the test config with weights from `seed`.
    static func trainer(seed: UInt64, _ parameters: TrainingParameters, tokenizerHash: UInt64) throws -> Trainer {
        try Trainer(model: LlamaModel(config: config, seed: seed), objective: CrossEntropyObjective(),
                    parameters: parameters, tokenizerHash: tokenizerHash)
    }

    /// Runs a trainer from its own generator over the corpus' training split.
    static func run(_ trainer: Trainer, data: TokenFile, output: URL, tokenizer: String,
                    stopAfter: Int? = nil, validation: [Batch] = []) throws {
        try trainer.run(trainingTokens: data.trainTokens, validation: validation, output: output, tokenizerModel: tokenizer,
                        shouldStop: { stopAfter.map { trainer.step >= $0 } ?? false }, report: { _ in })
    }

    /// An interrupted run resumed from its checkpoint ends with exactly the weights of an
    /// uninterrupted run (sampler state, optimizer moments and step all restored).
    func testResumeIsBitwiseEqualToUninterruptedRun() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        var p = Self.parameters(steps: 12)
        p.accumulationSteps = 2

        let straight = try Self.trainer(seed: 3, p, tokenizerHash: data.tokenizerHash)
        try Self.run(straight, data: data, output: try TestCorpus.scratch("straight"), tokenizer: corpus.tokenizer)

        let directory = try TestCorpus.scratch("interrupted")
        let first = try Self.trainer(seed: 3, p, tokenizerHash: data.tokenizerHash)
        try Self.run(first, data: data, output: directory, tokenizer: corpus.tokenizer, stopAfter: 5)
        XCTAssertEqual(first.step, 5)

        let resumed = try Self.trainer(seed: 99, p, tokenizerHash: data.tokenizerHash)
        try resumed.resume(from: directory)
        XCTAssertEqual(resumed.step, 5)
        try Self.run(resumed, data: data, output: directory, tokenizer: corpus.tokenizer)
        XCTAssertEqual(resumed.step, 12)
        XCTAssertEqual(Array(resumed.model.parameters), Array(straight.model.parameters), "resumed weights differ")
    }

    /// A save that died between its two renames (the old state moved aside, the new one not yet in
    /// place) or while writing its staging folder still resumes from the last complete checkpoint.
    func testInterruptedSaveKeepsThePreviousCheckpoint() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        let directory = try TestCorpus.scratch("crash")
        let trainer = try Self.trainer(seed: 3, Self.parameters(steps: 4), tokenizerHash: data.tokenizerHash)
        try Self.run(trainer, data: data, output: directory, tokenizer: corpus.tokenizer)
        let saved = Array(trainer.model.parameters)
        let fileManager = FileManager.default
        // The crash: a half-written staging folder, and the complete state moved aside.
        try fileManager.createDirectory(at: directory.appendingPathComponent(".training.tmp"), withIntermediateDirectories: true)
        try Data("{\"step\": 9".utf8).write(to: directory.appendingPathComponent(".training.tmp/state.json"))
        try fileManager.moveItem(at: directory.appendingPathComponent("training"), to: directory.appendingPathComponent(".training.old"))

        let resumed = try Self.trainer(seed: 8, Self.parameters(steps: 4), tokenizerHash: data.tokenizerHash)
        try resumed.resume(from: directory)
        XCTAssertEqual(resumed.step, 4)
        XCTAssertEqual(Array(resumed.model.parameters), saved)
        // The next save completes normally and tidies up.
        try resumed.saveCheckpoint(to: directory, tokenizerModel: corpus.tokenizer)
        XCTAssertTrue(fileManager.fileExists(atPath: directory.appendingPathComponent("training/state.json").path))
        XCTAssertFalse(fileManager.fileExists(atPath: directory.appendingPathComponent(".training.tmp").path))
        XCTAssertFalse(fileManager.fileExists(atPath: directory.appendingPathComponent(".training.old").path))
    }

    /// The saved model directory loads back bit for bit.
    func testCheckpointRoundTripIsBitwise() throws {
        let corpus = try TestCorpus.files()
        let model = try LlamaModel(config: Self.config, seed: 5)
        let directory = try TestCorpus.scratch("save")
        try ModelDirectory.save(model, tokenizerModel: corpus.tokenizer, to: directory)
        let loaded = try ModelDirectory.load(directory)
        XCTAssertEqual(loaded.config, model.config)
        XCTAssertEqual(Array(loaded.parameters), Array(model.parameters))
    }

    /// A tiny model learns the toy grammar: validation loss far below the unigram entropy of the tokens.
    func testTinyModelLearnsBelowUnigramEntropy() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        var counts = [Double](repeating: 0, count: data.vocabSize)
        for token in data.trainTokens { counts[Int(token)] += 1 }
        let total = counts.reduce(0, +)
        let entropy = -counts.filter { $0 > 0 }.map { $0 / total * log($0 / total) }.reduce(0, +)

        let p = Self.parameters(steps: 250)
        let trainer = try Self.trainer(seed: 1, p, tokenizerHash: data.tokenizerHash)
        var validationSampler = try BatchSampler(tokens: data.validationTokens, batchSize: 8, contextLength: 32, seed: 9)
        let validation = (0..<4).map { _ in validationSampler.next() }
        let before = try trainer.evaluate(validation)[.ce]!
        try Self.run(trainer, data: data, output: try TestCorpus.scratch("learn"), tokenizer: corpus.tokenizer)
        let after = try trainer.evaluate(validation)[.ce]!
        print("unigram entropy \(entropy) nats; validation loss \(before) -> \(after)")
        XCTAssertLessThan(after, entropy - 1.0)
    }

    func testLearningRateSchedule() {
        XCTAssertEqual(learningRate(step: 0, totalSteps: 100, peak: 1, warmup: 10), 0.1, accuracy: 1e-6)
        XCTAssertEqual(learningRate(step: 9, totalSteps: 100, peak: 1, warmup: 10), 1, accuracy: 1e-6)
        XCTAssertEqual(learningRate(step: 100, totalSteps: 100, peak: 1, warmup: 10), 0.1, accuracy: 1e-6)
        XCTAssertEqual(learningRate(step: 55, totalSteps: 100, peak: 1, warmup: 10), 0.55, accuracy: 1e-6)
    }

    func testGradientClipping() {
        var values: [Float] = [3, 4]
        var grads: [Float] = [3, 4]
        let norm = values.withUnsafeMutableBufferPointer { v in
            grads.withUnsafeMutableBufferPointer { g in
                clipGradientNorm([TrainableSegment(parameters: v.baseAddress!, gradients: g.baseAddress!, count: 2, decays: true)], maxNorm: 1)
            }
        }
        XCTAssertEqual(norm, 5, accuracy: 1e-6)
        XCTAssertEqual(grads[0], 0.6, accuracy: 1e-5)
        XCTAssertEqual(grads[1], 0.8, accuracy: 1e-5)
    }

    /// The trainer clips inside AdamW's pass (`gradientScale`) instead of scaling the gradients first: the
    /// same weights and moments to the bit, over two steps and two segments (one without decay), with the
    /// gradients clipped hard.
    func testClippingInsideAdamWGivesTheSameBitsAsScalingFirst() {
        var random = SeededRandom(seed: 3)
        let split = 37, total = 1037
        let weights0 = (0..<total).map { _ in random.nextGaussian() }
        let gradients0 = (0..<total).map { _ in 3 * random.nextGaussian() }
        func run(folded: Bool) -> (weights: [Float], first: [Float], second: [Float]) {
            var weights = weights0
            let optimizer = AdamW(totalCount: total, weightDecay: 0.1)
            for _ in 0..<2 {
                var gradients = gradients0
                weights.withUnsafeMutableBufferPointer { w in
                    gradients.withUnsafeMutableBufferPointer { g in
                        let w = w.baseAddress!, g = g.baseAddress!
                        let segments = [
                            TrainableSegment(parameters: w, gradients: g, count: split, decays: false),
                            TrainableSegment(parameters: w + split, gradients: g + split, count: total - split, decays: true),
                        ]
                        if folded {
                            let scale = clipScale(norm: gradientNorm(segments), maxNorm: 1)
                            XCTAssertLessThan(scale, 0.1)
                            optimizer.update(segments, learningRate: 1e-2, gradientScale: scale)
                        } else {
                            clipGradientNorm(segments, maxNorm: 1)
                            optimizer.update(segments, learningRate: 1e-2)
                        }
                    }
                }
            }
            return (weights, optimizer.firstMoment, optimizer.secondMoment)
        }
        let folded = run(folded: true), first = run(folded: false)
        XCTAssertNotEqual(folded.weights, weights0)
        XCTAssertEqual(folded.weights, first.weights)
        XCTAssertEqual(folded.first, first.first)
        XCTAssertEqual(folded.second, first.second)
        XCTAssertEqual(clipScale(norm: 0.5, maxNorm: 1), 1)
        XCTAssertEqual(clipScale(norm: 5, maxNorm: 0), 1)
    }

    func testBadSettingsAreRejected() throws {
        var p = Self.parameters(steps: 0)
        XCTAssertThrowsError(try p.validate())
        p = Self.parameters(steps: 10)
        p.context = 64
        XCTAssertThrowsError(try Self.trainer(seed: 1, p, tokenizerHash: 0)) { error in
            XCTAssertEqual((error as? SettingError)?.setting, .context)
        }
        var bad = Self.config
        bad.numAttentionHeads = 3
        XCTAssertThrowsError(try LlamaModel(config: bad, seed: 1)) { error in
            XCTAssertTrue("\(error)".contains("divisible"))
        }
        bad = Self.config
        bad.hiddenSize = 0
        XCTAssertThrowsError(try bad.validate())
    }

    /// A resume with another tokenizer's data, or with changed flags, is refused.
    func testResumeRefusesAnotherTokenizer() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        let directory = try TestCorpus.scratch("refuse")
        let trainer = try Self.trainer(seed: 3, Self.parameters(steps: 2), tokenizerHash: data.tokenizerHash)
        try Self.run(trainer, data: data, output: directory, tokenizer: corpus.tokenizer)
        let other = try Self.trainer(seed: 3, Self.parameters(steps: 2), tokenizerHash: data.tokenizerHash ^ 1)
        XCTAssertThrowsError(try other.resume(from: directory)) { error in
            XCTAssertTrue("\(error)".contains("tokenizer"), "\(error)")
        }
        var changed = Self.parameters(steps: 2)
        changed.learningRate = 1
        let flags = try Self.trainer(seed: 3, changed, tokenizerHash: data.tokenizerHash)
        XCTAssertThrowsError(try flags.resume(from: directory))
    }
}

extension TrainingTests {
    /// Two models trained in lockstep, each distilling from the other's current predictions; an
    /// interrupted pair resumes to exactly the weights of an uninterrupted pair.
    func testMutualTrainingResumesBitwise() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        func pair(_ seed: UInt64) throws -> [Trainer] {
            let models = [try LlamaModel(config: Self.config, seed: seed), try LlamaModel(config: Self.config, seed: seed + 1)]
            return try zip(models, DistillationObjective.mutual(models, settings: DistillationSettings(), seed: 1)).map {
                try Trainer(model: $0, objective: $1, parameters: Self.parameters(steps: 6), tokenizerHash: data.tokenizerHash)
            }
        }
        let straight = try pair(10)
        let straightOutputs = [try TestCorpus.scratch("mutual-a"), try TestCorpus.scratch("mutual-b")]
        var kd: [Double] = []
        try Trainer.runTogether(straight, trainingTokens: data.trainTokens, validation: [], outputs: straightOutputs,
                                tokenizerModel: corpus.tokenizer) { _, event in
            if case let .step(report) = event { kd.append(report.terms[.kd] ?? -1) }
        }
        XCTAssertEqual(straight.map(\.step), [6, 6])
        XCTAssertTrue(kd.allSatisfy { $0 > 0 }, "each model learns from the other: \(kd)")

        let outputs = [try TestCorpus.scratch("mutual-c"), try TestCorpus.scratch("mutual-d")]
        let interrupted = try pair(10)
        try Trainer.runTogether(interrupted, trainingTokens: data.trainTokens, validation: [], outputs: outputs,
                                tokenizerModel: corpus.tokenizer, shouldStop: { interrupted[1].step >= 2 }) { _, _ in }
        XCTAssertEqual(interrupted.map(\.step), [2, 2])
        let resumed = try pair(50)
        for (trainer, output) in zip(resumed, outputs) { try trainer.resume(from: output) }
        try Trainer.runTogether(resumed, trainingTokens: data.trainTokens, validation: [], outputs: outputs,
                                tokenizerModel: corpus.tokenizer) { _, _ in }
        for (a, b) in zip(resumed, straight) { XCTAssertEqual(Array(a.model.parameters), Array(b.model.parameters)) }
    }
}
