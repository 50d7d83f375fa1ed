import Foundation
import XCTest

/// What a finished `distill` run left: its exit status and what it wrote to each stream.
struct CommandOutcome {
    let status: Int32
    let output: String
    let error: String
}

/// Runs the `distill` executable built beside the tests; shared by every command-line test class.
extension XCTestCase {
    static var distillExecutable: URL {
        // The tests' resource bundle sits in the build products folder beside the `distill` executable.
        Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("distill")
    }

    /// Skips, saying why, when the `distill` executable is not beside the tests (a `swift test --filter` of a
    /// library target can leave it unbuilt); under CI (`CI` set, as `.ci/run` runs) that is a failure instead,
    /// since `swift test` builds every product and the command-line tests must run there.
    func skipUnlessDistillIsBuilt() throws {
        let built = FileManager.default.isExecutableFile(atPath: Self.distillExecutable.path)
        if !built && ProcessInfo.processInfo.environment["CI"] != nil {
            XCTFail("the distill executable was not built next to the tests (\(Self.distillExecutable.path)), under CI")
        }
        try XCTSkipUnless(built, "the distill executable was not built next to the tests (\(Self.distillExecutable.path))")
    }

    @discardableResult
    func run(_ arguments: [String], input: String? = nil) throws -> CommandOutcome {
        let result = try runProcess(Self.distillExecutable, arguments, input: input)
        return CommandOutcome(status: result.status, output: result.output, error: result.errors)
    }

    /// Starts `distill` with `arguments` and returns once it has printed `marker` (by default its first
    /// progress line), with what it printed so far on stderr. With `drain` the rest of stderr is discarded
    /// as it comes (so the child never blocks on a full pipe); without, the caller reads it from `errors`.
    func startAndWaitForProgress(_ arguments: [String], until marker: String = "step ", drain: Bool = true) throws
        -> (process: Process, errors: Pipe, seen: Data) {
        let error = Pipe()
        let process = try startProcess(Self.distillExecutable, arguments, standardError: error)
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains(marker) {
            let chunk = error.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += chunk
        }
        if drain { error.fileHandleForReading.readabilityHandler = { _ = $0.availableData } }
        return (process, error, seen)
    }

    /// Fails unless the command exits non-zero with one "Error: ..." line containing `phrase`.
    func expectError(_ arguments: [String], mentions phrase: String, input: String? = nil,
                     file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try run(arguments, input: input)
        XCTAssertNotEqual(outcome.status, 0, "exit status for \(arguments)", file: file, line: line)
        let lines = outcome.error.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(lines.count, 1, "stderr: \(outcome.error)", file: file, line: line)
        XCTAssertTrue(outcome.error.localizedCaseInsensitiveContains(phrase), "'\(phrase)' not in: \(outcome.error)", file: file, line: line)
        XCTAssertFalse(outcome.error.contains("Fatal error") || outcome.error.contains("Stack dump"), outcome.error, file: file, line: line)
    }
}
