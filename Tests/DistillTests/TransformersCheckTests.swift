import Foundation
import XCTest
import Distill

/// Opt-in checks against PyTorch, `transformers` and the SentencePiece Python package, through the scripts
/// in `tools/reference/`. They run when the interpreter named by `DISTILL_PYTHON` (default `python3`)
/// imports torch, transformers and sentencepiece, and are skipped with the reason otherwise.
final class TransformersCheckTests: XCTestCase {
    /// The repository root, found from this file's path (Tests/DistillTests/<file>).
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var python: String { ProcessInfo.processInfo.environment["DISTILL_PYTHON"] ?? "python3" }

    /// Runs the chosen Python with `arguments` (through env, so a bare name is looked up on PATH).
    func runPython(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(URL(fileURLWithPath: "/usr/bin/env"), [Self.python] + arguments)
    }

    /// Runs the chosen Python, which must succeed, and parses the last line it prints as JSON.
    func runPythonJSON(_ arguments: [String]) throws -> Any {
        let result = try runPython(arguments)
        guard result.status == 0, let last = result.output.split(separator: "\n").last else {
            throw PythonFailure(python: Self.python, result: result)
        }
        return try JSONSerialization.jsonObject(with: Data(last.utf8))
    }

    /// Skips the test, saying why, unless the interpreter has the packages the reference scripts need.
    func requireReferencePackages() throws {
        let probe = try runPython(["-c", "import torch, transformers, sentencepiece"])
        guard probe.status == 0 else {
            let reason = probe.errors.split(separator: "\n").last.map(String.init) ?? "exit status \(probe.status)"
            throw XCTSkip("\(Self.python) cannot import torch, transformers and sentencepiece (\(reason)): set DISTILL_PYTHON to an interpreter that has them (see tools/reference/README.md) to run the PyTorch cross-checks")
        }
    }

    func script(_ name: String) -> String {
        Self.repositoryRoot.appendingPathComponent("tools/reference/\(name)").path
    }

    /// Perplexity of an exported model under `transformers`' LlamaForCausalLM equals ours, with the same
    /// sliding windows (context 64, stride 24: most windows score only their last 24 targets).
    func testPerplexityMatchesTransformers() throws {
        try requireReferencePackages()
        let root = try makeTemporaryDirectory(self)
        // Weights 10× the usual scale make the logits far from uniform, so the comparison has teeth.
        let source = try makeTinyModelDirectory(in: root, tied: false, weightScale: 10, seed: 11)
        let text = root.appendingPathComponent("eval.txt")
        try Data(generatedText(lines: 40, seed: 99).utf8).write(to: text)
        let (context, stride) = (64, 24)

        let reference = try XCTUnwrap(runPythonJSON([script("score_hf.py"), "--model", source.directory.path, "--text", text.path,
                                                     "--context", "\(context)", "--stride", "\(stride)"]) as? [String: Any])

        let raw = try Data(contentsOf: text)
        let tokens = source.tokenizer.encode(String(decoding: raw, as: UTF8.self))
        let ours = try scoreTokens(model: source.model, tokens: tokens, bytes: raw.count, context: context, stride: stride)
        XCTAssertEqual(reference["tokens"] as? Int, tokens.count, "the two tokenizations differ in length")
        XCTAssertEqual(reference["scored"] as? Int, ours.tokens)
        XCTAssertEqual(reference["bytes"] as? Int, ours.bytes)
        let theirs = try XCTUnwrap(reference["perplexity"] as? Double)
        let relative = abs(ours.perplexity - theirs) / theirs
        print(String(format: "transformers perplexity %.6f, distill %.6f (%d tokens scored): relative difference %.3e",
                     theirs, ours.perplexity, ours.tokens, relative))
        XCTAssertLessThan(relative, 1e-4)
        XCTAssertGreaterThan(abs(theirs - Double(source.model.config.vocabSize)), 10, "a near-uniform model would prove little")
    }

