import Foundation

/// Writes files so that a reader never sees half a file: data goes to a temporary file in the same
/// directory, is flushed, and is then renamed over the destination (rename is atomic on one filesystem).
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
            throw IOError.unwritable(directory.path)
        }
        do {
            let handle = try FileHandle(forWritingTo: temporary)
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            if rename(temporary.path, url.path) != 0 {
                throw IOError.unwritable(url.path)
            }
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            if error is IOError { throw error }
            throw IOError.unwritable(url.path)
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
    /// An output (setting, path) that is, holds or lies inside an input (setting, path).
    case wouldOverwrite(output: String, path: String, input: String, inputPath: String)
    case sharedOutput(String, String, String, String)

    public var description: String {
        switch self {
        case .missing(let path): return "\(path) does not exist: check the path"
        case .unwritable(let path): return "cannot write to \(path): choose a directory you can write to"
        case .notADirectory(let path): return "\(path) is a file, not a directory: choose another output path"
        case let .wouldOverwrite(output, path, input, inputPath):
            return "\(output) \(path) would overwrite \(input) \(inputPath): choose another \(output)"
        case let .sharedOutput(first, firstPath, second, secondPath):
            return "\(first) \(firstPath) and \(second) \(secondPath) are the same place: give each its own directory"
        }
    }
}
