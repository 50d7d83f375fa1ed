import Foundation
import XCTest
import Distill

/// Lines of made-up words from a seeded generator: a text a tokenizer can be trained on in a moment.
func generatedText(lines: Int, seed: UInt64) -> String {
    let syllables = ["ka", "lo", "mi", "nu", "te", "ra", "so", "vi", "de", "an", "or", "ul", "ex", "qua", "zy", "ph", "the", "ing"]
    var random = SeededRandom(seed: seed)
    var text = ""
    for _ in 0..<lines {
        var words: [String] = []
        for _ in 0..<(4 + Int(random.next() % 9)) {
            let length = 1 + Int(random.next() % 3)
            words.append((0..<length).map { _ in syllables[Int(random.next() % UInt64(syllables.count))] }.joined())
        }
        if random.next() % 4 == 0 { words.append(String(random.next() % 1000)) }
        text += words.joined(separator: " ") + (random.next() % 3 == 0 ? "." : ",") + "\n"
    }
    return text
}

/// A model directory written by `ModelDirectory.save`: a SentencePiece tokenizer trained on generated text
/// (vocabulary 300) and a tiny random model whose vocabulary is `vocabPadding` rows larger. Its weight
/// matrices are `weightScale` times the usual N(0, 0.02²), so that a larger scale gives logits far from uniform.
func makeTinyModelDirectory(in root: URL, tied: Bool = true, vocabPadding: Int = 0, weightScale: Float = 1,
                            seed: UInt64 = 3) throws
    -> (directory: URL, model: LlamaModel, tokenizer: Tokenizer, text: URL) {
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    let text = root.appendingPathComponent("text.txt")
    try Data(generatedText(lines: 600, seed: seed).utf8).write(to: text)
    let tokenizerPath = root.appendingPathComponent("tokenizer.model").path
    _ = try Tokenizer.train(inputs: [text.path], vocabSize: 300, output: tokenizerPath)
    let tokenizer = try Tokenizer(modelPath: tokenizerPath)
    let config = LlamaConfig(hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 2, numAttentionHeads: 4,
                             numKeyValueHeads: 2, vocabSize: tokenizer.vocabSize + vocabPadding,
                             maxPositionEmbeddings: 64, tieWordEmbeddings: tied)
    let model = try LlamaModel(config: config, seed: seed)
    // Unit norm gains would hide a swapped norm; vary them.
    var random = SeededRandom(seed: seed + 1)
    for tensor in model.layout.tensors {
        for i in tensor.offset..<(tensor.offset + tensor.count) {
            model.parameters[i] = tensor.decays ? weightScale * model.parameters[i] : 1 + 0.2 * random.nextGaussian()
        }
    }
    let directory = root.appendingPathComponent("model")
    try ModelDirectory.save(model, tokenizerModel: tokenizerPath, to: directory)
    return (directory, model, tokenizer, text)
}

final class ModelExportTests: XCTestCase {
    func testHFExportReadsBackBitwise() throws {
        let root = try makeTemporaryDirectory(self)
        for tied in [true, false] {
            let source = try makeTinyModelDirectory(in: root.appendingPathComponent("tied-\(tied)"), tied: tied)
            let output = root.appendingPathComponent("hf-\(tied)")
            try ModelExport.export(modelAt: source.directory, format: .hf, to: output)
            let loaded = try ModelDirectory.load(output)
            XCTAssertEqual(loaded.config, source.model.config)
            XCTAssertEqual(Array(loaded.parameters).map(\.bitPattern), Array(source.model.parameters).map(\.bitPattern))
            XCTAssertEqual(try Data(contentsOf: output.appendingPathComponent("tokenizer.model")),
                           try Data(contentsOf: source.directory.appendingPathComponent("tokenizer.model")))

            // Half precision: the same model up to f16 rounding (relative 2^-11 of each weight).
            let half = root.appendingPathComponent("hf16-\(tied)")
            try ModelExport.export(modelAt: source.directory, format: .hf, to: half, dtype: .f16)
            let rounded = try ModelDirectory.load(half)
            for (a, b) in zip(rounded.parameters, source.model.parameters) {
                XCTAssertLessThanOrEqual(abs(a - b), abs(b) * 0x1p-11 + 1e-7)
            }
        }
    }

