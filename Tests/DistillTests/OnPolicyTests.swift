import XCTest
import Distill

/// On-policy distillation (GKD) and sequence-level KD: generated rows are distilled at their generated
/// positions only, with the right gradient; batched decoding draws what one-at-a-time decoding draws;
/// samples come from the current weights; a share of 0 is today's student; a resume is exact.
final class OnPolicyTests: XCTestCase {
    static let teacherConfig = DistillationObjectiveTests.teacherConfig
    static let studentConfig = DistillationObjectiveTests.studentConfig

    /// A settings value with the shares, lengths and sampler of most tests here.
    static func settings(student: Double, teacher: Double = 0, prompt: Int? = nil, new: Int? = nil,
                         lossOnPrompt: Bool = false) -> OnPolicySettings {
        var settings = OnPolicySettings()
        settings.studentShare = student
        settings.teacherShare = teacher
        settings.promptTokens = prompt
        settings.newTokens = new
        settings.lossOnPrompt = lossOnPrompt
        return settings
    }

    /// A random batch of the tiny configs' vocabulary whose targets are its inputs shifted, as a token
    /// file's windows are.
    static func windows(batchSize: Int, context: Int, vocab: Int, seed: UInt64) -> Batch {
        var random = SeededRandom(seed: seed)
        var inputs: [Int32] = [], targets: [Int32] = []
        for _ in 0..<batchSize {
            let window = (0...context).map { _ in Int32(random.next() % UInt64(vocab)) }
            inputs += window.dropLast()
            targets += window.dropFirst()
        }
        return Batch(batchSize: batchSize, contextLength: context, inputs: inputs, targets: targets)
    }

    // MARK: the loss

    /// The mixed batch's layout: data rows untouched; generated rows keep their prompt, hold P + N
    /// tokens, have no label past the prompt, and are distilled at positions P − 1 ..< P + N − 1 (and the
    /// prompt's with `lossOnPrompt`). Then the loss and its gradient, against finite differences.
    func testGeneratedPositionsLossAndGradient() throws {
        let teacher = try ModelGradientTests.model(Self.teacherConfig, seed: 41)
        let student = try ModelGradientTests.model(Self.studentConfig, seed: 42)
        var distillationSettings = DistillationSettings()
        distillationSettings.weights = DistillationWeights(ce: 0.7, kd: 1.3)
        distillationSettings.logits = LogitDistillation(divergence: .jsd(beta: 0.3), temperature: 1.7)
        let distillation = try DistillationObjective(teacher: teacher, studentConfig: Self.studentConfig,
                                                     settings: distillationSettings, seed: 5)
        let batch = Self.windows(batchSize: 3, context: 8, vocab: 11, seed: 43)
        // One row from the teacher, one from the student; P + N = 7 < T = 8 leaves a padding position.
        let (prompt, new) = (3, 4)
        for lossOnPrompt in [false, true] {
            let objective = try OnPolicyObjective(
                distillation: distillation, settings: Self.settings(student: 1.0 / 3, teacher: 1.0 / 3, prompt: prompt, new: new,
                                                                    lossOnPrompt: lossOnPrompt),
                context: 8, seed: 7)
            let (mixed, maybeMask) = try objective.onPolicyBatch(student: student, batch: batch)
            let mask = try XCTUnwrap(maybeMask)
            XCTAssertEqual(Array(mixed.inputs[0..<8]), Array(batch.inputs[0..<8]), "the data row changed")
            XCTAssertEqual(Array(mixed.targets[0..<8]), Array(batch.targets[0..<8]))
            XCTAssertEqual(Array(mask[0..<8]), Array(repeating: 1, count: 8))
            for row in 1...2 {
                let base = row * 8
                XCTAssertEqual(Array(mixed.inputs[base..<(base + prompt)]), Array(batch.inputs[base..<(base + prompt)]), "prompt of row \(row)")
                XCTAssertEqual(mixed.inputs[base + 7], mixed.inputs[base + 6], "padding repeats the last token")
                for position in 0..<8 {
                    let isGenerated = position >= prompt - 1 && position < prompt + new - 1
                    let isPrompt = position < prompt - 1
                    XCTAssertEqual(mask[base + position], isGenerated || (lossOnPrompt && isPrompt) ? 1 : 0, "row \(row) position \(position)")
                    XCTAssertEqual(mixed.targets[base + position], lossOnPrompt && isPrompt ? batch.targets[base + position] : -1,
                                   "row \(row) position \(position): generated tokens have no label")
                }
            }

            // The terms, by hand: KD over the masked positions, CE over the labelled ones.
            let vocab = 11, rows = 24
            func logits(_ model: LlamaModel) -> [Float] {
                Array(UnsafeBufferPointer(start: model.forward(tokens: mixed.inputs, batch: 3, length: 8, keepForBackward: false).logits,
                                          count: rows * vocab))
            }
            let studentLogits = logits(student), teacherLogits = logits(teacher)
            let distilled = (0..<rows).filter { mask[$0] != 0 }
            func gather(_ values: [Float]) -> [Float] { distilled.flatMap { values[($0 * vocab)..<(($0 + 1) * vocab)] } }
            let expectedKD = try logitDistillationForwardBackward(
                dStudentLogits: nil, studentLogits: gather(studentLogits), teacherLogits: gather(teacherLogits), rows: distilled.count,
                vocab: vocab, temperature: 1.7, divergence: .jsd(beta: 0.3), tauSquared: true, teacherTopK: nil, gradientScale: 0)
            let expectedCE = try crossEntropyForwardBackward(dLogits: nil, logits: studentLogits, targets: mixed.targets, rows: rows,
                                                             vocab: vocab, gradientScale: 0)
            let terms = try distillation.terms(student: student, batch: mixed, distillationMask: mask, gradientScale: 0, backward: false)
            XCTAssertEqual(terms[.kd]!, Double(expectedKD), accuracy: 1e-5)
            XCTAssertEqual(terms[.ce]!, Double(expectedCE), accuracy: 1e-5)
            let labelled = mixed.targets.filter { $0 >= 0 }.count
            XCTAssertEqual(labelled, 8 + (lossOnPrompt ? 2 * (prompt - 1) : 0), "CE counts the data row and, when asked, the prompts")

            try checkGradient(distillation, student: student, batch: mixed, mask: mask, label: "lossOnPrompt \(lossOnPrompt)")
        }
    }

