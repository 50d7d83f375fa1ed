import Foundation
import XCTest
import Distill

/// The command line on damaged or absurd models and configs: one line and a non-zero exit, never a crash
/// trace; and a long declared context that is never used costs nothing.
final class ModelCommandLineTests: XCTestCase {
    private var executable: URL { CommandLineTests.executable }

    override func setUpWithError() throws {
        try skipUnlessDistillIsBuilt()
    }

    private func run(_ arguments: [String]) throws -> ProcessResult { try runProcess(executable, arguments) }

    /// Fails unless the command exits non-zero with one "Error: ..." line containing every phrase.
    private func expectError(_ arguments: [String], mentions phrases: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try run(arguments)
        XCTAssertNotEqual(outcome.status, 0, "exit status for \(arguments)", file: file, line: line)
        let lines = outcome.errors.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(lines.count, 1, "stderr: \(outcome.errors)", file: file, line: line)
        for phrase in phrases {
            XCTAssertTrue(outcome.errors.contains(phrase), "'\(phrase)' not in: \(outcome.errors)", file: file, line: line)
        }
        XCTAssertFalse(outcome.errors.contains("Fatal error") || outcome.errors.contains("Stack dump"), outcome.errors, file: file, line: line)
    }

    private func expectSuccess(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try run(arguments)
        XCTAssertEqual(outcome.status, 0, "\(arguments): \(outcome.transcript)", file: file, line: line)
    }

    /// A small two-layer model directory for the test corpus's tokenizer.
    private func modelDirectory(in scratch: URL, named name: String, damage: ((LlamaModel) -> Void)? = nil) throws -> URL {
        let corpus = try TestCorpus.files()
        let config = LlamaConfig(hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2, numAttentionHeads: 2,
                                 vocabSize: 320, maxPositionEmbeddings: 32)
        let model = try LlamaModel(config: config, seed: 7)
        damage?(model)
        let directory = scratch.appendingPathComponent(name)
        try ModelDirectory.save(model, tokenizerModel: corpus.tokenizer, to: directory)
        return directory
    }

