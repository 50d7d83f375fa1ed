import XCTest
import Distill

/// The training commands on what a user can get wrong or what can happen to a run: resumes that do not
/// match, outputs that would destroy inputs, two runs in one directory, signals, kills, full disks and
/// non-finite losses.
extension CommandLineTests {
    /// A tiny teacher (trained once per call) and the flags every run here shares.
    func tinyRunFlags(_ corpus: TestCorpus.Files) -> [String] {
        ["--data", corpus.data, "--context", "32", "--batch-size", "2", "--eval-batches", "1", "--log-every", "1"]
    }

    func trainTiny(_ output: String, steps: Int, seed: Int = 1, extra: [String] = []) throws {
        let corpus = try TestCorpus.files()
        let outcome = try run(["train", "--output", output, "--preset", "tiny-student", "--steps", String(steps), "--seed", String(seed)]
                              + tinyRunFlags(corpus) + extra)
        XCTAssertEqual(outcome.status, 0, outcome.error)
    }

    /// Resume refuses any change of the objective, naming the flag (issue: resume ignored the objective).
    func testResumeRefusesAnotherObjective() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("resume-objective")
        let teacher = scratch.appendingPathComponent("teacher").path, other = scratch.appendingPathComponent("other").path
        try trainTiny(teacher, steps: 3)
        try trainTiny(other, steps: 3, seed: 2)
        let student = scratch.appendingPathComponent("student").path
        let base = ["student", "--teacher", teacher, "--output", student, "--preset", "tiny-student"] + tinyRunFlags(corpus)
        let first = try run(base + ["--steps", "2"])
        XCTAssertEqual(first.status, 0, first.error)
        let resume = base + ["--steps", "4", "--resume"]
        try expectError(resume + ["--kd-weight", "0.5"], mentions: "--kd-weight")
        // Values other than `student`'s defaults (CE weight 0, τ 1).
        try expectError(resume + ["--ce-weight", "1"], mentions: "--ce-weight")
        try expectError(resume + ["--temperature", "2"], mentions: "--temperature")
        try expectError(resume + ["--divergence", "reverse-kl"], mentions: "--divergence")
        try expectError(resume + ["--teacher-top-k", "5"], mentions: "--teacher-top-k")
        try expectError(resume + ["--feature-weight", "1"], mentions: "--feature-weight")
        try expectError(resume + ["--lr", "0.01"], mentions: "--lr")
        // Another teacher: same shape and flags, other weights.
        var otherTeacher = resume
        otherTeacher[2] = other
        try expectError(otherTeacher, mentions: "--teacher")
        // Fewer steps than the checkpoint has done.
        try expectError(base + ["--steps", "1", "--resume"], mentions: "--steps")
        let resumed = try run(resume)
        XCTAssertEqual(resumed.status, 0, resumed.error)
    }

    /// A state.json copied from another run with the same flags does not match the weights beside it.
    func testResumeRefusesAStateFromAnotherRun() throws {
        let scratch = try TestCorpus.scratch("resume-state")
        let a = scratch.appendingPathComponent("a"), b = scratch.appendingPathComponent("b")
        try trainTiny(a.path, steps: 3)
        try trainTiny(b.path, steps: 5)
        let state = "training/state.json"
        try FileManager.default.removeItem(at: a.appendingPathComponent(state))
        try FileManager.default.copyItem(at: b.appendingPathComponent(state), to: a.appendingPathComponent(state))
        try expectError(["train", "--output", a.path, "--preset", "tiny-student", "--steps", "6", "--resume"]
                        + tinyRunFlags(try TestCorpus.files()), mentions: "does not belong")
    }

    /// Outputs that would overwrite an input or a model the user did not name as an output are refused,
    /// and nothing is written.
    func testOutputsThatWouldDestroyInputsAreRefused() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("outputs")
        let teacher = scratch.appendingPathComponent("teacher")
        try trainTiny(teacher.path, steps: 2)
        let weights = try Data(contentsOf: teacher.appendingPathComponent("model.safetensors"))
        let flags = tinyRunFlags(corpus) + ["--steps", "2"]
        try expectError(["student", "--teacher", teacher.path, "--output", teacher.path] + flags, mentions: "--teacher")
        try expectError(["student", "--teacher", teacher.path, "--output", teacher.path + "/./", "--resume"] + flags, mentions: "--teacher")
        // Through a symlink.
        let link = scratch.appendingPathComponent("link")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: teacher)
        try expectError(["student", "--teacher", teacher.path, "--output", link.path] + flags, mentions: "would overwrite")
        XCTAssertEqual(try Data(contentsOf: teacher.appendingPathComponent("model.safetensors")), weights)

        // A model directory with no training state (an export, a downloaded model) is not a run to replace.
        let exported = scratch.appendingPathComponent("exported")
        try FileManager.default.createDirectory(at: exported, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "tokenizer.model"] {
            try FileManager.default.copyItem(at: teacher.appendingPathComponent(file), to: exported.appendingPathComponent(file))
        }
        try expectError(["train", "--output", exported.path, "--preset", "tiny-student"] + flags, mentions: "holds a model")
        XCTAssertEqual(try Data(contentsOf: exported.appendingPathComponent("model.safetensors")), weights)

        // Two peers in one directory; an output that is the token file.
        let peer = scratch.appendingPathComponent("d")
        try expectError(["mutual", "--output", peer.path, "--peer-output", peer.path + "/"] + flags, mentions: "--peer-output")
        try expectError(["train", "--output", corpus.data, "--preset", "tiny-student"] + flags, mentions: "--data")
    }

    /// A second run into a directory that a live run holds is refused; a killed run leaves no stuck lock.
    func testSecondRunIntoALiveRunsDirectoryIsRefused() throws {
        let corpus = try TestCorpus.files()
        let output = try TestCorpus.scratch("lock").appendingPathComponent("model").path
        let arguments = ["train", "--output", output, "--preset", "tiny-student", "--save-every", "1", "--eval-every", "0"]
            + tinyRunFlags(corpus)
        let first = try startAndWaitForProgress(arguments + ["--steps", "1000000"]).process
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        try expectError(arguments + ["--steps", "1000000", "--resume"], mentions: "in use by another distill command")
        // The first progress line comes before the first save: on a loaded machine the kill could come first.
        for _ in 0..<6000 where first.isRunning && !FileManager.default.fileExists(atPath: output + "/training/state.json") { usleep(10_000) }
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        // Killed between the two renames of a save, the last complete state is the one set aside.
        let folder = FileManager.default.fileExists(atPath: output + "/training/state.json") ? "training" : ".training.old"
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/\(folder)/state.json"))) as? [String: Any]
        let step = try XCTUnwrap(state?["step"] as? Int)
        let resumed = try run(arguments + ["--steps", String(step + 1), "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
    }

    /// SIGTERM is handled like Ctrl-C: save, then exit 130.
    func testTerminateSavesAndExits130() throws {
        let corpus = try TestCorpus.files()
        let output = try TestCorpus.scratch("sigterm").appendingPathComponent("model").path
        let process = try startAndWaitForProgress(["train", "--output", output, "--preset", "tiny-student", "--steps", "1000000",
                                                   "--save-every", "0", "--eval-every", "0"] + tinyRunFlags(corpus)).process
        process.terminate()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 130)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/training/state.json"))
    }

    /// A save that fails on a full disk (simulated with a file-size limit) stops with one line naming the
    /// path and the cause, and leaves the previous checkpoint loadable.
    func testFullDiskKeepsThePreviousCheckpoint() throws {
        let corpus = try TestCorpus.files()
        let output = try TestCorpus.scratch("full-disk").appendingPathComponent("model").path
        try trainTiny(output, steps: 2)
        let arguments = ["train", "--output", output, "--preset", "tiny-student", "--steps", "4", "--resume"] + tinyRunFlags(corpus)
        // 100 KiB per file: the checkpoint's weights (about 500 KB) cannot be written.
        let command = "ulimit -f 100; exec '\(Self.executable.path)' " + arguments.map { "'\($0)'" }.joined(separator: " ")
        let limited = try runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", command])
        XCTAssertNotEqual(limited.status, 0)
        let errors = limited.errors.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(errors.count, 1, limited.errors)
        XCTAssertTrue(limited.errors.contains("model.safetensors") && limited.errors.contains("file too large"), limited.errors)
        let resumed = try run(arguments)
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertTrue(resumed.error.contains("at step 2 of 4"), resumed.error)
    }

    /// SIGKILL at random moments of a run that saves every step: `--resume` always continues from the last
    /// complete checkpoint (or, with none, the run starts clean), never from a mixed state, and ends with
    /// the weights of an uninterrupted run. 50 trials.
    func testKilledAtRandomMomentsResumesExactly() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("kill")
        let config = scratch.appendingPathComponent("config.json")
        try JSONEncoder().encode(LlamaConfig(hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 1, numAttentionHeads: 2,
                                             vocabSize: 320, maxPositionEmbeddings: 32)).write(to: config)
        func arguments(_ output: URL) -> [String] {
            ["train", "--output", output.path, "--config", config.path, "--steps", "16", "--save-every", "1", "--eval-every", "0",
             "--threads", "1"] + tinyRunFlags(corpus)
        }
        let reference = scratch.appendingPathComponent("reference")
        let straight = try run(arguments(reference))
        XCTAssertEqual(straight.status, 0, straight.error)
        let expected = try Data(contentsOf: reference.appendingPathComponent("model.safetensors"))
        var random = SeededRandom(seed: 7)
        var killedMidRun = 0
        for trial in 0..<50 {
            let output = scratch.appendingPathComponent("trial-\(trial)")
            let process = try startProcess(Self.executable, arguments(output))
            usleep(useconds_t(20_000 + random.next() % 400_000))
            if process.isRunning { killedMidRun += 1 }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let hasCheckpoint = ["training", ".training.old"].contains {
                FileManager.default.fileExists(atPath: output.appendingPathComponent($0 + "/state.json").path)
            }
            let finished = try run(arguments(output) + (hasCheckpoint ? ["--resume"] : []))
            XCTAssertEqual(finished.status, 0, "trial \(trial): \(finished.error)")
            XCTAssertEqual(try Data(contentsOf: output.appendingPathComponent("model.safetensors")), expected, "trial \(trial)")
        }
        XCTAssertGreaterThan(killedMidRun, 10, "most kills should land while the run is going")
    }

    /// --init-from-teacher honours a config's depth and refuses a config of another width; --config with
    /// a short context trains at that context without naming a flag the user never gave.
    func testContextAndInitialisationComeFromTheModel() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("context")
        let config = scratch.appendingPathComponent("short.json")
        try JSONEncoder().encode(LlamaConfig(hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 1, numAttentionHeads: 2,
                                             vocabSize: 320, maxPositionEmbeddings: 16)).write(to: config)
        let short = scratch.appendingPathComponent("short").path
        let trained = try run(["train", "--data", corpus.data, "--output", short, "--config", config.path, "--steps", "2",
                               "--batch-size", "2", "--eval-batches", "1"])
        XCTAssertEqual(trained.status, 0, trained.error)
        XCTAssertTrue(trained.error.contains("context 16"), trained.error)
        try expectError(["train", "--data", corpus.data, "--output", scratch.appendingPathComponent("long").path, "--config", config.path,
                         "--context", "32", "--steps", "2"], mentions: "--context")

        let teacher = scratch.appendingPathComponent("teacher").path
        try trainTiny(teacher, steps: 2)
        try expectError(["student", "--teacher", teacher, "--init-from-teacher", "--config", config.path,
                         "--output", scratch.appendingPathComponent("s").path, "--steps", "1"] + tinyRunFlags(corpus), mentions: "hidden_size")
        let deep = scratch.appendingPathComponent("deep.json")
        try JSONEncoder().encode(LlamaConfig(hiddenSize: 64, intermediateSize: 172, numHiddenLayers: 1, numAttentionHeads: 2,
                                             vocabSize: 320, maxPositionEmbeddings: 32)).write(to: deep)
        let initialised = try run(["student", "--teacher", teacher, "--init-from-teacher", "--config", deep.path,
                                   "--output", scratch.appendingPathComponent("s1").path, "--steps", "1"] + tinyRunFlags(corpus))
        XCTAssertEqual(initialised.status, 0, initialised.error)
        XCTAssertTrue(initialised.error.contains("1 layers"), initialised.error)
    }
}

