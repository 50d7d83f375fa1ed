import Foundation
import XCTest
import Distill

/// One source of truth per concept in the model layer, and models that cannot be loaded wrong: the
/// tensor table, the shared forward, the activation size table, the strict config decoder, memory
/// checks before allocating, and loads that consume every tensor and refuse non-finite weights.
final class ModelHardeningTests: XCTestCase {
    // MARK: one table of tensors

    func testOneTensorTableDrivesTheLayoutAndTheCheckpointNames() throws {
        for tied in [true, false] {
            let config = LlamaConfig(hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3, numAttentionHeads: 4,
                                     numKeyValueHeads: 2, vocabSize: 20, maxPositionEmbeddings: 8, tieWordEmbeddings: tied)
            let table = LlamaTensors.table(for: config)
            let layout = ParameterLayout(config: config)
            XCTAssertEqual(layout.tensors.map(\.name), table.map(\.name))
            XCTAssertEqual(layout.tensors.map(\.shape), table.map(\.shape))
            XCTAssertEqual(layout.tensors.map(\.decays), table.map(\.decays))
            XCTAssertEqual(HFLlamaTensors.expectedShapes(for: config).map(\.name), table.map(\.name))
            XCTAssertEqual(HFLlamaTensors.expectedShapes(for: config).map(\.shape), table.map(\.shape))
            XCTAssertEqual(layout.count, table.reduce(0) { $0 + $1.count })
            XCTAssertEqual(layout.count, config.parameterCountEstimate)
            XCTAssertEqual(table.filter { !$0.decays }.map(\.role), [.attentionNorm, .mlpNorm, .attentionNorm, .mlpNorm,
                                                                     .attentionNorm, .mlpNorm, .finalNorm])
            XCTAssertEqual(table.contains { $0.role == .outputHead }, !tied)
            // The fused products read q/k/v and gate/up as one matrix each.
            for (layer, block) in layout.blocks.enumerated() {
                let names = LlamaTensors.layerPrefix(layer)
                let query = try XCTUnwrap(layout.tensor(named: names + "self_attn.q_proj.weight"))
                let key = try XCTUnwrap(layout.tensor(named: names + "self_attn.k_proj.weight"))
                let value = try XCTUnwrap(layout.tensor(named: names + "self_attn.v_proj.weight"))
                let up = try XCTUnwrap(layout.tensor(named: names + "mlp.up_proj.weight"))
                XCTAssertEqual(block.qkv, query.offset)
                XCTAssertEqual(key.offset, query.offset + query.count)
                XCTAssertEqual(value.offset, key.offset + key.count)
                XCTAssertEqual(up.offset, block.gateUp + config.intermediateSize * config.hiddenSize)
            }
            // Every table entry has a llama.cpp name, so the GGUF export can write every tensor.
            XCTAssertTrue(table.allSatisfy { GGUFExport.ggufName(forHF: $0.name) != nil })
        }
    }

    // MARK: one forward, with or without a cache

    /// Grouped-query heads, a context past the cache's first growth steps, and a long declared context
    /// that is never used: the cache path still equals the full forward.
    func testCachedForwardEqualsFullForwardWithGroupedHeadsAndAHugeDeclaredContext() throws {
        var config = LlamaConfig(hiddenSize: 16, intermediateSize: 20, numHiddenLayers: 2, numAttentionHeads: 4,
                                 numKeyValueHeads: 2, vocabSize: 13, maxPositionEmbeddings: 70)
        let model = try ModelGradientTests.model(config)
        let tokens: [Int32] = (0..<70).map { Int32(($0 * 5 + 2) % 13) }
        let full = Array(UnsafeBufferPointer(start: model.forward(tokens: tokens, batch: 1, length: 70, keepForBackward: false).logits,
                                             count: 70 * config.vocabSize))
        // The same weights in a model that declares a context of 2^40 positions (nothing is allocated by it).
        config.maxPositionEmbeddings = 1 << 40
        let long = try LlamaModel(config: config, parameters: UnsafeBufferPointer(model.parameters))
        for candidate in [model, long] {
            let session = KVCacheSession(model: candidate)
            var largest: Float = 0
            for (position, token) in tokens.enumerated() {
                try session.feed(token)
                for v in 0..<config.vocabSize {
                    largest = max(largest, abs(session.logits[v] - full[position * config.vocabSize + v]))
                }
            }
            XCTAssertLessThan(largest, 1e-4)
        }
        XCTAssertEqual(long.activationBytesHeld, 0, "the session keeps its own one-token buffers")
    }

