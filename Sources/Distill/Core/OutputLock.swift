import Foundation

/// An exclusive hold on an output directory for the life of a run: `DIR/.lock` locked with `flock`.
/// The kernel drops the lock when the process ends, however it ends, so a crashed run never leaves a
/// directory stuck; a second live run into the same directory is refused.
public final class OutputLock {
    public let directory: URL
    private let descriptor: Int32

    public init(directory: URL) throws {
        self.directory = directory
        let path = directory.appendingPathComponent(".lock").path
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw IOError.unwritable(directory.path) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw IOError.locked(directory.path)
        }
        // The holder's pid, for a person who looks; the lock itself is the flock.
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { write(fd, $0, strlen($0)) }
        descriptor = fd
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