    /// The gradient `terms` accumulates against central differences of its reported total loss.
    func checkGradient(_ objective: DistillationObjective, student: LlamaModel, batch: Batch, mask: [UInt8], label: String) throws {
        student.zeroGradients()
        let total = try objective.terms(student: student, batch: batch, distillationMask: mask, gradientScale: 1, backward: true)[.loss]!
        func loss() throws -> Double {
            try objective.terms(student: student, batch: batch, distillationMask: mask, gradientScale: 0, backward: false)[.loss]!
        }
        XCTAssertEqual(try loss(), total, accuracy: 1e-6)
        let gradients = Array(student.gradients!)
        var numeric: [Double] = [], exact: [Double] = []
        for tensor in student.layout.tensors {
            for j in stride(from: 0, to: tensor.count, by: max(1, tensor.count / 5)) {
                numeric.append(try richardsonDerivative(at: student.parameters.baseAddress! + tensor.offset + j, step: 2.5e-3, loss))
                exact.append(Double(gradients[tensor.offset + j]))
            }
        }
        let relative = relativeGradientError(numeric, exact)
        print("on-policy loss (\(label)): relative gradient error \(relative) over \(numeric.count) entries")
        XCTAssertGreaterThan(numeric.map { $0 * $0 }.reduce(0, +).squareRoot(), 1e-3, "the checked gradient is all but zero")
        XCTAssertLessThan(relative, 2e-3)
    }