    // MARK: activations from one size table

    func testActivationBytesAreTheBytesAllocated() throws {
        let config = LlamaConfig(hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 3, numAttentionHeads: 4,
                                 numKeyValueHeads: 2, vocabSize: 48, maxPositionEmbeddings: 8)
        let model = try LlamaModel(config: config, seed: 1)
        // Every buffer's size is a multiple of 16 floats here, so no padding enters the count.
        let batch = 2, length = 8, rows = batch * length, c = 16, f = 32, layers = 3, qkv = 16 + 2 * 2 * 4
        let threads = Compute.threads
        // Per block: qkv, the stream after attention, gate/up, two rstd rows and each attention row's
        // softmax maximum and 1/sum (no [T, T] probabilities). The attention output is not kept: forward
        // writes it into the SwiGLU buffer and backward again into gate/up's behind d qkv (2f ≥ qkv + c).
        let perBlock = rows * (qkv + c + 2 * f + 2) + batch * 4 * length * 2
        // An inference pass keeps one block's buffers, the attention output among them.
        let inferenceBlock = perBlock + rows * c
        // The residual stream, the final norm, the logits; the normed input and SwiGLU output that all
        // blocks share; attention's per-thread scratch: keys and values transposed [d, T'] and two blocks
        // of 16 rows [16, T'] (T' = T rounded up to 16), and 16 floats of slack.
        let attentionScratch = (2 * 4 + 2 * 16) * 16 + 16
        let shared = rows * c * (layers + 1) + rows * (c + 1 + config.vocabSize) + rows * (c + f) + threads * attentionScratch
        // Training keeps L of the L + 1 residual streams: block 0's input lives in block 1's stream after
        // attention (L ≥ 2), and backward copies the embedding rows again.
        let borrowedInput = rows * c
        // Backward's own scratch is d residual: d normed and d attention output live in the SwiGLU output's
        // buffer and d qkv in the block's gate/up while those are dead (f ≥ c, 2f ≥ qkv).
        let backward = rows * c
        let tokens = rows
        // Block 0 keeps no gate/up: it borrows block 1's and recomputes it in backward.
        let recomputedGateUp = rows * 2 * f
        let training = 4 * (layers * perBlock - recomputedGateUp + shared - borrowedInput + backward + tokens)
        let inference = 4 * (inferenceBlock + shared + tokens)
        XCTAssertEqual(model.activationBytes(batch: batch, length: length), Double(training))
        XCTAssertEqual(model.activationBytes(batch: batch, length: length, keepForBackward: false), Double(inference))
        let inputs = [Int32](repeating: 3, count: rows)
        // A pass that takes the head in chunks never allocates the whole logits.
        let chunked = try LlamaModel(config: config, seed: 1)
        chunked.forwardHidden(tokens: inputs, batch: batch, length: length)
        XCTAssertEqual(chunked.activationBytesHeld, training - 4 * rows * config.vocabSize)
        model.forward(tokens: inputs, batch: batch, length: length, keepForBackward: false)
        XCTAssertEqual(model.activationBytesHeld, inference)
        model.forward(tokens: inputs, batch: batch, length: length)
        XCTAssertEqual(model.activationBytesHeld, training)
        // Odd sizes are padded, in the estimate and in the allocation alike.
        model.forward(tokens: Array(inputs.prefix(5)), batch: 1, length: 5)
        XCTAssertEqual(Double(model.activationBytesHeld), model.activationBytes(batch: 1, length: 5))
    }

