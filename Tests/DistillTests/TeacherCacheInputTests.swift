import XCTest
import Distill

/// A teacher cache on bad input: damaged files, lying headers, caches of other data or settings, and
/// settings a cached target cannot serve: each refused with its error, nothing overwritten, no crash.
final class TeacherCacheInputTests: XCTestCase {
    private func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    private func write(_ bytes: [UInt8], name: String) throws -> String {
        let path = try TestCorpus.scratch(name).appendingPathComponent("bad.cache").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Which kind of error opening `bytes` gives (nil: it opened).
    private func openingError(_ bytes: [UInt8], name: String = "mutant") throws -> TeacherCacheError? {
        let path = try write(bytes, name: name)
        do {
            let cache = try TeacherCache(path: path)
            // Whatever opens must read back without trouble.
            for position in 0..<cache.tokenCount { _ = cache.target(at: position) }
            return nil
        } catch let error as TeacherCacheError {
            return error
        }
    }

    /// FNV-1a 64, as the cache's checksum uses it.
    private func fnv(_ hash: UInt64, _ bytes: ArraySlice<UInt8>) -> UInt64 {
        var hash = hash
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }

    /// Rewrites the checksums so that only the structural checks can catch a change.
    private func resealed(_ bytes: [UInt8]) -> [UInt8] {
        var bytes = bytes
        guard bytes.count >= 136 else { return bytes }
        let tokens = bytes[40..<48].withUnsafeBytes { Int(clamping: UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard tokens < 1 << 40 else { return bytes }
        let body = 128 + ((tokens + 255) / 256 + 1) * 8
        guard body <= bytes.count else { return bytes }
        var hash = fnv(0xCBF2_9CE4_8422_2325, bytes[0..<92])
        hash = fnv(hash, bytes[body...])
        withUnsafeBytes(of: hash.littleEndian) { bytes.replaceSubrange(104..<112, with: $0) }
        hash = fnv(hash, bytes[128..<body])
        withUnsafeBytes(of: hash.littleEndian) { bytes.replaceSubrange(112..<120, with: $0) }
        return bytes
    }

    func testDamagedCachesAreRefused() throws {
        let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(4), temperature: 2))
        let good = try bytes(path)
        XCTAssertNil(try openingError(good))
        XCTAssertNil(try openingError(resealed(good)), "resealing an intact file changes nothing")

        func kind(_ error: TeacherCacheError?) -> String {
            switch error {
            case .corrupt?: return "corrupt"
            case .notACache?: return "not a cache"
            case .unsupportedVersion?: return "version"
            case .incomplete?: return "incomplete"
            case nil: return "opened"
            default: return "other"
            }
        }
        XCTAssertEqual(kind(try openingError(Array(good.dropLast()))), "corrupt", "truncated by a byte")
        XCTAssertEqual(kind(try openingError(Array(good.prefix(100)))), "corrupt", "truncated in the header")
        XCTAssertEqual(kind(try openingError([])), "not a cache")
        XCTAssertEqual(kind(try openingError(Array("hello world, not a cache".utf8))), "not a cache")
        var flipped = good
        flipped[good.count - 10] ^= 0x40
        XCTAssertEqual(kind(try openingError(flipped)), "corrupt", "a flipped byte in a record")
        var version = good
        version[8] = 9
        XCTAssertEqual(kind(try openingError(version)), "version")
        var unfinished = good
        unfinished.replaceSubrange(112..<120, with: [UInt8](repeating: 0, count: 8))
        XCTAssertEqual(kind(try openingError(unfinished)), "incomplete")
        // Headers that lie about the sizes, with valid checksums: the structure gives them away.
        for (offset, value) in [(40, UInt64(1) << 36), (40, 3), (48, UInt64(1) << 50), (16, 0), (16, 70_000), (20, 0), (24, 4),
                                (28, 2), (96, 1)] as [(Int, UInt64)] {
            var lying = good
            if offset == 40 || offset == 48 || offset == 96 {
                withUnsafeBytes(of: value.littleEndian) { lying.replaceSubrange(offset..<offset + 8, with: $0) }
            } else {
                withUnsafeBytes(of: UInt32(value).littleEndian) { lying.replaceSubrange(offset..<offset + 4, with: $0) }
            }
            XCTAssertNotEqual(kind(try openingError(resealed(lying))), "opened", "field at \(offset) set to \(value)")
        }
        var directory = good
        directory[136] ^= 0x01
        XCTAssertEqual(kind(try openingError(resealed(directory))), "corrupt", "a directory entry that is off")
    }

    /// Seeded mutations (bytes changed, inserted, cut; with and without resealed checksums) of small
    /// caches of both modes: every one opens and reads back, or is refused with a cache error.
    func testSeededMutationsNeverCrash() throws {
        var random = SeededRandom(seed: 2024)
        for mode in [TeacherCacheMode.samples(3), .topK(2)] {
            let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: mode, temperature: 2))
            let good = try bytes(path)
            var refused = 0
            for trial in 0..<150 {
                var mutant = good
                for _ in 0..<(1 + Int(random.next() % 3)) {
                    let at = Int(random.next() % UInt64(mutant.count))
                    switch random.next() % 4 {
                    case 0: mutant[at] = UInt8(truncatingIfNeeded: random.next())
                    case 1: mutant[min(at, 127)] = UInt8(truncatingIfNeeded: random.next())
                    case 2: mutant.removeSubrange(at..<min(mutant.count, at + Int(random.next() % 64) + 1))
                    default: mutant.insert(UInt8(truncatingIfNeeded: random.next()), at: at)
                    }
                    if mutant.isEmpty { break }
                }
                if trial % 2 == 0 { mutant = resealed(mutant) }
                if try openingError(mutant, name: "mutant-\(trial)") != nil { refused += 1 }
            }
            XCTAssertGreaterThan(refused, 100, "\(mode): most mutations are refused")
        }
    }

    /// Caches of other data, another temperature or vocabulary, and settings a sparse target cannot serve.
    func testMismatchesAndUnsupportedSettingsAreRefused() throws {
        let files = try CacheFixture.files()
        let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(4), temperature: 2))
        let cache = try TeacherCache(path: path)
        try cache.check(against: TokenFile(path: files.data))
        // Another token file made with the same tokenizer.
        XCTAssertThrowsError(try cache.check(against: TokenFile(path: TestCorpus.files().data))) {
            guard case .mismatch(_, let what)? = $0 as? TeacherCacheError else { return XCTFail("\($0)") }
            XCTAssertTrue(what.contains("token file"), what)
        }
        func refusal(_ change: (inout DistillationSettings) -> Void, config: LlamaConfig = CacheFixture.studentConfig) -> String {
            var settings = DistillationSettings()
            settings.logits = LogitDistillation(divergence: .forwardKL, temperature: 2)
            change(&settings)
            do {
                _ = try CachedTeacherObjective(cache: cache, studentConfig: config, settings: settings)
                return "accepted"
            } catch { return "\(error)" }
        }
        XCTAssertEqual(refusal { _ in }, "accepted")
        XCTAssertTrue(refusal { $0.logits.temperature = 3 }.contains("holds distributions at τ = 2.0"))
        XCTAssertTrue(refusal { $0.logits.divergence = .reverseKL }.contains("needs the teacher's full distribution"))
        XCTAssertTrue(refusal { $0.logits.divergence = .jsd(beta: 0.5) }.contains("full distribution"))
        XCTAssertTrue(refusal { $0.logits.teacherTopK = 5 }.contains("teacher_top_k"))
        XCTAssertTrue(refusal { $0.weights.feature = 1 }.contains("hidden states"))
        XCTAssertTrue(refusal { $0.weights.rkdAngle = 1 }.contains("hidden states"))
        var wide = CacheFixture.studentConfig
        wide.vocabSize = 400
        XCTAssertTrue(refusal({ _ in }, config: wide).contains("vocabulary of 320"))
        // A batch outside the cache's positions (a batch of another token file).
        let objective = try CachedTeacherObjective(cache: cache, studentConfig: CacheFixture.studentConfig,
                                                   settings: { var s = DistillationSettings(); s.logits.temperature = 2; return s }())
        let student = try LlamaModel(config: CacheFixture.studentConfig, seed: 1)
        let outside = Batch(batchSize: 1, contextLength: 2, inputs: [1, 2], targets: [2, 3], starts: [cache.tokenCount - 2])
        XCTAssertThrowsError(try objective.evaluate(model: student, batch: outside)) { XCTAssertTrue($0 is TeacherCacheError) }
        let unplaced = Batch(batchSize: 1, contextLength: 2, inputs: [1, 2], targets: [2, 3])
        XCTAssertThrowsError(try objective.evaluate(model: student, batch: unplaced)) { XCTAssertTrue($0 is DistillationError) }
    }

    /// Builder settings out of range, an output that is an input or another file, and an unfinished build
    /// of other settings: refused, nothing overwritten.
    func testBadBuildsAreRefused() throws {
        let files = try CacheFixture.files()
        let data = try TokenFile(path: files.data)
        for (mode, setting) in [(TeacherCacheMode.samples(0), Setting.samples), (.topK(0), .topK), (.topK(321), .topK)] {
            XCTAssertThrowsError(try CacheFixture.build(TeacherCacheSettings(mode: mode))) {
                XCTAssertEqual(($0 as? SettingError)?.setting, setting, "\(mode): \($0)")
            }
        }
        XCTAssertThrowsError(try CacheFixture.build(TeacherCacheSettings(context: 33))) { XCTAssertEqual(($0 as? SettingError)?.setting, .context) }
        XCTAssertThrowsError(try CacheFixture.build(TeacherCacheSettings(temperature: 0))) { XCTAssertEqual(($0 as? SettingError)?.setting, .temperature) }
        // The output is the data, or an existing file that is not this cache.
        let before = try bytes(files.data)
        XCTAssertThrowsError(try TeacherCacheBuilder.build(teachers: [files.teacherDirectory.path], data: files.data, output: files.data,
                                                           settings: TeacherCacheSettings())) { XCTAssertTrue($0 is IOError, "\($0)") }
        XCTAssertEqual(try bytes(files.data), before)
        let scratch = try TestCorpus.scratch("cache-exists")
        let other = scratch.appendingPathComponent("notes.txt").path
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: other))
        XCTAssertThrowsError(try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: other, settings: TeacherCacheSettings())) {
            XCTAssertEqual($0 as? TeacherCacheError, .outputExists(other))
        }
        XCTAssertEqual(try String(contentsOfFile: other, encoding: .utf8), "keep me")
        // A finished cache of other settings at the output is not replaced.
        let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(4), temperature: 2))
        let cacheBytes = try bytes(path)
        XCTAssertThrowsError(try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: path,
                                                           settings: TeacherCacheSettings(mode: .samples(4), temperature: 3))) {
            XCTAssertEqual($0 as? TeacherCacheError, .outputExists(path))
        }
        XCTAssertEqual(try bytes(path), cacheBytes)
        // An unfinished build of another temperature is in the way.
        let partial = scratch.appendingPathComponent("t.cache").path
        var calls = 0
        _ = try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: partial,
                                          settings: TeacherCacheSettings(temperature: 2), shouldStop: { calls += 1; return calls > 3 })
        let partialBytes = try bytes(partial + ".partial")
        XCTAssertThrowsError(try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: partial,
                                                           settings: TeacherCacheSettings(temperature: 1.5))) {
            XCTAssertEqual($0 as? TeacherCacheError, .foreignPartial(partial + ".partial"))
        }
        XCTAssertEqual(try bytes(partial + ".partial"), partialBytes)
        // Another teacher cannot continue it either.
        let stranger = try ModelGradientTests.model(CacheFixture.teacherConfig, seed: 77)
        XCTAssertThrowsError(try TeacherCacheBuilder.build(teachers: [stranger], data: data, output: partial,
                                                           settings: TeacherCacheSettings(temperature: 2))) {
            XCTAssertEqual($0 as? TeacherCacheError, .foreignPartial(partial + ".partial"))
        }
        // The same build, damaged in its committed part, is called damaged, not "other settings" (bad-input
        // sweep 2, finding 15).
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: partial + ".partial"))
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size - 1)
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: size - 1)
        try handle.write(contentsOf: Data([byte[0] ^ 0xFF]))
        try handle.close()
        XCTAssertThrowsError(try TeacherCacheBuilder.build(teachers: [files.teacher], data: data, output: partial,
                                                           settings: TeacherCacheSettings(temperature: 2))) {
            guard case .damagedPartial(let path, _)? = $0 as? TeacherCacheError else { return XCTFail("\($0)") }
            XCTAssertEqual(path, partial + ".partial")
            XCTAssertTrue("\($0)".contains("damaged"), "\($0)")
        }
    }
}
