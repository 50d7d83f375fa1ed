import Distill
import Foundation
import XCTest

/// Readers and writers of the text → tokens → model → export way, on awkward input: outputs that
/// would overwrite inputs, interrupted writes, long lines, U+2581, a tokenizer that does not fit its
/// model, and the messages of each.
final class IOHardeningTests: XCTestCase {
    // MARK: tokenizer

    /// Decoding is linear in the number of ids (a quadratic one would not finish here).
    func testDecodingManyIDs() throws {
        let tokenizer = try TestText.tokenizer()
        let text = TestText.corpus(lines: 8000, seed: 5)
        let ids = tokenizer.encode(text)
        XCTAssertGreaterThan(ids.count, 50_000)
        XCTAssertEqual(tokenizer.decode(ids), text)
        let many = (0..<200_000).map { Int32($0 % tokenizer.vocabSize) }
        XCTAssertFalse(tokenizer.decode(many).isEmpty)
    }

    /// SentencePiece reads U+2581 as its space symbol; encoding spells it in byte pieces instead.
    func testSpaceSymbolRoundTrips() throws {
        let texts = ["▁", "a▁b", "▁▁ leading", "trailing ▁", "x ▁ y\n▁\n", "mixed ▁the▁ king\u{2581}\u{2582}", "▁" + String(repeating: "▁ ", count: 50)]
        for type in TokenizerModelType.allCases {
            let tokenizer = try TestText.tokenizer(type)
            for text in texts {
                XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), text, "\(type): \(text.debugDescription)")
            }
            // Text without U+2581 encodes exactly as before.
            let plain = "the king saw the city\n"
            XCTAssertFalse(tokenizer.decode(tokenizer.encode(plain)).contains("\u{2581}"))
        }
    }

    /// Printing while generating gives exactly the text of all the ids, byte pieces included.
    func testIncrementalDecoderGivesTheWholeText() throws {
        let tokenizer = try TestText.tokenizer()
        var random = SeededRandom(seed: 3)
        let samples = TokenizerTests.awkwardTexts + ["emoji 😀👍🏽 ▁ and 中文 in one"]
        for text in samples {
            var decoder = IncrementalDecoder(tokenizer: tokenizer)
            var streamed = ""
            for id in tokenizer.encode(text) { streamed += decoder.append(id) }
            streamed += decoder.finish()
            XCTAssertEqual(streamed, text)
        }
        // Random sequences of the pieces that are not bytes.
        let pieces = (0..<Int32(tokenizer.vocabSize)).filter { tokenizer.pieceType(for: $0) != .byte }
        for _ in 0..<50 {
            let ids = (0..<40).map { _ in pieces[Int(random.next() % UInt64(pieces.count))] }
            var decoder = IncrementalDecoder(tokenizer: tokenizer)
            var streamed = ""
            for id in ids { streamed += decoder.append(id) }
            streamed += decoder.finish()
            XCTAssertEqual(streamed, tokenizer.decode(ids), "\(ids)")
        }
    }

    /// A line longer than SentencePiece's sentence limit is cut into pieces, not skipped.
    func testLongLinesAreCutForTraining() throws {
        let folder = try makeTemporaryDirectory(self)
        let input = folder.appendingPathComponent("one-line.txt")
        // One 170 KB line: SentencePiece alone drops it and then has nothing to train on.
        let text = TestText.corpus(lines: 4000, seed: 9).replacingOccurrences(of: "\n", with: " ") + "\n"
        try TestText.write(text, to: input)
        let output = folder.appendingPathComponent("m.model").path
        let report = try Tokenizer.train(inputs: [input.path], vocabSize: 320, output: output)
        XCTAssertEqual(report.splitLines, 1)
        let tokenizer = try Tokenizer(modelPath: output)
        XCTAssertEqual(tokenizer.vocabSize, 320)
        // The line's words were learned: some pieces are whole words.
        let words = (0..<Int32(tokenizer.vocabSize)).compactMap { tokenizer.pieceType(for: $0) == .normal ? tokenizer.piece(for: $0) : nil }
            .filter { $0.count >= 4 }
        XCTAssertFalse(words.isEmpty)
        XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), text)
    }

    /// SentencePiece's BPE trainer crashes on a text with no two characters side by side.
    func testBPEWithNothingToMergeIsRefused() throws {
        let folder = try makeTemporaryDirectory(self)
        for text in ["a\na\n", "é\nb\n\nc"] {
            let input = folder.appendingPathComponent("single.txt")
            try TestText.write(text, to: input)
            assertThrows(TokenizerError.nothingToMerge) {
                try Tokenizer.train(inputs: [input.path], vocabSize: 300, modelType: .bpe, output: folder.appendingPathComponent("b.model").path)
            }
        }
    }

    // MARK: outputs never overwrite inputs

    func testTokenizerTrainingRefusesToOverwriteItsInput() throws {
        let folder = try makeTemporaryDirectory(self)
        let input = folder.appendingPathComponent("corpus.txt")
        let text = TestText.corpus(lines: 300, seed: 2)
        try TestText.write(text, to: input)
        let link = folder.appendingPathComponent("link.txt")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: input)
        for output in [input.path, link.path, folder.path + "/./corpus.txt"] {
            assertThrows(try Tokenizer.train(inputs: [input.path], vocabSize: 300, output: output), mentioning: ["would overwrite input"])
        }
        assertThrows(try Tokenizer.train(inputs: [folder.path], vocabSize: 300, output: input.path), mentioning: ["would overwrite input"])
        XCTAssertEqual(try String(contentsOf: input, encoding: .utf8), text)
    }

    func testPrepareRefusesToOverwriteItsInputsAndTokenizer() throws {
        let folder = try makeTemporaryDirectory(self)
        let input = folder.appendingPathComponent("corpus.txt")
        let text = TestText.corpus(lines: 300, seed: 2)
        try TestText.write(text, to: input)
        let tokenizer = try TestText.tokenizer()
        let tokenizerCopy = folder.appendingPathComponent("copy.model")
        try FileManager.default.copyItem(atPath: tokenizer.modelPath, toPath: tokenizerCopy.path)
        let copy = try Tokenizer(modelPath: tokenizerCopy.path)
        let tokenizerBytes = try Data(contentsOf: tokenizerCopy)
        assertThrows(try TokenFile.prepare(tokenizer: copy, inputs: [input.path], output: input.path), mentioning: ["would overwrite input"])
        assertThrows(try TokenFile.prepare(tokenizer: copy, inputs: [input.path], output: tokenizerCopy.path),
                     mentioning: ["would overwrite tokenizer"])
        // The tokenizer copy beside the output would land on the input.
        let named = folder.appendingPathComponent("d.tok.tokenizer.model")
        try TestText.write(text, to: named)
        assertThrows(try TokenFile.prepare(tokenizer: copy, inputs: [named.path], output: folder.appendingPathComponent("d.tok").path),
                     mentioning: ["would overwrite input"])
        XCTAssertEqual(try String(contentsOf: input, encoding: .utf8), text)
        XCTAssertEqual(try String(contentsOf: named, encoding: .utf8), text)
        XCTAssertEqual(try Data(contentsOf: tokenizerCopy), tokenizerBytes)

        // Preparing again with the copy a run left beside the data is fine: the copy is the tokenizer.
        let data = folder.appendingPathComponent("data.tok").path
        try TokenFile.prepare(tokenizer: copy, inputs: [input.path], output: data)
        let companion = try Tokenizer(modelPath: TokenFile.companionTokenizerPath(for: data))
        try TokenFile.prepare(tokenizer: companion, inputs: [input.path], output: data)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: TokenFile.companionTokenizerPath(for: data))), tokenizerBytes)
    }

    func testExportRefusesOutputsInsideOrOverTheModel() throws {
        let root = try makeTemporaryDirectory(self)
        let source = try makeTinyModelDirectory(in: root)
        let weights = source.directory.appendingPathComponent("model.safetensors")
        let tokenizer = source.directory.appendingPathComponent("tokenizer.model")
        let before = try [weights, tokenizer].map { try Data(contentsOf: $0) }
        let link = root.appendingPathComponent("link")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: source.directory)
        for (format, output) in [(ExportFormat.gguf, weights), (.gguf, tokenizer), (.gguf, link.appendingPathComponent("model.safetensors")),
                                 (.hf, source.directory), (.hf, link), (.hf, root)] {
            assertThrows(try ModelExport.export(modelAt: source.directory, format: format, to: output), mentioning: ["would overwrite model"])
        }
        XCTAssertEqual(try [weights, tokenizer].map { try Data(contentsOf: $0) }, before)
        XCTAssertNoThrow(try ModelDirectory.load(source.directory))
    }

    func testHFExportReplacesOnlyAnEarlierExport() throws {
        let root = try makeTemporaryDirectory(self)
        let source = try makeTinyModelDirectory(in: root.appendingPathComponent("a"), seed: 3)
        let other = try makeTinyModelDirectory(in: root.appendingPathComponent("b"), seed: 4)
        // Another model with its training state: never replaced.
        let training = other.directory.appendingPathComponent("training")
        try FileManager.default.createDirectory(at: training, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: training.appendingPathComponent("state.json"))
        let otherWeights = try Data(contentsOf: other.directory.appendingPathComponent("model.safetensors"))
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .hf, to: other.directory), mentioning: ["not an earlier `distill export`"])
        // Nor one without it: a model directory that is not an export is someone's model.
        try FileManager.default.removeItem(at: training)
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .hf, to: other.directory), mentioning: ["not an earlier `distill export`"])
        XCTAssertEqual(try Data(contentsOf: other.directory.appendingPathComponent("model.safetensors")), otherWeights)

        // An empty directory, then an earlier export, are replaced.
        let output = root.appendingPathComponent("export")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        try ModelExport.export(modelAt: other.directory, format: .hf, to: output, dtype: .bf16)
        try ModelExport.export(modelAt: source.directory, format: .hf, to: output)
        let loaded = try ModelDirectory.load(output)
        XCTAssertEqual(Array(loaded.parameters), Array(source.model.parameters))
        let config = try String(contentsOf: output.appendingPathComponent("config.json"), encoding: .utf8)
        XCTAssertTrue(config.contains("float32"), config)
        // No temporaries are left beside it.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path).filter { $0.hasPrefix(".") }, [])
        // A stray file in an earlier export makes it someone's folder.
        try Data("notes".utf8).write(to: output.appendingPathComponent("README.md"))
        assertThrows(try ModelExport.export(modelAt: source.directory, format: .hf, to: output), mentioning: ["not an earlier `distill export`"])
    }

    // MARK: temporaries

    /// A directory written as one unit: nothing appears until the body is done, a failing body leaves
    /// the old directory, and the temporary is registered for removal on interrupt.
    func testDirectoryIsWrittenAsOneUnit() throws {
        let root = try makeTemporaryDirectory(self)
        let output = root.appendingPathComponent("out")
        try AtomicFile.writeDirectory(output) { try Data("1".utf8).write(to: $0.appendingPathComponent("a")) }
        struct Stop: Error {}
        XCTAssertThrowsError(try AtomicFile.writeDirectory(output) { temporary in
            XCTAssertTrue(TemporaryFiles.registered.contains(temporary.path))
            try Data("2".utf8).write(to: temporary.appendingPathComponent("a"))
            throw Stop()
        })
        XCTAssertEqual(try String(contentsOf: output.appendingPathComponent("a"), encoding: .utf8), "1")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path), ["out"])

        // What an interrupt does: every registered temporary is removed.
        XCTAssertThrowsError(try AtomicFile.writeDirectory(output) { temporary in
            try Data("3".utf8).write(to: temporary.appendingPathComponent("a"))
            XCTAssertTrue(TemporaryFiles.removeAll().contains(temporary.path))
            XCTAssertFalse(FileManager.default.fileExists(atPath: temporary.path))
        })
        XCTAssertEqual(try String(contentsOf: output.appendingPathComponent("a"), encoding: .utf8), "1")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path), ["out"])
    }

    /// While `prepare` writes, its hidden temporary is registered; once done, nothing is.
    func testPrepareRegistersItsTemporary() throws {
        let folder = try makeTemporaryDirectory(self)
        let input = folder.appendingPathComponent("corpus.txt")
        try TestText.write(TestText.corpus(lines: 2000, seed: 4), to: input)
        let output = folder.appendingPathComponent("data.tok").path
        var seen: [String] = []
        try TokenFile.prepare(tokenizer: try TestText.tokenizer(), inputs: [input.path], output: output) { _ in
            seen += TemporaryFiles.registered.filter { $0.contains(".data.tok.tmp-") && FileManager.default.fileExists(atPath: $0) }
        }
        XCTAssertFalse(seen.isEmpty)
        XCTAssertFalse(TemporaryFiles.registered.contains { $0.contains("data.tok") })
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix(".") }, [])
    }

    // MARK: messages

    func testFoldersAreNamedAsFolders() throws {
        let folder = try makeTemporaryDirectory(self)
        assertThrows(DataError.tokenFileIsFolder(folder.path)) { _ = try TokenFile(path: folder.path) }
        XCTAssertFalse(DataError.tokenFileIsFolder(folder.path).description.contains("permission"))
        assertThrows(TokenizerError.folderInput(folder.path)) { _ = try EvaluationTokens(textFile: folder.path, tokenizer: try TestText.tokenizer()) }
    }

    func testEvaluatingAFileWithoutValidationSplitSaysHowToMakeOne() throws {
        let folder = try makeTemporaryDirectory(self)
        let input = folder.appendingPathComponent("corpus.txt")
        try TestText.write(TestText.corpus(lines: 200, seed: 4), to: input)
        let output = folder.appendingPathComponent("data.tok").path
        let tokenizer = try TestText.tokenizer()
        try TokenFile.prepare(tokenizer: tokenizer, inputs: [input.path], output: output, valFraction: 0)
        assertThrows(EvaluationError.noValidationSplit(output, tokens: 0)) {
            _ = try EvaluationTokens(validationSplitOf: output, tokenizer: tokenizer)
        }
        XCTAssertTrue(EvaluationError.noValidationSplit(output, tokens: 0).message(naming: { "--" + $0.rawValue }).contains("--val_fraction"))
    }

    func testJSONOutputWritesNonFiniteNumbersAsNull() throws {
        let data = try JSONOutput.data(["perplexity": Double.nan, "nll": [Double.infinity, 1.5], "name": "m", "tokens": 3,
                                        "nested": ["x": -Double.infinity] as [String: Any]])
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertEqual(text, #"{"name":"m","nested":{"x":null},"nll":[null,1.5],"perplexity":null,"tokens":3}"#)
    }

    /// A tokenizer with fewer pieces than the model's vocabulary would spell sampled ids it lacks as garbage.
    func testTokenizerMustFitTheModel() throws {
        let root = try makeTemporaryDirectory(self)
        let fitting = try makeTinyModelDirectory(in: root.appendingPathComponent("fit"))
        XCTAssertNoThrow(try ModelAndTokenizer(directory: fitting.directory))
        let padded = try makeTinyModelDirectory(in: root.appendingPathComponent("padded"), vocabPadding: 20)
        assertThrows(try ModelAndTokenizer(directory: padded.directory), mentioning: ["300 pieces", "320", "does not belong"])
    }
}