    /// An ensemble scores the student's samples (its target is the members' mixture) with the right
    /// gradient at the generated positions.
    func testEnsembleScoresStudentSamples() throws {
        let first = try ModelGradientTests.model(Self.teacherConfig, seed: 45)
        let second = try ModelGradientTests.model(Self.teacherConfig, seed: 46)
        let student = try ModelGradientTests.model(Self.studentConfig, seed: 47)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0, kd: 1)
        settings.logits = LogitDistillation(divergence: .reverseKL, temperature: 1)
        let distillation = try DistillationObjective(teachers: [first, second], studentConfig: Self.studentConfig, settings: settings, seed: 1)
        let objective = try OnPolicyObjective(distillation: distillation, settings: Self.settings(student: 0.5, prompt: 2, new: 6),
                                              context: 8, seed: 4)
        let (mixed, mask) = try objective.onPolicyBatch(student: student, batch: Self.windows(batchSize: 2, context: 8, vocab: 11, seed: 48))
        try checkGradient(distillation, student: student, batch: mixed, mask: try XCTUnwrap(mask), label: "ensemble, reverse KL")
    }

    /// Rows whose mask is 0 do not move the KD term: a padding position's token changes nothing
    /// before it (causal attention), and a masked row's teacher may be anything.
    func testMaskedPositionsDoNotCount() throws {
        let teacher = try ModelGradientTests.model(Self.teacherConfig, seed: 51)
        let student = try ModelGradientTests.model(Self.studentConfig, seed: 52)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0, kd: 1)
        let distillation = try DistillationObjective(teacher: teacher, studentConfig: Self.studentConfig, settings: settings, seed: 1)
        let objective = try OnPolicyObjective(distillation: distillation, settings: Self.settings(student: 1, prompt: 2, new: 4),
                                              context: 8, seed: 3)
        let (mixed, maybeMask) = try objective.onPolicyBatch(student: student, batch: Self.windows(batchSize: 2, context: 8, vocab: 11, seed: 53))
        let mask = try XCTUnwrap(maybeMask)
        let kd = try distillation.terms(student: student, batch: mixed, distillationMask: mask, gradientScale: 0, backward: false)[.kd]!
        var changed = mixed
        for row in 0..<2 { changed.inputs[row * 8 + 6] = (changed.inputs[row * 8 + 6] + 1) % 11; changed.inputs[row * 8 + 7] = 0 }
        XCTAssertEqual(try distillation.terms(student: student, batch: changed, distillationMask: mask, gradientScale: 0, backward: false)[.kd]!, kd)
        // All of it on: a different mean.
        let whole = try distillation.terms(student: student, batch: mixed, distillationMask: nil, gradientScale: 0, backward: false)[.kd]!
        XCTAssertNotEqual(whole, kd)
    }

    /// The generated rows are spread over the micro-batch, in the numbers `generatedRows` gives; at
    /// L = 0.5 and with the teacher's and the student's shares each half of an even batch holds half of
    /// each kind, so each of 2 ranks generates its own share.
    func testGeneratedRowsAreSpreadOverTheBatch() {
        for (student, teacher) in [(0.5, 0.0), (0.25, 0.25), (1.0, 0.0), (0.3, 0.2), (0.0, 0.0), (0.0, 1.0), (0.6, 0.4)] {
            let settings = Self.settings(student: student, teacher: teacher)
            for batch in 1...17 {
                let sources = settings.rowSources(batchSize: batch), counts = settings.generatedRows(batchSize: batch)
                XCTAssertEqual(sources.filter { $0 == .student }.count, counts.student, "\(student) \(teacher) batch \(batch)")
                XCTAssertEqual(sources.filter { $0 == .teacher }.count, counts.teacher, "\(student) \(teacher) batch \(batch)")
            }
        }
        XCTAssertEqual(Self.settings(student: 0.5).rowSources(batchSize: 8), [.data, .student, .data, .student, .data, .student, .data, .student])
        XCTAssertEqual(Self.settings(student: 0.25, teacher: 0.25).rowSources(batchSize: 8),
                       [.data, .student, .data, .teacher, .data, .student, .data, .teacher])
    }

    // MARK: generation

    /// Rows decoded together draw, token for token, what each row decoded alone by the KV-cache session
    /// draws with the same seed: greedy, plain sampling, top-k and top-p. Six rows: a tile of four rows
    /// and two alone in the AVX-512 product (`ck_linear_f32`), three tiles of two in the AVX2 one.
    func testBatchedGenerationEqualsOneSequenceAtATime() throws {
        try checkBatchedAgainstAlone(prompts: (0..<6).map { Self.prompt(row: $0, length: 5) }, newTokens: Array(repeating: 30, count: 6))
    }

    /// The same with the weights read as bf16, f16 or Q8_0 (`sample --num-samples --precision`): the rows
    /// draw what a session over the same reduced copy draws, prompts of different lengths included.
    func testBatchedGenerationWithReducedWeightsEqualsOneSequenceAtATime() throws {
        for precision in [WeightFormat.bf16, .f16, .q8_0] {
            try checkBatchedAgainstAlone(prompts: (0..<5).map { Self.prompt(row: $0, length: 2 + $0) }, newTokens: [20, 12, 20, 7, 16],
                                         precision: precision, intermediate: 64)
        }
    }

    /// The same for rows of different lengths in one batch: prompts of 1 to 9 tokens (the shortest sets
    /// the shared prompt pass; with 1 there is none) and 4 to 30 new tokens, rows leaving the pass as
    /// they finish, in an order that is not their length's.
    func testBatchedGenerationOfRowsOfDifferentLengths() throws {
        let lengths: [[(prompt: Int, new: Int)]] = [[(2, 12), (5, 30), (9, 20), (3, 24)], [(1, 10), (7, 25), (3, 4)]]
        for rows in lengths {
            try checkBatchedAgainstAlone(prompts: rows.indices.map { Self.prompt(row: $0, length: rows[$0].prompt) },
                                         newTokens: rows.map(\.new))
        }
    }

    /// A prompt of `length` tokens of the decoding tests' vocabulary (67), different for each row.
    static func prompt(row: Int, length: Int) -> [Int32] {
        (0..<length).map { position in Int32((position * 13 + row * 7 + 1) % 67) }
    }

    /// Decodes `prompts` together (row r continued for `newTokens[r]` tokens) with each sampler and checks
    /// every row against the row decoded alone, the prompts and the buffer past each row left as they were,
    /// and that the decoder reused on one thread draws the same again.
    func checkBatchedAgainstAlone(prompts: [[Int32]], newTokens: [Int], precision: WeightFormat = .f32, intermediate: Int = 48,
                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let config = LlamaConfig(hiddenSize: 32, intermediateSize: intermediate, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2,
                                 vocabSize: 67, maxPositionEmbeddings: 40)
        let model = try ModelGradientTests.model(config, seed: 61)
        let rows = prompts.count, seeds = (0..<rows).map { UInt64(11 + $0) }
        let decoder = try BatchedDecoder(model: model, promptLengths: prompts.map(\.count), newTokens: newTokens, precision: precision)
        let stride = decoder.sequenceLength
        XCTAssertEqual(stride, zip(prompts, newTokens).map { $0.count + $1 }.max(), file: file, line: line)
        let untouched: Int32 = -7
        let samplers: [(temperature: Float, topK: Int?, topP: Float?)] = [(0, nil, nil), (1, nil, nil), (0.8, 10, nil), (1.2, nil, 0.9)]
        for (temperature, topK, topP) in samplers {
            let label = "temperature \(temperature), top-k \(String(describing: topK)), top-p \(String(describing: topP))"
            var batchedSamplers = try seeds.map { try Sampler(temperature: temperature, topK: topK, topP: topP, seed: $0) }
            var sequences = [Int32](repeating: untouched, count: rows * stride)
            for row in 0..<rows { for (i, token) in prompts[row].enumerated() { sequences[row * stride + i] = token } }
            try sequences.withUnsafeMutableBufferPointer { try decoder.generate(sequences: $0.baseAddress!, samplers: &batchedSamplers) }
            for row in 0..<rows {
                let prompt = prompts[row].count, end = row * stride + prompt + newTokens[row]
                var sampler = try Sampler(temperature: temperature, topK: topK, topP: topP, seed: seeds[row])
                let alone = try generate(session: KVCacheSession(model: model, precision: precision), prompt: prompts[row],
                                         maxTokens: newTokens[row], sampler: &sampler)
                XCTAssertEqual(Array(sequences[(row * stride + prompt)..<end]), alone, "row \(row), \(label), \(precision)", file: file, line: line)
                XCTAssertEqual(Array(sequences[(row * stride)..<(row * stride + prompt)]), prompts[row], file: file, line: line)
                XCTAssertTrue(sequences[end..<((row + 1) * stride)].allSatisfy { $0 == untouched }, "row \(row) written past its end",
                              file: file, line: line)
            }
            // Reused for a second run, on one thread (its two row groups one after the other instead of side
            // by side), the decoder draws the same again from the same seeds.
            var again = try seeds.map { try Sampler(temperature: temperature, topK: topK, topP: topP, seed: $0) }
            var second = sequences
            try Compute.withThreads(1) {
                try second.withUnsafeMutableBufferPointer { try decoder.generate(sequences: $0.baseAddress!, samplers: &again) }
            }
            XCTAssertEqual(second, sequences, label, file: file, line: line)
        }
        // A shape the model cannot hold, an empty prompt or no new tokens: refused.
        XCTAssertThrowsError(try BatchedDecoder(model: model, promptLengths: [3, 30], newTokens: [4, 11]))
        XCTAssertThrowsError(try BatchedDecoder(model: model, promptLengths: [3, 0], newTokens: [4, 4]))
        XCTAssertThrowsError(try BatchedDecoder(model: model, promptLengths: [3, 2], newTokens: [4, 0]))
        XCTAssertThrowsError(try BatchedDecoder(model: model, promptLengths: [], newTokens: []))
    }

    /// The workspace sampler draws what the allocating one draws, with and without cuts.
    func testWorkspaceSamplerDrawsAsTheSampler() throws {
        var random = SeededRandom(seed: 71)
        let logits = (0..<300).map { _ in 3 * random.nextGaussian() }
        let workspace = SamplingWorkspace(vocabSize: 300)
        let cuts: [(temperature: Float, topK: Int?, topP: Float?)] = [(1, nil, nil), (0.7, 5, nil), (1.3, nil, 0.5), (1, 40, 0.95), (0, nil, nil)]
        for (temperature, topK, topP) in cuts {
            var plain = try Sampler(temperature: temperature, topK: topK, topP: topP, seed: 5)
            var reusing = plain
            for _ in 0..<200 {
                XCTAssertEqual(reusing.sample(logits, count: 300, workspace: workspace), plain.sample(logits, count: 300))
            }
        }
    }

    /// After an optimizer step the next samples are those of the new weights: equal to a fresh model
    /// holding them, and unlike those of the weights before the step (which a stale copy would give).
    func testSamplesComeFromTheCurrentWeights() throws {
        let config = TrainingTests.config
        let teacher = try LlamaModel(config: config, seed: 81)
        let student = try LlamaModel(config: config, seed: 82)
        let before = Array(student.parameters)
        var distillationSettings = DistillationSettings.student
        distillationSettings.weights = DistillationWeights(ce: 0, kd: 1)
        func objective(_ model: LlamaModel) throws -> OnPolicyObjective {
            try OnPolicyObjective(distillation: DistillationObjective(teacher: teacher, studentConfig: config, settings: distillationSettings, seed: 1),
                                  settings: Self.settings(student: 1, prompt: 4, new: 28), context: 32, seed: 9)
        }
        var parameters = TrainingTests.parameters(steps: 5)
        parameters.learningRate = 3e-2
        parameters.warmupSteps = 0
        let training = try objective(student)
        let trainer = try Trainer(model: student, objective: training, parameters: parameters, tokenizerHash: 1)
        let batch = Self.windows(batchSize: 4, context: 32, vocab: config.vocabSize, seed: 83)
        try trainer.singleStep(batch)
        XCTAssertNotEqual(Array(student.parameters), before)

        // The same generator state for all three: only the weights differ.
        let state = training.generationRandom
        let (afterStep, _) = try training.onPolicyBatch(student: student, batch: batch)

        let current = try LlamaModel(config: config, parameters: UnsafeBufferPointer(student.parameters))
        let reference = try objective(current)
        reference.generationRandom = state
        XCTAssertEqual(try reference.onPolicyBatch(student: current, batch: batch).0.inputs, afterStep.inputs)

        let stale = try before.withUnsafeBufferPointer { try LlamaModel(config: config, parameters: $0) }
        let staleObjective = try objective(stale)
        staleObjective.generationRandom = state
        XCTAssertNotEqual(try staleObjective.onPolicyBatch(student: stale, batch: batch).0.inputs, afterStep.inputs,
                          "the weights before the step sample the same: the test cannot tell a stale copy")
    }

    // MARK: runs

    /// A distillation trainer over the test corpus, on-policy when `settings` is active.
    static func trainer(_ settings: OnPolicySettings?, teacher: LlamaModel, parameters: TrainingParameters, seed: UInt64,
                        objectiveSeed: UInt64 = 1, tokenizerHash: UInt64) throws -> Trainer {
        var distillationSettings = DistillationSettings.student
        distillationSettings.logits.divergence = .jsd(beta: 0.5)
        let distillation = try DistillationObjective(teacher: teacher, studentConfig: TrainingTests.config,
                                                     settings: distillationSettings, seed: 1)
        var objective: TrainingObjective = distillation
        if let settings {
            objective = try OnPolicyObjective(distillation: distillation, settings: settings, context: parameters.context, seed: objectiveSeed)
        }
        return try Trainer(model: LlamaModel(config: TrainingTests.config, seed: seed), objective: objective, parameters: parameters,
                           tokenizerHash: tokenizerHash)
    }

    /// Shares of 0 train exactly today's student: the same weights, bit for bit.
    func testZeroSharesTrainTodaysStudentBitwise() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        let teacher = try LlamaModel(config: TrainingTests.config, seed: 91)
        var p = TrainingTests.parameters(steps: 6)
        p.accumulationSteps = 2
        let plain = try Self.trainer(nil, teacher: teacher, parameters: p, seed: 3, tokenizerHash: data.tokenizerHash)
        try TrainingTests.run(plain, data: data, output: try TestCorpus.scratch("onpolicy-zero-plain"), tokenizer: corpus.tokenizer)
        let zero = try Self.trainer(Self.settings(student: 0, teacher: 0, prompt: 8), teacher: teacher, parameters: p, seed: 3,
                                    tokenizerHash: data.tokenizerHash)
        try TrainingTests.run(zero, data: data, output: try TestCorpus.scratch("onpolicy-zero"), tokenizer: corpus.tokenizer)
        XCTAssertEqual(Array(zero.model.parameters), Array(plain.model.parameters))
        // With generated rows the run differs (the test above is not vacuous).
        let half = try Self.trainer(Self.settings(student: 0.5), teacher: teacher, parameters: p, seed: 3, tokenizerHash: data.tokenizerHash)
        try TrainingTests.run(half, data: data, output: try TestCorpus.scratch("onpolicy-half"), tokenizer: corpus.tokenizer)
        XCTAssertNotEqual(Array(half.model.parameters), Array(plain.model.parameters))
    }

    /// An interrupted on-policy run (student and teacher samples, accumulation) resumed from its
    /// checkpoint ends with the weights of an uninterrupted one: the sample generator is restored, not
    /// re-seeded (the resumed objective is built with another seed on purpose).
    func testResumeWithOnPolicyIsBitwise() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        let teacher = try LlamaModel(config: TrainingTests.config, seed: 92)
        var p = TrainingTests.parameters(steps: 7)
        p.accumulationSteps = 2
        let settings = Self.settings(student: 0.5, teacher: 0.25, prompt: 12, new: 16)
        let straight = try Self.trainer(settings, teacher: teacher, parameters: p, seed: 4, tokenizerHash: data.tokenizerHash)
        try TrainingTests.run(straight, data: data, output: try TestCorpus.scratch("onpolicy-straight"), tokenizer: corpus.tokenizer)

        let directory = try TestCorpus.scratch("onpolicy-interrupted")
        let first = try Self.trainer(settings, teacher: teacher, parameters: p, seed: 4, tokenizerHash: data.tokenizerHash)
        try TrainingTests.run(first, data: data, output: directory, tokenizer: corpus.tokenizer, stopAfter: 3)
        XCTAssertEqual(first.step, 3)
        let resumed = try Self.trainer(settings, teacher: teacher, parameters: p, seed: 77, objectiveSeed: 1234,
                                       tokenizerHash: data.tokenizerHash)
        try resumed.resume(from: directory)
        XCTAssertEqual(resumed.step, 3)
        try TrainingTests.run(resumed, data: data, output: directory, tokenizer: corpus.tokenizer)
        XCTAssertEqual(resumed.step, 7)
        XCTAssertEqual(Array(resumed.model.parameters), Array(straight.model.parameters), "resumed weights differ")

        // A checkpoint of an off-policy run cannot continue as an on-policy one.
        let offPolicy = try Self.trainer(Self.settings(student: 0), teacher: teacher, parameters: p, seed: 4, tokenizerHash: data.tokenizerHash)
        XCTAssertThrowsError(try offPolicy.resume(from: directory)) { error in
            XCTAssertTrue("\(error)".contains("on_policy"), "\(error)")
        }
    }

    // MARK: settings

    func testBadSettingsAreRefusedBySetting() throws {
        func refusal(_ change: (inout OnPolicySettings) -> Void, context: Int = 32) -> Setting? {
            var settings = Self.settings(student: 0.5)
            change(&settings)
            do { _ = try settings.lengths(context: context); return nil } catch { return (error as? OnPolicyError)?.setting }
        }
        XCTAssertEqual(refusal { $0.studentShare = 1.5 }, .onPolicy)
        XCTAssertEqual(refusal { $0.studentShare = -0.1 }, .onPolicy)
        XCTAssertEqual(refusal { $0.studentShare = .nan }, .onPolicy)
        XCTAssertEqual(refusal { $0.teacherShare = 2 }, .teacherGenerated)
        XCTAssertEqual(refusal { $0.teacherShare = 0.6 }, .teacherGenerated)
        XCTAssertEqual(refusal { $0.newTokens = 0 }, .newTokens)
        XCTAssertEqual(refusal { $0.promptTokens = 0 }, .promptTokens)
        XCTAssertEqual(refusal { $0.promptTokens = 32 }, .promptTokens)
        XCTAssertEqual(refusal { $0.promptTokens = 40 }, .promptTokens)
        XCTAssertEqual(refusal { $0.newTokens = 32 }, .newTokens)
        XCTAssertEqual(refusal { $0.promptTokens = 20; $0.newTokens = 13 }, .newTokens)
        XCTAssertEqual(refusal { $0.temperature = -1 }, .sampleTemperature)
        XCTAssertEqual(refusal { $0.topK = 0 }, .sampleTopK)
        XCTAssertEqual(refusal { $0.topP = 0 }, .sampleTopP)
        XCTAssertNil(refusal { $0.promptTokens = 20; $0.newTokens = 12 })
        XCTAssertNil(refusal { $0.teacherShare = 0.5 })

        // Defaults: half the context for the prompt, the rest sampled.
        XCTAssertTrue(try Self.settings(student: 1).lengths(context: 32) == (16, 16))
        XCTAssertTrue(try Self.settings(student: 1, prompt: 4).lengths(context: 32) == (4, 28))
        XCTAssertTrue(try Self.settings(student: 1, new: 4).lengths(context: 32) == (28, 4))
        // Rows: the last ones the student's, the rounded shares never more than the batch.
        XCTAssertTrue(Self.settings(student: 0.5, teacher: 0.5).generatedRows(batchSize: 3) == (1, 2))
        XCTAssertTrue(Self.settings(student: 0.5).generatedRows(batchSize: 8) == (0, 4))
        XCTAssertTrue(Self.settings(student: 0.1).generatedRows(batchSize: 4) == (0, 0))

        // The feature and relational terms and teacher samples from an ensemble are refused.
        let teacher = try ModelGradientTests.model(Self.teacherConfig, seed: 1)
        var withFeatures = DistillationSettings()
        withFeatures.weights.feature = 1
        withFeatures.layerMap = try LayerMap(parsing: "0:1", studentLayers: 2, teacherLayers: 3)
        XCTAssertThrowsError(try OnPolicyObjective(
            distillation: DistillationObjective(teacher: teacher, studentConfig: Self.studentConfig, settings: withFeatures, seed: 1),
            settings: Self.settings(student: 0.5, prompt: 2, new: 2), context: 8, seed: 1)) { error in
            XCTAssertEqual((error as? OnPolicyError)?.other, .featureWeight, "\(error)")
        }
        XCTAssertThrowsError(try OnPolicyObjective(
            distillation: DistillationObjective(teachers: [teacher, teacher], studentConfig: Self.studentConfig,
                                                settings: DistillationSettings(), seed: 1),
            settings: Self.settings(student: 0, teacher: 0.5, prompt: 2, new: 2), context: 8, seed: 1)) { error in
            XCTAssertEqual((error as? OnPolicyError)?.setting, .teacherGenerated, "\(error)")
        }
    }
}

