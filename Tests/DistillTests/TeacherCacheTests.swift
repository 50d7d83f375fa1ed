import XCTest
import Distill

/// A small token file and a teacher with peaked, random weights, made once per test process.
enum CacheFixture {
    struct Files {
        let directory: URL
        let data: String
        let tokenizer: String
        let teacherDirectory: URL
        let teacher: LlamaModel
    }

    static let teacherConfig = LlamaConfig(hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 1, numAttentionHeads: 2,
                                           vocabSize: 320, maxPositionEmbeddings: 32)
    static let studentConfig = LlamaConfig(hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 1, numAttentionHeads: 2,
                                           vocabSize: 320, maxPositionEmbeddings: 32)

    static let shared: Result<Files, Error> = Result { try make() }
    static func files() throws -> Files { try shared.get() }

    private static func make() throws -> Files {
        let corpus = try TestCorpus.files()
        let directory = try TestCorpus.scratch("cache-fixture")
        let text = directory.appendingPathComponent("small.txt")
        try TestCorpus.grammarText(lines: 160, seed: 77).write(to: text, atomically: true, encoding: .utf8)
        let data = directory.appendingPathComponent("small.tok").path
        _ = try TokenFile.prepare(tokenizer: Tokenizer(modelPath: corpus.tokenizer), inputs: [text.path], output: data, valFraction: 0.25)
        let teacher = try ModelGradientTests.model(teacherConfig, seed: 5)
        let teacherDirectory = directory.appendingPathComponent("teacher")
        try ModelDirectory.save(teacher, tokenizerModel: corpus.tokenizer, to: teacherDirectory)
        return Files(directory: directory, data: data, tokenizer: corpus.tokenizer, teacherDirectory: teacherDirectory, teacher: teacher)
    }

    /// Builds a cache of the fixture's teacher into a fresh scratch file.
    static func build(_ settings: TeacherCacheSettings, teachers: [LlamaModel]? = nil, name: String = "cache",
                      shouldStop: @escaping () -> Bool = { false }) throws -> (path: String, summary: TeacherCacheSummary) {
        let files = try files()
        let path = try TestCorpus.scratch(name).appendingPathComponent("teacher.cache").path
        let summary = try TeacherCacheBuilder.build(teachers: teachers ?? [files.teacher], data: TokenFile(path: files.data), output: path,
                                                    settings: settings, shouldStop: shouldStop)
        return (path, summary)
    }

    /// A batch whose rows start at `starts` in the token file.
    static func batch(_ data: TokenFile, starts: [Int], length: Int) -> Batch {
        var inputs: [Int32] = [], targets: [Int32] = []
        for start in starts {
            for t in 0..<length {
                inputs.append(data.token(at: start + t))
                targets.append(data.token(at: start + t + 1))
            }
        }
        return Batch(batchSize: starts.count, contextLength: length, inputs: inputs, targets: targets, starts: starts)
    }
}

