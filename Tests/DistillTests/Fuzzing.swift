import Distill
import Foundation
import XCTest

// A seeded random-mutation fuzzer for the readers of files a user hands us. Each target reads inputs
// made from its committed seeds (Tests/DistillTests/FuzzSeeds/<target>/) by stacking a few mutations:
// bit flips, byte inserts and deletes, truncation, little-endian integer fields overwritten with extreme
// values, decimal numbers in text replaced by extreme ones, and splices of two seeds. A reader passes
// when every input is either read or refused with a thrown error: no crash (a trap ends the test
// process), no hang (a watchdog aborts after `FuzzHarness.stallLimit`), and no allocation beyond what
// the input's size justifies (the data segment is capped while the inputs run).
//
// The input being read is always at FuzzHarness.directory/<target>/<file name>, so a crash leaves its
// reproducer there. DISTILL_FUZZ_SCALE=10 runs ten times the inputs (a longer local run).

/// One reader under fuzzing.
struct FuzzTarget {
    /// The folder of seeds under FuzzSeeds/, and the name in reports.
    let name: String
    /// What each input file is called (readers that expect a name, such as `config.json`).
    let fileName: String
    /// Inputs per run in CI.
    let inputs: Int
    /// Puts what the reader needs beside the input into its folder (other files of a model directory).
    let setUp: (URL) throws -> Void
    /// Reads the file at the URL as the program would. Throwing is a refusal, which is fine, except
    /// `FuzzPropertyViolation`, which fails the test (a file read, but read wrongly).
    let read: (URL) throws -> Void

    init(_ name: String, fileName: String, inputs: Int, setUp: @escaping (URL) throws -> Void = { _ in },
         read: @escaping (URL) throws -> Void) {
        self.name = name
        self.fileName = fileName
        self.inputs = inputs
        self.setUp = setUp
        self.read = read
    }
}

/// Thrown by a target's reader when an input it accepted was read wrongly (a round trip that does not
/// give back the input, for instance). The harness fails the test and keeps the input.
struct FuzzPropertyViolation: Error, CustomStringConvertible {
    let description: String
}

/// What one target's run did.
struct FuzzReport {
    let target: String
    let inputs: Int
    let accepted: Int
    let seconds: Double
    let slowestSeconds: Double
}

/// Makes inputs from seeds with stacked random mutations.
struct FuzzMutator {
    var random: SeededRandom
    let seeds: [[UInt8]]

    /// Integers that break size arithmetic: zero, one, all ones, sign boundaries, powers of two near
    /// the limits of 32 and 64 bits.
    static let extremeIntegers: [UInt64] = [
        0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
        0x1_0000_0000, 1 << 40, 1 << 48, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, UInt64.max, UInt64.max - 7,
    ]
    /// Decimal numbers for text formats (JSON headers and configs).
    static let extremeNumbers = [
        "0", "-1", "1", "-0", "4294967296", "2147483648", "9223372036854775807", "9223372036854775808",
        "18446744073709551615", "99999999999999999999999999", "1e308", "1e309", "-1e308", "0.5", "1e-320", "NaN", "null", "true", "\"7\"",
    ]

    init(seeds: [[UInt8]], seed: UInt64) {
        self.seeds = seeds
        random = SeededRandom(seed: seed)
    }

    mutating func below(_ bound: Int) -> Int { bound <= 1 ? 0 : Int(random.next() % UInt64(bound)) }

    /// A random offset in `bytes`, half the time among the first 64 bytes, where headers live.
    mutating func offset(in count: Int) -> Int {
        guard count > 0 else { return 0 }
        return random.next() % 2 == 0 ? below(min(count, 64)) : below(count)
    }

    mutating func next() -> [UInt8] {
        var bytes = seeds[below(seeds.count)]
        // A few inputs are seeds as they are: they must read.
        if below(50) == 0 { return bytes }
        for _ in 0..<(1 + below(4)) { mutate(&bytes) }
        return bytes
    }