/// The same, through the `distill` executable.
final class IOCommandLineTests: XCTestCase {
    override func setUpWithError() throws {
        try skipUnlessDistillIsBuilt()
    }

    func testDecodeTakesManyIDs() throws {
        let corpus = try TestCorpus.files()
        let tokenizer = try Tokenizer(modelPath: corpus.tokenizer)
        let text = try String(contentsOf: corpus.text, encoding: .utf8)
        let ids = tokenizer.encode(text)
        // 100,000 ids as arguments (more would pass the system's limit on a command line), 200,000 on stdin.
        let arguments = (0..<100_000).map { String(ids[$0 % ids.count]) }
        let fromArguments = try run(["tokenizer", "decode", "--tokenizer", corpus.tokenizer] + arguments)
        XCTAssertEqual(fromArguments.status, 0, fromArguments.error)
        // The command ends the text with a newline unless it already does.
        func printed(_ text: String) -> String { text.hasSuffix("\n") ? text : text + "\n" }
        XCTAssertEqual(fromArguments.output, printed(tokenizer.decode(arguments.map { Int32($0)! })))
        let many = (0..<200_000).map { ids[$0 % ids.count] }
        let fromInput = try run(["tokenizer", "decode", "--tokenizer", corpus.tokenizer], input: many.map(String.init).joined(separator: " "))
        XCTAssertEqual(fromInput.status, 0, fromInput.error)
        XCTAssertEqual(fromInput.output, printed(tokenizer.decode(many)))
        // encode | decode round-trips, U+2581 included.
        let awkward = "the king ▁ saw\n"
        let encoded = try run(["tokenizer", "encode", "--tokenizer", corpus.tokenizer, "--text", awkward])
        let decoded = try run(["tokenizer", "decode", "--tokenizer", corpus.tokenizer], input: encoded.output)
        XCTAssertEqual(decoded.output, awkward)
        try expectError(["tokenizer", "decode", "--tokenizer", corpus.tokenizer, "--", "-1", "5"], mentions: "outside the vocabulary")
        try expectError(["tokenizer", "decode", "--tokenizer", corpus.tokenizer, "12", "x"], mentions: "not a token id")
    }

