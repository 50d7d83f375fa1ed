import XCTest
import Distill

/// The second bad-input sweep's findings (issue 25), each as the mistake a user made and the one line,
/// refusal or repair that now answers it. Recipe findings are in RecipeTests, run-directory ones in
/// PipelineTests and ReportTests, the damaged teacher cache in TeacherCacheInputTests.
final class BadInputSweepTests: XCTestCase {
    // MARK: damage

    /// Finding 3: `export --format gguf` replaced any file given as its output. Now only an earlier GGUF
    /// export of ours is replaced; a text, a token file or another model's weights are kept.
    func testGGUFExportReplacesOnlyAnEarlierGGUFExport() throws {
        let root = try TestCorpus.scratch("gguf-over")
        let model = try makeTinyModelDirectory(in: root.appendingPathComponent("m")).directory
        let notes = root.appendingPathComponent("notes.txt")
        try "keep me".write(to: notes, atomically: true, encoding: .utf8)
        let weights = model.appendingPathComponent("model.safetensors")
        for victim in [notes, weights] {
            let before = try Data(contentsOf: victim)
            XCTAssertThrowsError(try ModelExport.export(modelAt: model, format: .gguf, to: victim)) { error in
                XCTAssertTrue([ExportError.outputIsOtherFile(victim.path)].contains(error as? ExportError)
                              || "\(error)".contains("would overwrite"), "\(error)")
            }
            XCTAssertEqual(try Data(contentsOf: victim), before, "\(victim.lastPathComponent) was changed")
        }
        let gguf = root.appendingPathComponent("model.gguf")
        try ModelExport.export(modelAt: model, format: .gguf, to: gguf)
        XCTAssertNoThrow(try ModelExport.export(modelAt: model, format: .gguf, to: gguf, dtype: .f16), "an earlier export is replaced")
    }

