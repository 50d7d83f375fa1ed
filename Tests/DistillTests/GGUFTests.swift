import Foundation
import XCTest
import Distill

final class GGUFTests: XCTestCase {
    private let everyKind: [(key: String, value: GGUFValue)] = [
        ("general.architecture", .string("llama")),
        ("u8", .uint8(200)), ("i8", .int8(-100)), ("u16", .uint16(60_000)), ("i16", .int16(-30_000)),
        ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("u64", .uint64(UInt64.max)),
        ("i64", .int64(Int64.min)), ("f32", .float32(-0.125)), ("f64", .float64(1e-300)),
        ("yes", .bool(true)), ("no", .bool(false)), ("unicode", .string("▁héllo")), ("empty", .string("")),
        ("strings", .strings(["<unk>", "<s>", "▁a"])), ("floats", .floats([0, -1.5, .infinity])),
        ("ints", .int32s([1, 2, 3, -6])), ("none", .array(.float32, [])),
        ("nested", .array(.array, [.int32s([1]), .int32s([2, 3])])),
    ]

    private func sampleTensors() -> [GGUFTensor] {
        [
            GGUFTensor(name: "matrix", shape: [2, 3], values: [1, -2, 3, 0x1p-130, .infinity, -0.0]),
            GGUFTensor(name: "vector", shape: [5], values: [1, 2, 3, 4, 5], type: .f16),
            GGUFTensor(name: "cube", shape: [2, 1, 3], values: [0.1, 0.2, 0.3, -0.1, -0.2, -0.3], type: .bf16),
        ]
    }