    func testGGUFExportHasLlamaMetadataVocabularyAndTensors() throws {
        let root = try makeTemporaryDirectory(self)
        // Untied, and four embedding rows beyond the tokenizer: they become unused placeholder pieces.
        let source = try makeTinyModelDirectory(in: root, tied: false, vocabPadding: 4)
        let config = source.model.config, tokenizer = source.tokenizer
        let url = root.appendingPathComponent("out/model.gguf")
        try ModelExport.export(modelAt: source.directory, format: .gguf, to: url)
        let file = try GGUFFile(url: url)

        XCTAssertEqual(file.value("general.architecture"), .string("llama"))
        XCTAssertEqual(file.value("general.name"), .string("model"))
        XCTAssertEqual(file.value("general.file_type"), .uint32(0))
        let sizes = ["llama.block_count": config.numHiddenLayers, "llama.embedding_length": config.hiddenSize,
                     "llama.feed_forward_length": config.intermediateSize, "llama.attention.head_count": config.numAttentionHeads,
                     "llama.attention.head_count_kv": config.numKeyValueHeads, "llama.context_length": config.maxPositionEmbeddings,
                     "llama.rope.dimension_count": config.headDim, "llama.vocab_size": config.vocabSize]
        for (key, value) in sizes { XCTAssertEqual(file.value(key)?.intValue, value, key) }
        XCTAssertEqual(file.value("llama.attention.layer_norm_rms_epsilon"), .float32(config.rmsNormEps))
        XCTAssertEqual(file.value("llama.rope.freq_base"), .float32(config.ropeTheta))
        XCTAssertEqual(file.value("tokenizer.ggml.model"), .string("llama"))
        XCTAssertEqual(file.value("tokenizer.ggml.bos_token_id")?.intValue, Int(tokenizer.bosId))
        XCTAssertEqual(file.value("tokenizer.ggml.eos_token_id")?.intValue, Int(tokenizer.eosId))
        XCTAssertEqual(file.value("tokenizer.ggml.unknown_token_id")?.intValue, Int(tokenizer.unkId))

        let tokens = try XCTUnwrap(file.value("tokenizer.ggml.tokens")?.arrayValues).compactMap(\.stringValue)
        let types = try XCTUnwrap(file.value("tokenizer.ggml.token_type")?.arrayValues).compactMap(\.intValue)
        let scores = try XCTUnwrap(file.value("tokenizer.ggml.scores")?.arrayValues)
        XCTAssertEqual(tokens.count, config.vocabSize)
        XCTAssertEqual(types.count, config.vocabSize)
        XCTAssertEqual(scores.count, config.vocabSize)
        let expectedTypes: [PieceType: Int] = [.normal: 1, .unknown: 2, .control: 3, .userDefined: 4, .unused: 5, .byte: 6]
        for id in 0..<tokenizer.vocabSize {
            XCTAssertEqual(tokens[id], tokenizer.piece(for: Int32(id)), "piece \(id)")
            XCTAssertEqual(scores[id], .float32(tokenizer.score(for: Int32(id)) ?? .nan), "score \(id)")
            XCTAssertEqual(types[id], tokenizer.pieceType(for: Int32(id)).flatMap { expectedTypes[$0] }, "type \(id)")
        }
        XCTAssertEqual(types.filter { $0 == 6 }.count, 256, "byte fallback pieces")
        XCTAssertEqual(Array(tokens[tokenizer.vocabSize...]), (tokenizer.vocabSize..<config.vocabSize).map { "[PAD\($0)]" })
        XCTAssertEqual(Array(types[tokenizer.vocabSize...]), [5, 5, 5, 5])

        // One GGUF tensor per weight, same shapes; values bitwise (q and k rows in llama.cpp's rotary order).
        XCTAssertEqual(file.tensorInfos.count, source.model.layout.tensors.count)
        for tensor in source.model.layout.tensors {
            let name = try XCTUnwrap(GGUFExport.ggufName(forHF: tensor.name))
            let info = try file.tensorInfo(name)
            XCTAssertEqual(info.shape, tensor.shape, name)
            XCTAssertEqual(info.type, .f32, name)
            var expected = Array(source.model.parameters[tensor.offset..<(tensor.offset + tensor.count)])
            if tensor.name.hasSuffix("q_proj.weight") || tensor.name.hasSuffix("k_proj.weight") {
                expected = try GGUFExport.permuteToInterleavedRotary(expected, heads: tensor.shape[0] / config.headDim,
                                                                     columns: config.hiddenSize)
            }
            XCTAssertEqual(try file.floats(name).map(\.bitPattern), expected.map(\.bitPattern), name)
        }
    }

