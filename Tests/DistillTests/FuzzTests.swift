import Distill
import Foundation
import XCTest

/// Every reader of a file a user hands us, under the fuzzer of Fuzzing.swift. To add a reader, add
/// one line to `targets` and a folder of valid files under FuzzSeeds/<name>/ (`testWriteSeeds` shows
/// how the committed ones were made; it needs the `distill` executable for a training checkpoint).
enum FuzzTargets {
    static let targets: [FuzzTarget] = [
        FuzzTarget("safetensors", fileName: "model.safetensors", inputs: 30_000, read: readSafetensors),
        FuzzTarget("gguf", fileName: "model.gguf", inputs: 30_000, read: readGGUF),
        FuzzTarget("token-file", fileName: "data.tok", inputs: 30_000, read: readTokenFile),
        FuzzTarget("tokenizer", fileName: "tokenizer.model", inputs: 10_000, read: readTokenizer),
        FuzzTarget("config-json", fileName: "config.json", inputs: 20_000, read: readConfig),
        FuzzTarget("text", fileName: "text.txt", inputs: 10_000, read: readText),
        FuzzTarget("safetensors-index", fileName: "model.safetensors.index.json", inputs: 5_000, setUp: shardedModel, read: readModelDirectory),
        FuzzTarget("model-weights", fileName: "model.safetensors", inputs: 5_000, setUp: modelDirectory, read: readModelDirectory),
        FuzzTarget("state-json", fileName: "state.json", inputs: 10_000) { try Checkpoint.validateState(Data(contentsOf: $0)) },
        FuzzTarget("model-config", fileName: "config.json", inputs: 5_000, setUp: modelWeights, read: readModelDirectory),
    ]

    /// The seed tokenizer, loaded once: the text target encodes with it.
    static let seedTokenizer: Result<Tokenizer, Error> = Result {
        let folder = try XCTUnwrap(Bundle.module.url(forResource: "FuzzSeeds", withExtension: nil))
        return try Tokenizer(modelPath: folder.appendingPathComponent("tokenizer/unigram.model").path)
    }

    /// A text to evaluate or prepare: read, checked, encoded; what is accepted must round-trip.
    static func readText(_ url: URL) throws {
        let tokenizer = try seedTokenizer.get()
        let encoded = try EvaluationTokens(textFile: url.path, tokenizer: tokenizer)
        let text = try String(contentsOf: url, encoding: .utf8)
        guard encoded.bytes == text.utf8.count, tokenizer.decode(encoded.tokens) == text else {
            throw FuzzPropertyViolation(description: "text of \(text.utf8.count) bytes does not round-trip")
        }
    }

    /// A model directory as eval and sample load it: config, weights and tokenizer, checked together.
    static func readModelDirectory(_ url: URL) throws {
        let loaded = try ModelAndTokenizer(directory: url.deletingLastPathComponent())
        _ = loaded.model.parameterCount
    }

    /// The seed model's config and tokenizer, around fuzzed weights.
    static func modelDirectory(_ folder: URL) throws {
        let seeds = try XCTUnwrap(Bundle.module.url(forResource: "FuzzSeeds", withExtension: nil))
        for (name, source) in [("config.json", "model-directory/config.json"), ("tokenizer.model", "tokenizer/unigram.model")] {
            try Data(contentsOf: seeds.appendingPathComponent(source)).write(to: folder.appendingPathComponent(name))
        }
    }

    /// The seed model's weights and tokenizer, around a fuzzed config: the config's sizes must be checked
    /// against the weights (and memory) before anything is allocated by them.
    static func modelWeights(_ folder: URL) throws {
        let seeds = try XCTUnwrap(Bundle.module.url(forResource: "FuzzSeeds", withExtension: nil))
        for (name, source) in [("model.safetensors", "model-weights/model.safetensors"), ("tokenizer.model", "tokenizer/unigram.model")] {
            try Data(contentsOf: seeds.appendingPathComponent(source)).write(to: folder.appendingPathComponent(name))
        }
    }

