import Foundation

/// Writes files so that a reader never sees half a file: data goes to a temporary file in the same
/// directory, is flushed, and is then renamed over the destination (rename is atomic on one filesystem).
/// The temporary is registered with `TemporaryFiles`, so an interrupted command can remove it.
public enum AtomicFile {
    /// A hidden, unique name beside `url` for a temporary (`kind` "tmp" or "old").
    public static func temporarySibling(of url: URL, kind: String = "tmp") -> URL {
        url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(kind)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    }

    public static func write(_ data: Data, to url: URL) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = temporarySibling(of: url)
        let registration = TemporaryFiles.register(temporary.path)
        defer { TemporaryFiles.unregister(registration) }
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw IOError.unwritable(directory.path) }
        // Plain write(2), so that a full disk or a file-size limit reports its own cause (errno).
        var failure: Int32 = 0
        data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                offset += written
            }
        }
        if failure == 0 && fsync(descriptor) != 0 { failure = errno }
        if close(descriptor) != 0 && failure == 0 { failure = errno }
        if failure == 0 && rename(temporary.path, url.path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary.path)
            throw IOError.writeFailed(url.path, reason: String(cString: strerror(failure)))
        }
    }

    /// Writes a directory as one unit: `body` fills a hidden temporary sibling of `url`, which then
    /// takes the place of `url` by rename, so that a reader (or an interrupted run) sees the old
    /// directory or the new one, never a mix. An existing directory at `url` is replaced, so the caller
    /// decides beforehand whether that is allowed; a file there is refused.
    /// Removes `url` (a folder with what it holds) that is to be made again; a failure is one line with the
    /// system's reason, not Foundation's error dump.
    public static func remove(_ url: URL) throws {
        do { try FileManager.default.removeItem(at: url) } catch {
            let reason = ((error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError).map { String(cString: strerror(Int32($0.code))) }
                ?? (error as NSError).localizedDescription
            throw IOError.cannotRemove(url.path, reason: reason.lowercased())
        }
    }

    public static func writeDirectory(_ url: URL, _ body: (URL) throws -> Void) throws {
        let parent = url.deletingLastPathComponent()
        try ensureDirectory(parent)
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue { throw IOError.notADirectory(url.path) }
        let temporary = temporarySibling(of: url)
        let registration = TemporaryFiles.register(temporary.path)
        defer { TemporaryFiles.unregister(registration) }
        do {
            try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: false)
        } catch {
            throw IOError.unwritable(parent.path)
        }
        do {
            try body(temporary)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
        // The old directory moves aside, the new one takes its name, and only then is the old one
        // deleted; removal on interrupt waits for the two renames.
        let old = temporarySibling(of: url, kind: "old")
        let oldRegistration = TemporaryFiles.register(old.path)
        defer { TemporaryFiles.unregister(oldRegistration) }
        let swapped: Bool = TemporaryFiles.withoutRemoval {
            if exists && rename(url.path, old.path) != 0 { return false }
            if rename(temporary.path, url.path) != 0 {
                if exists { _ = rename(old.path, url.path) }
                return false
            }
            return true
        }
        guard swapped else {
            try? FileManager.default.removeItem(at: temporary)
            throw IOError.unwritable(url.path)
        }
        if exists { try? FileManager.default.removeItem(at: old) }
    }

    /// Creates `url` as a directory (and its parents) or throws a clear error when that is impossible.
    public static func ensureDirectory(_ url: URL) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw IOError.notADirectory(url.path) }
        } else {
            do { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
            catch { throw IOError.unwritable(url.path) }
        }
        guard access(url.path, W_OK) == 0 else { throw IOError.unwritable(url.path) }
    }
}

/// Errors of file input and output that a user can act on.
public enum IOError: Error, CustomStringConvertible, Equatable {
    case missing(String)
    case unwritable(String)
    case notADirectory(String)
    /// A path given as a file to read that is something else (what it is).
    case notARegularFile(String, String)
    /// A write that failed part way (a full disk, a file-size limit), with the system's reason.
    case writeFailed(String, reason: String)
    /// An output (setting, path) that is, holds or lies inside an input (setting, path).
    case wouldOverwrite(output: String, path: String, input: String, inputPath: String)
    case sharedOutput(String, String, String, String)
    /// Another live process is writing into the same directory.
    case locked(String)
    /// DIR/.lock is a folder or a link, not the lock file distill makes there.
    case foreignLock(String)
    /// An output distill made and must replace could not be removed (the system's reason).
    case cannotRemove(String, reason: String)

    public var description: String {
        switch self {
        case .missing(let path): return "\(path) does not exist: check the path"
        case .unwritable(let path): return "cannot write to \(path): choose a directory you can write to"
        case .notADirectory(let path): return "\(path) is a file, not a directory: choose another output path"
        case let .notARegularFile(path, what):
            return "\(path) is not a regular file (it is \(what)): give the path of a file"
        case let .writeFailed(path, reason):
            return "could not write \(path): \(reason.lowercased()); free some space (or raise the limit) and resume"
        case let .wouldOverwrite(output, path, input, inputPath):
            return "\(output) \(path) would overwrite \(input) \(inputPath): choose another \(output)"
        case let .sharedOutput(first, firstPath, second, secondPath):
            return "\(first) \(firstPath) and \(second) \(secondPath) are the same place: give each its own directory"
        case .locked(let path):
            return "\(path) is in use by another distill command (it holds the lock): wait for it to finish, or choose another output"
        case let .cannotRemove(path, reason):
            return "cannot remove \(path) to make it again (\(reason)): remove it yourself, or choose another output"
        case .foreignLock(let path):
            return "\(path) is not distill's lock file (it is a folder or a link): remove it, or choose another output"
        }
    }
}