    /// A copy of `directory` whose config.json has `edit` applied.
    private func copy(_ directory: URL, as name: String, editing edit: (inout [String: Any]) -> Void) throws -> URL {
        let copy = directory.deletingLastPathComponent().appendingPathComponent(name)
        try FileManager.default.copyItem(at: directory, to: copy)
        let url = copy.appendingPathComponent("config.json")
        var fields = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&fields)
        try JSONSerialization.data(withJSONObject: fields).write(to: url)
        return copy
    }

    private func writeConfig(_ fields: [String: Any], to url: URL) throws -> String {
        var all: [String: Any] = ["hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "vocab_size": 320, "max_position_embeddings": 32]
        all.merge(fields) { _, new in new }
        try JSONSerialization.data(withJSONObject: all).write(to: url)
        return url.path
    }

    func testAbsurdSizesAreRefusedInOneLineEverywhere() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-absurd")
        let model = try modelDirectory(in: scratch, named: "model")
        let absurd: [(field: String, value: Int)] = [("hidden_size", 10_000_000), ("intermediate_size", 1_000_000_000),
                                                     ("num_hidden_layers", 1_000_000)]
        for (field, value) in absurd {
            let phrases = ["invalid model config", "\(field) \(value) needs", "this machine has"]
            let directory = try copy(model, as: "absurd-\(field)") { $0[field] = value; $0["head_dim"] = nil }
            try expectError(["sample", "--model", directory.path, "--max-tokens", "2"], mentions: phrases)
            try expectError(["export", "--model", directory.path, "--format", "gguf", "--output", scratch.appendingPathComponent("x.gguf").path],
                            mentions: phrases)
            try expectError(["student", "--teacher", directory.path, "--data", corpus.data, "--output", scratch.appendingPathComponent("s").path,
                             "--steps", "1", "--context", "16"], mentions: phrases)
            let config = try writeConfig([field: value], to: scratch.appendingPathComponent("\(field).json"))
            try expectError(["train", "--data", corpus.data, "--output", scratch.appendingPathComponent("t").path, "--config", config,
                             "--steps", "1", "--context", "16"], mentions: phrases)
            try expectError(["mutual", "--data", corpus.data, "--output", scratch.appendingPathComponent("m1").path,
                             "--peer-output", scratch.appendingPathComponent("m2").path, "--peer-config", config,
                             "--steps", "1", "--context", "16"], mentions: phrases)
        }
    }

    func testAHugeDeclaredContextIsNotAllocated() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-long-context")
        let model = try modelDirectory(in: scratch, named: "model")
        let long = try copy(model, as: "long") { $0["max_position_embeddings"] = 1_000_000_000 }
        try expectSuccess(["sample", "--model", long.path, "--prompt", "the king", "--max-tokens", "8", "--temperature", "0"])
        try expectSuccess(["export", "--model", long.path, "--format", "gguf", "--output", scratch.appendingPathComponent("long.gguf").path])
        let config = try writeConfig(["max_position_embeddings": 1_000_000_000], to: scratch.appendingPathComponent("long.json"))
        try expectSuccess(["train", "--data", corpus.data, "--output", scratch.appendingPathComponent("t").path, "--config", config,
                           "--steps", "1", "--batch-size", "1", "--context", "16", "--eval-batches", "1"])
    }

    func testAConfigThatDisagreesWithTheCheckpointIsRefused() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-disagree")
        let model = try modelDirectory(in: scratch, named: "model")
        let oneLayer = try copy(model, as: "one-layer") { $0["num_hidden_layers"] = 1 }
        let phrases = ["'model.layers.1.input_layernorm.weight'", "do not belong to this config"]
        try expectError(["sample", "--model", oneLayer.path, "--max-tokens", "2"], mentions: phrases)
        try expectError(["export", "--model", oneLayer.path, "--format", "hf", "--output", scratch.appendingPathComponent("hf").path],
                        mentions: phrases)
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent("hf").path), "nothing exported")
        try expectError(["eval", "--model", oneLayer.path, "--data", corpus.data], mentions: phrases)
    }

    func testNonFiniteWeightsAreRefusedOnLoad() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-nan")
        let damaged = try modelDirectory(in: scratch, named: "damaged") { model in
            let up = model.layout.tensor(named: "model.layers.0.mlp.up_proj.weight")!
            for i in [0, 10, 20] { model.parameters[up.offset + i] = .nan }
        }
        let phrases = ["model.layers.0.mlp.up_proj.weight has 3 NaN values: the model is damaged; retrain or resume from an earlier checkpoint"]
        try expectError(["sample", "--model", damaged.path, "--max-tokens", "2"], mentions: phrases)
        try expectError(["eval", "--model", damaged.path, "--data", corpus.data], mentions: phrases)
        try expectError(["export", "--model", damaged.path, "--format", "gguf", "--output", scratch.appendingPathComponent("x.gguf").path],
                        mentions: phrases)
        try expectError(["student", "--teacher", damaged.path, "--data", corpus.data, "--output", scratch.appendingPathComponent("s").path,
                         "--steps", "1", "--context", "16"], mentions: phrases)
    }

    func testConfigFlagGoesThroughTheStrictDecoder() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("cli-config")
        let refused: [([String: Any], String)] = [
            (["model_type": "gpt2"], "model_type is 'gpt2'"),
            (["hidden_act": "gelu"], "hidden_act is gelu"),
            (["attention_bias": true], "attention_bias is true"),
            (["rope_scaling": ["type": "linear", "factor": 2.0]], "rope_scaling is"),
        ]
        for (index, (fields, message)) in refused.enumerated() {
            let config = try writeConfig(fields, to: scratch.appendingPathComponent("bad\(index).json"))
            try expectError(["train", "--data", corpus.data, "--output", scratch.appendingPathComponent("t\(index)").path, "--config", config,
                             "--steps", "1", "--context", "16"], mentions: ["invalid model config", config, message])
        }
        // rope_parameters.rope_theta is honoured, and the saved model says so.
        let config = try writeConfig(["rope_parameters": ["rope_type": "default", "rope_theta": 500000.0]],
                                     to: scratch.appendingPathComponent("theta.json"))
        let output = scratch.appendingPathComponent("theta")
        try expectSuccess(["train", "--data", corpus.data, "--output", output.path, "--config", config,
                           "--steps", "1", "--batch-size", "1", "--context", "16", "--eval-batches", "1"])
        XCTAssertEqual(try HFModelDirectory.readConfig(in: output).ropeTheta, 500000)
    }
}