    // MARK: absurd sizes

    func testAbsurdSizesAreRefusedBeforeAllocatingNamingTheField() throws {
        let base = LlamaConfig(hiddenSize: 128, intermediateSize: 344, numHiddenLayers: 4, numAttentionHeads: 4,
                               vocabSize: 2048, maxPositionEmbeddings: 128)
        var cases: [(LlamaConfig, String)] = []
        var config = base; config.hiddenSize = 10_000_000; cases.append((config, "hidden_size 10000000"))
        config = base; config.intermediateSize = 1_000_000_000; cases.append((config, "intermediate_size 1000000000"))
        config = base; config.numHiddenLayers = 1_000_000; cases.append((config, "num_hidden_layers 1000000"))
        config = base; config.vocabSize = 1 << 40; cases.append((config, "vocab_size 1099511627776"))
        // Sizes whose products overflow Int must not trap.
        config = base; config.hiddenSize = 1 << 61; config.numAttentionHeads = 1; config.numKeyValueHeads = 1
        cases.append((config, "hidden_size 2305843009213693952"))
        for (config, field) in cases {
            assertThrows(try config.checkMemory(for: .inference, availableBytes: 24e9), mentioning: [field, "needs", "of weights", "this machine has 24 GB"])
            assertThrows(try LlamaModel(config: config, seed: 1), mentioning: ["invalid model config", field, "weights, gradients and optimizer state"])
        }
        let layers = base.with { $0.numHiddenLayers = 1_000_000 }
        assertThrows(try layers.checkMemory(for: .training, availableBytes: 24e9),
                     mentioning: ["num_hidden_layers 1000000 needs about 3.2 TB of weights, gradients and optimizer state; this machine has 24 GB"])
        // A model that fits for sampling but not for training is refused only for training.
        XCTAssertNoThrow(try base.checkMemory(for: .inference, availableBytes: 6e6))
        assertThrows(try base.checkMemory(for: .training, availableBytes: 6e6), mentioning: ["needs about"])
        // No single field to blame: all are named.
        let everything = base.with { $0.hiddenSize = 8192; $0.numAttentionHeads = 64; $0.intermediateSize = 28672; $0.numHiddenLayers = 80 }
        assertThrows(try everything.checkMemory(for: .inference, availableBytes: 1e9),
                     mentioning: ["this model (hidden_size 8192, intermediate_size 28672, num_hidden_layers 80, vocab_size 2048) needs about 271 GB of weights; this machine has 1.0 GB"])
    }

    // MARK: one strict config decoder