    func testRoundTripOfMetadataAndTensors() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("model.gguf")
        let tensors = sampleTensors()
        try GGUFWriter(metadata: everyKind, tensors: tensors).write(to: url)
        let file = try GGUFFile(url: url)
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.metadata.map(\.key), everyKind.map(\.key) + ["general.alignment"])
        for (key, value) in everyKind { XCTAssertEqual(file.value(key), value, key) }
        XCTAssertEqual(file.value("general.alignment"), .uint32(32))
        XCTAssertEqual(file.tensorInfos.map(\.name), ["matrix", "vector", "cube"])
        XCTAssertEqual(try file.tensorInfo("matrix").dimensions, [3, 2], "GGUF stores the innermost size first")
        XCTAssertEqual(try file.tensorInfo("cube").dimensions, [3, 1, 2])
        XCTAssertEqual(try file.tensorInfo("cube").shape, [2, 1, 3])
        XCTAssertEqual(try file.tensorInfo("vector").typeCode, 1)
        XCTAssertEqual(try file.tensorInfo("cube").type, .bf16)
        XCTAssertEqual(try file.floats("matrix").map(\.bitPattern), tensors[0].values.map(\.bitPattern))
        XCTAssertEqual(try file.floats("vector"), [1, 2, 3, 4, 5])
        XCTAssertEqual(try file.floats("cube").map(\.bitPattern),
                       tensors[2].values.map { ReducedPrecision.float(fromBF16: ReducedPrecision.bf16(from: $0)).bitPattern })
        assertThrows(try file.floats("absent"), mentioning: ["model.gguf", "'absent'"])
    }

    func testHeaderLayoutAndAlignment() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("aligned.gguf")
        for alignment in [32, 64] {
            try GGUFWriter(metadata: [("k", .uint32(7))], tensors: sampleTensors(), alignment: alignment).write(to: url)
            let bytes = [UInt8](try Data(contentsOf: url))
            XCTAssertEqual(Array(bytes[0..<4]), Array("GGUF".utf8))
            XCTAssertEqual(Array(bytes[4..<8]), [3, 0, 0, 0], "version 3, little-endian")
            XCTAssertEqual(Array(bytes[8..<16]), [3, 0, 0, 0, 0, 0, 0, 0], "three tensors")
            XCTAssertEqual(Array(bytes[16..<24]), [2, 0, 0, 0, 0, 0, 0, 0], "k and general.alignment")
            let file = try GGUFFile(url: url)
            XCTAssertEqual(file.alignment, alignment)
            XCTAssertEqual(file.dataOffset % alignment, 0)
            XCTAssertEqual(file.tensorInfos.map(\.offset), [0, alignment, 2 * alignment])
            XCTAssertEqual(bytes.count, file.dataOffset + 3 * alignment, "the last tensor is padded too")
            XCTAssertTrue(bytes[(file.dataOffset + 24)..<(file.dataOffset + alignment)].allSatisfy { $0 == 0 }, "padding is zeros")
        }
    }

    func testWriterRejectsInconsistentInput() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("bad.gguf")
        assertThrows(try GGUFWriter(metadata: [("a", .bool(true)), ("a", .bool(false))], tensors: []).write(to: url),
                     mentioning: ["'a'", "twice"])
        assertThrows(try GGUFWriter(metadata: [("mixed", .array(.int32, [.int32(1), .string("x")]))], tensors: []).write(to: url),
                     mentioning: ["'mixed'", "string"])
        assertThrows(try GGUFWriter(metadata: [], tensors: [GGUFTensor(name: "t", shape: [2, 2], values: [1])]).write(to: url),
                     mentioning: ["'t'", "needs 4 values"])
        assertThrows(try GGUFWriter(metadata: [("general.alignment", .uint32(64))], tensors: []).write(to: url),
                     mentioning: ["general.alignment"])
        // Q8_0 blocks run along rows of 32: a row of 48 cannot be one.
        assertThrows(try GGUFWriter(metadata: [], tensors: [GGUFTensor(name: "q", shape: [2, 48], values: [Float](repeating: 1, count: 96),
                                                                     type: .q8_0)]).write(to: url),
                     mentioning: ["'q'", "q8_0", "multiple of 32"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }

    func testRejectsDamagedFiles() throws {
        let directory = try makeTemporaryDirectory(self)
        let good = try GGUFWriter(metadata: everyKind, tensors: sampleTensors()).encoded()
        let url = directory.appendingPathComponent("damaged.gguf")
        func rejects(_ bytes: Data, mentioning fragments: [String], line: UInt = #line) throws {
            try bytes.write(to: url)
            assertThrows(try GGUFFile(url: url), mentioning: ["damaged.gguf"] + fragments, line: line)
        }
        try rejects(Data("GGML".utf8) + good.dropFirst(4), mentioning: ["not a GGUF file"])
        var version = good
        version[4] = 9
        try rejects(version, mentioning: ["version 9"])
        try rejects(good.prefix(100), mentioning: ["truncated"])
        try rejects(good.prefix(good.count - 40), mentioning: ["'cube'", "past the end"])
        var badType = good
        badType[24 + 8 + "general.architecture".utf8.count] = 99
        try rejects(badType, mentioning: ["'general.architecture'", "unknown value type 99"])
    }

    // MARK: llama.cpp export

    func testRotaryPermutationHandExample() throws {
        // One head of width 6: rotate-half pairs rows (0,3), (1,4), (2,5); interleaved order puts pairs side by side.
        XCTAssertEqual(try GGUFExport.permuteToInterleavedRotary([0, 1, 2, 3, 4, 5], heads: 1, columns: 1), [0, 3, 1, 4, 2, 5])
        // Two heads of width 4, two columns per row: each head is permuted on its own, rows move whole.
        let rows: [[Float]] = (0..<8).map { [Float($0 * 10), Float($0 * 10 + 1)] }
        let permuted = try GGUFExport.permuteToInterleavedRotary(rows.flatMap { $0 }, heads: 2, columns: 2)
        XCTAssertEqual(permuted, [0, 2, 1, 3, 4, 6, 5, 7].flatMap { rows[$0] })
        assertThrows(try GGUFExport.permuteToInterleavedRotary([1, 2, 3], heads: 1, columns: 1), mentioning: ["even head width"])
    }

    /// The permutation must agree with the numpy formula of llama.cpp's converter:
    /// `w.reshape(heads, 2, headDim / 2, columns).swapaxes(1, 2).reshape(w.shape)`.
    func testRotaryPermutationMatchesNumpyFormula() throws {
        guard (try? runPython("import numpy").status) == 0 else {
            throw XCTSkip("python3 with numpy is not available: skipping the numpy cross-check of the rotary permutation")
        }
        let (heads, headDim, columns) = (3, 8, 5)
        let script = """
            import numpy as np
            w = np.arange(\(heads * headDim * columns), dtype=np.float32).reshape(\(heads * headDim), \(columns))
            print(" ".join(str(int(x)) for x in w.reshape(\(heads), 2, \(headDim / 2), \(columns)).swapaxes(1, 2).reshape(w.shape).flatten()))
            """
        let result = try runPython(script)
        XCTAssertEqual(result.status, 0, result.output)
        let expected = result.output.split(whereSeparator: \.isWhitespace).compactMap { Float(String($0)) }
        let weights = (0..<(heads * headDim * columns)).map(Float.init)
        XCTAssertEqual(try GGUFExport.permuteToInterleavedRotary(weights, heads: heads, columns: columns), expected)
    }

    func testTensorNameMap() {
        let expected = [
            "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight",
            "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
            "model.layers.1.self_attn.q_proj.weight": "blk.1.attn_q.weight",
            "model.layers.1.self_attn.k_proj.weight": "blk.1.attn_k.weight",
            "model.layers.1.self_attn.v_proj.weight": "blk.1.attn_v.weight",
            "model.layers.12.self_attn.o_proj.weight": "blk.12.attn_output.weight",
            "model.layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm.weight",
            "model.layers.0.mlp.gate_proj.weight": "blk.0.ffn_gate.weight",
            "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
            "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
        ]
        for (hf, gguf) in expected { XCTAssertEqual(GGUFExport.ggufName(forHF: hf), gguf, hf) }
        XCTAssertNil(GGUFExport.ggufName(forHF: "model.layers.x.mlp.up_proj.weight"))
        XCTAssertNil(GGUFExport.ggufName(forHF: "model.layers.0.self_attn.rotary_emb.inv_freq"))
    }

    private func tinyVocabulary() -> GGUFVocabulary {
        let tokens = ["<unk>", "<s>", "</s>", "<pad>"] + (4..<10).map { "▁t\($0)" }
        return GGUFVocabulary(tokens: tokens, scores: (0..<10).map { -Float($0) }, tokenTypes: [2, 3, 3, 3] + Array(repeating: 1, count: 6),
                              bos: 1, eos: 2, unk: 0, pad: 3)
    }

    /// Writes the tiny Llama as GGUF (F16 matrices) and returns the file with the source weights.
    private func exportTinyGGUF(tied: Bool) throws -> (url: URL, config: LlamaConfig, tensors: [SafetensorsTensor]) {
        let (config, tensors) = tinyLlama(tied: tied)
        let url = try makeTemporaryDirectory(self).appendingPathComponent("tiny.gguf")
        try GGUFExport.write(config: config, name: "tiny", hfTensors: tensors, vocabulary: tinyVocabulary(), to: url, type: .f16)
        return (url, config, tensors)
    }

    func testLlamaExport() throws {
        let (url, config, tensors) = try exportTinyGGUF(tied: false)
        let file = try GGUFFile(url: url)
        let expectedValues: [(String, GGUFValue)] = [
            ("general.architecture", .string("llama")), ("general.name", .string("tiny")), ("general.file_type", .uint32(1)),
            ("llama.context_length", .uint32(16)), ("llama.embedding_length", .uint32(8)), ("llama.block_count", .uint32(2)),
            ("llama.feed_forward_length", .uint32(12)), ("llama.rope.dimension_count", .uint32(4)),
            ("llama.attention.head_count", .uint32(2)), ("llama.attention.head_count_kv", .uint32(1)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(1e-5)), ("llama.rope.freq_base", .float32(10000)),
            ("tokenizer.ggml.model", .string("llama")), ("tokenizer.ggml.tokens", .strings(tinyVocabulary().tokens)),
            ("tokenizer.ggml.scores", .floats(tinyVocabulary().scores)), ("tokenizer.ggml.token_type", .int32s(tinyVocabulary().tokenTypes)),
            ("tokenizer.ggml.bos_token_id", .uint32(1)), ("tokenizer.ggml.eos_token_id", .uint32(2)),
            ("tokenizer.ggml.unknown_token_id", .uint32(0)), ("tokenizer.ggml.padding_token_id", .uint32(3)),
        ]
        for (key, value) in expectedValues { XCTAssertEqual(file.value(key), value, key) }
        XCTAssertEqual(file.tensorInfos.count, tensors.count)
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
        func halfRounded(_ values: [Float]) -> [Float] { values.map { ReducedPrecision.float(fromF16: ReducedPrecision.f16(from: $0)) } }

        let query = try XCTUnwrap(byName["model.layers.1.self_attn.q_proj.weight"])
        XCTAssertEqual(try file.tensorInfo("blk.1.attn_q.weight").dimensions, [8, 8])
        XCTAssertEqual(try file.floats("blk.1.attn_q.weight"),
                       halfRounded(try GGUFExport.permuteToInterleavedRotary(query.values, heads: 2, columns: 8)))
        let key = try XCTUnwrap(byName["model.layers.0.self_attn.k_proj.weight"])
        XCTAssertEqual(try file.tensorInfo("blk.0.attn_k.weight").dimensions, [8, 4], "one key head of width 4")
        // Key rows of the single head: 0, 2, 1, 3 (rotate-half pairs (0,2) and (1,3) side by side).
        XCTAssertEqual(try file.floats("blk.0.attn_k.weight"), halfRounded([0, 2, 1, 3].flatMap { Array(key.values[($0 * 8)..<($0 * 8 + 8)]) }))
        let down = try XCTUnwrap(byName["model.layers.0.mlp.down_proj.weight"])
        XCTAssertEqual(try file.tensorInfo("blk.0.ffn_down.weight").dimensions, [12, 8])
        XCTAssertEqual(try file.floats("blk.0.ffn_down.weight"), halfRounded(down.values))
        XCTAssertEqual(try file.tensorInfo("blk.0.attn_norm.weight").type, .f32, "norms stay F32")
        XCTAssertEqual(try file.floats("output_norm.weight"), byName["model.norm.weight"]?.values)
        XCTAssertEqual(try file.tensorInfo("output.weight").dimensions, [8, 10])

        let tied = try GGUFFile(url: exportTinyGGUF(tied: true).url)
        XCTAssertThrowsError(try tied.tensorInfo("output.weight"), "a tied head is not stored; llama.cpp uses token_embd")
        XCTAssertNoThrow(try tied.tensorInfo("token_embd.weight"))
        var vocabulary = tinyVocabulary()
        vocabulary.scores.removeLast()
        assertThrows(try GGUFExport.write(config: config, name: "x", hfTensors: tensors, vocabulary: vocabulary, to: url),
                     mentioning: ["9 scores", "vocab_size is 10"])
    }

    /// llama.cpp's own Python reader (`pip install gguf`) must read what we write.
    func testPythonGGUFReaderReadsExport() throws {
        guard (try? runPython("import gguf").status) == 0 else {
            throw XCTSkip("python3 with the gguf package is not available (pip install gguf): skipping the check with llama.cpp's reader")
        }
        let (url, _, tensors) = try exportTinyGGUF(tied: false)
        let script = """
            import json, sys, gguf
            reader = gguf.GGUFReader(sys.argv[1])
            fields = {}
            for name, field in reader.fields.items():
                if name.startswith("GGUF."): continue
                value = field.contents()
                fields[name] = value.tolist() if hasattr(value, "tolist") else value
            tensors = [{"name": t.name, "dims": [int(d) for d in t.shape], "type": int(t.tensor_type),
                        "data": [float(x) for x in t.data.flatten()]} for t in reader.tensors]
            print(json.dumps({"fields": fields, "tensors": tensors}))
            """
        let result = try runPython(script, arguments: [url.path])
        XCTAssertEqual(result.status, 0, result.output)
        let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], result.output)
        let fields = try XCTUnwrap(parsed["fields"] as? [String: Any])
        XCTAssertEqual(fields["general.architecture"] as? String, "llama")
        XCTAssertEqual(fields["llama.block_count"] as? Int, 2)
        XCTAssertEqual(fields["llama.attention.head_count_kv"] as? Int, 1)
        XCTAssertEqual(fields["tokenizer.ggml.tokens"] as? [String], tinyVocabulary().tokens)
        XCTAssertEqual(fields["tokenizer.ggml.token_type"] as? [Int], tinyVocabulary().tokenTypes.map(Int.init))
        XCTAssertEqual(fields["general.alignment"] as? Int, 32)
        let pythonTensors = try XCTUnwrap(parsed["tensors"] as? [[String: Any]])
        XCTAssertEqual(pythonTensors.count, tensors.count)
        let ours = try GGUFFile(url: url)
        for tensor in pythonTensors {
            let name = try XCTUnwrap(tensor["name"] as? String)
            let info = try ours.tensorInfo(name)
            XCTAssertEqual(tensor["dims"] as? [Int], info.dimensions, name)
            XCTAssertEqual(tensor["type"] as? Int, Int(info.typeCode), name)
            XCTAssertEqual((tensor["data"] as? [Double])?.map(Float.init), try ours.floats(name), name)
        }
    }
}

/// Runs `python3 -c script arguments…`, returning its exit status and standard output (and error).
func runPython(_ script: String, arguments: [String] = []) throws -> (status: Int32, output: String) {
    let result = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script] + arguments)
    return (result.status, result.transcript)
}