    func testGGUFHalfPrecisionKeepsNormsInF32() throws {
        let root = try makeTemporaryDirectory(self)
        let source = try makeTinyModelDirectory(in: root)
        for (dtype, type, fileType) in [(WeightFormat.f16, GGMLType.f16, 1), (.bf16, .bf16, 32), (.q8_0, .q8_0, 7)] {
            let url = root.appendingPathComponent("model-\(dtype).gguf")
            try ModelExport.export(modelAt: source.directory, format: .gguf, to: url, dtype: dtype)
            let file = try GGUFFile(url: url)
            XCTAssertEqual(file.value("general.file_type")?.intValue, fileType)
            XCTAssertEqual(file.tensorInfos.count, source.model.layout.tensors.count, "tied: no output.weight")
            for info in file.tensorInfos {
                // Q8_0 needs rows a multiple of 32 long: ffn_down's 48 stay f16, as llama.cpp's quantizer does.
                let matrixType = type == .q8_0 && info.dimensions[0] % 32 != 0 ? .f16 : type
                XCTAssertEqual(info.type, info.dimensions.count == 1 ? .f32 : matrixType, info.name)
            }
        }
    }

    /// Q8_0 in a GGUF file reads back as the weights 8-bit decoding uses (`DecodingWeights`), matrix by
    /// matrix, and the quantizer follows llama.cpp's rule on a block worked out by hand.
    func testGGUFQ8_0HoldsTheWeightsEightBitDecodingReads() throws {
        var block: [Float] = [127, 0.5, -0.5, 2.5, -2.5, 63.49, 0, -127] + [Float](repeating: 1.25, count: 24)
        var quants = [Int8](repeating: 0, count: 32)
        let scale = block.withUnsafeBufferPointer { Q8_0.quantize($0, into: &quants) }
        XCTAssertEqual(ReducedPrecision.float(fromF16: scale), 1, "d = max|w| / 127")
        XCTAssertEqual(Array(quants[0..<8]), [127, 1, -1, 3, -3, 63, 0, -127], "rounded half away from zero")
        XCTAssertEqual(quants[8], 1)
        block = [Float](repeating: 0, count: 32)
        XCTAssertEqual(block.withUnsafeBufferPointer { Q8_0.quantize($0, into: &quants) }, 0)
        XCTAssertEqual(quants, [Int8](repeating: 0, count: 32), "an all-zero block")

        let root = try makeTemporaryDirectory(self)
        let source = try makeTinyModelDirectory(in: root)
        let url = root.appendingPathComponent("model-q8_0.gguf")
        try ModelExport.export(modelAt: source.directory, format: .gguf, to: url, dtype: .q8_0)
        let file = try GGUFFile(url: url)
        let stored = try DecodingWeights(model: source.model, format: .q8_0).storedParameters(of: source.model)
        let layout = source.model.layout
        for (name, offset, count) in [("token_embd.weight", layout.embedding, source.model.config.vocabSize * 32),
                                      ("blk.1.ffn_down.weight", layout.blocks[1].down, 32 * 48),
                                      ("blk.0.ffn_gate.weight", layout.blocks[0].gateUp, 48 * 32)] {
            XCTAssertEqual(try file.floats(name), Array(stored[offset..<(offset + count)]), name)
            XCTAssertNotEqual(try file.floats(name), Array(source.model.parameters[offset..<(offset + count)]), "\(name) is rounded")
        }
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .hf, to: root.appendingPathComponent("hf"), dtype: .q8_0),
                     mentioning: ["q8_0", "GGUF"])
    }

    func testExportRejectsBadInput() throws {
        let root = try makeTemporaryDirectory(self)
        let source = try makeTinyModelDirectory(in: root)
        let empty = root.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        assertThrows(try ModelExport.export(modelAt: empty, format: .hf, to: root.appendingPathComponent("x")),
                     mentioning: ["no config.json in", empty.path])
        assertThrows(try ModelExport.export(modelAt: root.appendingPathComponent("absent"), format: .gguf, to: root.appendingPathComponent("x.gguf")),
                     mentioning: ["is not a directory"])
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .hf, to: source.directory),
                     mentioning: ["would overwrite model"])
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .gguf, to: empty),
                     mentioning: [empty.path, "is a directory", "model.gguf"])
        // A path below a regular file cannot be created, whoever runs the test (root included).
        let blocker = root.appendingPathComponent("file.txt")
        try Data("x".utf8).write(to: blocker)
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .hf, to: blocker.appendingPathComponent("out")),
                     mentioning: [blocker.path, "is a file"])
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .gguf, to: blocker.appendingPathComponent("m.gguf")),
                     mentioning: [blocker.path, "is a file"])

        // A model whose tokenizer has more pieces than embedding rows.
        let config = LlamaConfig(hiddenSize: 8, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 2,
                                 vocabSize: 100, maxPositionEmbeddings: 8)
        let small = root.appendingPathComponent("small")
        try ModelDirectory.save(try LlamaModel(config: config, seed: 1), tokenizerModel: source.tokenizer.modelPath, to: small)
        assertThrows(try ModelExport.export(modelAt: small, format: .gguf, to: root.appendingPathComponent("s.gguf")),
                     mentioning: ["300 pieces", "100 embedding rows"])
    }

    /// The command line: bad input is one line on standard error and a failing status.
    func testCommandLineReportsBadInputInOneLine() throws {
        // Products sit beside the test bundle (macOS: …/debug/X.xctest) or are the bundle's folder (Linux).
        var products = Bundle(for: Self.self).bundleURL
        if products.pathExtension == "xctest" { products.deleteLastPathComponent() }
        let executable = products.appendingPathComponent("distill")
        try skipUnlessDistillIsBuilt()
        let root = try makeTemporaryDirectory(self)
        func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
            let result = try runProcess(executable, arguments)
            return (result.status, result.transcript)
        }
        let notAModel = try run(["export", "--model", root.path, "--format", "hf", "--output", root.appendingPathComponent("o").path])
        XCTAssertNotEqual(notAModel.status, 0)
        XCTAssertTrue(notAModel.output.contains("no config.json"), notAModel.output)
        XCTAssertEqual(notAModel.output.trimmingCharacters(in: .newlines).split(separator: "\n").count, 1, notAModel.output)
        let unknownFormat = try run(["export", "--model", root.path, "--format", "onnx", "--output", "o"])
        XCTAssertNotEqual(unknownFormat.status, 0)
        XCTAssertTrue(unknownFormat.output.contains("onnx"), unknownFormat.output)
    }
}

