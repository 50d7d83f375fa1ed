import XCTest
import Distill

/// `distill cache-teacher`, `eval --ensemble` and `sample` with several models from the command line.
final class CacheCommandLineTests: XCTestCase {
    override func setUpWithError() throws {
        try skipUnlessDistillIsBuilt()
    }

    private func distill(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CommandLineTests.executable, arguments)
    }

    /// Fails unless the command exits non-zero with one "Error: ..." line containing `phrase`.
    private func expectError(_ arguments: [String], mentions phrase: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try distill(arguments)
        XCTAssertNotEqual(result.status, 0, "exit status for \(arguments)", file: file, line: line)
        let lines = result.errors.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(lines.count, 1, "stderr: \(result.errors)", file: file, line: line)
        XCTAssertTrue(result.errors.localizedCaseInsensitiveContains(phrase), "'\(phrase)' not in: \(result.errors)", file: file, line: line)
        XCTAssertFalse(result.errors.contains("Fatal error") || result.errors.contains("Stack dump"), result.errors, file: file, line: line)
    }

    func testCacheTeacherEndToEndAndMistakes() throws {
        let files = try CacheFixture.files()
        let scratch = try TestCorpus.scratch("cli-cache")
        let output = scratch.appendingPathComponent("t.cache").path
        let teacher = files.teacherDirectory.path
        let built = try distill(["cache-teacher", "--teacher", teacher, "--data", files.data, "--output", output, "--temperature", "2",
                                 "--samples", "8", "--threads", "1"])
        XCTAssertEqual(built.status, 0, built.transcript)
        XCTAssertTrue(built.output.contains("bytes/token") && built.output.contains("tokens/s"), built.output)
        let cache = try TeacherCache(path: output)
        XCTAssertEqual(cache.mode, .samples(8))
        let again = try distill(["cache-teacher", "--teacher", teacher, "--data", files.data, "--output", output, "--temperature", "2",
                                 "--samples", "8"])
        XCTAssertEqual(again.status, 0, again.transcript)
        XCTAssertTrue(again.output.contains("already"), again.output)

        let other = scratch.appendingPathComponent("o.cache").path
        let base = ["cache-teacher", "--teacher", teacher, "--data", files.data, "--temperature", "2"]
        try expectError(base + ["--output", other, "--samples", "0"], mentions: "--samples")
        try expectError(base + ["--output", other, "--top-k", "0"], mentions: "--top-k")
        try expectError(base + ["--output", other, "--top-k", "100000"], mentions: "--top-k")
        try expectError(base + ["--output", other, "--top-k", "4", "--samples", "4"], mentions: "not both")
        try expectError(base + ["--output", other, "--teacher-weights", "1,1"], mentions: "weight")
        try expectError(base + ["--output", files.data], mentions: "would overwrite")
        try expectError(base + ["--output", output, "--samples", "4"], mentions: "already exists")
        try expectError(["cache-teacher", "--teacher", teacher, "--data", files.data, "--output", other, "--temperature", "0"],
                        mentions: "--temperature")
        XCTAssertFalse(FileManager.default.fileExists(atPath: other))
        // A teacher whose tokenizer is not the data's.
        let foreignTokenizer = scratch.appendingPathComponent("foreign.model").path
        let text = scratch.appendingPathComponent("foreign.txt")
        // Same size as the teacher's vocabulary (a smaller one is refused earlier), other text.
        try TestCorpus.grammarText(lines: 3000, seed: 43).write(to: text, atomically: true, encoding: .utf8)
        try Tokenizer.train(inputs: [text.path], vocabSize: 320, output: foreignTokenizer)
        let foreign = scratch.appendingPathComponent("foreign-teacher")
        try ModelDirectory.save(files.teacher, tokenizerModel: foreignTokenizer, to: foreign)
        try expectError(base + ["--output", other, "--teacher", foreign.path], mentions: "uses another tokenizer than")
        // Alone, it is not cached: its targets would be in another vocabulary; the message names the live way.
        try expectError(["cache-teacher", "--teacher", foreign.path, "--data", files.data, "--temperature", "2", "--output", other],
                        mentions: "--cross-tokenizer uld or alm")
        try expectError(["eval", "--data", files.data, "--ensemble", teacher, foreign.path], mentions: "different tokenizers")
        try expectError(["sample", "--model", teacher, "--model", foreign.path, "--max-tokens", "3"], mentions: "different tokenizers")
        // A damaged cache is refused in one line.
        var damaged = try Data(contentsOf: URL(fileURLWithPath: output))
        damaged.removeLast(5)
        let damagedPath = scratch.appendingPathComponent("damaged.cache")
        try damaged.write(to: damagedPath)
        XCTAssertThrowsError(try TeacherCache(path: damagedPath.path))
    }

    func testEnsembleEvalAndSample() throws {
        let files = try CacheFixture.files()
        let teacher = files.teacherDirectory.path
        let result = try distill(["eval", "--data", files.data, "--model", teacher, "--ensemble", teacher, teacher, "--json"])
        XCTAssertEqual(result.status, 0, result.transcript)
        let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        let rows = object?["models"] as? [[String: Any]] ?? []
        XCTAssertEqual(rows.count, 2)
        let single = rows.first?["perplexity"] as? Double ?? 0, ensemble = rows.last?["perplexity"] as? Double ?? -1
        XCTAssertEqual(single, ensemble, accuracy: 1e-3 * single)

        // A row per model and precision: the rounded weights score close to the f32 ones, not equal.
        let rounded = try distill(["eval", "--data", files.data, "--model", teacher, "--ensemble", teacher, teacher,
                                   "--precision", "f32", "q8_0", "--json"])
        XCTAssertEqual(rounded.status, 0, rounded.transcript)
        let roundedRows = (try JSONSerialization.jsonObject(with: Data(rounded.output.utf8)) as? [String: Any])?["models"]
            as? [[String: Any]] ?? []
        XCTAssertEqual(roundedRows.compactMap { $0["precision"] as? String }, ["f32", "q8_0", "f32", "q8_0"])
        XCTAssertEqual(roundedRows.first?["perplexity"] as? Double, single)
        let q8 = roundedRows[1]["perplexity"] as? Double ?? 0, q8Ensemble = roundedRows[3]["perplexity"] as? Double ?? -1
        XCTAssertNotEqual(q8, single)
        XCTAssertEqual(q8, single, accuracy: 0.02 * single)
        XCTAssertEqual(q8, q8Ensemble, accuracy: 1e-3 * q8)
        try expectError(["eval", "--data", files.data, "--model", teacher, "--precision", "q4"], mentions: "precision")
        try expectError(["eval", "--data", files.data, "--model", teacher, "--teacher-weights", "1"], mentions: "--ensemble")
        let one = try distill(["sample", "--model", teacher, "--max-tokens", "12", "--temperature", "0"])
        let two = try distill(["sample", "--model", teacher, "--model", teacher, "--teacher-weights", "1,3", "--max-tokens", "12", "--temperature", "0"])
        XCTAssertEqual(one.status, 0, one.transcript)
        XCTAssertEqual(two.status, 0, two.transcript)
        XCTAssertEqual(one.output, two.output, "two copies of a model sample as the model (greedy)")
    }

    /// `student --teacher-cache`, N-peer `mutual` and `generations` from the command line.
    func testCachedStudentMutualAndGenerationsCommands() throws {
        let files = try CacheFixture.files()
        let scratch = try TestCorpus.scratch("cli-runs")
        let cache = scratch.appendingPathComponent("t.cache").path
        let built = try distill(["cache-teacher", "--teacher", files.teacherDirectory.path, "--data", files.data, "--output", cache,
                                 "--temperature", "1.5", "--top-k", "8"])
        XCTAssertEqual(built.status, 0, built.transcript)
        let small = ["--preset", "tiny-student", "--context", "16", "--steps", "2", "--batch-size", "2", "--eval-batches", "1",
                     "--log-every", "1"]
        let student = scratch.appendingPathComponent("student").path
        let trained = try distill(["student", "--teacher-cache", cache, "--data", files.data, "--output", student] + small)
        XCTAssertEqual(trained.status, 0, trained.transcript)
        XCTAssertTrue(trained.errors.contains("teacher cache"), trained.errors)
        XCTAssertTrue(trained.output.contains("validation perplexity: student"), trained.output)
        let base = ["student", "--teacher-cache", cache, "--data", files.data, "--output", scratch.appendingPathComponent("s2").path] + small
        try expectError(base + ["--temperature", "2"], mentions: "--temperature")
        try expectError(base + ["--divergence", "tvd"], mentions: "--divergence")
        try expectError(base + ["--feature-weight", "1"], mentions: "--feature-weight")
        try expectError(base + ["--rkd-angle-weight", "1"], mentions: "--rkd-angle-weight")
        try expectError(base + ["--teacher", files.teacherDirectory.path], mentions: "not both")
        try expectError(["student", "--teacher", files.teacherDirectory.path, "--soft-cross-entropy", "--data", files.data,
                         "--output", scratch.appendingPathComponent("s3").path] + small, mentions: "--soft-cross-entropy")
        try expectError(["student", "--teacher-cache", files.data, "--data", files.data,
                         "--output", scratch.appendingPathComponent("s4").path] + small, mentions: "not a teacher cache")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent("s2").path + "/model.safetensors"))

        let peers = (1...3).map { scratch.appendingPathComponent("peer-\($0)").path }
        let mutual = try distill(["mutual", "--data", files.data, "--output", peers[0], "--peer-output", peers[1], "--peer-output", peers[2]] + small)
        XCTAssertEqual(mutual.status, 0, mutual.transcript)
        XCTAssertTrue(mutual.errors.contains("[3] "), mutual.errors)
        try expectError(["mutual", "--data", files.data, "--output", peers[0] + "x", "--peer-output", peers[1] + "x", "--peer-output",
                         peers[2] + "x", "--peer-preset", "tiny", "--peer-preset", "tiny", "--peer-preset", "tiny"] + small, mentions: "--peer-preset")

        let generations = scratch.appendingPathComponent("gens").path
        let run = try distill(["generations", "--data", files.data, "--output", generations, "--count", "2", "--teach-with", "all"] + small)
        XCTAssertEqual(run.status, 0, run.transcript)
        XCTAssertTrue(run.output.contains("ensemble") && run.output.contains("gen-2"), run.output)
        XCTAssertTrue(FileManager.default.fileExists(atPath: generations + "/generations.json"))
        try expectError(["generations", "--data", files.data, "--output", generations, "--count", "0"], mentions: "--count")
        try expectError(["generations", "--data", files.data, "--output", generations, "--count", "2"] + small, mentions: "already holds")
    }
}
