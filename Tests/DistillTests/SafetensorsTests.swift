import Foundation
import XCTest
import Distill

/// A fresh temporary directory per test, removed afterwards.
func makeTemporaryDirectory(_ testCase: XCTestCase) throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("distill-io-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    testCase.addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
    return directory
}

/// Writes a safetensors file by hand: the 8-byte length, `header` as given, then `data`.
func writeRawSafetensors(header: String, data: [UInt8], to url: URL, claimedHeaderLength: UInt64? = nil) throws {
    var bytes = Data()
    let headerBytes = Data(header.utf8)
    withUnsafeBytes(of: (claimedHeaderLength ?? UInt64(headerBytes.count)).littleEndian) { bytes.append(contentsOf: $0) }
    bytes.append(headerBytes)
    bytes.append(contentsOf: data)
    try bytes.write(to: url)
}

/// Asserts that `body` throws an error whose description contains every one of `fragments`.
func assertThrows<T>(_ body: @autoclosure () throws -> T, mentioning fragments: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
    } catch {
        let message = "\(error)"
        for fragment in fragments where !message.contains(fragment) {
            XCTFail("error \"\(message)\" does not mention \"\(fragment)\"", file: file, line: line)
        }
    }
}

final class SafetensorsTests: XCTestCase {
    // MARK: 16-bit float conversions

    func testF16KnownValues() {
        let cases: [(Float, UInt16)] = [
            (1.0, 0x3C00), (-2.5, 0xC100), (65504, 0x7BFF), (0x1p-24, 0x0001), (0x1p-14, 0x0400),
            (0, 0x0000), (-0.0, 0x8000), (.infinity, 0x7C00), (-.infinity, 0xFC00),
        ]
        for (value, bits) in cases {
            XCTAssertEqual(ReducedPrecision.f16(from: value), bits, "f16(\(value))")
            XCTAssertEqual(ReducedPrecision.float(fromF16: bits).bitPattern, value.bitPattern, "float(f16 \(bits))")
        }
        XCTAssertTrue(ReducedPrecision.float(fromF16: 0x7E00).isNaN)
        XCTAssertTrue(ReducedPrecision.float(fromF16: ReducedPrecision.f16(from: .nan)).isNaN)
        // A NaN whose payload lies only in the dropped bits must not become infinity.
        XCTAssertTrue(ReducedPrecision.float(fromF16: ReducedPrecision.f16(from: Float(bitPattern: 0x7F80_0001))).isNaN)
        XCTAssertEqual(ReducedPrecision.f16(from: 65520), 0x7C00, "halfway above the largest half rounds to infinity")
        XCTAssertEqual(ReducedPrecision.f16(from: 0x1p-25), 0x0000, "halfway to the smallest subnormal ties to even zero")
        XCTAssertEqual(ReducedPrecision.f16(from: 0x1.8p-25), 0x0001)
    }

