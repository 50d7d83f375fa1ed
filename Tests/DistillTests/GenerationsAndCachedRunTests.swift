import XCTest
import Distill

/// The runs built on `TrainingRun`: born-again generations, a student from a teacher cache, and their
/// resumes.
final class GenerationsAndCachedRunTests: XCTestCase {
    static func parameters(steps: Int) -> TrainingParameters {
        var p = TrainingParameters()
        p.steps = steps
        p.batchSize = 2
        p.learningRate = 3e-3
        p.warmupSteps = 1
        p.evalEvery = 0
        p.evalBatches = 1
        p.saveEvery = 0
        p.logEvery = 1
        return p
    }

    static func request(data: String, output: URL, steps: Int, context: Int = 16) -> TrainingRequest {
        var request = TrainingRequest(data: data, output: output.path)
        request.shape = .preset("tiny-student")
        request.context = context
        request.parameters = parameters(steps: steps)
        return request
    }

    private func weights(_ directory: URL) throws -> [Float] {
        // The model owns the buffer: keep it alive while the floats are copied.
        let model = try ModelDirectory.load(directory)
        return withExtendedLifetime(model) { Array(model.parameters) }
    }

    /// Generations stopped inside generation 2 and resumed end with exactly the weights of an
    /// uninterrupted run; the table holds every generation and the ensemble.
    func testGenerationsResumeAtTheGenerationAndStepReached() throws {
        let corpus = try TestCorpus.files()
        var settings = DistillationSettings()
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 2)
        func generations(_ root: URL, resume: Bool = false, teachers: GenerationTeachers = .all,
                         stop: @escaping (Int) -> Bool = { _ in false }) throws -> GenerationsOutcome {
            var training = Self.request(data: corpus.data, output: root, steps: 3)
            training.resume = resume
            var steps = 0
            return try BornAgain.run(GenerationsRequest(training: training, count: 3, settings: settings, teachers: teachers)) { k in
                TrainingCallbacks(event: { if case .step = $0 { steps += 1 } }, shouldStop: { stop(k) && steps >= 5 })
            }
        }
        let straightRoot = try TestCorpus.scratch("generations-straight")
        let straight = try generations(straightRoot)
        XCTAssertFalse(straight.interrupted)
        XCTAssertEqual(straight.table.map(\.name), ["gen-1", "gen-2", "gen-3", "ensemble"])
        XCTAssertTrue(straight.table.allSatisfy { $0.perplexity.isFinite && $0.bitsPerByte > 0 })
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: straightRoot.appendingPathComponent("generations.json"))) as? [String: Any]
        XCTAssertEqual((saved?["generations"] as? [Any])?.count, 4)
        XCTAssertNotEqual(straight.table[0].perplexity, straight.table[1].perplexity)

        let root = try TestCorpus.scratch("generations-resumed")
        let first = try generations(root, stop: { $0 == 2 })
        XCTAssertTrue(first.interrupted)
        XCTAssertEqual(first.generations.map(\.step), [3, 2], "stopped inside generation 2")
        XCTAssertThrowsError(try generations(root)) { XCTAssertTrue($0 is SettingError, "\($0)") }
        let resumed = try generations(root, resume: true)
        XCTAssertFalse(resumed.interrupted)
        for k in 1...3 {
            XCTAssertEqual(try weights(root.appendingPathComponent("gen-\(k)")), try weights(straightRoot.appendingPathComponent("gen-\(k)")),
                           "generation \(k)")
        }
        XCTAssertEqual(resumed.table, straight.table)
        // Generation 3 learns from generation 2 alone with `previous`: another run, another model.
        let previous = try generations(try TestCorpus.scratch("generations-previous"), teachers: .previous)
        XCTAssertEqual(previous.table[1], straight.table[1], "generation 2 has one earlier generation either way")
        XCTAssertNotEqual(previous.table[2], straight.table[2])

        var training = Self.request(data: corpus.data, output: try TestCorpus.scratch("generations-none"), steps: 1)
        training.resume = false
        XCTAssertThrowsError(try BornAgain.run(GenerationsRequest(training: training, count: 0, settings: settings)) { _ in TrainingCallbacks() }) {
            XCTAssertEqual(($0 as? SettingError)?.setting, .count)
        }
    }

    /// A student from a teacher cache through the shared path: trains without a teacher, resumes bit
    /// for bit, and refuses to resume with another cache; τ is the cache's when left out.
    func testCachedStudentRunResumesAndChecksItsCache() throws {
        let files = try CacheFixture.files()
        let (cachePath, _) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(8), temperature: 2, seed: 1))
        let (otherCache, _) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(8), temperature: 2, seed: 2))
        var settings = DistillationSettings()
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 7)
        var student = StudentRequest(teachers: [], settings: settings)
        student.teacherCache = cachePath
        student.temperatureGiven = false

        let straightDirectory = try TestCorpus.scratch("cached-straight")
        let straight = try TrainingRun.student(Self.request(data: files.data, output: straightDirectory, steps: 4), student,
                                               callbacks: TrainingCallbacks())
        XCTAssertEqual(straight.step, 4)

        let directory = try TestCorpus.scratch("cached-resumed")
        var steps = 0
        let stopped = try TrainingRun.student(Self.request(data: files.data, output: directory, steps: 4), student,
                                              callbacks: TrainingCallbacks(event: { if case .step = $0 { steps += 1 } },
                                                                           shouldStop: { steps >= 2 }))
        XCTAssertTrue(stopped.interrupted)
        var resume = Self.request(data: files.data, output: directory, steps: 4)
        resume.resume = true
        var other = student
        other.teacherCache = otherCache
        XCTAssertThrowsError(try TrainingRun.student(resume, other, callbacks: TrainingCallbacks())) {
            XCTAssertTrue("\($0)".contains(Setting.teacherCache.rawValue), "\($0)")
        }
        let resumed = try TrainingRun.student(resume, student, callbacks: TrainingCallbacks())
        XCTAssertEqual(resumed.step, 4)
        XCTAssertEqual(try weights(directory), try weights(straightDirectory))

        // Settings the cache cannot serve.
        var hot = student
        hot.temperatureGiven = true
        XCTAssertThrowsError(try TrainingRun.student(Self.request(data: files.data, output: try TestCorpus.scratch("cached-hot"), steps: 1),
                                                     hot, callbacks: TrainingCallbacks())) {
            XCTAssertEqual(($0 as? SettingError)?.setting, .temperature)
        }
        var featured = student
        featured.settings.weights.feature = 1
        XCTAssertThrowsError(try TrainingRun.student(Self.request(data: files.data, output: try TestCorpus.scratch("cached-feature"), steps: 1),
                                                     featured, callbacks: TrainingCallbacks())) {
            XCTAssertEqual(($0 as? SettingError)?.setting, .featureWeight)
        }
        var both = student
        both.teachers = [files.teacherDirectory.path]
        XCTAssertThrowsError(try TrainingRun.student(Self.request(data: files.data, output: try TestCorpus.scratch("cached-both"), steps: 1),
                                                     both, callbacks: TrainingCallbacks())) {
            XCTAssertEqual(($0 as? SettingError)?.setting, .teacherCache)
        }
        // The cache of another token file.
        let corpus = try TestCorpus.files()
        XCTAssertThrowsError(try TrainingRun.student(Self.request(data: corpus.data, output: try TestCorpus.scratch("cached-other"), steps: 1),
                                                     student, callbacks: TrainingCallbacks())) {
            guard case .mismatch? = $0 as? TeacherCacheError else { return XCTFail("\($0)") }
        }
    }

    /// Three peers through the shared path; two peers resume as the two-peer `mutual` always did.
    func testThreePeerMutualRun() throws {
        let corpus = try TestCorpus.files()
        var settings = DistillationSettings()
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 2)
        let peers = try (0..<3).map { Self.request(data: corpus.data, output: try TestCorpus.scratch("peer-\($0)"), steps: 2) }
        let outcomes = try TrainingRun.mutual(peers, settings: settings, callbacks: peers.map { _ in TrainingCallbacks() })
        XCTAssertEqual(outcomes.map(\.step), [2, 2, 2])
        XCTAssertThrowsError(try TrainingRun.mutual([peers[0]], settings: settings, callbacks: [TrainingCallbacks()]))
    }
}
