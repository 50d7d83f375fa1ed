import ArgumentParser
import Distill
import Foundation

/// The most threads a command accepts: far more than any machine here has, and small enough that
/// OpenBLAS's 32-bit thread count cannot overflow.
let maximumThreads = 1024

/// Refuses a --threads value outside 1...maximumThreads (nil means all cores).
func checkThreads(_ threads: Int?) throws {
    guard let threads else { return }
    guard threads >= 1, threads <= maximumThreads else {
        throw ValidationError("--threads must be between 1 and \(maximumThreads), got \(threads)")
    }
}

/// Refuses nan and inf, which no float flag means.
func checkFinite<Value: BinaryFloatingPoint>(_ value: Value, _ flag: String) throws {
    guard value.isFinite else { throw ValidationError("\(flag) must be a finite number, got \(value)") }
}

/// Ctrl-C or SIGTERM during a command that writes files (prepare, export, tokenizer train): the
/// temporaries of the writes in progress are removed, and the process exits with 128 + the signal
/// (130 for Ctrl-C), as shells expect. The signal handler only writes the signal's number to a pipe;
/// a thread waiting on it does the removal, which is not safe inside a handler.
enum RemoveTemporariesOnInterrupt {
    nonisolated(unsafe) private static var writeEnd: Int32 = -1

    static func install() {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return }
        writeEnd = ends[1]
        let readEnd = ends[0]
        let thread = Thread {
            var number: UInt8 = 0
            while read(readEnd, &number, 1) != 1 {}
            let removed = TemporaryFiles.removeAll(keepLocked: true)
            let note = removed.isEmpty ? "interrupted\n" : "interrupted: removed the partial output\n"
            FileHandle.standardError.write(Data(note.utf8))
            _exit(128 + Int32(number))
        }
        thread.start()
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber) { received in
                var number = UInt8(truncatingIfNeeded: received)
                _ = write(RemoveTemporariesOnInterrupt.writeEnd, &number, 1)
            }
        }
    }
}