    /// `transformers` reads our GGUF export (its loader undoes llama.cpp's rotary row order) and computes
    /// the logits our model does. Needs the `gguf` and `accelerate` packages besides torch.
    func testGGUFExportLoadsInTransformers() throws {
        try requireReferencePackages()
        let probe = try runPython(["-c", "import gguf, accelerate"])
        guard probe.status == 0 else {
            throw XCTSkip("\(Self.python) cannot import gguf and accelerate, which transformers needs to read GGUF files: pip install gguf accelerate to run this check")
        }
        let root = try makeTemporaryDirectory(self)
        let source = try makeTinyModelDirectory(in: root, tied: false, weightScale: 10, seed: 13)
        let url = root.appendingPathComponent("out/model.gguf")
        try ModelExport.export(modelAt: source.directory, format: .gguf, to: url)

        let (batch, length) = (2, 12), vocab = source.model.config.vocabSize
        var random = SeededRandom(seed: 21)
        let tokens = (0..<(batch * length)).map { _ in Int32(random.next() % UInt64(vocab)) }
        let program = """
            import json, sys, torch
            from transformers import LlamaForCausalLM
            model = LlamaForCausalLM.from_pretrained(sys.argv[1], gguf_file=sys.argv[2], dtype=torch.float32).eval()
            ids = torch.tensor(json.loads(sys.argv[3]), dtype=torch.int64).view(\(batch), \(length))
            with torch.no_grad():
                print(json.dumps(model(input_ids=ids, use_cache=False).logits.flatten().tolist()))
            """
        let reference = try XCTUnwrap(runPythonJSON(["-c", program, url.deletingLastPathComponent().path, url.lastPathComponent,
                                                     "[" + tokens.map(String.init).joined(separator: ",") + "]"]) as? [Double]).map(Float.init)
        let output = tokens.withUnsafeBufferPointer {
            source.model.forward(tokens: $0.baseAddress!, batch: batch, length: length, keepForBackward: false)
        }
        ReferenceFixtureTests.compare("GGUF export in transformers: logits", Array(UnsafeBufferPointer(start: output.logits, count: batch * length * vocab)),
                                      reference, tolerance: 1e-5)
    }

    /// A directory written by this `transformers`' `save_pretrained` (version 5 writes the rotary base only
    /// inside `rope_parameters`) loads here and gives its logits. A rope_theta of 500000 and norm eps of
    /// 1e-6 make both settings matter.
    func testTransformersSavedModelLoadsHere() throws {
        try requireReferencePackages()
        let directory = try makeTemporaryDirectory(self).appendingPathComponent("saved")
        let (batch, length, vocab) = (2, 10, 97)
        let program = """
            import json, sys, torch
            from transformers import LlamaConfig, LlamaForCausalLM
            torch.manual_seed(0)
            config = LlamaConfig(vocab_size=\(vocab), hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                 rms_norm_eps=1e-6, rope_theta=500000.0, tie_word_embeddings=False)
            model = LlamaForCausalLM(config).eval()
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p * 10 if p.dim() > 1 else 1 + 0.2 * torch.randn_like(p))
            model.save_pretrained(sys.argv[1])
            ids = torch.arange(\(batch * length)).mul(37).remainder(\(vocab)).view(\(batch), \(length))
            with torch.no_grad():
                print(json.dumps(model(input_ids=ids, use_cache=False).logits.flatten().tolist()))
            """
        let reference = try XCTUnwrap(runPythonJSON(["-c", program, directory.path]) as? [Double]).map(Float.init)

        let model = try ModelDirectory.load(directory)
        XCTAssertEqual(model.config.ropeTheta, 500000)
        XCTAssertEqual(model.config.rmsNormEps, 1e-6)
        let tokens = (0..<(batch * length)).map { Int32($0 * 37 % vocab) }
        let output = tokens.withUnsafeBufferPointer {
            model.forward(tokens: $0.baseAddress!, batch: batch, length: length, keepForBackward: false)
        }
        ReferenceFixtureTests.compare("transformers save_pretrained: logits", Array(UnsafeBufferPointer(start: output.logits, count: batch * length * vocab)),
                                      reference, tolerance: 1e-4)
    }

    /// SentencePiece's Python package encodes a text, line by line, to the ids `encodeLines` gives.
    func testTokenIDsMatchSentencePiece() throws {
        try requireReferencePackages()
        let root = try makeTemporaryDirectory(self)
        let source = try makeTinyModelDirectory(in: root)
        // Characters outside the training text (byte fallback), runs of spaces, tabs, a carriage return,
        // empty lines, digits and a last line without a newline.
        let tricky = generatedText(lines: 20, seed: 5)
            + "  two  spaces,\ttab and 12345 digits\r\n\n\nnaïve café — 한국어 🙂\n   \nlast line without newline"
        let text = root.appendingPathComponent("ids.txt")
        try Data(tricky.utf8).write(to: text)

        let result = try runPython([script("spm_ids.py"), "--model", source.tokenizer.modelPath, "--text", text.path])
        XCTAssertEqual(result.status, 0, result.transcript)
        let reference = result.output.split(whereSeparator: \.isWhitespace).compactMap { Int32(String($0)) }
        let ours = source.tokenizer.encode(tricky)
        print("sentencepiece ids: \(reference.count) from Python, \(ours.count) from distill, identical: \(reference == ours)")
        XCTAssertEqual(ours, reference)
        XCTAssertEqual(source.tokenizer.decode(ours), tricky, "the tokenizer is lossless")
    }
}

/// A reference script that exited with an error, or printed nothing.
struct PythonFailure: Error, CustomStringConvertible {
    let python: String
    let result: ProcessResult
    var description: String { "\(python) failed with status \(result.status):\n\(result.transcript)" }
}
