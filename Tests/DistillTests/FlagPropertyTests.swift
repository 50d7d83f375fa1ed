import Dispatch
import XCTest
import Distill

/// Every numeric flag of every subcommand, given random values of each bad kind (negative, zero, NaN,
/// infinite, huge): the command either runs to completion (the value was valid) or exits non-zero with
/// one "Error:" line; it never crashes, never hangs.
extension CommandLineTests {
    /// A flag and whether it takes whole numbers.
    struct NumericFlag {
        let name: String
        let integer: Bool
    }

    /// Random values of each kind; magnitudes drawn from `random`.
    static func badValues(integer: Bool, random: inout SeededRandom) -> [String] {
        let magnitude = random.next() % 1000 + 1
        let huge = integer ? String(UInt64(10_000_000_000) + random.next() % UInt64(Int64.max / 2)) : "1e\(20 + random.next() % 18)"
        return ["-\(magnitude)", "0", "nan", random.next() % 2 == 0 ? "inf" : "-inf", huge]
    }

    func testEveryNumericFlagSurvivesRandomBadValues() throws {
        let corpus = try TestCorpus.files()
        let scratch = try TestCorpus.scratch("flags")
        let teacher = scratch.appendingPathComponent("teacher").path
        try trainTiny(teacher, steps: 2)
        let text = corpus.text.path
        var counter = 0
        func fresh() -> String {
            counter += 1
            return scratch.appendingPathComponent("out-\(counter)").path
        }
        let int = { (name: String) in NumericFlag(name: name, integer: true) }
        let float = { (name: String) in NumericFlag(name: name, integer: false) }
        let trainingFlags = ["--steps", "--batch-size", "--context", "--accumulation", "--warmup", "--seed", "--eval-every",
                             "--eval-batches", "--save-every", "--log-every", "--threads"].map(int)
            + ["--lr", "--weight-decay", "--grad-clip"].map(float)
        let logitFlags = ["--teacher-top-k"].map(int)
            + ["--ce-weight", "--kd-weight", "--temperature", "--beta", "--skew-alpha", "--feature-weight",
               "--rkd-distance-weight", "--rkd-angle-weight"].map(float)
        let quickTraining = ["--data", corpus.data, "--context", "16", "--steps", "2", "--batch-size", "3", "--eval-batches", "1",
                             "--log-every", "1"]
        // Each subcommand: its base arguments (a valid, quick run; {out} is a fresh output) and its numeric flags.
        let commands: [(base: [String], flags: [NumericFlag])] = [
            (["train", "--output", "{out}", "--preset", "tiny-student"] + quickTraining, trainingFlags),
            (["student", "--teacher", teacher, "--output", "{out}", "--preset", "tiny-student"] + quickTraining,
             trainingFlags + logitFlags),
            // On-policy generation: its shares, lengths and sampler, on a run that generates.
            (["student", "--teacher", teacher, "--output", "{out}", "--preset", "tiny-student", "--on-policy", "0.5"] + quickTraining,
             ["--prompt-tokens", "--new-tokens", "--sample-top-k"].map(int)
             + ["--on-policy", "--teacher-generated", "--sample-temperature", "--sample-top-p"].map(float)),
            (["mutual", "--output", "{out}", "--peer-output", "{out}", "--preset", "tiny-student"] + quickTraining,
             [int("--steps"), float("--kd-weight"), float("--temperature")]),
            (["sample", "--model", teacher, "--prompt", "the king", "--max-tokens", "4"],
             ["--max-tokens", "--top-k", "--seed", "--threads"].map(int) + ["--temperature", "--top-p"].map(float)),
            (["eval", "--model", teacher, "--text", text], ["--stride", "--threads"].map(int)),
            (["bench", "--preset", "tiny"], ["--repeats", "--threads"].map(int)),
            (["prepare", "--tokenizer", corpus.tokenizer, "--input", text, "--output", "{out}"], [float("--val-fraction")]),
            (["tokenizer", "train", "--input", text, "--output", "{out}"], [int("--vocab-size")]),
        ]
        var random = SeededRandom(seed: 2026)
        var cases: [[String]] = []
        for command in commands {
            for flag in command.flags {
                for value in Self.badValues(integer: flag.integer, random: &random) {
                    var arguments = command.base
                    if let index = arguments.firstIndex(of: flag.name) {
                        arguments[index + 1] = value
                    } else {
                        arguments += [flag.name, value]
                    }
                    // `--flag=-5`: a negative value must not read as another flag.
                    if let index = arguments.firstIndex(of: flag.name) {
                        arguments[index] = "\(flag.name)=\(arguments[index + 1])"
                        arguments.remove(at: index + 1)
                    }
                    cases.append(arguments.map { $0 == "{out}" ? fresh() : $0 })
                }
            }
        }
        // Two at a time: the machine has two cores.
        let failures = UnsafeMutableBufferPointer<String?>.allocate(capacity: cases.count)
        failures.initialize(repeating: nil)
        defer { failures.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 2) { lane in
            for index in stride(from: lane, to: cases.count, by: 2) {
                failures[index] = Self.checkOneLineOrSuccess(cases[index], timeout: 60)
            }
        }
        let problems = failures.compactMap { $0 }
        XCTAssertTrue(problems.isEmpty, "\(problems.count) of \(cases.count) cases:\n" + problems.prefix(20).joined(separator: "\n"))
    }

    /// Nil when `arguments` exits 0, or non-zero with one "Error:" line and no crash, within `timeout`.
    static func checkOneLineOrSuccess(_ arguments: [String], timeout: Double) -> String? {
        let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("distill-flag-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errorFile) }
        guard let handle = try? FileHandle(forWritingTo: errorFile) else { return "cannot capture stderr" }
        let process: Process
        do { process = try startProcess(executable, arguments, standardError: handle) } catch { return "cannot start: \(error)" }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let hung = process.isRunning
        if hung { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? handle.close()
        let errors = (try? String(contentsOf: errorFile, encoding: .utf8)) ?? ""
        let call = arguments.joined(separator: " ")
        if hung { return "hung: \(call)" }
        if process.terminationReason == .uncaughtSignal { return "killed by signal \(process.terminationStatus): \(call)\n\(errors)" }
        if errors.contains("Fatal error") || errors.contains("Stack dump") { return "crashed: \(call)\n\(errors)" }
        if process.terminationStatus == 0 { return nil }
        let lines = errors.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        return lines.count == 1 ? nil : "\(lines.count) error lines: \(call)\n\(errors)"
    }
}
