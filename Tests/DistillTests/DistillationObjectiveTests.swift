import XCTest
import Distill

/// The student objective wired end to end: every term's gradient reaches the student's weights and the
/// projections correctly (checked against finite differences of the reported total loss).
final class DistillationObjectiveTests: XCTestCase {
    static let teacherConfig = LlamaConfig(hiddenSize: 12, intermediateSize: 16, numHiddenLayers: 3, numAttentionHeads: 2,
                                           vocabSize: 11, maxPositionEmbeddings: 8)
    static let studentConfig = LlamaConfig(hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 2, numAttentionHeads: 2,
                                           numKeyValueHeads: 1, vocabSize: 11, maxPositionEmbeddings: 8)

    func testAllTermsGradientAgainstFiniteDifferences() throws {
        let teacher = try ModelGradientTests.model(Self.teacherConfig, seed: 11)
        let student = try ModelGradientTests.model(Self.studentConfig, seed: 12)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0.7, kd: 1.3, feature: 0.9, rkdDistance: 1.1, rkdAngle: 2)
        settings.logits = LogitDistillation(divergence: .jsd(beta: 0.3), temperature: 1.7)
        settings.layerMap = try LayerMap(parsing: "0:1,1:2", studentLayers: 2, teacherLayers: 3)
        settings.featureDistance = .l2
        // Two teachers: the KD target is their mixture (the hidden-state terms use the first).
        let secondTeacher = try ModelGradientTests.model(Self.teacherConfig, seed: 13)
        let objective = try DistillationObjective(teachers: [teacher, secondTeacher], studentConfig: Self.studentConfig,
                                                  settings: settings, seed: 5)
        var random = SeededRandom(seed: 21)
        let batch = Batch(batchSize: 4, contextLength: 5,
                          inputs: (0..<20).map { _ in Int32(random.next() % 11) },
                          targets: (0..<20).map { _ in Int32(random.next() % 11) })

        student.zeroGradients()
        for tensor in objective.extraTensors { tensor.gradients.update(repeating: 0) }
        let terms = try objective.trainStep(model: student, batch: batch, gradientScale: 1)
        XCTAssertEqual(terms.present.map(\.term), [.loss, .ce, .kd, .feature, .rkdDistance, .rkdAngle])
        func loss() throws -> Double { try objective.evaluate(model: student, batch: batch).present.reduce(0) { total, entry in
            let weight: [LossTerm: Double] = [.ce: 0.7, .kd: 1.3, .feature: 0.9, .rkdDistance: 1.1, .rkdAngle: 2]
            return total + (weight[entry.term] ?? 0) * entry.value
        } }
        XCTAssertEqual(try loss(), terms[.loss]!, accuracy: 1e-5)

