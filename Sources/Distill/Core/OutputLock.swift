import Foundation

/// An exclusive hold on an output for the life of a command: a lock file locked with `flock`, `DIR/.lock`
/// for an output directory that a run writes into, `.NAME.lock` beside an output that is replaced whole
/// (an export, a teacher cache). The kernel drops the lock when the process ends, however it ends, so a
/// crashed command never leaves an output stuck; a second live writer of the same output is refused.
/// A lock beside its output is removed with the lock (and by an interrupted command's clean-up), so that
/// it leaves nothing in the user's folder.
public final class OutputLock {
    /// The output the lock guards.
    public let output: URL
    private let descriptor: Int32
    private let lockFile: URL
    private let removal: TemporaryFiles.Registration?

    /// Locks `directory` through `directory/.lock`.
    public convenience init(directory: URL) throws {
        try self.init(output: directory, lockFile: directory.appendingPathComponent(".lock"), removedWithTheLock: false)
    }

    /// Locks `output`, a file or a directory that is replaced by rename, through `.NAME.lock` in its parent.
    public convenience init(beside output: URL) throws {
        try self.init(output: output, lockFile: output.deletingLastPathComponent().appendingPathComponent(".\(output.lastPathComponent).lock"),
                      removedWithTheLock: true)
    }

    private init(output: URL, lockFile: URL, removedWithTheLock: Bool) throws {
        self.output = output
        self.lockFile = lockFile
        let path = lockFile.path
        var fd: Int32 = -1
        while true {
            fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else {
                if errno == EISDIR || errno == ELOOP { throw IOError.foreignLock(path) }
                throw IOError.unwritable(lockFile.deletingLastPathComponent().path)
            }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                close(fd)
                throw IOError.locked(output.path)
            }
            // A holder that removes its lock file may have done so between our open and our flock: then
            // the file locked here is no longer at the path, and another process could lock a new one.
            var atPath = stat(), held = stat()
            if stat(path, &atPath) == 0, fstat(fd, &held) == 0, atPath.st_ino == held.st_ino, atPath.st_dev == held.st_dev { break }
            close(fd)
        }
        removal = removedWithTheLock ? TemporaryFiles.register(path) : nil
        // The holder's pid, for a person who looks; the lock itself is the flock.
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { write(fd, $0, strlen($0)) }
        descriptor = fd
    }

    deinit {
        if let removal {
            // Removed while still locked, so that no other process finds and locks this file after us.
            unlink(lockFile.path)
            TemporaryFiles.unregister(removal)
        }
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
