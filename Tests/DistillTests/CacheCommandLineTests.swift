import XCTest
import Distill

/// `distill cache-teacher`, `eval --ensemble` and `sample` with several models from the command line.
final class CacheCommandLineTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: CommandLineTests.executable.path),
                          "the distill executable was not built next to the tests")
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
        try TestCorpus.grammarText(lines: 3000, seed: 42).write(to: text, atomically: true, encoding: .utf8)
        try Tokenizer.train(inputs: [text.path], vocabSize: 300, output: foreignTokenizer)
        let foreign = scratch.appendingPathComponent("foreign-teacher")
        try ModelDirectory.save(files.teacher, tokenizerModel: foreignTokenizer, to: foreign)
        try expectError(base + ["--output", other, "--teacher", foreign.path], mentions: "different tokenizers")
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
        try expectError(["eval", "--data", files.data, "--model", teacher, "--teacher-weights", "1"], mentions: "--ensemble")
        let one = try distill(["sample", "--model", teacher, "--max-tokens", "12", "--temperature", "0"])
        let two = try distill(["sample", "--model", teacher, "--model", teacher, "--teacher-weights", "1,3", "--max-tokens", "12", "--temperature", "0"])
        XCTAssertEqual(one.status, 0, one.transcript)
        XCTAssertEqual(two.status, 0, two.transcript)
        XCTAssertEqual(one.output, two.output, "two copies of a model sample as the model (greedy)")
    }
}