    func testF16RoundTripsEveryHalfAndMatchesTheCompiler() {
        for bits in UInt16.min...UInt16.max {
            let value = ReducedPrecision.float(fromF16: bits)
            if value.isNaN { continue }
            XCTAssertEqual(ReducedPrecision.f16(from: value), bits)
        }
        #if !(os(macOS) && arch(x86_64))
        // Swift's own Float16 rounds to nearest even too: an independent oracle for the narrowing.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200_000 {
            let value = Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &generator))
            if value.isNaN { continue }
            XCTAssertEqual(ReducedPrecision.f16(from: value), Float16(value).bitPattern, "\(value)")
            if ReducedPrecision.f16(from: value) != Float16(value).bitPattern { return }
        }
        #endif
    }

    func testBF16KnownValues() {
        let cases: [(Float, UInt16)] = [
            (1.0, 0x3F80), (-2.5, 0xC020), (.infinity, 0x7F80), (-.infinity, 0xFF80),
            (Float(bitPattern: 0x0001_0000), 0x0001), // smallest bfloat16 subnormal
        ]
        for (value, bits) in cases {
            XCTAssertEqual(ReducedPrecision.bf16(from: value), bits, "bf16(\(value))")
            XCTAssertEqual(ReducedPrecision.float(fromBF16: bits).bitPattern, value.bitPattern)
        }
        XCTAssertEqual(ReducedPrecision.bf16(from: 65504), 0x4780, "65504 rounds to 65536")
        XCTAssertEqual(ReducedPrecision.bf16(from: Float(bitPattern: 0x3F80_8000)), 0x3F80, "tie goes to even")
        XCTAssertEqual(ReducedPrecision.bf16(from: Float(bitPattern: 0x3F81_8000)), 0x3F82, "tie goes to even")
        XCTAssertTrue(ReducedPrecision.float(fromBF16: ReducedPrecision.bf16(from: Float(bitPattern: 0x7F80_0001))).isNaN)
        XCTAssertEqual(ReducedPrecision.bf16(from: .greatestFiniteMagnitude), 0x7F80)
    }

    // MARK: round trips

    private let sample = [
        SafetensorsTensor(name: "model.norm.weight", shape: [3], values: [1, -2.5, 0x1p-24]),
        SafetensorsTensor(name: "a.matrix", shape: [2, 3], values: [0, -0.0, .infinity, -.infinity, 65504, 1e-8]),
        SafetensorsTensor(name: "empty", shape: [0, 4], values: []),
        SafetensorsTensor(name: "scalar", shape: [], values: [42]),
    ]

    func testF32RoundTripIsBitwise() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("model.safetensors")
        try SafetensorsFile.write(tensors: sample, metadata: ["format": "pt", "note": "a/b \"quoted\""], to: url)
        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(file.tensorNames, sample.map(\.name).sorted())
        XCTAssertEqual(file.metadata, ["format": "pt", "note": "a/b \"quoted\""])
        for tensor in sample {
            XCTAssertEqual(try file.info(tensor.name).dtype, .f32)
            XCTAssertEqual(try file.info(tensor.name).shape, tensor.shape)
            XCTAssertEqual(try file.floats(tensor.name).map(\.bitPattern), tensor.values.map(\.bitPattern), tensor.name)
        }
        let nan = SafetensorsTensor(name: "nan", shape: [1], values: [.nan])
        try SafetensorsFile.write(tensors: [nan], to: url)
        XCTAssertEqual(try SafetensorsFile(url: url).floats("nan").map(\.bitPattern), [Float.nan.bitPattern])
    }

    func testHeaderIsSortedPaddedAndDataAligned() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("model.safetensors")
        try SafetensorsFile.write(tensors: sample, to: url)
        let bytes = try Data(contentsOf: url)
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(headerLength % 8, 0)
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{\"a.matrix\":{\"data_offsets\":[0,24],\"dtype\":\"F32\",\"shape\":[2,3]}"), header)
        XCTAssertFalse(header.contains("__metadata__"), "no metadata, no entry")
        XCTAssertEqual(bytes.count, 8 + headerLength + 4 * (3 + 6 + 0 + 1))
    }

    func testHalfAndBFloatRoundTrips() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("half.safetensors")
        let values: [Float] = [1, -2.5, 65504, 0x1p-24, .infinity, -0.0, 0.1]
        let tensor = SafetensorsTensor(name: "w", shape: [values.count], values: values)
        try SafetensorsFile.write(tensors: [tensor], to: url, dtype: .f16)
        XCTAssertEqual(try SafetensorsFile(url: url).info("w").dtype, .f16)
        XCTAssertEqual(try SafetensorsFile(url: url).floats("w").map(\.bitPattern),
                       values.map { ReducedPrecision.float(fromF16: ReducedPrecision.f16(from: $0)).bitPattern })
        try SafetensorsFile.write(tensors: [tensor], to: url, dtype: .bf16)
        XCTAssertEqual(try SafetensorsFile(url: url).info("w").dtype, .bf16)
        XCTAssertEqual(try SafetensorsFile(url: url).floats("w").map(\.bitPattern),
                       values.map { ReducedPrecision.float(fromBF16: ReducedPrecision.bf16(from: $0)).bitPattern })
    }

    func testIntegerAndDoubleTensors() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("ids.safetensors")
        var data: [UInt8] = []
        for id: Int64 in [5, -1, 70_000] { withUnsafeBytes(of: id.littleEndian) { data += $0 } }
        for value: Double in [0.5, -3] { withUnsafeBytes(of: value.bitPattern.littleEndian) { data += $0 } }
        for id: Int64 in [Int64(Int32.max) + 1] { withUnsafeBytes(of: id.littleEndian) { data += $0 } }
        data += [0x7F, 0x80]
        try writeRawSafetensors(header: """
            {"ids":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},"d":{"dtype":"F64","shape":[2],"data_offsets":[24,40]},
             "big":{"dtype":"I64","shape":[1],"data_offsets":[40,48]},"q":{"dtype":"I8","shape":[2],"data_offsets":[48,50]}}
            """, data: data, to: url)
        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(try file.int64s("ids"), [5, -1, 70_000])
        XCTAssertEqual(try file.int32s("ids"), [5, -1, 70_000])
        XCTAssertEqual(try file.int32s("q"), [127, -128])
        XCTAssertEqual(try file.floats("d"), [0.5, -3])
        assertThrows(try file.int32s("big"), mentioning: ["'big'", "2147483648", "Int32"])
        assertThrows(try file.floats("q"), mentioning: ["'q'", "I8", "floats"])
        assertThrows(try file.int64s("d"), mentioning: ["'d'", "F64"])
        assertThrows(try file.floats("nope"), mentioning: ["ids.safetensors", "'nope'"])
    }

    /// The reference implementation (`pip install safetensors numpy`) must read what we write, and we what it writes.
    func testReferenceImplementationInterop() throws {
        guard (try? runPython("import safetensors.numpy, numpy").status) == 0 else {
            throw XCTSkip("python3 with safetensors and numpy is not available (pip install safetensors numpy): skipping the interop check")
        }
        let directory = try makeTemporaryDirectory(self)
        let ours = directory.appendingPathComponent("ours.safetensors")
        let theirs = directory.appendingPathComponent("theirs.safetensors")
        try SafetensorsFile.write(tensors: sample.filter { $0.name != "empty" }, metadata: ["format": "pt"], to: ours)
        let script = """
            import sys, numpy as np
            from safetensors import safe_open
            from safetensors.numpy import save_file
            with safe_open(sys.argv[1], framework="np") as f:
                assert f.metadata() == {"format": "pt"}, f.metadata()
                matrix = f.get_tensor("a.matrix")
                assert matrix.dtype == np.float32 and matrix.shape == (2, 3), matrix
                assert matrix.flatten().view(np.uint32).tolist() == [%@], matrix
            save_file({"h": np.array([[1, -2.5], [65504, 2**-24]], dtype=np.float16),
                       "ids": np.array([3, 1, 4], dtype=np.int64), "f": np.array([0.5], dtype=np.float32)},
                      sys.argv[2], metadata={"source": "numpy"})
            """.replacingOccurrences(of: "%@", with: sample[1].values.map { "\($0.bitPattern)" }.joined(separator: ", "))
        let result = try runPython(script, arguments: [ours.path, theirs.path])
        XCTAssertEqual(result.status, 0, result.output)
        let file = try SafetensorsFile(url: theirs)
        XCTAssertEqual(file.metadata, ["source": "numpy"])
        XCTAssertEqual(try file.info("h").shape, [2, 2])
        XCTAssertEqual(try file.floats("h"), [1, -2.5, 65504, 0x1p-24])
        XCTAssertEqual(try file.int32s("ids"), [3, 1, 4])
        XCTAssertEqual(try file.floats("f"), [0.5])
    }

    // MARK: malformed files

    private func rejects(header: String, data: [UInt8] = [], claimedHeaderLength: UInt64? = nil, mentioning fragments: [String],
                         file: StaticString = #filePath, line: UInt = #line) throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("model.safetensors")
        try writeRawSafetensors(header: header, data: data, to: url, claimedHeaderLength: claimedHeaderLength)
        assertThrows(try SafetensorsFile(url: url), mentioning: ["model.safetensors"] + fragments, file: file, line: line)
    }

    func testRejectsHeaderLengthBeyondFile() throws {
        try rejects(header: "{}", claimedHeaderLength: 1000, mentioning: ["1000 bytes", "truncated"])
        let url = try makeTemporaryDirectory(self).appendingPathComponent("tiny.safetensors")
        try Data([1, 2, 3]).write(to: url)
        assertThrows(try SafetensorsFile(url: url), mentioning: ["tiny.safetensors", "too short"])
        assertThrows(try SafetensorsFile(url: url.deletingLastPathComponent().appendingPathComponent("absent.safetensors")),
                     mentioning: ["absent.safetensors", "does not exist"])
    }

    func testRejectsBadJSON() throws {
        try rejects(header: "{\"x\": [1, 2", mentioning: ["not valid JSON"])
        try rejects(header: "[1, 2]", mentioning: ["not an object"])
        try rejects(header: "{\"__metadata__\": {\"a\": 1}}", mentioning: ["__metadata__"])
        try rejects(header: "{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", data: [0, 0, 0, 0],
                    mentioning: ["'x'", "non-negative"])
        try rejects(header: "{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", data: [0, 0, 0, 0],
                    mentioning: ["'x'", "data_offsets"])
    }

    func testRejectsUnknownDType() throws {
        try rejects(header: "{\"x\": {\"dtype\": \"F12\", \"shape\": [1], \"data_offsets\": [0, 2]}}", data: [0, 0],
                    mentioning: ["'x'", "'F12'"])
    }

    func testRejectsSizeMismatch() throws {
        try rejects(header: "{\"x\": {\"dtype\": \"F32\", \"shape\": [32, 64], \"data_offsets\": [0, 4096]}}",
                    data: [UInt8](repeating: 0, count: 4096),
                    mentioning: ["tensor 'x' claims 4096 bytes but its shape [32, 64] of F32 needs 8192", "damaged or truncated"])
    }

    func testRejectsTruncatedData() throws {
        try rejects(header: "{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", data: [0, 0, 0, 0],
                    mentioning: ["'x'", "0..<16", "only 4 bytes", "truncated"])
    }

    func testRejectsOverlappingTensors() throws {
        try rejects(header: """
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
            """, data: [UInt8](repeating: 0, count: 12), mentioning: ["'a'", "'b'", "overlapping"])
    }

    func testWriterRejectsInconsistentTensors() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("out.safetensors")
        assertThrows(try SafetensorsFile.write(tensors: [SafetensorsTensor(name: "w", shape: [2, 2], values: [1])], to: url),
                     mentioning: ["'w'", "needs 4 values but it has 1"])
        let twice = SafetensorsTensor(name: "w", shape: [1], values: [1])
        assertThrows(try SafetensorsFile.write(tensors: [twice, twice], to: url), mentioning: ["'w'", "two tensors"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }
}