/// transformers 5 writes `rope_parameters: {rope_theta, rope_type}` beside or instead of `rope_theta`.
final class RopeParametersTests: XCTestCase {
    private func directory(editing edit: (inout [String: Any]) -> Void) throws -> URL {
        let root = try makeTemporaryDirectory(self)
        let tokenizer = root.appendingPathComponent("t.model")
        try Data([1]).write(to: tokenizer)
        let (config, tensors) = tinyLlama()
        let directory = root.appendingPathComponent("model")
        try HFExport.write(config: config, tensors: tensors, tokenizerModel: tokenizer, specialTokens: tinySpecialTokens, to: directory)
        let url = directory.appendingPathComponent("config.json")
        var fields = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&fields)
        try JSONSerialization.data(withJSONObject: fields).write(to: url)
        return directory
    }

    func testNestedRopeThetaIsRead() throws {
        let nestedOnly = try directory { $0["rope_theta"] = nil; $0["rope_parameters"] = ["rope_theta": 500000.0, "rope_type": "default"] }
        XCTAssertEqual(try HFModelDirectory(nestedOnly).config.ropeTheta, 500000)
        let both = try directory { $0["rope_theta"] = 250000.0; $0["rope_parameters"] = ["rope_theta": 250000.0, "rope_type": "default"] }
        XCTAssertEqual(try HFModelDirectory(both).config.ropeTheta, 250000)
        let withoutTheta = try directory { $0["rope_theta"] = 20000.0; $0["rope_parameters"] = ["rope_type": "default"] }
        XCTAssertEqual(try HFModelDirectory(withoutTheta).config.ropeTheta, 20000)
        let null = try directory { $0["rope_parameters"] = NSNull() }
        XCTAssertEqual(try HFModelDirectory(null).config.ropeTheta, 10000)
    }

    func testUnsupportedOrInconsistentRopeParametersAreRejected() throws {
        let scaled = try directory {
            $0["rope_parameters"] = ["rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0]
        }
        assertThrows(try HFModelDirectory(scaled), mentioning: ["config.json", "rope_type llama3", "plain rotary embeddings"])
        let disagreeing = try directory { $0["rope_theta"] = 10000.0; $0["rope_parameters"] = ["rope_theta": 500000.0, "rope_type": "default"] }
        assertThrows(try HFModelDirectory(disagreeing), mentioning: ["rope_theta is 10000", "rope_parameters.rope_theta is 500000"])
        let notAnObject = try directory { $0["rope_parameters"] = "default" }
        assertThrows(try HFModelDirectory(notAnObject), mentioning: ["rope_parameters is default", "expected an object"])
    }

    /// The committed PyTorch fixture was written by transformers 5 with both forms.
    func testTransformers5FixtureConfig() throws {
        let fixtures = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let config = try HFModelDirectory.readConfig(in: fixtures.appendingPathComponent("llama-tied"))
        XCTAssertEqual(config.ropeTheta, 10000)
        XCTAssertEqual(config.numKeyValueHeads, 2)
        XCTAssertTrue(config.tieWordEmbeddings)
    }
}
