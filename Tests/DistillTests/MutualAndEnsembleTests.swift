import XCTest
import Distill

/// N-peer mutual learning and ensembles that can be scored and sampled.
final class MutualAndEnsembleTests: XCTestCase {
    static let config = TrainingTests.config

    private func trainers(_ models: [LlamaModel], objectives: [TrainingObjective], steps: Int, tokenizerHash: UInt64) throws -> [Trainer] {
        try zip(models, objectives).map {
            try Trainer(model: $0.0, objective: $0.1, parameters: TrainingTests.parameters(steps: steps), tokenizerHash: tokenizerHash)
        }
    }

    private func runTogether(_ trainers: [Trainer], data: TokenFile, tokenizer: String, name: String) throws {
        let outputs = try trainers.indices.map { try TestCorpus.scratch("\(name)-\($0)") }
        try Trainer.runTogether(trainers, trainingTokens: data.trainTokens, validation: [], outputs: outputs,
                                tokenizerModel: tokenizer) { _, _ in }
    }

    /// With two peers the N-peer objective is the two-peer `mutual` of before, bit for bit.
    func testTwoPeersEqualTheTwoPeerMutualBitForBit() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 1, kd: 0.7)
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 1.5)
        let old = [try LlamaModel(config: Self.config, seed: 20), try LlamaModel(config: Self.config, seed: 21)]
        let oldObjectives: [TrainingObjective] = [
            try DistillationObjective(teacher: old[1], studentConfig: Self.config, settings: settings, seed: 20),
            try DistillationObjective(teacher: old[0], studentConfig: Self.config, settings: settings, seed: 20),
        ]
        let new = [try LlamaModel(config: Self.config, seed: 20), try LlamaModel(config: Self.config, seed: 21)]
        try runTogether(try trainers(old, objectives: oldObjectives, steps: 4, tokenizerHash: data.tokenizerHash),
                        data: data, tokenizer: corpus.tokenizer, name: "mutual-old")
        try runTogether(try trainers(new, objectives: MutualObjective.objectives(peers: new, settings: settings), steps: 4,
                                     tokenizerHash: data.tokenizerHash), data: data, tokenizer: corpus.tokenizer, name: "mutual-new")
        for (a, b) in zip(old, new) { XCTAssertEqual(Array(a.parameters), Array(b.parameters)) }
    }

    /// With a KD weight of 0, three peers trained together are three independent runs, bit for bit.
    func testThreePeersWithoutKDTrainIndependently() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 1, kd: 0)
        let peers = try (0..<3).map { try LlamaModel(config: Self.config, seed: 40 + UInt64($0)) }
        try runTogether(try trainers(peers, objectives: MutualObjective.objectives(peers: peers, settings: settings), steps: 3,
                                     tokenizerHash: data.tokenizerHash), data: data, tokenizer: corpus.tokenizer, name: "peers")
        for (index, peer) in peers.enumerated() {
            let alone = try LlamaModel(config: Self.config, seed: 40 + UInt64(index))
            let trainer = try Trainer(model: alone, objective: CrossEntropyObjective(), parameters: TrainingTests.parameters(steps: 3),
                                      tokenizerHash: data.tokenizerHash)
            try TrainingTests.run(trainer, data: data, output: try TestCorpus.scratch("alone-\(index)"), tokenizer: corpus.tokenizer)
            XCTAssertEqual(Array(peer.parameters), Array(alone.parameters), "peer \(index + 1)")
        }
    }

    /// Each of N peers learns from the mean of its divergences to the others: its KD term is the mean
    /// of the two-peer terms, and its gradient checks against finite differences.
    func testThreePeerObjective() throws {
        let peers = try (0..<3).map { try ModelGradientTests.model(DistillationObjectiveTests.studentConfig, seed: 60 + UInt64($0)) }
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0.5, kd: 1.2)
        settings.logits = LogitDistillation(divergence: .reverseKL, temperature: 1.3)
        let objectives = try MutualObjective.objectives(peers: peers, settings: settings)
        var random = SeededRandom(seed: 5)
        let batch = Batch(batchSize: 2, contextLength: 4, inputs: (0..<8).map { _ in Int32(random.next() % 11) },
                          targets: (0..<8).map { _ in Int32(random.next() % 11) })
        let terms = try objectives[0].evaluate(model: peers[0], batch: batch)
        let pairwise = try [1, 2].map {
            try DistillationObjective(teacher: peers[$0], studentConfig: peers[0].config, settings: settings, seed: 0)
                .evaluate(model: peers[0], batch: batch)[.kd]!
        }
        XCTAssertEqual(terms[.kd]!, (pairwise[0] + pairwise[1]) / 2, accuracy: 1e-6)

        peers[0].zeroGradients()
        let step = try objectives[0].trainStep(model: peers[0], batch: batch, gradientScale: 1)
        XCTAssertEqual(step[.loss]!, 0.5 * terms[.ce]! + 1.2 * terms[.kd]!, accuracy: 1e-5)
        let gradients = Array(peers[0].gradients!)
        var numeric: [Double] = [], exact: [Double] = []
        for index in stride(from: 0, to: peers[0].parameterCount, by: 7) {
            let pointer = peers[0].parameters.baseAddress! + index, saved = pointer.pointee
            func loss() throws -> Double {
                let t = try objectives[0].evaluate(model: peers[0], batch: batch)
                return 0.5 * t[.ce]! + 1.2 * t[.kd]!
            }
            pointer.pointee = saved + 2e-3
            let up = try loss()
            pointer.pointee = saved - 2e-3
            let down = try loss()
            pointer.pointee = saved
            numeric.append((up - down) / 4e-3)
            exact.append(Double(gradients[index]))
        }
        let relative = relativeGradientError(numeric, exact)
        XCTAssertLessThan(relative, 5e-3)
        XCTAssertThrowsError(try MutualObjective.objectives(peers: [peers[0]], settings: settings))
    }

    /// An ensemble of one scores and samples exactly as its model; two copies of a model score as it
    /// (to rounding); a weight of 0 leaves a member out; weights are checked.
    func testEnsembleScoringAndSampling() throws {
        let first = try ModelGradientTests.model(CacheFixture.teacherConfig, seed: 5)
        let second = try ModelGradientTests.model(CacheFixture.teacherConfig, seed: 6)
        let data = try TokenFile(path: try CacheFixture.files().data)
        let tokens = Array(data.validationTokens)
        let alone = try scoreTokens(model: first, tokens: tokens, bytes: data.validationByteCount)
        XCTAssertEqual(try scoreTokens(ensemble: ModelEnsemble(members: [first]), tokens: tokens, bytes: data.validationByteCount), alone)
        let copies = try scoreTokens(ensemble: ModelEnsemble(members: [first, first]), tokens: tokens, bytes: data.validationByteCount)
        XCTAssertEqual(copies.meanNLL, alone.meanNLL, accuracy: 1e-4)
        let muted = try scoreTokens(ensemble: ModelEnsemble(members: [first, second], weights: [3, 0]), tokens: tokens,
                                    bytes: data.validationByteCount)
        XCTAssertEqual(muted.meanNLL, alone.meanNLL, accuracy: 1e-4)
        let other = try scoreTokens(model: second, tokens: tokens, bytes: data.validationByteCount)
        let both = try scoreTokens(ensemble: ModelEnsemble(members: [first, second]), tokens: tokens, bytes: data.validationByteCount)
        // The mixture's NLL is at most the mean of the members' (log is concave).
        XCTAssertLessThanOrEqual(both.meanNLL, (alone.meanNLL + other.meanNLL) / 2 + 1e-6)

        func sample(_ ensemble: ModelEnsemble, temperature: Float) throws -> [Int32] {
            var sampler = try Sampler(temperature: temperature, seed: 3)
            return try generate(ensemble: EnsembleSession(ensemble: ensemble), prompt: [tokens[0], tokens[1]], maxTokens: 40, sampler: &sampler)
        }
        var sampler = try Sampler(temperature: 0.9, seed: 3)
        let single = try generate(session: KVCacheSession(model: first), prompt: [tokens[0], tokens[1]], maxTokens: 40, sampler: &sampler)
        XCTAssertEqual(try sample(ModelEnsemble(members: [first]), temperature: 0.9), single)
        XCTAssertEqual(try sample(ModelEnsemble(members: [first, second], weights: [1, 0]), temperature: 0).count, 40)
        for weights: [Float] in [[1], [0, 0], [1, -1], [1, .nan]] {
            XCTAssertThrowsError(try ModelEnsemble(members: [first, second], weights: weights)) {
                XCTAssertEqual(($0 as? SettingError)?.setting, .teacherWeights, "\(weights)")
            }
        }
        XCTAssertThrowsError(try ModelEnsemble.parseWeights("1,x"))
        XCTAssertEqual(try ModelEnsemble.parseWeights("1, 3"), [1, 3])
    }

    /// A weighted ensemble teacher: weight 0 on the second member is the first teacher alone.
    func testWeightedEnsembleTeacher() throws {
        let teachers = try [31, 32].map { try ModelGradientTests.model(DistillationObjectiveTests.teacherConfig, seed: $0) }
        let student = try ModelGradientTests.model(DistillationObjectiveTests.studentConfig, seed: 33)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0, kd: 1)
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 1.5)
        var random = SeededRandom(seed: 2)
        let batch = Batch(batchSize: 2, contextLength: 5, inputs: (0..<10).map { _ in Int32(random.next() % 11) },
                          targets: (0..<10).map { _ in Int32(random.next() % 11) })
        let alone = try DistillationObjective(teacher: teachers[0], studentConfig: student.config, settings: settings, seed: 0)
        let weighted = try DistillationObjective(teachers: teachers, studentConfig: student.config, settings: settings, seed: 0,
                                                 teacherWeights: [2, 0])
        let equal = try DistillationObjective(teachers: teachers, studentConfig: student.config, settings: settings, seed: 0)
        let halves = try DistillationObjective(teachers: teachers, studentConfig: student.config, settings: settings, seed: 0,
                                               teacherWeights: [1, 1])
        XCTAssertEqual(try weighted.evaluate(model: student, batch: batch)[.kd]!, try alone.evaluate(model: student, batch: batch)[.kd]!,
                       accuracy: 1e-5)
        XCTAssertEqual(try halves.evaluate(model: student, batch: batch)[.kd]!, try equal.evaluate(model: student, batch: batch)[.kd]!,
                       accuracy: 1e-5)
    }
}