final class TeacherCacheTests: XCTestCase {
    /// Every position with history holds S samples as ascending distinct ids; the first window's records
    /// are exactly what the sampler draws from the teacher's own logits; split starts are empty.
    func testSampledCacheHoldsTheTeachersSamples() throws {
        let files = try CacheFixture.files()
        let data = try TokenFile(path: files.data)
        let (path, summary) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(16), temperature: 2, seed: 9))
        XCTAssertTrue(summary.complete)
        let cache = try TeacherCache(path: path)
        XCTAssertEqual(cache.tokenCount, data.tokenCount)
        XCTAssertEqual(cache.mode, .samples(16))
        XCTAssertEqual(cache.temperature, 2)
        XCTAssertEqual(cache.window, 32)
        XCTAssertLessThanOrEqual(summary.bytesPerToken, 64, "S = 16 must fit in 64 bytes per token")
        XCTAssertTrue(cache.target(at: 0).ids.isEmpty && cache.target(at: data.splitIndex).ids.isEmpty)
        for position in [1, 2, 500, data.splitIndex + 1, data.tokenCount - 1] {
            let target = cache.target(at: position)
            XCTAssertEqual(target.probabilities.reduce(0, +), 1, accuracy: 1e-6)
            XCTAssertEqual(target.ids, target.ids.sorted())
            XCTAssertEqual(Set(target.ids).count, target.ids.count)
        }
        // Window 0 reads tokens 0..<32 and predicts positions 1...32.
        let inputs = (0..<32).map { data.token(at: $0) }
        let logits = files.teacher.forward(tokens: inputs, batch: 1, length: 32, keepForBackward: false).logits
        for t in [0, 7, 31] {
            let expected = TeacherCacheBuilder.target(logits: logits + t * 320, vocab: 320, mode: .samples(16), temperature: 2,
                                                      seed: 9, position: t + 1)
            let stored = cache.target(at: t + 1)
            XCTAssertEqual(stored.ids, expected.ids)
            XCTAssertEqual(stored.probabilities, expected.values.map { $0 / 16 })
        }
        // Another seed draws other samples.
        let (other, _) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(16), temperature: 2, seed: 10))
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: other)), try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// The empirical distribution of S samples is an unbiased target: averaged over many seeds it
    /// approaches the teacher's tempered distribution (so does the KD gradient q − p̂ to q − p).
    func testSampledTargetMeanApproachesTeacherDistribution() throws {
        let files = try CacheFixture.files()
        let data = try TokenFile(path: files.data)
        let inputs = (0..<32).map { data.token(at: $0) }
        let logits = files.teacher.forward(tokens: inputs, batch: 1, length: 32, keepForBackward: false).logits + 5 * 320
        let tau: Float = 2
        let maximum = (0..<320).map { logits[$0] }.max()!
        let weights = (0..<320).map { exp(Double((logits[$0] - maximum) / tau)) }
        let teacher = weights.map { $0 / weights.reduce(0, +) }
        var mean = [Double](repeating: 0, count: 320)
        let seeds = 4000
        for seed in 0..<seeds {
            let target = TeacherCacheBuilder.target(logits: logits, vocab: 320, mode: .samples(4), temperature: tau,
                                                    seed: UInt64(seed), position: 6)
            for (id, count) in zip(target.ids, target.values) { mean[Int(id)] += Double(count) / 4 / Double(seeds) }
        }
        let largestError = zip(mean, teacher).map { abs($0 - $1) }.max()!
        let single = TeacherCacheBuilder.target(logits: logits, vocab: 320, mode: .samples(4), temperature: tau, seed: 1, position: 6)
        let singleError = (0..<320).map { id -> Double in
            let count = zip(single.ids, single.values).first { $0.0 == Int32(id) }?.1 ?? 0
            return abs(Double(count) / 4 - teacher[id])
        }.max()!
        print("sampled target: largest error of the mean of \(seeds) seeds \(largestError), of one seed \(singleError)")
        XCTAssertLessThan(largestError, 0.01)
        XCTAssertGreaterThan(singleError, 5 * largestError)
    }

    /// A top-K cache with K = the vocabulary is the teacher's whole distribution: the cached objective
    /// gives the live teacher's KD loss and gradient up to the 16-bit rounding of the stored probabilities.
    func testTopKOfWholeVocabularyGivesLiveTeacherLoss() throws {
        let files = try CacheFixture.files()
        let data = try TokenFile(path: files.data)
        let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: .topK(320), temperature: 2))
        let cache = try TeacherCache(path: path)
        XCTAssertEqual(cache.target(at: 3).rest, 0)
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0.5, kd: 1)
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 2)
        // Rows that start windows of the cache: the live teacher sees exactly the cached history.
        let batch = CacheFixture.batch(data, starts: [0, data.splitIndex], length: 32)
        let live = try DistillationObjective(teacher: files.teacher, studentConfig: CacheFixture.studentConfig, settings: settings, seed: 1)
        let cached = try CachedTeacherObjective(cache: cache, studentConfig: CacheFixture.studentConfig, settings: settings)
        let liveStudent = try ModelGradientTests.model(CacheFixture.studentConfig, seed: 3)
        let cachedStudent = try ModelGradientTests.model(CacheFixture.studentConfig, seed: 3)
        liveStudent.zeroGradients()
        cachedStudent.zeroGradients()
        let liveTerms = try live.trainStep(model: liveStudent, batch: batch, gradientScale: 1)
        let cachedTerms = try cached.trainStep(model: cachedStudent, batch: batch, gradientScale: 1)
        print("top-V cache: kd \(cachedTerms[.kd]!) live \(liveTerms[.kd]!)")
        XCTAssertEqual(cachedTerms[.ce]!, liveTerms[.ce]!, accuracy: 1e-6)
        XCTAssertEqual(cachedTerms[.kd]!, liveTerms[.kd]!, accuracy: 1e-3 * liveTerms[.kd]!)
        let a = Array(liveStudent.gradients!), b = Array(cachedStudent.gradients!)
        let difference = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
        let size = a.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
        XCTAssertLessThan(difference / size, 2e-3)
        // Validation reports the same terms as with a live teacher.
        let liveValidation = try live.evaluate(model: liveStudent, batch: batch)
        let cachedValidation = try cached.evaluate(model: cachedStudent, batch: batch)
        XCTAssertEqual(liveValidation.present.map(\.term), cachedValidation.present.map(\.term))
        XCTAssertEqual(cachedValidation[.kd]!, liveValidation[.kd]!, accuracy: 1e-3 * liveValidation[.kd]!)
    }

    /// The KD gradient of a cached target (samples, and top-K with a remaining mass; KL and soft CE)
    /// against central differences of the loss, with respect to the student's logits.
    func testCachedDistillationGradientAgainstFiniteDifferences() throws {
        let data = try TokenFile(path: try CacheFixture.files().data)
        for mode in [TeacherCacheMode.samples(8), .topK(5)] {
            let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: mode, temperature: 1.5))
            let cache = try TeacherCache(path: path)
            for loss in CachedTargetLoss.allCases {
                var settings = DistillationSettings()
                settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 1.5)
                let objective = try CachedTeacherObjective(cache: cache, studentConfig: CacheFixture.studentConfig,
                                                           settings: settings, loss: loss)
                let starts = [3, data.splitIndex + 2], length = 4, rows = 8, vocab = 320
                var random = SeededRandom(seed: 4)
                var logits = (0..<rows * vocab).map { _ in 2 * random.nextGaussian() }
                var gradient = [Float](repeating: 0, count: rows * vocab)
                let value = objective.cachedDistillationForwardBackward(dStudentLogits: &gradient, studentLogits: logits, positions: starts,
                                                                        length: length, rows: rows, vocab: vocab, gradientScale: 1)
                XCTAssertGreaterThan(value, 0)
                // The stored ids of a row, and some others.
                var entries: [Int] = []
                for row in [0, 5] {
                    let ids = cache.target(at: starts[row / length] + row % length + 1).ids
                    entries += ids.prefix(4).map { row * vocab + Int($0) } + [row * vocab + 7, row * vocab + 200]
                }
                for entry in entries {
                    let saved = logits[entry], h: Float = 1e-2
                    func loss(_ x: Float) -> Double {
                        logits[entry] = x
                        return objective.cachedDistillationForwardBackward(dStudentLogits: nil, studentLogits: logits, positions: starts,
                                                                           length: length, rows: rows, vocab: vocab, gradientScale: 1)
                    }
                    let numeric = (loss(saved + h) - loss(saved - h)) / Double(2 * h)
                    logits[entry] = saved
                    XCTAssertEqual(Double(gradient[entry]), numeric, accuracy: 2e-3 * max(abs(numeric), 1e-2), "\(mode) entry \(entry)")
                }
            }
        }
    }

    /// The objective end to end: CE + cached KD, its gradient reaching the student's weights (finite
    /// differences of the reported loss), on batches the sampler draws.
    func testCachedObjectiveWeightGradient() throws {
        let data = try TokenFile(path: try CacheFixture.files().data)
        let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: .topK(6), temperature: 2))
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: 0.6, kd: 1.4)
        settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 2)
        let objective = try CachedTeacherObjective(cache: TeacherCache(path: path), studentConfig: CacheFixture.studentConfig, settings: settings)
        var sampler = try BatchSampler(tokens: data.trainTokens, batchSize: 2, contextLength: 6, seed: 3)
        let batch = sampler.next()
        let student = try ModelGradientTests.model(CacheFixture.studentConfig, seed: 8)
        student.zeroGradients()
        let terms = try objective.trainStep(model: student, batch: batch, gradientScale: 1)
        func loss() throws -> Double {
            let t = try objective.evaluate(model: student, batch: batch)
            return 0.6 * t[.ce]! + 1.4 * t[.kd]!
        }
        XCTAssertEqual(try loss(), terms[.loss]!, accuracy: 1e-5)
        let gradients = Array(student.gradients!)
        var numeric: [Double] = [], exact: [Double] = []
        for index in stride(from: 0, to: student.parameterCount, by: max(1, student.parameterCount / 40)) {
            let pointer = student.parameters.baseAddress! + index, saved = pointer.pointee
            pointer.pointee = saved + 2e-3
            let up = try loss()
            pointer.pointee = saved - 2e-3
            let down = try loss()
            pointer.pointee = saved
            numeric.append((up - down) / 4e-3)
            exact.append(Double(gradients[index]))
        }
        let relative = relativeGradientError(numeric, exact)
        print("cached objective: relative gradient error \(relative)")
        XCTAssertLessThan(relative, 5e-3)
    }

    /// A build stopped (twice) and continued ends byte for byte as an uninterrupted one; the partial
    /// file is not a cache until then.
    func testInterruptedBuildResumesByteIdentical() throws {
        for mode in [TeacherCacheMode.samples(16), .topK(4)] {
            let settings = TeacherCacheSettings(mode: mode, temperature: 2, seed: 3)
            let (straight, _) = try CacheFixture.build(settings, name: "straight")
            let files = try CacheFixture.files()
            let data = try TokenFile(path: files.data)
            let path = try TestCorpus.scratch("resumed").appendingPathComponent("teacher.cache").path
            var calls = 0
            let first = try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: path, settings: settings,
                                                      shouldStop: { calls += 1; return calls > 3 })
            XCTAssertFalse(first.complete)
            XCTAssertFalse(FileManager.default.fileExists(atPath: path))
            XCTAssertThrowsError(try TeacherCache(path: path + ".partial")) { XCTAssertEqual($0 as? TeacherCacheError, .incomplete(path + ".partial")) }
            calls = 0
            let second = try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: path, settings: settings,
                                                       shouldStop: { calls += 1; return calls > 4 })
            XCTAssertFalse(second.complete)
            XCTAssertGreaterThan(second.resumedFrom, 0, "the first run committed whole blocks")
            let third = try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: path, settings: settings)
            XCTAssertTrue(third.complete)
            XCTAssertGreaterThan(third.resumedFrom, second.resumedFrom)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), try Data(contentsOf: URL(fileURLWithPath: straight)), "\(mode)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".partial"))
            // The same command again finds the finished cache and leaves it alone.
            let again = try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: path, settings: settings)
            XCTAssertTrue(again.alreadyBuilt)
        }
    }

    /// The sampler's random sequence is what it was (one draw per row); the rows' file positions are
    /// where their tokens come from.
    func testBatchStartsLeaveTheSamplerSequenceAlone() throws {
        let data = try TokenFile(path: try CacheFixture.files().data)
        for split in [data.trainTokens, data.validationTokens] {
            var sampler = try BatchSampler(tokens: split, batchSize: 3, contextLength: 5, seed: 11)
            var reference = SeededRandom(seed: 11)
            for _ in 0..<4 {
                let batch = sampler.next()
                XCTAssertEqual(batch.starts.count, 3)
                for (row, start) in batch.starts.enumerated() {
                    XCTAssertEqual(start - split.tokenRange.lowerBound, Int(reference.next() % UInt64(split.count - 5)))
                    for t in 0..<5 {
                        XCTAssertEqual(batch.inputs[row * 5 + t], data.token(at: start + t))
                        XCTAssertEqual(batch.targets[row * 5 + t], data.token(at: start + t + 1))
                    }
                }
            }
            XCTAssertEqual(sampler.random, reference)
        }
    }

    /// Ensembles: a weight of 0 leaves a member out; two copies of a teacher are that teacher; the cache
    /// of an ensemble of one is the teacher's cache.
    func testEnsembleTargets() throws {
        let files = try CacheFixture.files()
        let other = try ModelGradientTests.model(CacheFixture.teacherConfig, seed: 6)
        let (single, _) = try CacheFixture.build(TeacherCacheSettings(mode: .topK(8), temperature: 2))
        let (weighted, _) = try CacheFixture.build(TeacherCacheSettings(mode: .topK(8), temperature: 2, teacherWeights: [1, 0]),
                                                   teachers: [files.teacher, other])
        let (copies, _) = try CacheFixture.build(TeacherCacheSettings(mode: .topK(8), temperature: 2), teachers: [files.teacher, files.teacher])
        let (mixed, _) = try CacheFixture.build(TeacherCacheSettings(mode: .topK(8), temperature: 2), teachers: [files.teacher, other])
        let a = try TeacherCache(path: single), b = try TeacherCache(path: weighted), c = try TeacherCache(path: copies)
        let d = try TeacherCache(path: mixed)
        XCTAssertNotEqual(a.teacherHash, b.teacherHash)
        var differs = false
        for position in [1, 40, 300] {
            let x = a.target(at: position), y = b.target(at: position), z = c.target(at: position)
            XCTAssertEqual(x.ids, y.ids)
            XCTAssertEqual(x.ids, z.ids)
            for (p, q) in Array(zip(x.probabilities, y.probabilities)) + Array(zip(x.probabilities, z.probabilities)) {
                XCTAssertEqual(p, q, accuracy: 2e-3 * p + 1e-6)
            }
            differs = differs || d.target(at: position).ids != x.ids
        }
        XCTAssertTrue(differs, "a second teacher changes the target")
        XCTAssertThrowsError(try CacheFixture.build(TeacherCacheSettings(teacherWeights: [1]), teachers: [files.teacher, other])) {
            XCTAssertEqual(($0 as? SettingError)?.setting, .teacherWeights)
        }
    }
}