    /// The seed model split into two shards beside its config and tokenizer, around a fuzzed index.
    static func shardedModel(_ folder: URL) throws {
        try modelDirectory(folder)
        let seeds = try XCTUnwrap(Bundle.module.url(forResource: "FuzzSeeds", withExtension: nil))
        for shard in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
            try Data(contentsOf: seeds.appendingPathComponent("model-directory/\(shard)")).write(to: folder.appendingPathComponent(shard))
        }
    }

    /// Opens the file and reads every tensor as the loaders do.
    static func readSafetensors(_ url: URL) throws {
        let file = try SafetensorsFile(url: url)
        for name in file.tensorNames {
            let info = try file.info(name)
            if ["F32", "F16", "BF16", "F64"].contains(info.dtype.rawValue) {
                _ = try file.floats(name)
            } else {
                _ = try? file.int64s(name)
                _ = try? file.int32s(name)
            }
        }
    }

    /// Opens the file, reads its metadata the way llama.cpp files are inspected, and every tensor.
    static func readGGUF(_ url: URL) throws {
        let file = try GGUFFile(url: url)
        for (_, value) in file.metadata {
            _ = value.intValue
            _ = value.stringValue
            _ = value.arrayValues?.count
        }
        for info in file.tensorInfos {
            _ = info.shape
            _ = try? file.floats(info.name)
        }
    }

    /// Opens the file and reads every id, both splits, as training and evaluation do.
    static func readTokenFile(_ url: URL) throws {
        let file = try TokenFile(path: url.path)
        try file.checkTokenRange()
        for split in DataSplit.allCases {
            let view = file.tokens(split)
            guard !view.isEmpty else { continue }
            var window = [Int32](repeating: 0, count: min(view.count, 16))
            window.withUnsafeMutableBufferPointer { view.copy(from: view.count - $0.count, into: $0) }
            _ = view[0]
        }
    }

    /// Loads the model and uses it: encode, decode, pieces.
    static func readTokenizer(_ url: URL) throws {
        let tokenizer = try Tokenizer(modelPath: url.path)
        let ids = tokenizer.encode("In the beginning ▁ 12 ünïcödé 😀\n")
        _ = tokenizer.decode(ids)
        let sample = (0..<min(tokenizer.vocabSize, 64)).map { Int32($0) } + [Int32(tokenizer.vocabSize - 1), -1, Int32.max]
        _ = tokenizer.decode(sample)
        for id in sample {
            _ = tokenizer.piece(for: id)
            _ = tokenizer.pieceType(for: id)
            _ = tokenizer.score(for: id)
        }
    }

    /// A config.json through the one strict decoder, as a `--config` file and as a model directory's.
    static func readConfig(_ url: URL) throws {
        let config = try LlamaConfig.read(from: url)
        _ = try HFModelDirectory.readConfig(in: url.deletingLastPathComponent())
        _ = config.headDim
    }
}

final class FuzzTests: XCTestCase {
    /// Runs every target; prints inputs, accepted inputs and time per target.
    func testEveryReaderSurvivesMutatedInputs() throws {
        var reports: [FuzzReport] = []
        for (index, target) in FuzzTargets.targets.enumerated() {
            reports.append(try FuzzHarness.run(target, seed: 0xD15_7111 + UInt64(index)))
        }
        for report in reports {
            print(String(format: "fuzz %@: %d inputs (%d read, the rest refused) in %.1f s, slowest input %.3f s",
                         report.target, report.inputs, report.accepted, report.seconds, report.slowestSeconds))
            // Most mutations must be refused, some read: otherwise the target is not reached.
            XCTAssertGreaterThan(report.accepted, 0, report.target)
            XCTAssertLessThan(report.accepted, report.inputs, report.target)
        }
        let total = reports.reduce(0) { $0 + $1.inputs }
        print(String(format: "fuzz total: %d inputs in %.1f s; data segment grew by at most %.1f MB in a target (limit %d MB)",
                     total, reports.reduce(0) { $0 + $1.seconds }, Double(FuzzHarness.peakDataGrowth) / 1e6, FuzzHarness.allocationLimit >> 20))
        XCTAssertGreaterThanOrEqual(total, 100_000)
    }

    /// The mutator is deterministic for a seed, so a failure found in CI repeats locally.
    func testMutationsRepeatForASeed() {
        let seeds: [[UInt8]] = [Array("{\"a\": [1, 2, 3]}".utf8), [UInt8](repeating: 7, count: 40)]
        var first = FuzzMutator(seeds: seeds, seed: 5), second = FuzzMutator(seeds: seeds, seed: 5)
        for _ in 0..<1000 { XCTAssertEqual(first.next(), second.next()) }
    }

