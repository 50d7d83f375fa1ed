import Foundation

/// The temporary files and folders that writes in progress have made beside their destinations
/// (`AtomicFile`, token files, exported directories). Until its rename, each is only a hidden leftover,
/// so a command that is interrupted calls `removeAll()` before it exits. Thread-safe.
public enum TemporaryFiles {
    /// A registered path; pass it back to `unregister` once the temporary is renamed or removed.
    public struct Registration: Sendable {
        fileprivate let key: Int
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var paths: [Int: String] = [:]
    nonisolated(unsafe) private static var nextKey = 0

    /// Records `path` as a temporary that `removeAll()` should delete.
    public static func register(_ path: String) -> Registration {
        lock.lock()
        defer { lock.unlock() }
        nextKey += 1
        paths[nextKey] = path
        return Registration(key: nextKey)
    }

    /// Forgets a temporary that has been renamed into place or removed.
    public static func unregister(_ registration: Registration) {
        lock.lock()
        defer { lock.unlock() }
        paths[registration.key] = nil
    }

    /// Runs `body` (a few renames) while `removeAll()` waits, so that it never sees a half-made swap.
    public static func withoutRemoval<Result>(_ body: () throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// The paths registered now, for tests and messages.
    public static var registered: [String] {
        lock.lock()
        defer { lock.unlock() }
        return paths.keys.sorted().compactMap { paths[$0] }
    }

    /// Deletes every registered temporary (folders with what they hold) and forgets them. Returns the
    /// paths that existed and were removed. Meant for the way out of an interrupted command: the lock
    /// stays taken, so that no new swap starts and no new temporary is registered before the process
    /// exits.
    @discardableResult
    public static func removeAll(keepLocked: Bool = false) -> [String] {
        lock.lock()
        defer { if !keepLocked { lock.unlock() } }
        var removed: [String] = []
        var left = paths.keys.sorted().compactMap { paths[$0] }
        // A write already under way may still add a file to a temporary folder while it is being
        // removed (its next registration then waits on the lock): try again a few times.
        for attempt in 0..<5 where !left.isEmpty {
            if attempt > 0 { usleep(20_000) }
            for path in left where (try? FileManager.default.removeItem(atPath: path)) != nil {
                removed.append(path)
            }
            left = left.filter { FileManager.default.fileExists(atPath: $0) }
        }
        paths.removeAll()
        return removed
    }

    /// Removes the temporaries beside `url` (`AtomicFile.temporarySibling`'s `.NAME.tmp-PID-…` and
    /// `.NAME.old-PID-…`) that a process no longer alive left behind: a SIGKILL gives no chance to clean
    /// up, so the next write to the same place does it. Returns the paths removed.
    @discardableResult
    public static func removeStale(besides url: URL) -> [String] {
        let directory = url.deletingLastPathComponent()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        var removed: [String] = []
        for name in names {
            for kind in ["tmp", "old"] {
                let prefix = ".\(url.lastPathComponent).\(kind)-"
                guard name.hasPrefix(prefix), let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }),
                      pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
                let path = directory.appendingPathComponent(name).path
                if (try? FileManager.default.removeItem(atPath: path)) != nil { removed.append(path) }
            }
        }
        return removed
    }
}