    func testOutputsThatWouldOverwriteInputsAreRefused() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("io-overwrite")
        let text = scratch.appendingPathComponent("text.txt")
        try FileManager.default.copyItem(at: corpus.text, to: text)
        let tokenizer = scratch.appendingPathComponent("t.model")
        try FileManager.default.copyItem(atPath: corpus.tokenizer, toPath: tokenizer.path)
        let textBytes = try Data(contentsOf: text), tokenizerBytes = try Data(contentsOf: tokenizer)
        try expectError(["tokenizer", "train", "--input", text.path, "--vocab-size", "300", "--output", text.path], mentions: "would overwrite --input")
        try expectError(["prepare", "--tokenizer", tokenizer.path, "--input", text.path, "--output", text.path], mentions: "would overwrite --input")
        try expectError(["prepare", "--tokenizer", tokenizer.path, "--input", text.path, "--output", tokenizer.path], mentions: "would overwrite --tokenizer")
        XCTAssertEqual(try Data(contentsOf: text), textBytes)
        XCTAssertEqual(try Data(contentsOf: tokenizer), tokenizerBytes)

        let model = try makeTinyModelDirectory(in: scratch.appendingPathComponent("m"))
        let weights = model.directory.appendingPathComponent("model.safetensors")
        let weightBytes = try Data(contentsOf: weights)
        try expectError(["export", "--model", model.directory.path, "--format", "gguf", "--output", weights.path], mentions: "would overwrite --model")
        try expectError(["export", "--model", model.directory.path, "--format", "hf", "--output", model.directory.path + "/"], mentions: "would overwrite --model")
        XCTAssertEqual(try Data(contentsOf: weights), weightBytes)
    }

    /// Ctrl-C while `prepare` writes: exit 130 and no hidden temporary left.
    func testInterruptedPrepareLeavesNoTemporary() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("io-interrupt")
        // About 16 MB, so that encoding takes a while after the temporary appears.
        let big = scratch.appendingPathComponent("big.txt")
        let chunk = try Data(contentsOf: corpus.text)
        _ = FileManager.default.createFile(atPath: big.path, contents: nil)
        let handle = try FileHandle(forWritingTo: big)
        for _ in 0..<max(1, 16_000_000 / chunk.count) { handle.write(chunk) }
        try handle.close()
        let output = scratch.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        let errors = Pipe()
        let process = try startProcess(Self.distillExecutable, ["prepare", "--tokenizer", corpus.tokenizer, "--input", big.path, "--output",
                                                                output.appendingPathComponent("big.tok").path], standardError: errors)
        var sawTemporary = false
        for _ in 0..<4000 where process.isRunning {
            if try FileManager.default.contentsOfDirectory(atPath: output.path).contains(where: { $0.contains(".tmp-") }) {
                sawTemporary = true
                break
            }
            usleep(2000)
        }
        process.interrupt()
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertTrue(sawTemporary)
        XCTAssertEqual(process.terminationStatus, 130, log)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: output.path), [], log)
    }

    /// Ctrl-C at random moments of `export --format hf` over an earlier export: the directory is the old
    /// export or the new one, and no temporary is left.
    func testInterruptedExportLeavesAWholeDirectory() throws {
        let scratch = try TestCorpus.scratch("io-export-interrupt")
        let model = try makeTinyModelDirectory(in: scratch.appendingPathComponent("m"))
        let output = scratch.appendingPathComponent("hf")
        try ModelExport.export(modelAt: model.directory, format: .hf, to: output, dtype: .bf16)
        var random = SeededRandom(seed: 5)
        var outcomes: [Int32: Int] = [:]
        for trial in 0..<20 {
            let dtype = trial % 2 == 0 ? "f32" : "bf16"
            let process = try startProcess(Self.distillExecutable, ["export", "--model", model.directory.path, "--format", "hf",
                                                                    "--output", output.path, "--dtype", dtype])
            // Starting the process takes tens of milliseconds; the export itself about as long again.
            usleep(UInt32(30_000 + random.next() % 170_000))
            process.interrupt()
            process.waitUntilExit()
            // Killed by the signal itself when it came before the command installed its handler (nothing
            // was written yet then).
            let killedEarly = process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGINT
            outcomes[killedEarly ? -SIGINT : process.terminationStatus, default: 0] += 1
            XCTAssertTrue(killedEarly || [0, 130].contains(process.terminationStatus), "trial \(trial): status \(process.terminationStatus)")
            // Whatever happened, the directory loads and its config names the dtype its weights have.
            let config = try String(contentsOf: output.appendingPathComponent("config.json"), encoding: .utf8)
            let weights = try SafetensorsFile(url: output.appendingPathComponent("model.safetensors"))
            let stored = try weights.info(weights.tensorNames[0]).dtype
            XCTAssertEqual(config.contains("bfloat16"), stored == .bf16, "trial \(trial)")
            XCTAssertNoThrow(try ModelDirectory.load(output), "trial \(trial)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasPrefix(".") }, [], "trial \(trial)")
        }
        print("interrupted export: exit statuses \(outcomes)")
    }

    func testClearMessages() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("io-messages")
        let model = try makeTinyModelDirectory(in: scratch.appendingPathComponent("m"))
        try expectError(["bench", "--preset", "tiny-student"], mentions: "teacher preset")
        try expectError(["eval", "--model", model.directory.path, "--text", scratch.path], mentions: "is a folder")
        try expectError(["train", "--data", scratch.path, "--output", scratch.appendingPathComponent("o").path, "--steps", "1"], mentions: "is a folder")

        // A token file without a validation split, made with the model's tokenizer.
        let data = scratch.appendingPathComponent("noval.tok").path
        let prepared = try run(["prepare", "--tokenizer", model.tokenizer.modelPath, "--input", model.text.path, "--output", data, "--val-fraction", "0"])
        XCTAssertEqual(prepared.status, 0, prepared.error)
        try expectError(["eval", "--model", model.directory.path, "--data", data], mentions: "--val-fraction")

        // One line longer than SentencePiece's limit trains, and the command says it was cut.
        let line = scratch.appendingPathComponent("line.txt")
        try TestText.write(TestText.corpus(lines: 4000, seed: 9).replacingOccurrences(of: "\n", with: " ") + "\n", to: line)
        let trained = try run(["tokenizer", "train", "--input", line.path, "--vocab-size", "320", "--output", scratch.appendingPathComponent("l.model").path])
        XCTAssertEqual(trained.status, 0, trained.error)
        XCTAssertTrue(trained.error.contains("cut into pieces"), trained.error)
        _ = corpus
    }

    /// A model whose weights hold NaN: `eval --json` never prints Foundation's raw error. Loading may
    /// refuse such a model in one line; when it does not, the JSON parses and has null for the NaNs.
    func testEvalJSONOnANaNModel() throws {
        let scratch = try TestCorpus.scratch("io-nan")
        let source = try makeTinyModelDirectory(in: scratch.appendingPathComponent("m"))
        for index in 0..<source.model.parameters.count { source.model.parameters[index] = .nan }
        let nanModel = scratch.appendingPathComponent("nan")
        try ModelDirectory.save(source.model, tokenizerModel: source.tokenizer.modelPath, to: nanModel)
        let outcome = try run(["eval", "--model", nanModel.path, "--text", source.text.path, "--json"])
        XCTAssertFalse(outcome.error.contains("NSCocoaErrorDomain"), outcome.error)
        if outcome.status == 0 {
            let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(outcome.output.utf8)) as? [String: Any], outcome.output)
            XCTAssertTrue(report["perplexity"] is NSNull, outcome.output)
        } else {
            XCTAssertEqual(outcome.error.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count, 1, outcome.error)
        }
    }

    func testNumericFlagsAreBounded() throws {
        let scratch = try TestCorpus.scratch("io-flags")
        let model = try makeTinyModelDirectory(in: scratch.appendingPathComponent("m"))
        let path = model.directory.path
        for threads in ["0", "-1", "100000"] {
            try expectError(["eval", "--model", path, "--text", model.text.path, "--threads", threads], mentions: "--threads")
            try expectError(["sample", "--model", path, "--threads", threads], mentions: "--threads")
            try expectError(["bench", "--threads", threads], mentions: "--threads")
        }
        try expectError(["bench", "--repeats", "1000000000"], mentions: "--repeats")
        try expectError(["bench", "--repeats", "0"], mentions: "--repeats")
        for value in ["nan", "inf", "-inf"] {
            try expectError(["sample", "--model", path, "--temperature", value], mentions: "--temperature")
            try expectError(["sample", "--model", path, "--top-p", value], mentions: "--top-p")
            try expectError(["prepare", "--tokenizer", model.tokenizer.modelPath, "--input", model.text.path,
                             "--output", scratch.appendingPathComponent("x.tok").path, "--val-fraction", value], mentions: "--val-fraction")
        }
        // A tokenizer with fewer pieces than the model's vocabulary.
        let padded = try makeTinyModelDirectory(in: scratch.appendingPathComponent("p"), vocabPadding: 8)
        try expectError(["sample", "--model", padded.directory.path, "--max-tokens", "3"], mentions: "does not belong")
    }
}