        // Sample entries of every student tensor and of the projections.
        var checks: [(String, UnsafeMutablePointer<Float>, Float)] = []
        let studentGradients = Array(student.gradients!)
        for tensor in student.layout.tensors {
            for j in stride(from: 0, to: tensor.count, by: max(1, tensor.count / 5)) {
                checks.append((tensor.name, student.parameters.baseAddress! + tensor.offset + j, studentGradients[tensor.offset + j]))
            }
        }
        for tensor in objective.extraTensors {
            for j in stride(from: 0, to: tensor.values.count, by: 17) {
                checks.append((tensor.name, tensor.values.baseAddress! + j, tensor.gradients[j]))
            }
        }
        var numeric: [Double] = [], exact: [Double] = []
        for (_, pointer, gradient) in checks {
            numeric.append(try richardsonDerivative(at: pointer, step: 2.5e-3, loss))
            exact.append(Double(gradient))
        }
        let relative = relativeGradientError(numeric, exact)
        print("distillation objective: relative gradient error \(relative) over \(checks.count) entries")
        XCTAssertLessThan(relative, 2e-3)
    }

    /// An ensemble's KD target is the mean of the teachers' tempered distributions; a teacher listed
    /// twice is the teacher itself.
    func testEnsembleTargetIsTheMeanOfTheTeachersDistributions() throws {
        let first = try ModelGradientTests.model(Self.teacherConfig, seed: 31)
        let second = try ModelGradientTests.model(Self.teacherConfig, seed: 32)
        let student = try ModelGradientTests.model(Self.studentConfig, seed: 33)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0, kd: 1)
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 1.5)
        let batch = Batch(batchSize: 2, contextLength: 4, inputs: [1, 2, 3, 4, 5, 6, 7, 8], targets: [2, 3, 4, 5, 6, 7, 8, 9])
        func kd(_ teachers: [LlamaModel]) throws -> Double {
            try DistillationObjective(teachers: teachers, studentConfig: Self.studentConfig, settings: settings, seed: 1)
                .evaluate(model: student, batch: batch)[.kd]!
        }
        XCTAssertEqual(try kd([first, first]), try kd([first]), accuracy: 1e-6)

        // The mixture by hand, in Double: target logits τ·log(½ p₁ + ½ p₂).
        let rows = 8, vocab = Self.studentConfig.vocabSize, tau = 1.5
        func tempered(_ model: LlamaModel) -> [Double] {
            let logits = model.forward(tokens: batch.inputs, batch: 2, length: 4, keepForBackward: false).logits
            var probabilities = [Double](repeating: 0, count: rows * vocab)
            for r in 0..<rows {
                let row = (0..<vocab).map { Double(logits[r * vocab + $0]) / tau }
                let top = row.max()!, total = row.map { exp($0 - top) }.reduce(0, +)
                for v in 0..<vocab { probabilities[r * vocab + v] = exp(row[v] - top) / total }
            }
            return probabilities
        }
        let mixture = zip(tempered(first), tempered(second)).map { Float(tau * log(($0 + $1) / 2)) }
        let studentLogits = Array(UnsafeBufferPointer(start: student.forward(tokens: batch.inputs, batch: 2, length: 4,
                                                                             keepForBackward: false).logits, count: rows * vocab))
        let expected = try logitDistillationForwardBackward(
            dStudentLogits: nil, studentLogits: studentLogits, teacherLogits: mixture, rows: rows, vocab: vocab,
            temperature: Float(tau), divergence: .forwardKL, tauSquared: true, teacherTopK: nil, gradientScale: 0)
        XCTAssertEqual(try kd([first, second]), Double(expected), accuracy: 1e-5)
        XCTAssertNotEqual(try kd([first, second]), try kd([first]), accuracy: 1e-4)
    }

    func testInitFromTeacherCopiesEveryKthBlock() throws {
        let teacher = try ModelGradientTests.model(LlamaConfig(hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 4,
                                                               numAttentionHeads: 2, vocabSize: 11, maxPositionEmbeddings: 8), seed: 3)
        let student = try studentFromTeacher(teacher, layers: 2)
        XCTAssertEqual(student.config.numHiddenLayers, 2)
        func values(_ model: LlamaModel, _ name: String) -> [Float] {
            let tensor = model.layout.tensor(named: name)!
            return Array(UnsafeBufferPointer(start: model.parameters.baseAddress! + tensor.offset, count: tensor.count))
        }
        XCTAssertEqual(values(student, "model.layers.1.mlp.down_proj.weight"), values(teacher, "model.layers.2.mlp.down_proj.weight"))
        XCTAssertEqual(values(student, "model.layers.0.self_attn.q_proj.weight"), values(teacher, "model.layers.0.self_attn.q_proj.weight"))
        XCTAssertEqual(values(student, "model.embed_tokens.weight"), values(teacher, "model.embed_tokens.weight"))
        XCTAssertEqual(values(student, "model.norm.weight"), values(teacher, "model.norm.weight"))
        XCTAssertThrowsError(try studentFromTeacher(teacher, layers: 5))
    }

    func testBadSettingsAreRejected() throws {
        let teacher = try ModelGradientTests.model(Self.teacherConfig, seed: 1)
        func objective(_ change: (inout DistillationSettings) -> Void) throws -> DistillationObjective {
            var settings = DistillationSettings()
            change(&settings)
            return try DistillationObjective(teacher: teacher, studentConfig: Self.studentConfig, settings: settings, seed: 1)
        }
        XCTAssertThrowsError(try objective { $0.logits.temperature = 0 })
        XCTAssertThrowsError(try objective { $0.weights.kd = -1 })
        XCTAssertThrowsError(try objective { $0.weights = DistillationWeights(ce: 0, kd: 0) })
        var otherVocabulary = Self.studentConfig
        otherVocabulary.vocabSize = 12
        XCTAssertThrowsError(try DistillationObjective(teacher: teacher, studentConfig: otherVocabulary,
                                                       settings: DistillationSettings(), seed: 1)) { error in
            XCTAssertTrue("\(error)".contains("shared vocabulary"), "\(error)")
        }
        XCTAssertThrowsError(try LayerMap(parsing: "0:3", studentLayers: 2, teacherLayers: 3))
        // A batch of two sequences cannot give angles.
        let student = try ModelGradientTests.model(Self.studentConfig, seed: 2)
        let angle = try objective { $0.weights.rkdAngle = 1 }
        XCTAssertThrowsError(try angle.trainStep(model: student, batch: Batch(batchSize: 2, contextLength: 2, inputs: [1, 2, 3, 4],
                                                                             targets: [2, 3, 4, 5]), gradientScale: 1)) { error in
            XCTAssertTrue("\(error)".contains("batch"), "\(error)")
        }
    }

    /// A tiny end-to-end student run on the test corpus: the student directory is an ordinary model.
    func testTinyStudentRunProducesAModel() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        let teacherDirectory = try TestCorpus.scratch("teacher")
        let teacherTrainer = try TrainingTests.trainer(seed: 1, TrainingTests.parameters(steps: 30), tokenizerHash: data.tokenizerHash)
        try TrainingTests.run(teacherTrainer, data: data, output: teacherDirectory, tokenizer: corpus.tokenizer)

        let teacher = try ModelDirectory.load(teacherDirectory)
        var studentConfig = TrainingTests.config
        studentConfig.hiddenSize = 16
        studentConfig.numHiddenLayers = 1
        var settings = DistillationSettings()
        settings.weights.feature = 1
        settings.weights.rkdDistance = 1
        settings.layerMap = try LayerMap.uniform(studentLayers: 1, teacherLayers: 2)
        let objective = try DistillationObjective(teacher: teacher, studentConfig: studentConfig, settings: settings, seed: 1)
        let studentDirectory = try TestCorpus.scratch("student")
        let trainer = try Trainer(model: LlamaModel(config: studentConfig, seed: 2), objective: objective,
                                  parameters: TrainingTests.parameters(steps: 20), tokenizerHash: data.tokenizerHash)
        try TrainingTests.run(trainer, data: data, output: studentDirectory, tokenizer: corpus.tokenizer)
        let reloaded = try ModelDirectory.load(studentDirectory)
        XCTAssertEqual(reloaded.config, studentConfig)
        XCTAssertEqual(Array(reloaded.parameters), Array(trainer.model.parameters))
        // The projection lives in the training state only.
        XCTAssertFalse(try SafetensorsFile(url: studentDirectory.appendingPathComponent("model.safetensors")).tensorNames.contains { $0.contains("projection") })
        XCTAssertTrue(try SafetensorsFile(url: studentDirectory.appendingPathComponent("training/optimizer.safetensors")).tensorNames.contains("extra.projection.0_1"))
    }
}