    /// Finding 11: a SIGKILL during an export left `.NAME.tmp-PID-…` files that no export removed. The next
    /// export to the same output removes those of processes that are gone (and keeps a live one's).
    func testAnExportRemovesTheTemporariesOfAKilledExport() throws {
        let root = try TestCorpus.scratch("gguf-stale")
        let model = try makeTinyModelDirectory(in: root.appendingPathComponent("m")).directory
        let gguf = root.appendingPathComponent("model.gguf")
        var dead: Int32 = 4_000_000
        while kill(dead, 0) == 0 || errno != ESRCH { dead -= 1 }
        let stale = root.appendingPathComponent(".model.gguf.tmp-\(dead)-12345")
        let live = root.appendingPathComponent(".model.gguf.tmp-1-12345")  // pid 1 is always alive
        for path in [stale, live] { try Data(repeating: 7, count: 100).write(to: path) }
        try ModelExport.export(modelAt: model, format: .gguf, to: gguf)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale.path), "the dead export's temporary is left")
        XCTAssertTrue(FileManager.default.fileExists(atPath: live.path), "a live process's temporary was removed")
    }

    /// Finding 14: a second export to the same output while one runs is a lock conflict, said as one.
    func testASecondExportToTheSameOutputIsALockConflict() throws {
        let root = try TestCorpus.scratch("export-lock")
        let model = try makeTinyModelDirectory(in: root.appendingPathComponent("m")).directory
        let output = root.appendingPathComponent("hf")
        do {
            let first = try OutputLock(beside: output)  // an export in progress
            XCTAssertThrowsError(try ModelExport.export(modelAt: model, format: .hf, to: output)) {
                XCTAssertEqual($0 as? IOError, .locked(output.path))
                XCTAssertTrue("\($0)".contains("in use by another distill command"), "\($0)")
            }
            withExtendedLifetime(first) {}
        }
        XCTAssertNoThrow(try ModelExport.export(modelAt: model, format: .hf, to: output), "the lock is gone with its holder")
    }

    /// Finding 4 (and 18): a FIFO, a device or a loop of links where a file is read. Opening a FIFO blocked
    /// with nothing printed, ignoring SIGTERM; now every reader refuses what is not a regular file, at once.
    func testFilesThatAreNotRegularAreRefusedAtOnce() throws {
        let root = try TestCorpus.scratch("fifo")
        let fifo = root.appendingPathComponent("pipe.txt")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        let loop = root.appendingPathComponent("loop.json")
        try FileManager.default.createSymbolicLink(atPath: loop.path, withDestinationPath: loop.path)
        let started = Date()
        for (path, what) in [(fifo.path, "a named pipe"), ("/dev/zero", "a device"), (loop.path, "a loop of symbolic links")] {
            XCTAssertThrowsError(try RegularFile.read(path)) { XCTAssertTrue("\($0)".contains("not a regular file (it is \(what)"), "\($0)") }
            XCTAssertThrowsError(try Recipe.load(path)) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
            XCTAssertThrowsError(try LlamaConfig.read(from: URL(fileURLWithPath: path))) {
                XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)")
            }
        }
        let corpus = try TestCorpus.files()
        XCTAssertThrowsError(try Tokenizer.train(inputs: [fifo.path], vocabSize: 300, output: root.appendingPathComponent("t.model").path)) {
            XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)")
        }
        XCTAssertThrowsError(try TokenFile.prepare(tokenizer: Tokenizer(modelPath: corpus.tokenizer), inputs: [fifo.path],
                                                   output: root.appendingPathComponent("d.tok").path)) {
            XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)")
        }
        XCTAssertThrowsError(try Tokenizer(modelPath: fifo.path)) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "a reader waited on the FIFO")
    }

    /// Finding 8: the same corpus file twice (listed twice, or reached through a link) put the validation
    /// text into the training text as well.
    func testTheSameCorpusFileTwiceIsRefused() throws {
        let root = try TestCorpus.scratch("twice")
        let corpus = try TestCorpus.files()
        let link = root.appendingPathComponent("again.txt")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: corpus.text)
        for inputs in [[corpus.text.path, corpus.text.path], [corpus.text.path, link.path]] {
            XCTAssertThrowsError(try TokenFile.prepare(tokenizer: Tokenizer(modelPath: corpus.tokenizer), inputs: inputs,
                                                       output: root.appendingPathComponent("d.tok").path)) {
                XCTAssertEqual($0 as? TokenizerError, .duplicateInput(inputs[1], sameAs: inputs[0]))
            }
        }
        // A corpus folder holding a text and a link to it.
        let folder = root.appendingPathComponent("texts")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: corpus.text, to: folder.appendingPathComponent("a.txt"))
        try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent("b.txt"), withDestinationURL: folder.appendingPathComponent("a.txt"))
        XCTAssertThrowsError(try Pipeline.run(try PipelineTests.recipe(in: root, students: PipelineTests.students, text: folder.path),
                                              output: root.appendingPathComponent("run").path)) {
            XCTAssertTrue("\($0)".hasPrefix("corpus:") && "\($0)".contains("is the same file as"), "\($0)")
        }
    }

    // MARK: silent wrong results

    /// Finding 6: a temperature schedule with a teacher cache was accepted and ignored (τ stayed the cache's).
    func testATemperatureScheduleWithATeacherCacheIsRefused() throws {
        let (path, _) = try CacheFixture.build(TeacherCacheSettings(mode: .samples(4), temperature: 1))
        var settings = DistillationSettings.student
        settings.schedule = DistillationSchedule(kd: .constant, temperature: try TemperatureSchedule(parsing: "4:1"))
        settings.logits.temperature = 1
        XCTAssertThrowsError(try CachedTeacherObjective(cache: TeacherCache(path: path), studentConfig: CacheFixture.studentConfig,
                                                        settings: settings)) {
            XCTAssertEqual(($0 as? SettingError)?.setting, .temperatureSchedule, "\($0)")
        }
    }

    /// Finding 9: `generations --resume` into a trained model's directory wrote gen-1/, gen-2/ and
    /// generations.json among its files. Any folder that is not a generations output is refused.
    func testGenerationsRefuseAFolderThatIsNotTheirs() throws {
        let root = try TestCorpus.scratch("generations-foreign")
        let model = try makeTinyModelDirectory(in: root.appendingPathComponent("m")).directory
        XCTAssertThrowsError(try BornAgain.checkIsGenerationsDirectory(model.path)) {
            XCTAssertTrue("\($0)".contains("is a model directory, not the output of `distill generations`"), "\($0)")
        }
        let ours = root.appendingPathComponent("g")
        for name in ["gen-1", "gen-2"] { try FileManager.default.createDirectory(at: ours.appendingPathComponent(name), withIntermediateDirectories: true) }
        try "{}".write(to: ours.appendingPathComponent(BornAgain.tableFile), atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try BornAgain.checkIsGenerationsDirectory(ours.path))
        XCTAssertNoThrow(try BornAgain.checkIsGenerationsDirectory(root.appendingPathComponent("new").path))
    }

    // MARK: unclear messages

    /// Finding 24: a context of 2^40 was reported as "a batch of 1 × 0 tokens" (a 32-bit format).
    func testAHugeContextIsShownAsItIs() throws {
        let config = LlamaConfig(hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 1, numAttentionHeads: 2, vocabSize: 11,
                                 maxPositionEmbeddings: 1 << 40)
        XCTAssertThrowsError(try config.checkTrainingActivations(batch: 1, context: 1 << 40)) {
            XCTAssertTrue("\($0)".contains("a batch of 1 × 1099511627776 tokens"), "\($0)")
        }
    }

    /// The activation pre-check counts what `--recompute-activations` saves: a batch that only fits with it
    /// is refused without it (naming the option) and accepted with it.
    func testTheActivationCheckCountsRecomputation() throws {
        let config = try LlamaConfig.preset("small", vocabSize: 4096, context: 256)
        let model = try LlamaModel(config: config, seed: 1)
        let kept = model.activationBytes(batch: 8, length: 256)
        model.recomputesGateUp = true
        let recomputed = model.activationBytes(batch: 8, length: 256)
        XCTAssertLessThan(recomputed, kept)
        let available = (kept + recomputed) / 2 / MachineMemory.usableFraction
        XCTAssertThrowsError(try config.checkTrainingActivations(batch: 8, context: 256, availableBytes: available)) {
            XCTAssertTrue("\($0)".contains("recompute activations"), "\($0)")
        }
        XCTAssertNoThrow(try config.checkTrainingActivations(batch: 8, context: 256, recomputingGateUp: true, availableBytes: available))
        // It counts the model's own count of blocks that recompute by default, too.
        let byDefault = model.activationBytes(batch: 8, length: 256)  // still recomputing every block but the last
        model.recomputesGateUp = false
        let defaultBytes = model.activationBytes(batch: 8, length: 256)
        model.firstBlocksRecomputingGateUp = 0
        let keptAll = model.activationBytes(batch: 8, length: 256)
        XCTAssertLessThan(byDefault, defaultBytes)
        XCTAssertLessThan(defaultBytes, keptAll)
        let between = (defaultBytes + keptAll) / 2 / MachineMemory.usableFraction
        XCTAssertNoThrow(try config.checkTrainingActivations(batch: 8, context: 256, availableBytes: between))
        XCTAssertThrowsError(try config.checkTrainingActivations(batch: 8, context: 256, firstBlocksRecomputingGateUp: 0,
                                                                 availableBytes: between))
    }

    /// Finding 26: a config.json with a NaN literal was "not a JSON object of config fields".
    func testAConfigThatIsNotJSONSaysSoAndWhere() throws {
        let root = try TestCorpus.scratch("nan-config")
        let file = root.appendingPathComponent("config.json")
        try #"{"hidden_size": NaN}"#.write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try LlamaConfig.read(from: file)) {
            XCTAssertTrue("\($0)".contains("is not valid JSON (invalid value around character 16)"), "\($0)")
        }
    }

    /// Finding 23: an output that could not be removed printed Foundation's NSCocoaErrorDomain dump.
    func testAnOutputThatCannotBeRemovedIsOneSentence() throws {
        XCTAssertThrowsError(try AtomicFile.remove(URL(fileURLWithPath: "/proc/1/comm"))) { error in
            guard case .cannotRemove(let path, _)? = error as? IOError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "/proc/1/comm")
            XCTAssertFalse("\(error)".contains("NSCocoaErrorDomain") || "\(error)".contains("\n"), "\(error)")
        }
    }

    /// Finding 21 and 22: a resume of another kind of run, or with another shape, names what differs
    /// instead of the first setting compared ("--ce-weight is off") or a tensor's shape.
    func testResumesOfAnotherKindOrShapeSayWhatDiffers() throws {
        try skipUnlessDistillIsBuilt()
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("resume-kinds")
        let teacher = scratch.appendingPathComponent("teacher").path, student = scratch.appendingPathComponent("student").path
        let flags = ["--data", corpus.data, "--context", "32", "--batch-size", "2", "--eval-every", "0", "--log-every", "1"]
        XCTAssertEqual(try run(["train", "--output", teacher, "--preset", "tiny-student", "--steps", "2"] + flags).status, 0)
        XCTAssertEqual(try run(["student", "--teacher", teacher, "--output", student, "--preset", "tiny-student", "--steps", "2"] + flags).status, 0)
        try expectError(["train", "--output", student, "--preset", "tiny-student", "--steps", "4", "--resume"] + flags,
                        mentions: "is a distillation checkpoint: resume it with `distill student`")
        try expectError(["train", "--output", teacher, "--preset", "tiny", "--steps", "4", "--resume"] + flags,
                        mentions: "resume with the preset or config it was trained with")
        let generations = scratch.appendingPathComponent("g").path
        func generationFlags(steps: Int) -> [String] {
            ["generations", "--output", generations, "--count", "3", "--preset", "tiny-student", "--steps", String(steps)] + flags
        }
        XCTAssertEqual(try run(generationFlags(steps: 2)).status, 0)
        try expectError(generationFlags(steps: 2) + ["--resume", "--teach-with", "all"],
                        mentions: "--teach-with is not what generation 3 was trained with")
    }

    /// Finding 13: `run --threads 200` failed inside SentencePiece's trainer (at most 128 threads) after
    /// making the run directory. The range is every command's, and the trainer takes what it can.
    func testManyThreadsTrainATokenizer() throws {
        let root = try TestCorpus.scratch("threads")
        let corpus = try TestCorpus.files()
        XCTAssertNoThrow(try Tokenizer.train(inputs: [corpus.text.path], vocabSize: 300, output: root.appendingPathComponent("t.model").path,
                                             threads: 200))
        try skipUnlessDistillIsBuilt()
        try expectError(["run", "--corpus", corpus.text.path, "--threads", "2000", "--output", root.appendingPathComponent("run").path],
                        mentions: "--threads must be between 1 and 1024")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("run").path))
    }

    /// Finding 5: with a context of tens of thousands of tokens a first step takes minutes, and SIGTERM
    /// waited for it. With nothing unsaved since the last save, a signal now stops the run at once.
    func testASignalDuringAVeryLongFirstStepStopsAtOnce() throws {
        try skipUnlessDistillIsBuilt()
        let corpus = try TestCorpus.files()
        let output = try TestCorpus.scratch("long-step").appendingPathComponent("model").path
        let (process, errors, printed) = try startAndWaitForProgress(
            ["train", "--data", corpus.data, "--output", output, "--preset", "tiny-student", "--context", "60000",
             "--batch-size", "1", "--steps", "2", "--eval-every", "0"], until: "model:", drain: false)
        var seen = printed
        usleep(300_000)  // into the first step
        let signalled = Date()
        process.terminate()
        seen += errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let log = String(decoding: seen, as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 130, log)
        XCTAssertLessThan(Date().timeIntervalSince(signalled), 10, "the signal waited for the step")
        XCTAssertTrue(log.contains("nothing new to save"), log)
    }
}
