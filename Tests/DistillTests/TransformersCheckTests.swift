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

        let result = try runPython([script("score_hf.py"), "--model", source.directory.path, "--text", text.path,
                                    "--context", "\(context)", "--stride", "\(stride)"])
        XCTAssertEqual(result.status, 0, result.transcript)
        let line = try XCTUnwrap(result.output.split(separator: "\n").last, result.transcript)
        let reference = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))

        let raw = try Data(contentsOf: text)
        let tokens = source.tokenizer.encodeLines(String(decoding: raw, as: UTF8.self))
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
        let ours = source.tokenizer.encodeLines(tricky)
        print("sentencepiece ids: \(reference.count) from Python, \(ours.count) from distill, identical: \(reference == ours)")
        XCTAssertEqual(ours, reference)
        XCTAssertEqual(source.tokenizer.decode(ours), tricky, "the tokenizer is lossless")
    }
}