    private func config(_ extra: String) -> Data {
        Data(#"{"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 32\#(extra)}"#.utf8)
    }

    func testEveryConfigRouteIsStrict() throws {
        let refused: [(String, String)] = [
            (#", "model_type": "gpt2""#, "model_type is 'gpt2'"),
            (#", "hidden_act": "gelu""#, "hidden_act is gelu"),
            (#", "attention_bias": true"#, "attention_bias is true"),
            (#", "mlp_bias": true"#, "mlp_bias is true"),
            (#", "rope_scaling": {"type": "linear", "factor": 2.0}"#, "rope_scaling is {\"factor\": 2, \"type\": \"linear\"}"),
            (#", "rope_parameters": {"rope_type": "yarn", "factor": 4.0}"#, "rope_type yarn"),
            (#", "head_dim": 4"#, "head_dim is 4"),
            (#", "max_position_embeddings": 16.5"#, "max_position_embeddings is 16.5"),
            (#", "tie_word_embeddings": "yes""#, "tie_word_embeddings is yes"),
            (#", "rope_theta": -1"#, "rope_theta is -1.0"),
            (#", "rms_norm_eps": 1e99"#, "rms_norm_eps is inf"),
        ]
        for (extra, message) in refused {
            assertThrows(try LlamaConfig.decode(config(extra), source: "my.json"), mentioning: ["invalid model config: my.json: ", message])
            // The Codable route is the same decoder.
            assertThrows(try JSONDecoder().decode(LlamaConfig.self, from: config(extra)), mentioning: [message])
        }
        assertThrows(try LlamaConfig.decode(Data("[1, 2]".utf8), source: "list.json"), mentioning: ["list.json is not a JSON object"])
        assertThrows(try LlamaConfig.decode(Data(#"{"hidden_size": 16}"#.utf8), source: "x"), mentioning: ["'intermediate_size' is missing"])
        assertThrows(try LlamaConfig.read(from: URL(fileURLWithPath: "/nonexistent/config.json")), mentioning: ["/nonexistent/config.json"])

        // rope_theta is honoured wherever it is given.
        XCTAssertEqual(try LlamaConfig.decode(config(#", "rope_parameters": {"rope_theta": 500000, "rope_type": "default"}"#), source: "x").ropeTheta, 500000)
        XCTAssertEqual(try JSONDecoder().decode(LlamaConfig.self, from: config(#", "rope_parameters": {"rope_theta": 500000}"#)).ropeTheta, 500000)
        XCTAssertEqual(try LlamaConfig.decode(config(#", "rope_theta": 250000.0"#), source: "x").ropeTheta, 250000)
        // What transformers writes and what we write both decode, and what we encode reads back equal.
        let plain = try LlamaConfig.decode(config(#", "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "attention_bias": false, "rope_scaling": null, "head_dim": 8, "torch_dtype": "float32""#), source: "x")
        XCTAssertEqual(plain.headDim, 8)
        XCTAssertEqual(try LlamaConfig.decode(JSONEncoder().encode(plain), source: "x"), plain)
    }

    // MARK: loading consumes every tensor

    /// A model directory of `tinyLlama` weights (two layers), with `edit` applied to its config.json.
    private func directory(tied: Bool = true, tensors edit: (inout [SafetensorsTensor]) -> Void = { _ in },
                           config editConfig: (inout [String: Any]) -> Void = { _ in }) throws -> URL {
        let root = try makeTemporaryDirectory(self)
        let tokenizer = root.appendingPathComponent("t.model")
        try Data([1]).write(to: tokenizer)
        let (config, tensors) = tinyLlama(tied: tied)
        let directory = root.appendingPathComponent("model")
        try HFExport.write(config: config, tensors: tensors, tokenizerModel: tokenizer, specialTokens: tinySpecialTokens, to: directory)
        var stored = tensors
        edit(&stored)
        try SafetensorsFile.write(tensors: stored, to: directory.appendingPathComponent("model.safetensors"))
        let url = directory.appendingPathComponent("config.json")
        var fields = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        editConfig(&fields)
        try JSONSerialization.data(withJSONObject: fields).write(to: url)
        return directory
    }

    func testLoadingConsumesEveryTensor() throws {
        XCTAssertNoThrow(try ModelDirectory.load(directory()))
        let oneLayer = try directory(config: { $0["num_hidden_layers"] = 1 })
        assertThrows(try ModelDirectory.load(oneLayer), mentioning: ["'model.layers.1.input_layernorm.weight'", "9 such tensors",
                                                                     "num_hidden_layers 1", "do not belong to this config"])
        assertThrows(try HFModelDirectory(oneLayer).checkTensors(), mentioning: ["model.layers.1."])
        let extra = try directory(tensors: { $0.append(SafetensorsTensor(name: "model.rotary_emb.inv_freq", shape: [4], values: [1, 2, 3, 4])) })
        assertThrows(try ModelDirectory.load(extra), mentioning: ["'model.rotary_emb.inv_freq'", "not part of a Llama model"])
        let missing = try directory(tensors: { $0.removeAll { $0.name == "model.layers.1.mlp.down_proj.weight" } })
        assertThrows(try ModelDirectory.load(missing), mentioning: ["'model.layers.1.mlp.down_proj.weight'"])

        // A tied checkpoint may store its head, but only the embedding itself.
        let embedding = try XCTUnwrap(tinyLlama().tensors.first { $0.name == "model.embed_tokens.weight" })
        let sameHead = try directory(tensors: { $0.append(SafetensorsTensor(name: "lm_head.weight", shape: embedding.shape, values: embedding.values)) })
        XCTAssertNoThrow(try ModelDirectory.load(sameHead))
        let otherHead = try directory(tensors: { $0.append(SafetensorsTensor(name: "lm_head.weight", shape: embedding.shape, values: embedding.values.map { $0 + 1 })) })
        assertThrows(try ModelDirectory.load(otherHead), mentioning: ["ties lm_head.weight", "different lm_head.weight"])

        // The checkpoint a run resumes from is held to the same rule.
        let model = try ModelDirectory.load(directory())
        let file = try SafetensorsFile(url: extra.appendingPathComponent("model.safetensors"))
        assertThrows(try ModelDirectory.loadWeights(into: model, from: file), mentioning: ["'model.rotary_emb.inv_freq'"])
    }

    func testNonFiniteWeightsAreRefusedOnLoad() throws {
        let damaged = try directory(tensors: { tensors in
            let index = tensors.firstIndex { $0.name == "model.layers.0.mlp.up_proj.weight" }!
            var values = tensors[index].values
            values[0] = .nan; values[5] = .nan; values[7] = .nan
            tensors[index] = SafetensorsTensor(name: tensors[index].name, shape: tensors[index].shape, values: values)
        })
        assertThrows(try ModelDirectory.load(damaged),
                     mentioning: ["model.layers.0.mlp.up_proj.weight has 3 NaN values: the model is damaged; retrain or resume from an earlier checkpoint"])
        let infinite = try directory(tensors: { tensors in
            var values = tensors[0].values
            values[1] = .infinity; values[2] = -.infinity; values[3] = .nan
            tensors[0] = SafetensorsTensor(name: tensors[0].name, shape: tensors[0].shape, values: values)
        })
        assertThrows(try ModelDirectory.load(infinite), mentioning: ["model.embed_tokens.weight has 1 NaN and 2 infinite values"])
        let model = try ModelDirectory.load(directory())
        assertThrows(try ModelDirectory.loadWeights(into: model, from: SafetensorsFile(url: damaged.appendingPathComponent("model.safetensors"))),
                     mentioning: ["3 NaN values"])
    }

    // MARK: layers point one way

    /// Kernels know sizes, not configs; Model knows nothing of files, tokenizers or data (IO reads and
    /// writes models, never the other way round); Core knows no layer above it; the training loop knows
    /// no objective, run or evaluation by name; evaluation does not reach into training.
    func testLayersPointOneWay() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Distill")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: sources.path), "no sources beside the tests")
        func code(in folder: String) throws -> [(file: String, line: String)] {
            let directory = sources.appendingPathComponent(folder)
            return try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted().flatMap { name in
                try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
                    .split(separator: "\n").map { String($0) }
                    .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("//") }
                    .map { (name, $0) }
            }
        }
        let rules: [(folder: String, forbidden: [String])] = [
            ("Kernels", ["LlamaConfig", "LlamaModel", "ParameterLayout"]),
            ("Model", ["Safetensors", "HFModelDirectory", "HFExport", "HFLlamaTensors", "GGUF", "Tokenizer", "AtomicFile",
                       "MappedFile", "IOError", "ModelDirectory", "TokenFile", "Batch"]),
            // Core is under every layer; Training's loop knows objectives only by their protocol.
            ("Core", ["LlamaConfig", "LlamaModel", "Tokenizer", "TokenFile", "Trainer", "ModelDirectory", "Distillation"]),
            ("Training", ["TrainingRun", "DistillationObjective", "DistillationSettings", "TeacherCache", "scoreTokens",
                          "PerplexityReport", "ModelEnsemble"]),
            ("Evaluation", ["Trainer(", "TrainingRun", "Checkpoint"]),
        ]
        for rule in rules {
            for (file, line) in try code(in: rule.folder) {
                // A whole name, not the end of a longer one (`crossTokenizer` is not `Tokenizer`).
                for word in rule.forbidden
                where line.range(of: "(?<![A-Za-z0-9_])" + NSRegularExpression.escapedPattern(for: word), options: .regularExpression) != nil {
                    XCTFail("\(rule.folder)/\(file) uses \(word): \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
    }

    /// No two folders of the library use each other, directly or round a longer loop: the arrows between
    /// folders point one way (Core below everything, Kernels and Losses below Model and Training, ...).
    /// A folder uses another when its code names a type, or calls a top-level function, declared there
    /// (comments and string literals left out).
    func testFoldersFormNoCycle() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Distill")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: sources.path), "no sources beside the tests")
        let folders = try FileManager.default.contentsOfDirectory(atPath: sources.path).filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: sources.appendingPathComponent($0).path, isDirectory: &isDirectory) && isDirectory.boolValue
        }.sorted()
        let stripped = #/"(?:[^"\\\n]|\\.)*"|//[^\n]*/#
        var code: [String: String] = [:], declared: [String: String] = [:]  // folder → code; name → folder
        // Top-level declarations only (nested types such as CodingKeys repeat across folders).
        let typeDeclaration = try Regex(#"(?m)^(?:(?:public|internal|final|open|fileprivate|indirect)\s+)*(?:struct|enum|class|protocol|typealias|actor)\s+([A-Z]\w*)"#)
        let functionDeclaration = try Regex(#"(?m)^(?:(?:public|internal)\s+)*func\s+([a-z]\w*)"#)
        for folder in folders {
            let directory = sources.appendingPathComponent(folder)
            for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) where name.hasSuffix(".swift") {
                let text = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8).replacing(stripped, with: "\"\"")
                code[folder, default: ""] += text + "\n"
                for match in text.matches(of: typeDeclaration) { if let name = match.output[1].substring { declared[String(name)] = folder } }
                for match in text.matches(of: functionDeclaration) { if let name = match.output[1].substring { declared[String(name) + "("] = folder } }
            }
        }
        var uses: [String: Set<String>] = [:]
        var why: [String: String] = [:]
        for folder in folders {
            let words = Set(code[folder, default: ""].split { !($0.isLetter || $0.isNumber || $0 == "_") }.map(String.init))
            let calls = Set(code[folder, default: ""].matches(of: try Regex(#"([a-z]\w*)\("#)).compactMap { $0.output[1].substring.map { String($0) + "(" } })
            for (name, owner) in declared where owner != folder && (words.contains(name) || calls.contains(name)) {
                uses[folder, default: []].insert(owner)
                why["\(folder)→\(owner)"] = name
            }
        }
        // A cycle is a path from a folder back to itself.
        func path(from start: String, to goal: String, seen: inout Set<String>) -> [String]? {
            for next in uses[start, default: []].sorted() where !seen.contains(next) {
                if next == goal { return [start, goal] }
                seen.insert(next)
                if let rest = path(from: next, to: goal, seen: &seen) { return [start] + rest }
            }
            return nil
        }
        for folder in folders {
            var seen: Set<String> = []
            if let cycle = path(from: folder, to: folder, seen: &seen) {
                let steps = zip(cycle, cycle.dropFirst()).map { "\($0) → \($1) (\(why["\($0)→\($1)"] ?? "?"))" }
                XCTFail("folders in a cycle: " + steps.joined(separator: ", "))
            }
        }
    }
}

extension LlamaConfig {
    /// A copy with `change` applied.
    func with(_ change: (inout LlamaConfig) -> Void) -> LlamaConfig {
        var copy = self
        change(&copy)
        return copy
    }
}