/// A tiny Llama config and weights with distinct values, for directory and export tests.
func tinyLlama(tied: Bool = true) -> (config: LlamaConfig, tensors: [SafetensorsTensor]) {
    let config = LlamaConfig(hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 2, numAttentionHeads: 2,
                             numKeyValueHeads: 1, vocabSize: 10, maxPositionEmbeddings: 16, rmsNormEps: 1e-5,
                             ropeTheta: 10000, tieWordEmbeddings: tied)
    var counter: Float = 0
    let tensors = HFLlamaTensors.expectedShapes(for: config).map { name, shape -> SafetensorsTensor in
        let values = (0..<shape.reduce(1, *)).map { index -> Float in
            counter += 1
            return (counter * 0.37).truncatingRemainder(dividingBy: 2) - 1 + Float(index) * 1e-7
        }
        return SafetensorsTensor(name: name, shape: shape, values: values)
    }
    return (config, tensors)
}

let tinySpecialTokens = HFSpecialTokens(bos: HFSpecialToken(id: 1, piece: "<s>"), eos: HFSpecialToken(id: 2, piece: "</s>"),
                                        unk: HFSpecialToken(id: 0, piece: "<unk>"), pad: HFSpecialToken(id: 3, piece: "<pad>"))

/// Hugging Face directories: named Safetensors… so that `swift test --filter Safetensors` runs them too.
final class SafetensorsHFModelTests: XCTestCase {
    /// Exports the tiny model into a fresh directory and returns it.
    private func exportTiny(tied: Bool = true) throws -> (directory: URL, config: LlamaConfig, tensors: [SafetensorsTensor]) {
        let root = try makeTemporaryDirectory(self)
        let tokenizer = root.appendingPathComponent("source.model")
        try Data("not really a sentencepiece model".utf8).write(to: tokenizer)
        let (config, tensors) = tinyLlama(tied: tied)
        let directory = root.appendingPathComponent("export")
        try HFExport.write(config: config, tensors: tensors, tokenizerModel: tokenizer, specialTokens: tinySpecialTokens, to: directory)
        return (directory, config, tensors)
    }