    mutating func mutate(_ bytes: inout [UInt8]) {
        switch below(10) {
        case 0 where !bytes.isEmpty:  // flip a bit
            let index = offset(in: bytes.count)
            bytes[index] ^= UInt8(1) << UInt8(below(8))
        case 1 where !bytes.isEmpty:  // set a byte
            bytes[offset(in: bytes.count)] = [0, 0xFF, 0x7F, 0x80, UInt8(truncatingIfNeeded: random.next())][below(5)]
        case 2:  // insert bytes
            let inserted = (0..<(1 + below(16))).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            bytes.insert(contentsOf: inserted, at: below(bytes.count + 1))
        case 3 where !bytes.isEmpty:  // delete a range
            let start = below(bytes.count)
            bytes.removeSubrange(start..<min(bytes.count, start + 1 + below(64)))
        case 4:  // truncate
            bytes.removeLast(bytes.count - below(bytes.count + 1))
        case 5 where bytes.count >= 8, 6 where bytes.count >= 8:  // overwrite an integer field with an extreme value
            let width = [1, 2, 4, 8][below(4)]
            let aligned = random.next() % 2 == 0
            var start = offset(in: bytes.count - width + 1)
            if aligned { start -= start % width }
            var value = Self.extremeIntegers[below(Self.extremeIntegers.count)]
            if below(4) == 0 { value = UInt64(bytes.count) &+ UInt64(bitPattern: Int64(below(17) - 8)) }
            for byte in 0..<width { bytes[start + byte] = UInt8(truncatingIfNeeded: value >> (8 * byte)) }
        case 7:  // replace a decimal number in text
            replaceNumber(&bytes)
        case 8 where seeds.count > 1 || !bytes.isEmpty:  // splice with another seed
            let other = seeds[below(seeds.count)]
            bytes = Array(bytes.prefix(below(bytes.count + 1))) + Array(other.suffix(below(other.count + 1)))
        default:  // copy a chunk over another place
            guard bytes.count > 2 else { return }
            let length = 1 + below(min(32, bytes.count / 2))
            let from = below(bytes.count - length + 1), to = below(bytes.count - length + 1)
            let chunk = Array(bytes[from..<(from + length)])
            bytes.replaceSubrange(to..<(to + length), with: chunk)
        }
    }

    /// Replaces a run of ASCII digits (with its sign) by one of `extremeNumbers`.
    mutating func replaceNumber(_ bytes: inout [UInt8]) {
        let digits = bytes.indices.filter { (0x30...0x39).contains(bytes[$0]) }
        guard !digits.isEmpty else { return }
        var start = digits[below(digits.count)], end = start
        while start > 0, (0x30...0x39).contains(bytes[start - 1]) || bytes[start - 1] == 0x2D || bytes[start - 1] == 0x2E { start -= 1 }
        while end < bytes.count, (0x30...0x39).contains(bytes[end]) || bytes[end] == 0x2E || bytes[end] == 0x65 { end += 1 }
        bytes.replaceSubrange(start..<end, with: Array(Self.extremeNumbers[below(Self.extremeNumbers.count)].utf8))
    }
}

enum FuzzHarness {
    /// Where inputs are written: memory-backed when the machine has /dev/shm.
    static let directory: URL = {
        let shm = URL(fileURLWithPath: "/dev/shm")
        let base = access(shm.path, W_OK) == 0 ? shm : FileManager.default.temporaryDirectory
        return base.appendingPathComponent("distill-fuzz-\(getpid())")
    }()

    /// Seconds one input may take before the run counts as hung.
    static let stallLimit = 60.0

    /// How much the process's data segment may grow while the inputs run. Seeds are a few KB, so any
    /// reader that sizes its allocations by the file stays far below this.
    static let allocationLimit = 128 << 20

    /// The largest growth of the data segment over one target's run, for the report.
    nonisolated(unsafe) static var peakDataGrowth = 0

    static var scale: Int { Int(ProcessInfo.processInfo.environment["DISTILL_FUZZ_SCALE"] ?? "") ?? 1 }

    /// The committed seeds of `target`.
    static func seeds(of target: String) throws -> [[UInt8]] {
        let folder = try XCTUnwrap(Bundle.module.url(forResource: "FuzzSeeds", withExtension: nil)).appendingPathComponent(target)
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { !$0.hasPrefix(".") }.sorted()
        return try names.map { [UInt8](try Data(contentsOf: folder.appendingPathComponent($0))) }
    }

