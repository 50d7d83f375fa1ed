import XCTest
import Distill

/// The `distill` executable on a user's mistakes: one clear line on stderr, a non-zero exit, never a
/// crash trace; and the main commands working end to end on the test corpus.
final class CommandLineTests: XCTestCase {
    static var executable: URL { distillExecutable }

    override func setUpWithError() throws {
        try skipUnlessDistillIsBuilt()
    }

    func testCorpusMistakes() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-corpus")
        let empty = scratch.appendingPathComponent("empty.txt"), binary = scratch.appendingPathComponent("binary.txt")
        XCTAssertTrue(FileManager.default.createFile(atPath: empty.path, contents: Data()))
        XCTAssertTrue(FileManager.default.createFile(atPath: binary.path, contents: Data([0x41, 0x00, 0xFF, 0x10, 0x00])))
        let output = scratch.appendingPathComponent("out.tok").path
        try expectError(["prepare", "--tokenizer", corpus.tokenizer, "--input", "/nonexistent/text.txt", "--output", output], mentions: "nonexistent")
        try expectError(["prepare", "--tokenizer", corpus.tokenizer, "--input", empty.path, "--output", output], mentions: "empty")
        try expectError(["prepare", "--tokenizer", corpus.tokenizer, "--input", binary.path, "--output", output], mentions: "binary")
        try expectError(["prepare", "--tokenizer", corpus.tokenizer, "--input", "-", "--output", output], mentions: "no text", input: "")
        try expectError(["tokenizer", "train", "--input", corpus.text.path, "--vocab-size", "100000",
                         "--output", scratch.appendingPathComponent("big.model").path], mentions: "--vocab-size")
        try expectError(["prepare", "--tokenizer", empty.path, "--input", corpus.text.path, "--output", output], mentions: "tokenizer")
    }

    func testModelAndTrainingMistakes() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-model")
        // A config whose heads do not divide the width.
        let config = scratch.appendingPathComponent("bad.json")
        try #"{"hidden_size": 30, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 320}"#
            .write(to: config, atomically: true, encoding: .utf8)
        try expectError(["train", "--data", corpus.data, "--output", scratch.appendingPathComponent("m").path,
                         "--config", config.path, "--steps", "1"], mentions: "divisible")
        try expectError(["train", "--data", corpus.data, "--output", scratch.appendingPathComponent("m").path,
                         "--preset", "huge", "--steps", "1"], mentions: "preset")
        try expectError(["train", "--data", corpus.text.path, "--output", scratch.appendingPathComponent("m").path], mentions: "token file")
        try expectError(["train", "--data", corpus.data, "--output", "/proc/distill-cannot-write", "--steps", "1"], mentions: "write")
        try expectError(["train", "--data", corpus.data, "--output", scratch.appendingPathComponent("huge").path,
                         "--preset", "tiny-student", "--context", "2000000", "--steps", "1"], mentions: "lower the batch size or the context")

        // A small trained model to break in various ways.
        let model = scratch.appendingPathComponent("model")
        let trained = try run(["train", "--data", corpus.data, "--output", model.path, "--preset", "tiny-student",
                               "--context", "32", "--steps", "3", "--batch-size", "2", "--eval-batches", "1"])
        XCTAssertEqual(trained.status, 0, trained.error)
        try expectError(["train", "--data", corpus.data, "--output", model.path, "--preset", "tiny-student",
                         "--context", "32", "--steps", "3"], mentions: "--resume")
        let longPrompt = String(repeating: "the king saw the city. ", count: 40)
        try expectError(["sample", "--model", model.path, "--prompt", longPrompt], mentions: "context")
        try expectError(["sample", "--model", model.path, "--temperature", "-1"], mentions: "temperature")
        try expectError(["sample", "--model", model.path, "--precision", "f64"], mentions: "precision")
        for precision in ["bf16", "q8_0"] {
            let reducedSample = try run(["sample", "--model", model.path, "--precision", precision, "--max-tokens", "5", "--temperature", "0"])
            XCTAssertEqual(reducedSample.status, 0, reducedSample.error)
        }
        // Several samples decoded in one batch: one block each, seeds SEED + i; greedy ones are all alike.
        let batch = try run(["sample", "--model", model.path, "--prompt", "the king", "--num-samples", "3", "--max-tokens", "6", "--seed", "4"])
        XCTAssertEqual(batch.status, 0, batch.error)
        XCTAssertEqual(batch.output.components(separatedBy: "--- sample ").count - 1, 3, batch.output)
        XCTAssertTrue(batch.output.contains("--- sample 3 (seed 6)"), batch.output)
        let greedy = try run(["sample", "--model", model.path, "--prompt", "the king", "--num-samples", "2", "--max-tokens", "6", "--temperature", "0"])
        let texts = greedy.output.components(separatedBy: "\n").filter { !$0.hasPrefix("--- sample") && !$0.isEmpty }
        XCTAssertEqual(texts.count, 2, greedy.output)
        XCTAssertEqual(Set(texts).count, 1, "greedy samples differ: \(texts)")
        // Decoded together from a reduced copy: the greedy text of `sample --precision` alone, twice.
        let reducedBatch = try run(["sample", "--model", model.path, "--prompt", "the king", "--num-samples", "2", "--max-tokens", "6",
                                    "--temperature", "0", "--precision", "q8_0"])
        XCTAssertEqual(reducedBatch.status, 0, reducedBatch.error)
        let reducedAlone = try run(["sample", "--model", model.path, "--prompt", "the king", "--max-tokens", "6", "--temperature", "0",
                                    "--precision", "q8_0"])
        let reducedTexts = reducedBatch.output.components(separatedBy: "\n").filter { !$0.hasPrefix("--- sample") && !$0.isEmpty }
        XCTAssertEqual(reducedTexts, Array(repeating: reducedAlone.output.trimmingCharacters(in: .newlines), count: 2), reducedBatch.output)
        try expectError(["sample", "--model", model.path, "--num-samples", "0"], mentions: "--num-samples")
        try expectError(["sample", "--model", model.path, "--num-samples", "2", "--max-tokens", "100"], mentions: "context")
        try expectError(["eval", "--model", scratch.path, "--text", corpus.text.path], mentions: "config.json")

        // Another tokenizer's data for this model.
        let otherTokenizer = scratch.appendingPathComponent("other.model").path
        let otherData = scratch.appendingPathComponent("other.tok").path
        XCTAssertEqual(try run(["tokenizer", "train", "--input", corpus.text.path, "--vocab-size", "300", "--output", otherTokenizer]).status, 0)
        XCTAssertEqual(try run(["prepare", "--tokenizer", otherTokenizer, "--input", corpus.text.path, "--output", otherData]).status, 0)
        try expectError(["eval", "--model", model.path, "--data", otherData], mentions: "tokenizer")
        try expectError(["student", "--teacher", model.path, "--data", otherData, "--output", scratch.appendingPathComponent("s").path],
                        mentions: "shared vocabulary")
        try expectError(["student", "--teacher", model.path, "--data", corpus.data, "--output", scratch.appendingPathComponent("s").path,
                         "--temperature", "0"], mentions: "temperature")
        try expectError(["student", "--teacher", model.path, "--data", corpus.data, "--output", scratch.appendingPathComponent("s").path,
                         "--feature-weight", "1", "--layer-map", "0:7"], mentions: "block")
        try expectError(["student", "--teacher", model.path, "--data", corpus.data, "--output", scratch.appendingPathComponent("s").path,
                         "--ce-weight", "0", "--kd-weight", "0"], mentions: "weight")
        try expectError(["student", "--teacher", model.path, "--data", corpus.data, "--output", scratch.appendingPathComponent("s").path,
                         "--kd-weight", "-1"], mentions: "weight")
        try expectError(["student", "--teacher", model.path, "--data", corpus.data, "--output", scratch.appendingPathComponent("s").path,
                         "--context", "32", "--batch-size", "2", "--rkd-angle-weight", "1", "--steps", "2"], mentions: "batch")

        // A truncated weights file.
        let weights = model.appendingPathComponent("model.safetensors")
        let bytes = try Data(contentsOf: weights)
        try bytes.prefix(bytes.count / 2).write(to: weights)
        try expectError(["eval", "--model", model.path, "--text", corpus.text.path], mentions: "model.safetensors")
    }

    func testMainCommandsEndToEnd() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-e2e")
        let teacher = scratch.appendingPathComponent("teacher").path
        let trained = try run(["train", "--data", corpus.data, "--output", teacher, "--preset", "tiny-student",
                               "--context", "32", "--steps", "20", "--batch-size", "4", "--eval-every", "10", "--log-every", "5"])
        XCTAssertEqual(trained.status, 0, trained.error)
        XCTAssertTrue(trained.error.contains("step 20/20"), trained.error)
        XCTAssertTrue(trained.error.contains("validation sample @20"), trained.error)
        let student = scratch.appendingPathComponent("student").path
        // The same teacher twice: an ensemble of two (which is the teacher itself).
        let distilled = try run(["student", "--teacher", teacher, "--teacher", teacher, "--data", corpus.data, "--output", student,
                                 "--config", Self.writeStudentConfig(in: scratch), "--context", "32", "--steps", "10",
                                 "--batch-size", "4", "--feature-weight", "1", "--rkd-distance-weight", "1", "--rkd-angle-weight", "2"])
        XCTAssertEqual(distilled.status, 0, distilled.error)
        XCTAssertTrue(distilled.output.contains("validation perplexity: teachers"), distilled.output)
        let greedy1 = try run(["sample", "--model", student, "--prompt", "the king", "--max-tokens", "12", "--temperature", "0"])
        let greedy2 = try run(["sample", "--model", student, "--prompt", "the king", "--max-tokens", "12", "--temperature", "0"])
        XCTAssertEqual(greedy1.status, 0, greedy1.error)
        XCTAssertEqual(greedy1.output, greedy2.output)
        XCTAssertTrue(greedy1.output.hasPrefix("the king"))
        let evaluated = try run(["eval", "--model", student, "--data", corpus.data, "--json"])
        XCTAssertEqual(evaluated.status, 0, evaluated.error)
        let report = try JSONSerialization.jsonObject(with: Data(evaluated.output.utf8)) as? [String: Any]
        XCTAssertGreaterThan(report?["perplexity"] as? Double ?? 0, 1)
        XCTAssertGreaterThan(report?["bits_per_byte"] as? Double ?? 0, 0)
    }

    static func writeStudentConfig(in directory: URL) throws -> String {
        let config = LlamaConfig(hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 1, numAttentionHeads: 2,
                                 vocabSize: 320, maxPositionEmbeddings: 32)
        let url = directory.appendingPathComponent("student.json")
        try JSONEncoder().encode(config).write(to: url)
        return url.path
    }
}