    /// Writes the committed seed corpus into the source tree. Run by hand when a format changes:
    /// `DISTILL_WRITE_FUZZ_SEEDS=1 swift test --filter FuzzTests/testWriteSeeds`.
    func testWriteSeeds() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["DISTILL_WRITE_FUZZ_SEEDS"] != nil, "set DISTILL_WRITE_FUZZ_SEEDS to rewrite the seeds")
        let seeds = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FuzzSeeds")
        let scratch = try makeTemporaryDirectory(self)
        func folder(_ name: String) throws -> URL {
            let url = seeds.appendingPathComponent(name)
            try? FileManager.default.removeItem(at: url)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            return url
        }

        // Tokenizers: a small vocabulary (five letters and a few pieces), unigram and BPE.
        let tokenizers = try folder("tokenizer")
        let text = scratch.appendingPathComponent("text.txt")
        var random = SeededRandom(seed: 1)
        let words = ["abc", "bad", "cab", "dead", "bead", "ace", "a", "be"]
        let lines = (0..<80).map { _ in (0..<6).map { _ in words[Int(random.next() % UInt64(words.count))] }.joined(separator: " ") }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: text)
        for type in TokenizerModelType.allCases {
            try Tokenizer.train(inputs: [text.path], vocabSize: 272, modelType: type, output: tokenizers.appendingPathComponent("\(type.rawValue).model").path)
        }
        let tokenizer = try Tokenizer(modelPath: tokenizers.appendingPathComponent("unigram.model").path)

        // Token files: with and without a validation split; one with 4-byte ids, by hand.
        let tokens = try folder("token-file")
        let short = scratch.appendingPathComponent("short.txt")
        try Data(lines.prefix(6).joined(separator: "\n").utf8).write(to: short)
        try TokenFile.prepare(tokenizer: tokenizer, inputs: [short.path], output: tokens.appendingPathComponent("split.tok").path, valFraction: 0.3)
        try TokenFile.prepare(tokenizer: tokenizer, inputs: [short.path], output: tokens.appendingPathComponent("train-only.tok").path, valFraction: 0)
        for name in try FileManager.default.contentsOfDirectory(atPath: tokens.path) where name.hasSuffix(".tokenizer.model") {
            try FileManager.default.removeItem(at: tokens.appendingPathComponent(name))
        }
        var wide = Data("DSTLTOK\0".utf8)
        for value: UInt32 in [1, 4, 100_000, 0] { withUnsafeBytes(of: value.littleEndian) { wide.append(contentsOf: $0) } }
        for value: UInt64 in [0x1234, 6, 30, 4, 8] { withUnsafeBytes(of: value.littleEndian) { wide.append(contentsOf: $0) } }
        for id: UInt32 in [0, 99_999, 70_000, 5, 65_536, 1] { withUnsafeBytes(of: id.littleEndian) { wide.append(contentsOf: $0) } }
        try wide.write(to: tokens.appendingPathComponent("wide-ids.tok"))

        // Safetensors: every float width, integers, a scalar, an empty tensor, metadata.
        let safetensors = try folder("safetensors")
        let small = [SafetensorsTensor(name: "a.weight", shape: [2, 3], values: [1, -2, 0.5, 3e-8, 65504, -0]),
                     SafetensorsTensor(name: "b", shape: [4], values: [0.25, 1, 2, 3]),
                     SafetensorsTensor(name: "scalar", shape: [], values: [7]),
                     SafetensorsTensor(name: "empty", shape: [0, 5], values: [])]
        for dtype in FloatFormat.allCases {
            try SafetensorsFile.write(tensors: small, metadata: ["format": "pt"], to: safetensors.appendingPathComponent("\(dtype.rawValue).safetensors"), dtype: dtype)
        }
        let integers = #"{"ids":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},"mask":{"dtype":"U8","shape":[2,2],"data_offsets":[24,28]},"d":{"dtype":"F64","shape":[1],"data_offsets":[32,40]}}"#
        try writeRawSafetensors(header: integers, data: [5, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0,
                                                         1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F],
                                to: safetensors.appendingPathComponent("integers.safetensors"))

        // GGUF: a tiny model with its vocabulary, and metadata of every value type.
        let gguf = try folder("gguf")
        let tensors = [GGUFTensor(name: "token_embd.weight", shape: [4, 2], values: [1, 2, 3, 4, 5, 6, 7, 8], type: .f16),
                       GGUFTensor(name: "output_norm.weight", shape: [2], values: [1, 1]),
                       GGUFTensor(name: "blk.0.attn_q.weight", shape: [2, 2], values: [0.5, -0.5, 0.25, 1], type: .bf16)]
        let metadata: [(key: String, value: GGUFValue)] = [
            ("general.architecture", .string("llama")), ("general.name", .string("seed")), ("llama.block_count", .uint32(1)),
            ("llama.context_length", .uint32(8)), ("llama.embedding_length", .uint32(2)), ("llama.rope.freq_base", .float32(10000)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(1e-5)), ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .strings(["<unk>", "<s>", "</s>", "▁a"])), ("tokenizer.ggml.scores", .floats([0, 0, 0, -1])),
            ("tokenizer.ggml.token_type", .int32s([2, 3, 3, 1])), ("tokenizer.ggml.bos_token_id", .uint32(1)),
        ]
        try GGUFWriter(metadata: metadata, tensors: tensors).write(to: gguf.appendingPathComponent("model.gguf"))
        let everyType: [(key: String, value: GGUFValue)] = [
            ("u8", .uint8(200)), ("i8", .int8(-3)), ("u16", .uint16(60000)), ("i16", .int16(-300)), ("u32", .uint32(1 << 31)),
            ("i32", .int32(-5)), ("u64", .uint64(1 << 40)), ("i64", .int64(-1)), ("f32", .float32(0.5)), ("f64", .float64(-2.5)),
            ("bool", .bool(true)), ("string", .string("héllo")), ("empty", .array(.uint8, [])),
            ("nested", .array(.array, [.array(.int16, [.int16(1), .int16(2)]), .array(.int16, [])])),
        ]
        try GGUFWriter(metadata: everyType, tensors: [GGUFTensor(name: "t", shape: [3], values: [1, 2, 3])], alignment: 64)
            .write(to: gguf.appendingPathComponent("types.gguf"))

        // Texts: awkward lines, U+2581, CRLF, no final newline.
        let texts = try folder("text")
        try Data(TokenizerTests.awkwardTexts.joined(separator: "\n").utf8).write(to: texts.appendingPathComponent("awkward.txt"))
        try Data("bead ▁ cab\r\n▁▁a\n\n  dead\tace".utf8).write(to: texts.appendingPathComponent("symbols.txt"))
        try Data(lines.prefix(10).joined(separator: "\n").utf8).write(to: texts.appendingPathComponent("words.txt"))

        // A training checkpoint's state.json (from the command line: the training run is the CLI's).
        let states = try folder("state-json")
        let corpus = try TestCorpus.files()
        let run = scratch.appendingPathComponent("run")
        let trained = try self.run(["train", "--data", corpus.data, "--output", run.path, "--preset", "tiny-student", "--context", "16",
                                    "--steps", "2", "--batch-size", "2", "--eval-batches", "1"])
        XCTAssertEqual(trained.status, 0, trained.error)
        try FileManager.default.copyItem(at: run.appendingPathComponent("training/state.json"), to: states.appendingPathComponent("state.json"))

        // config.json: the transformers fixture, ours, and variants the strict reader accepts.
        let configs = try folder("config-json")
        let fixtures = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("llama-tied/config.json"), to: configs.appendingPathComponent("transformers.json"))
        let model = try LlamaModel(config: LlamaConfig(hiddenSize: 4, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 2,
                                                       vocabSize: tokenizer.vocabSize, maxPositionEmbeddings: 16), seed: 1)
        let saved = scratch.appendingPathComponent("model")
        try ModelDirectory.save(model, tokenizerModel: tokenizer.modelPath, to: saved)
        try FileManager.default.copyItem(at: saved.appendingPathComponent("config.json"), to: configs.appendingPathComponent("ours.json"))

        // A model directory's weights (with the tokenizer above), whole and in two shards with an index.
        let modelFolder = try folder("model-directory")
        let weightsFolder = try folder("model-weights")
        try FileManager.default.copyItem(at: saved.appendingPathComponent("config.json"), to: modelFolder.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: saved.appendingPathComponent("config.json"), to: try folder("model-config").appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: saved.appendingPathComponent("model.safetensors"), to: weightsFolder.appendingPathComponent("model.safetensors"))
        let named = ModelDirectory.tensors(of: model)
        let halves = [Array(named.prefix(named.count / 2)), Array(named.dropFirst(named.count / 2))]
        var weightMap: [String: String] = [:]
        for (index, half) in halves.enumerated() {
            let shard = "model-0000\(index + 1)-of-00002.safetensors"
            try SafetensorsFile.write(tensors: half, metadata: ["format": "pt"], to: modelFolder.appendingPathComponent(shard))
            for tensor in half { weightMap[tensor.name] = shard }
        }
        let index = try folder("safetensors-index")
        try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": weightMap], options: [.sortedKeys, .prettyPrinted])
            .write(to: index.appendingPathComponent("model.safetensors.index.json"))
        try Data(#"{"model_type":"llama","hidden_size":64,"intermediate_size":172,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":320,"max_position_embeddings":128,"rope_parameters":{"rope_type":"default","rope_theta":500000.0},"head_dim":16,"rms_norm_eps":1e-06,"tie_word_embeddings":true,"eos_token_id":[2,3]}"#.utf8)
            .write(to: configs.appendingPathComponent("nested-rope.json"))
        try Data(#"{"architectures":["LlamaForCausalLM"],"hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":300}"#.utf8)
            .write(to: configs.appendingPathComponent("minimal.json"))
    }
}