    /// Runs `target.inputs × scale` inputs and returns what happened. Fails the test when a seed
    /// itself is refused (the seeds must be valid files, or the mutations start from nothing).
    static func run(_ target: FuzzTarget, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws -> FuzzReport {
        let seeds = try seeds(of: target.name)
        XCTAssertFalse(seeds.isEmpty, "no seeds for \(target.name)", file: file, line: line)
        let folder = directory.appendingPathComponent(target.name)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try target.setUp(folder)
        let input = folder.appendingPathComponent(target.fileName)
        for (index, bytes) in seeds.enumerated() {
            try Data(bytes).write(to: input)
            XCTAssertNoThrow(try target.read(input), "\(target.name) seed \(index) is refused", file: file, line: line)
        }
        var mutator = FuzzMutator(seeds: seeds, seed: seed)
        let count = target.inputs * scale
        var accepted = 0, slowest = 0.0, violations: [String] = []
        let dataBefore = currentDataBytes() ?? 0
        let started = DispatchTime.now().uptimeNanoseconds
        try withDataLimit(growth: allocationLimit) {
            let watchdog = Watchdog(limit: stallLimit, describe: "fuzz target \(target.name), input at \(input.path)")
            defer { watchdog.stop() }
            for _ in 0..<count {
                let bytes = mutator.next()
                try write(bytes, to: input)
                let begin = DispatchTime.now().uptimeNanoseconds
                watchdog.beat()
                do {
                    try target.read(input)
                    accepted += 1
                } catch let violation as FuzzPropertyViolation {
                    let kept = folder.appendingPathComponent("violation-\(violations.count)")
                    try? Data(bytes).write(to: kept)
                    violations.append("\(violation) (input kept at \(kept.path))")
                } catch {}
                slowest = max(slowest, Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9)
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        peakDataGrowth = max(peakDataGrowth, (currentDataBytes() ?? 0) - dataBefore)
        for violation in violations.prefix(5) { XCTFail("\(target.name): \(violation)", file: file, line: line) }
        if violations.isEmpty { try? FileManager.default.removeItem(at: folder) }
        return FuzzReport(target: target.name, inputs: count, accepted: accepted, seconds: seconds, slowestSeconds: slowest)
    }

    /// Writes in place (no rename), so that the reproducer is always at the same path.
    private static func write(_ bytes: [UInt8], to url: URL) throws {
        let descriptor = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else { throw CocoaError(.fileWriteUnknown) }
        defer { close(descriptor) }
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw CocoaError(.fileWriteUnknown) }
    }

    /// Runs `body` with RLIMIT_DATA (heap and private writable mappings) set to the current size plus
    /// `growth`, so that an allocation sized by a damaged header fails (and the process stops) instead
    /// of succeeding by overcommit. The previous limit is restored afterwards.
    static func withDataLimit(growth: Int, _ body: () throws -> Void) throws {
        var previous = rlimit()
        guard getrlimit(Int32(RLIMIT_DATA.rawValue), &previous) == 0, let current = currentDataBytes() else {
            try body()
            return
        }
        var limited = previous
        limited.rlim_cur = min(previous.rlim_max, rlim_t(current + growth))
        _ = setrlimit(Int32(RLIMIT_DATA.rawValue), &limited)
        defer { _ = setrlimit(Int32(RLIMIT_DATA.rawValue), &previous) }
        try body()
    }

    /// VmData of /proc/self/status, in bytes.
    static func currentDataBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmData:") }),
              let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
        return kilobytes * 1024
    }
}

/// Aborts the process when `beat()` has not been called for `limit` seconds: a hung reader would
/// otherwise hang the test run for ever. The message names the input that hangs.
final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var last = DispatchTime.now().uptimeNanoseconds
    private var stopped = false

    init(limit: Double, describe: String) {
        let thread = Thread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 0.5)
                lock.lock()
                let done = stopped, idle = Double(DispatchTime.now().uptimeNanoseconds - last) / 1e9
                lock.unlock()
                if done { return }
                if idle > limit {
                    FileHandle.standardError.write(Data("hang: \(describe) has run for \(Int(idle)) s\n".utf8))
                    abort()
                }
            }
        }
        thread.start()
    }

    func beat() {
        lock.lock()
        last = DispatchTime.now().uptimeNanoseconds
        lock.unlock()
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }
}