extension CommandLineTests {
    /// Ctrl-C during training saves a checkpoint and exits with 130; --resume continues from it.
    func testInterruptSavesAndResumeContinues() throws {
        let corpus = try TestCorpus.files()
        let output = try TestCorpus.scratch("cli-interrupt").appendingPathComponent("model").path
        let arguments = ["train", "--data", corpus.data, "--output", output, "--preset", "tiny-student", "--context", "32",
                         "--batch-size", "2", "--log-every", "1", "--eval-every", "0", "--save-every", "0"]
        // Wait for the first progress line, then interrupt.
        var (process, error, seen) = try startAndWaitForProgress(arguments + ["--steps", "1000000"], drain: false)
        process.interrupt()
        seen += error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let log = String(decoding: seen, as: UTF8.self)
        // Saved, then the status shells expect after Ctrl-C.
        XCTAssertEqual(process.terminationStatus, 130, log)
        XCTAssertTrue(log.contains("interrupted: saved step"), log)
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/training/state.json"))) as? [String: Any]
        let step = state?["step"] as? Int ?? 0
        XCTAssertGreaterThan(step, 0)
        let resumed = try run(arguments + ["--steps", String(step + 3), "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertTrue(resumed.error.contains("at step \(step) of"), resumed.error)
        XCTAssertTrue(resumed.error.contains("step \(step + 3)/\(step + 3)"), resumed.error)
    }
}