/// Non-finite losses and gradients stop the run at that step and keep the last good checkpoint.
final class NonFiniteTrainingTests: XCTestCase {
    /// Cross-entropy that turns its loss (or its gradients) into NaN from a given call on.
    final class PoisonedObjective: TrainingObjective {
        let inner = CrossEntropyObjective()
        let poisonFrom: Int
        let poisonGradients: Bool
        var calls = 0
        init(poisonFrom: Int, gradients: Bool) {
            self.poisonFrom = poisonFrom
            poisonGradients = gradients
        }
        var extraTensors: [TrainableTensor] { [] }
        var identity: [String: String] { inner.identity }
        func trainStep(model: LlamaModel, batch: Batch, gradientScale: Float) throws -> LossTerms {
            calls += 1
            var terms = try inner.trainStep(model: model, batch: batch, gradientScale: gradientScale)
            if calls >= poisonFrom {
                if poisonGradients { model.gradients?[0] = .nan } else { terms[.loss] = .nan }
            }
            return terms
        }
        func evaluate(model: LlamaModel, batch: Batch) throws -> LossTerms { try inner.evaluate(model: model, batch: batch) }
    }

    func testNonFiniteStopsAndKeepsTheLastCheckpoint() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        for gradients in [false, true] {
            let output = try TestCorpus.scratch("nan")
            var p = TrainingTests.parameters(steps: 10)
            p.saveEvery = 2
            let trainer = try Trainer(model: LlamaModel(config: TrainingTests.config, seed: 1),
                                      objective: PoisonedObjective(poisonFrom: 5, gradients: gradients),
                                      parameters: p, tokenizerHash: data.tokenizerHash)
            XCTAssertThrowsError(try TrainingTests.run(trainer, data: data, output: output, tokenizer: corpus.tokenizer)) { error in
                XCTAssertEqual(error as? TrainingError, .diverged(step: 5, what: gradients ? "gradient norm" : "loss"))
                XCTAssertTrue("\(error)".contains("last checkpoint is kept"), "\(error)")
            }
            let state = try JSONSerialization.jsonObject(with: Data(contentsOf: output.appendingPathComponent("training/state.json"))) as? [String: Any]
            XCTAssertEqual(state?["step"] as? Int, 4)
            let saved = try SafetensorsFile(url: output.appendingPathComponent("training/model.safetensors"))
            for name in saved.tensorNames { XCTAssertTrue(try saved.floats(name).allSatisfy(\.isFinite), name) }
        }
    }
}
