import XCTest
import Distill

/// A rank's share of a global batch: the generator advances as for the whole batch.
final class BatchSharingTests: XCTestCase {
    func testRowsOfTheGlobalBatchAdvanceTheGeneratorLikeTheWholeBatch() throws {
        let data = try TokenFile(path: try TestCorpus.files().data)
        var whole = try BatchSampler(tokens: data.trainTokens, batchSize: 6, contextLength: 8, seed: 5)
        var shares = (0..<3).map { _ in whole }
        for _ in 0..<4 {
            let batch = whole.next()
            for rank in 0..<3 {
                let share = shares[rank].next(rows: rank * 2 ..< rank * 2 + 2)
                XCTAssertEqual(share, batch.rows(rank * 2, count: 2))
                XCTAssertEqual(shares[rank].random, whole.random)
            }
        }
    }
}

/// `mpirun -np 2 distill ...`: data-parallel training and eval against one process, and what happens
/// when the ranks disagree, die, or resume with another number of ranks. Skipped without Open MPI.
final class DataParallelTests: XCTestCase {
    static let mpirun: URL? = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        .map { URL(fileURLWithPath: String($0)).appendingPathComponent("mpirun") }
        .first { FileManager.default.isExecutableFile(atPath: $0.path) }

    var executable: URL { CommandLineTests.executable }

    override func setUpWithError() throws {
        try skipUnlessDistillIsBuilt()
        try XCTSkipIf(Self.mpirun == nil, "mpirun is not installed (Debian: apt-get install openmpi-bin): the MPI tests are skipped")
    }

