import Foundation

/// Writes files so that a reader never sees half a file: data goes to a temporary file in the same
/// directory, is flushed, and is then renamed over the destination (rename is atomic on one filesystem).
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
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
    /// A write that failed part way (a full disk, a file-size limit), with the system's reason.
    case writeFailed(String, reason: String)
    /// An output (setting, path) that is, holds or lies inside an input (setting, path).
    case wouldOverwrite(output: String, path: String, input: String, inputPath: String)
    case sharedOutput(String, String, String, String)

    public var description: String {
        switch self {
        case .missing(let path): return "\(path) does not exist: check the path"
        case .unwritable(let path): return "cannot write to \(path): choose a directory you can write to"
        case .notADirectory(let path): return "\(path) is a file, not a directory: choose another output path"
        case let .writeFailed(path, reason):
            return "could not write \(path): \(reason.lowercased()); free some space (or raise the limit) and resume"
        case let .wouldOverwrite(output, path, input, inputPath):
            return "\(output) \(path) would overwrite \(input) \(inputPath): choose another \(output)"
        case let .sharedOutput(first, firstPath, second, secondPath):
            return "\(first) \(firstPath) and \(second) \(secondPath) are the same place: give each its own directory"
        }
    }
}