/// The `distill student` flags of on-policy distillation: one clear line for each mistake, and a short
/// run that prints the generation speed.
extension CommandLineTests {
    func testOnPolicyFlags() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-onpolicy")
        let teacher = scratch.appendingPathComponent("teacher").path
        try trainTiny(teacher, steps: 2)
        func student(_ name: String, _ extra: [String]) -> [String] {
            ["student", "--teacher", teacher, "--output", scratch.appendingPathComponent(name).path, "--preset", "tiny-student",
             "--steps", "2"] + tinyRunFlags(corpus) + extra
        }
        try expectError(student("a", ["--on-policy", "1.5"]), mentions: "--on-policy must lie in [0, 1]")
        try expectError(student("a", ["--on-policy", "-0.5"]), mentions: "--on-policy")
        try expectError(student("a", ["--on-policy", "nan"]), mentions: "--on-policy")
        try expectError(student("a", ["--on-policy", "0.5", "--new-tokens", "0"]), mentions: "--new-tokens must be at least 1")
        try expectError(student("a", ["--on-policy", "0.5", "--prompt-tokens", "40"]), mentions: "--prompt-tokens is 40 but the context is 32")
        try expectError(student("a", ["--on-policy", "0.5", "--prompt-tokens", "20", "--new-tokens", "20"]), mentions: "over the context")
        try expectError(student("a", ["--on-policy", "0.7", "--teacher-generated", "0.5"]), mentions: "--teacher-generated")
        try expectError(student("a", ["--on-policy", "0.5", "--sample-top-p", "2"]), mentions: "--sample-top-p")
        try expectError(["student", "--teacher-cache", scratch.appendingPathComponent("none.cache").path, "--output",
                         scratch.appendingPathComponent("a").path, "--on-policy", "0.5"] + tinyRunFlags(corpus),
                        mentions: "--on-policy cannot be used with --teacher-cache: a cached teacher cannot score new sequences")
        try expectError(student("a", ["--on-policy", "0.5", "--feature-weight", "1"]), mentions: "--feature-weight")
        try expectError(student("a", ["--on-policy", "0.5", "--kd-weight", "0", "--ce-weight", "1"]), mentions: "--kd-weight")
        try expectError(["mutual", "--output", scratch.appendingPathComponent("m1").path, "--peer-output",
                         scratch.appendingPathComponent("m2").path, "--on-policy", "0.5"] + tinyRunFlags(corpus), mentions: "--on-policy")

        let run = try run(student("ok", ["--on-policy", "0.5", "--divergence", "jsd", "--prompt-tokens", "8", "--new-tokens", "24"]))
        XCTAssertEqual(run.status, 0, run.error)
        XCTAssertTrue(run.error.contains("gen ") && run.error.contains("% of step"), run.error)
        XCTAssertTrue(run.error.contains("generated rows per micro-batch: 1 by the student"), run.error)
    }
}