    /// Root in CI containers; shared-memory copies without ptrace rights (Docker) need single copy off.
    static let mpirunFlags = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]

    /// `mpirun -np ranks distill arguments`.
    func mpi(_ ranks: Int, _ arguments: [String]) throws -> ProcessResult {
        try runProcess(try XCTUnwrap(Self.mpirun), Self.mpirunFlags + ["-np", String(ranks), executable.path] + arguments)
    }

    func plain(_ arguments: [String]) throws -> ProcessResult { try runProcess(executable, arguments) }

    /// The flags of a tiny run; `batch` is per rank.
    func runFlags(_ corpus: TestCorpus.Files, batch: Int, steps: Int, data: String? = nil) -> [String] {
        ["--data", data ?? corpus.data, "--context", "32", "--batch-size", String(batch), "--steps", String(steps), "--warmup", "2",
         "--eval-batches", "1", "--log-every", "1", "--eval-every", "10", "--threads", "1", "--seed", "3"]
    }

    /// Relative L2 distance between two model directories' weights.
    func weightDifference(_ a: String, _ b: String) throws -> Double {
        let first = try ModelDirectory.load(URL(fileURLWithPath: a)), second = try ModelDirectory.load(URL(fileURLWithPath: b))
        XCTAssertEqual(first.parameterCount, second.parameterCount)
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(first.parameters, second.parameters) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
        }
        return (difference / norm).squareRoot()
    }

    /// The "Error: ..." lines of a job. mpirun forwards a rank's stderr in pieces and may print its own
    /// notice between them (seen: "E", a notice of several lines, then "rror: rank 1: ..."), so each error
    /// is counted by the "rror: " that its first piece cannot hold.
    func errorLines(_ result: ProcessResult) -> [Substring] {
        result.transcript.split(separator: "\n").filter { $0.contains("rror: ") }
    }

    /// 2 ranks with batch 2 end where 1 process with batch 4 ends after 20 AdamW steps; rank 0 alone prints
    /// and writes, and the progress line gives the global batch.
    func testTwoRanksTrainLikeOneProcessWithTheGlobalBatch() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-train")
        let one = scratch.appendingPathComponent("one").path, two = scratch.appendingPathComponent("two").path
        let single = try plain(["train", "--output", one, "--preset", "tiny"] + runFlags(corpus, batch: 4, steps: 20))
        XCTAssertEqual(single.status, 0, single.errors)
        let parallel = try mpi(2, ["train", "--output", two, "--preset", "tiny"] + runFlags(corpus, batch: 2, steps: 20))
        XCTAssertEqual(parallel.status, 0, parallel.transcript)
        let difference = try weightDifference(one, two)
        XCTAssertLessThan(difference, 1e-5)
        let steps = parallel.errors.split(separator: "\n").filter { $0.hasPrefix("step ") }
        XCTAssertEqual(steps.count, 20, parallel.errors)
        XCTAssertTrue(steps.allSatisfy { $0.contains("global batch 4") && $0.contains("allreduce") }, parallel.errors)
        XCTAssertTrue(parallel.errors.contains("global batch 2 × 1 × 2 = 4"), parallel.errors)
        let metrics = try String(contentsOfFile: two + "/metrics.jsonl", encoding: .utf8)
        XCTAssertEqual(metrics.split(separator: "\n").filter { $0.contains("\"kind\":\"train\"") }.count, 20, metrics)
        // The validation figures are the global batch's, as one process computes them.
        func validation(_ text: String) -> [Substring] { text.split(separator: "\n").filter { $0.hasPrefix("validation sample") } }
        XCTAssertEqual(validation(parallel.errors), validation(single.errors))
    }

    /// A tiny teacher trained for 3 steps under `scratch`.
    func tinyTeacher(in scratch: URL) throws -> String {
        let teacher = scratch.appendingPathComponent("teacher").path
        let trained = try plain(["train", "--output", teacher, "--preset", "tiny"] + runFlags(try TestCorpus.files(), batch: 2, steps: 3))
        XCTAssertEqual(trained.status, 0, trained.errors)
        return teacher
    }

    /// Runs `arguments` in 1 process with batch 2 × `batch` and on 2 ranks with batch `batch` each (into
    /// `scratch/NAME-one` and `scratch/NAME-two`), expects the same weights within float reassociation,
    /// and returns the 2-rank job.
    @discardableResult
    func expectTwoRanksMatchOne(_ arguments: [String], batch: Int, steps: Int, scratch: URL, name: String) throws -> ProcessResult {
        let corpus = try TestCorpus.files()
        let one = scratch.appendingPathComponent(name + "-one").path, two = scratch.appendingPathComponent(name + "-two").path
        let single = try plain(arguments + ["--output", one] + runFlags(corpus, batch: 2 * batch, steps: steps))
        XCTAssertEqual(single.status, 0, single.errors)
        let parallel = try mpi(2, arguments + ["--output", two] + runFlags(corpus, batch: batch, steps: steps))
        XCTAssertEqual(parallel.status, 0, parallel.transcript)
        XCTAssertLessThan(try weightDifference(one, two), 1e-5, name)
        return parallel
    }

    /// Distillation with accumulation: 2 ranks × batch 1 × 2 micro-batches against 1 process × batch 2 × 2.
    func testTwoRanksDistilLikeOneProcess() throws {
        let scratch = try TestCorpus.scratch("mpi-student")
        let student = ["student", "--teacher", try tinyTeacher(in: scratch), "--preset", "tiny-student", "--accumulation", "2",
                       "--temperature", "2", "--feature-weight", "1"]
        let parallel = try expectTwoRanksMatchOne(student, batch: 1, steps: 10, scratch: scratch, name: "kd")
        XCTAssertEqual(parallel.output.split(separator: "\n").filter { $0.hasPrefix("validation perplexity") }.count, 1, parallel.output)
    }

    /// On-policy distillation: each rank generates its own rows of the global micro-batch, with those rows'
    /// seeds, so 2 ranks × batch 2 end where 1 process × batch 4 ends: with the student's samples alone (a
    /// row on each rank) and with the student's and the teacher's (rank 0 continues its row with the
    /// student, rank 1 with the teacher), accumulation included.
    func testTwoRanksDistilOnPolicyLikeOneProcess() throws {
        let scratch = try TestCorpus.scratch("mpi-onpolicy")
        let teacher = try tinyTeacher(in: scratch)
        for (name, shares) in [("student", ["--on-policy", "0.5"]), ("both", ["--on-policy", "0.25", "--teacher-generated", "0.25"])] {
            let student = ["student", "--teacher", teacher, "--preset", "tiny-student", "--accumulation", "2", "--prompt-tokens", "12",
                           "--new-tokens", "16"] + shares
            let parallel = try expectTwoRanksMatchOne(student, batch: 2, steps: 8, scratch: scratch, name: name)
            XCTAssertTrue(parallel.errors.contains("gen "), parallel.errors)
        }
    }

    /// Mutual learning: both peers match.
    func testTwoRanksTrainMutualPeersLikeOneProcess() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-mutual")
        func mutual(_ name: String) -> [String] {
            ["mutual", "--output", scratch.appendingPathComponent(name + "-a").path,
             "--peer-output", scratch.appendingPathComponent(name + "-b").path, "--preset", "tiny-student"]
        }
        let single = try plain(mutual("one") + runFlags(corpus, batch: 4, steps: 6))
        XCTAssertEqual(single.status, 0, single.errors)
        let parallel = try mpi(2, mutual("two") + runFlags(corpus, batch: 2, steps: 6))
        XCTAssertEqual(parallel.status, 0, parallel.transcript)
        for peer in ["a", "b"] {
            XCTAssertLessThan(try weightDifference(scratch.appendingPathComponent("one-" + peer).path,
                                                   scratch.appendingPathComponent("two-" + peer).path), 1e-5, peer)
        }
    }

    /// `cache-teacher` under 2 and 3 ranks writes the cache one process writes, byte for byte (samples and
    /// top-K), and a student trained from it on 2 ranks matches one process.
    func testCacheTeacherUnderRanksIsByteIdentical() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-cache")
        // A short token file of the corpus's tokenizer: every position of both splits is cached.
        let text = scratch.appendingPathComponent("short.txt"), data = scratch.appendingPathComponent("short.tok").path
        try TestCorpus.grammarText(lines: 400, seed: 5).write(to: text, atomically: true, encoding: .utf8)
        _ = try TokenFile.prepare(tokenizer: Tokenizer(modelPath: corpus.tokenizer), inputs: [text.path], output: data, valFraction: 0.1)
        let teacher = scratch.appendingPathComponent("teacher").path
        let trained = try plain(["train", "--output", teacher, "--preset", "tiny-student", "--tokenizer", corpus.tokenizer]
                                + runFlags(corpus, batch: 2, steps: 3, data: data))
        XCTAssertEqual(trained.status, 0, trained.errors)
        for (mode, ranks) in [(["--samples", "8"], [2, 3]), (["--top-k", "5"], [2])] {
            func build(_ name: String, ranks: Int) throws -> Data {
                let output = scratch.appendingPathComponent(name).path
                let arguments = ["cache-teacher", "--teacher", teacher, "--data", data, "--output", output, "--temperature", "2",
                                 "--threads", "1"] + mode
                let result = ranks == 1 ? try plain(arguments) : try mpi(ranks, arguments)
                XCTAssertEqual(result.status, 0, result.transcript)
                XCTAssertEqual(result.output.split(separator: "\n").filter { $0.hasPrefix("wrote") }.count, 1, result.output)
                return try Data(contentsOf: URL(fileURLWithPath: output))
            }
            let single = try build("one-\(mode[0])", ranks: 1)
            for count in ranks {
                XCTAssertTrue(try build("ranks-\(count)-\(mode[0])", ranks: count) == single, "\(mode) under \(count) ranks")
            }
        }
        let cache = scratch.appendingPathComponent("one---samples").path
        let student = ["student", "--teacher-cache", cache, "--preset", "tiny-student", "--temperature", "2", "--tokenizer", corpus.tokenizer]
        let one = scratch.appendingPathComponent("student-one").path, two = scratch.appendingPathComponent("student-two").path
        let single = try plain(student + ["--output", one] + runFlags(corpus, batch: 4, steps: 8, data: data))
        XCTAssertEqual(single.status, 0, single.errors)
        let parallel = try mpi(2, student + ["--output", two] + runFlags(corpus, batch: 2, steps: 8, data: data))
        XCTAssertEqual(parallel.status, 0, parallel.transcript)
        XCTAssertLessThan(try weightDifference(one, two), 1e-5)
    }

    /// Born-again generations on 2 ranks: each generation matches one process's, the table is written once.
    func testGenerationsUnderTwoRanksMatchOneProcess() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-generations")
        let command = ["generations", "--count", "2", "--preset", "tiny-student"]
        let one = scratch.appendingPathComponent("one").path, two = scratch.appendingPathComponent("two").path
        let single = try plain(command + ["--output", one] + runFlags(corpus, batch: 4, steps: 5))
        XCTAssertEqual(single.status, 0, single.errors)
        let parallel = try mpi(2, command + ["--output", two] + runFlags(corpus, batch: 2, steps: 5))
        XCTAssertEqual(parallel.status, 0, parallel.transcript)
        for generation in ["gen-1", "gen-2"] {
            XCTAssertLessThan(try weightDifference(one + "/" + generation, two + "/" + generation), 1e-5, generation)
        }
        XCTAssertEqual(parallel.output.split(separator: "\n").filter { $0.hasPrefix("ensemble") }.count, 1, parallel.output)
        XCTAssertTrue(FileManager.default.fileExists(atPath: two + "/generations.json"))
    }

    /// `eval` splits the windows over the ranks and sums the totals in double: the same total NLL.
    func testEvalUnderTwoRanksGivesTheSameTotal() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-eval")
        let model = scratch.appendingPathComponent("model").path
        let trained = try plain(["train", "--output", model, "--preset", "tiny"] + runFlags(corpus, batch: 2, steps: 3))
        XCTAssertEqual(trained.status, 0, trained.errors)
        // A short text scored with overlapping windows: windows of several lengths, spread over the ranks.
        let text = scratch.appendingPathComponent("short.txt")
        try TestCorpus.grammarText(lines: 200, seed: 8).write(to: text, atomically: true, encoding: .utf8)
        for source in [["--data", corpus.data], ["--text", text.path, "--stride", "12"]] {
            let arguments = ["eval", "--model", model, "--json", "--threads", "1"] + source
            let single = try plain(arguments), parallel = try mpi(2, arguments)
            XCTAssertEqual(single.status, 0, single.errors)
            XCTAssertEqual(parallel.status, 0, parallel.transcript)
            func figures(_ result: ProcessResult) throws -> (Double, Int) {
                let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
                return (try XCTUnwrap(object?["nll_sum"] as? Double), try XCTUnwrap(object?["tokens"] as? Int))
            }
            let (nll1, tokens1) = try figures(single), (nll2, tokens2) = try figures(parallel)
            XCTAssertEqual(tokens1, tokens2)
            XCTAssertLessThanOrEqual(abs(nll1 - nll2) / abs(nll1), 1e-9, "\(nll1) vs \(nll2)")
        }
    }

    /// A rank started in another directory reads other files: one line from rank 0, non-zero exit, no hang.
    func testRanksThatDisagreeStopWithOneLine() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-disagree")
        let directories = ["a", "b", "empty"].map { scratch.appendingPathComponent($0) }
        for directory in directories { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }
        // Same tokenizer and name, other text.
        try FileManager.default.copyItem(atPath: corpus.data, toPath: directories[0].appendingPathComponent("data.tok").path)
        let otherText = scratch.appendingPathComponent("other.txt")
        try TestCorpus.grammarText(lines: 3000, seed: 99).write(to: otherText, atomically: true, encoding: .utf8)
        _ = try TokenFile.prepare(tokenizer: Tokenizer(modelPath: corpus.tokenizer), inputs: [otherText.path],
                                  output: directories[1].appendingPathComponent("data.tok").path, valFraction: 0.1)
        func job(_ second: URL, extra: [String] = []) throws -> ProcessResult {
            let arguments = ["train", "--data", "data.tok", "--tokenizer", corpus.tokenizer, "--output", "model", "--preset", "tiny-student",
                             "--context", "32", "--batch-size", "2", "--steps", "2", "--threads", "1"]
            let command = Self.mpirunFlags + ["-np", "1", "--wdir", directories[0].path, executable.path] + arguments
                + [":", "-np", "1", "--wdir", second.path, executable.path] + arguments + extra
            return try runProcess(try XCTUnwrap(Self.mpirun), command)
        }
        let cases: [(URL, [String], String)] = [
            (directories[1], [], "rank 1 reads another token file than rank 0"),
            (directories[2], [], "rank 1: token file data.tok does not exist"),
            (directories[0], ["--lr", "0.002"], "rank 1 has other training settings"),
            (directories[0], ["--seed", "2"], "rank 1 builds another model"),
        ]
        for (second, extra, phrase) in cases {
            try? FileManager.default.removeItem(at: directories[0].appendingPathComponent("model"))
            let result = try job(second, extra: extra)
            XCTAssertNotEqual(result.status, 0, phrase)
            XCTAssertEqual(errorLines(result).count, 1, result.transcript)
            XCTAssertTrue(result.transcript.contains(phrase), "'\(phrase)' not in: \(result.transcript)")
        }
    }

    /// A checkpoint remembers how many ranks made it: another number is refused with one line.
    func testResumeWithAnotherNumberOfRanksIsRefused() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-resume")
        let two = scratch.appendingPathComponent("two").path, one = scratch.appendingPathComponent("one").path
        let flags = ["--preset", "tiny-student"] + runFlags(corpus, batch: 2, steps: 2)
        XCTAssertEqual(try mpi(2, ["train", "--output", two] + flags).status, 0)
        XCTAssertEqual(try plain(["train", "--output", one] + flags).status, 0)
        let more = ["--steps", "3", "--resume"]
        let alone = try plain(["train", "--output", two] + flags + more)
        XCTAssertNotEqual(alone.status, 0)
        XCTAssertEqual(errorLines(alone).count, 1, alone.transcript)
        XCTAssertTrue(alone.errors.contains("trained by 2 processes") && alone.errors.contains("mpirun -np 2"), alone.errors)
        let together = try mpi(2, ["train", "--output", one] + flags + more)
        XCTAssertNotEqual(together.status, 0)
        XCTAssertEqual(errorLines(together).count, 1, together.transcript)
        XCTAssertTrue(together.transcript.contains("trained by 1 process and this run has 2"), together.transcript)
        XCTAssertEqual(try mpi(2, ["train", "--output", two] + flags + more).status, 0)
    }

    /// A rank killed mid-run ends the job (mpirun exits non-zero; a job still running after two minutes
    /// counts as a hang), the last checkpoint is complete, and resuming it with 2 ranks ends with the
    /// weights of an uninterrupted 2-rank run, bit for bit.
    func testADeadRankEndsTheJobAndItsCheckpointResumesExactly() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("mpi-kill")
        func arguments(_ output: URL) -> [String] {
            ["train", "--output", output.path, "--preset", "tiny-student", "--save-every", "2"] + runFlags(corpus, batch: 2, steps: 40)
        }
        let reference = scratch.appendingPathComponent("reference"), killed = scratch.appendingPathComponent("killed")
        let straight = try mpi(2, arguments(reference))
        XCTAssertEqual(straight.status, 0, straight.transcript)

        let job = try signalRankOne(SIGKILL, arguments(killed), once: killed.appendingPathComponent("training/state.json").path,
                                    "the job ended before its first checkpoint")
        XCTAssertNotEqual(job.terminationStatus, 0)
        let resumed = try mpi(2, arguments(killed) + ["--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.transcript)
        XCTAssertTrue(resumed.errors.contains("resumed"), resumed.errors)
        XCTAssertEqual(try Data(contentsOf: killed.appendingPathComponent("model.safetensors")),
                       try Data(contentsOf: reference.appendingPathComponent("model.safetensors")))
    }

    /// Starts a 2-rank job of `arguments`, sends `signal` to rank 1 once `file` exists, and returns the
    /// job after it ended (killed, and a failure, when it still ran two minutes later).
    private func signalRankOne(_ signal: Int32, _ arguments: [String], once file: String, _ endedEarly: String) throws -> Process {
        let job = try startProcess(try XCTUnwrap(Self.mpirun), Self.mpirunFlags + ["-np", "2", executable.path] + arguments)
        while job.isRunning && !FileManager.default.fileExists(atPath: file) { usleep(10_000) }
        XCTAssertTrue(job.isRunning, endedEarly)
        let rankOne = try XCTUnwrap(Self.children(of: job.processIdentifier).first { Self.rank(of: $0) == 1 }, "no rank 1 process")
        kill(rankOne, signal)
        var waited = 0
        while job.isRunning && waited < 120_000 { usleep(10_000); waited += 10 }
        if job.isRunning {
            kill(job.processIdentifier, SIGKILL)
            XCTFail("the job still ran two minutes after rank 1 got signal \(signal)")
        }
        job.waitUntilExit()
        return job
    }

    /// SIGTERM to one rank reaches the others with the next step's gradients: every rank stops after that
    /// step, rank 0 saves, the job exits 130, and the checkpoint resumes.
    func testATerminatedRankStopsEveryRankAfterASave() throws {
        let corpus = try TestCorpus.files()
        let output = try TestCorpus.scratch("mpi-term").appendingPathComponent("model")
        let arguments = ["train", "--output", output.path, "--preset", "tiny-student", "--save-every", "0"]
            + runFlags(corpus, batch: 2, steps: 1_000_000)
        // The first progress line is in metrics.jsonl: the ranks are training.
        let job = try signalRankOne(SIGTERM, arguments, once: output.appendingPathComponent("metrics.jsonl").path,
                                    "the job ended before its first progress line")
        XCTAssertEqual(job.terminationStatus, 130)
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: output.appendingPathComponent("training/state.json"))) as? [String: Any]
        let step = try XCTUnwrap(state?["step"] as? Int)
        XCTAssertGreaterThan(step, 0)
        let resumed = try mpi(2, ["train", "--output", output.path, "--preset", "tiny-student", "--save-every", "0"]
                              + runFlags(corpus, batch: 2, steps: step + 1) + ["--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.transcript)
    }

    /// Commands that cannot share their work refuse to run several times over under mpirun.
    func testOnlyParallelCommandsRunUnderMPI() throws {
        let corpus = try TestCorpus.files()
        let output = try TestCorpus.scratch("mpi-prepare").appendingPathComponent("out.tok").path
        let result = try mpi(2, ["prepare", "--tokenizer", corpus.tokenizer, "--input", corpus.text.path, "--output", output])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertEqual(errorLines(result).count, 1, result.transcript)
        XCTAssertTrue(result.transcript.contains("distill prepare runs as one process"), result.transcript)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    // MARK: processes

    static func children(of pid: Int32) -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.flatMap { task -> [Int32] in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { Int32($0) }
        }
    }

    /// OMPI_COMM_WORLD_RANK in a process's environment.
    static func rank(of pid: Int32) -> Int? {
        guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
        let prefix = "OMPI_COMM_WORLD_RANK="
        return environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            .first { $0.hasPrefix(prefix) }.flatMap { Int($0.dropFirst(prefix.count)) }
    }
}