    private func editConfig(in directory: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = directory.appendingPathComponent("config.json")
        var fields = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&fields)
        try JSONSerialization.data(withJSONObject: fields).write(to: url)
    }

    func testExportReadsBackBitwise() throws {
        for tied in [true, false] {
            let (directory, config, tensors) = try exportTiny(tied: tied)
            let model = try HFModelDirectory(directory)
            XCTAssertEqual(model.config, config)
            XCTAssertEqual(model.bosTokenID, 1)
            XCTAssertEqual(model.eosTokenID, 2)
            XCTAssertEqual(model.padTokenID, 3)
            try model.checkTensors()
            XCTAssertEqual(model.tensorNames, tensors.map(\.name).sorted())
            for tensor in tensors {
                XCTAssertEqual(try model.tensor(named: tensor.name, shape: tensor.shape).map(\.bitPattern),
                               tensor.values.map(\.bitPattern), tensor.name)
            }
            XCTAssertEqual(model.outputHeadName, tied ? "model.embed_tokens.weight" : "lm_head.weight")
            XCTAssertEqual(try model.tokenizerModel().lastPathComponent, "tokenizer.model")
        }
    }

    func testExportWritesTransformersFields() throws {
        let (directory, _, _) = try exportTiny()
        func json(_ name: String) throws -> [String: Any] {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent(name))) as? [String: Any])
        }
        let config = try json("config.json")
        XCTAssertEqual(config["architectures"] as? [String], ["LlamaForCausalLM"])
        XCTAssertEqual(config["model_type"] as? String, "llama")
        XCTAssertEqual(config["hidden_act"] as? String, "silu")
        XCTAssertEqual(config["head_dim"] as? Int, 4)
        XCTAssertEqual(config["torch_dtype"] as? String, "float32")
        XCTAssertTrue(config["rope_scaling"] is NSNull)
        // Written from the Float's shortest decimal form: 1e-05, not 9.99999974737875e-06.
        XCTAssertEqual(config["rms_norm_eps"] as? Double, 1e-5)
        let tokenizer = try json("tokenizer_config.json")
        XCTAssertEqual(tokenizer["tokenizer_class"] as? String, "LlamaTokenizer")
        XCTAssertEqual(tokenizer["add_eos_token"] as? Bool, false)
        XCTAssertEqual(tokenizer["bos_token"] as? String, "<s>")
        XCTAssertEqual(tokenizer["pad_token"] as? String, "<pad>")
        XCTAssertEqual(tokenizer["model_max_length"] as? Int, 16)
        XCTAssertEqual(try json("generation_config.json")["eos_token_id"] as? Int, 2)
        XCTAssertEqual(try Data(contentsOf: directory.appendingPathComponent("tokenizer.model")), Data("not really a sentencepiece model".utf8))
    }

    func testExportRejectsWrongTensors() throws {
        let root = try makeTemporaryDirectory(self)
        let tokenizer = root.appendingPathComponent("t.model")
        try Data([1]).write(to: tokenizer)
        var (config, tensors) = tinyLlama()
        let export = { (tensors: [SafetensorsTensor]) in
            try HFExport.write(config: config, tensors: tensors, tokenizerModel: tokenizer, specialTokens: tinySpecialTokens,
                               to: root.appendingPathComponent("out"))
        }
        assertThrows(try export(Array(tensors.dropLast())), mentioning: ["'model.norm.weight'", "missing"])
        tensors[1].shape = [2, 4]
        assertThrows(try export(tensors), mentioning: ["'model.layers.0.input_layernorm.weight'", "[2, 4]", "[8]"])
        tensors[1].shape = [8]
        assertThrows(try export(tensors + [SafetensorsTensor(name: "extra", shape: [1], values: [0])]), mentioning: ["'extra'"])
        config.numAttentionHeads = 3
        assertThrows(try export(tensors), mentioning: ["num_attention_heads"])
    }

    func testMissingConfig() throws {
        let directory = try makeTemporaryDirectory(self)
        assertThrows(try HFModelDirectory(directory), mentioning: ["no config.json in", directory.path])
        assertThrows(try HFModelDirectory(directory.appendingPathComponent("nothing")), mentioning: ["not a directory"])
    }

    func testRejectsOtherArchitectures() throws {
        let (directory, _, _) = try exportTiny()
        try editConfig(in: directory) { $0["model_type"] = "mistral"; $0["architectures"] = ["MistralForCausalLM"] }
        assertThrows(try HFModelDirectory(directory), mentioning: ["model_type is 'mistral'", "MistralForCausalLM", "config.json"])
    }

    func testRejectsUnsupportedFeatures() throws {
        let (directory, _, _) = try exportTiny()
        let cases: [(String, Any, String)] = [
            ("rope_scaling", ["type": "linear", "factor": 2.0], "rope_scaling"),
            ("attention_bias", true, "attention_bias is true"),
            ("mlp_bias", true, "mlp_bias is true"),
            ("hidden_act", "gelu", "hidden_act is gelu"),
            ("head_dim", 8, "head_dim is 8"),
            ("num_attention_heads", 3, "num_attention_heads"),
        ]
        for (field, value, message) in cases {
            var original: Any?
            try editConfig(in: directory) { original = $0[field]; $0[field] = value }
            assertThrows(try HFModelDirectory(directory), mentioning: [message])
            try editConfig(in: directory) { $0[field] = original }
        }
        XCTAssertNoThrow(try HFModelDirectory(directory), "every edit was undone")
        try editConfig(in: directory) { $0["hidden_size"] = nil }
        assertThrows(try HFModelDirectory(directory), mentioning: ["'hidden_size' is missing"])
    }

    func testShardedIndex() throws {
        let (directory, config, tensors) = try exportTiny()
        try FileManager.default.removeItem(at: directory.appendingPathComponent("model.safetensors"))
        let half = tensors.count / 2
        try SafetensorsFile.write(tensors: Array(tensors[..<half]), to: directory.appendingPathComponent("model-00001-of-00002.safetensors"))
        try SafetensorsFile.write(tensors: Array(tensors[half...]), to: directory.appendingPathComponent("model-00002-of-00002.safetensors"))
        var weightMap: [String: String] = [:]
        for (position, tensor) in tensors.enumerated() {
            weightMap[tensor.name] = position < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"
        }
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": weightMap]).write(to: index)
        let model = try HFModelDirectory(directory)
        XCTAssertEqual(model.config, config)
        try model.checkTensors()
        XCTAssertEqual(try model.tensor(named: tensors[half].name), tensors[half].values)

        weightMap["model.norm.weight"] = "model-00003-of-00003.safetensors"
        try JSONSerialization.data(withJSONObject: ["weight_map": weightMap]).write(to: index)
        assertThrows(try HFModelDirectory(directory), mentioning: ["'model-00003-of-00003.safetensors'", "does not exist"])
        weightMap["model.norm.weight"] = "model-00001-of-00002.safetensors"
        try JSONSerialization.data(withJSONObject: ["weight_map": weightMap]).write(to: index)
        assertThrows(try HFModelDirectory(directory), mentioning: ["'model.norm.weight'", "no such tensor"])
        try FileManager.default.removeItem(at: index)
        assertThrows(try HFModelDirectory(directory), mentioning: ["no model.safetensors or model.safetensors.index.json"])
    }

    func testMissingTensorWrongShapeAndTokenizer() throws {
        let (directory, config, tensors) = try exportTiny()
        let withoutNorm = tensors.filter { $0.name != "model.norm.weight" }
        try SafetensorsFile.write(tensors: withoutNorm, to: directory.appendingPathComponent("model.safetensors"))
        let model = try HFModelDirectory(directory)
        assertThrows(try model.checkTensors(), mentioning: ["no tensor 'model.norm.weight'"])
        assertThrows(try model.tensor(named: "lm_head.weight"), mentioning: ["'lm_head.weight'", "ties it to model.embed_tokens.weight"])
        let query = "model.layers.0.self_attn.q_proj.weight"
        assertThrows(try model.tensor(named: query, shape: [config.hiddenSize, 4]),
                     mentioning: ["tensor '\(query)' has shape [8, 8] but the config needs [8, 4]"])
        try FileManager.default.removeItem(at: directory.appendingPathComponent("tokenizer.model"))
        assertThrows(try model.tokenizerModel(), mentioning: ["no tokenizer.model in \(directory.path): distill needs a SentencePiece tokenizer"])
    }
}
