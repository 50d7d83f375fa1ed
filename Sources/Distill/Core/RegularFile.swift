import Foundation

/// Reading a file a user named. Only regular files are read: opening a FIFO blocks until something
/// writes to it (and ignores signals while it waits), `/dev/zero` never ends, and a symbolic-link loop
/// is no file at all; each gets one line saying what the path is. Links are followed.
public enum RegularFile {
    /// Throws `IOError.missing` or `.notARegularFile` unless `path` is a regular file.
    public static func check(_ path: String) throws {
        var status = stat()
        guard stat(path, &status) == 0 else {
            if errno == ELOOP { throw IOError.notARegularFile(path, "a loop of symbolic links") }
            throw IOError.missing(path)
        }
        if let what = kind(status.st_mode) { throw IOError.notARegularFile(path, what) }
    }

    /// What a file of mode `mode` is, in words, when it is not a regular file; nil for a regular file.
    static func kind(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a named pipe (FIFO)"
        case S_IFCHR, S_IFBLK: return "a device"
        case S_IFSOCK: return "a socket"
        default: return "not a file"
        }
    }

    /// Whether `path` is a regular file (following links).
    public static func exists(_ path: String) -> Bool { (try? check(path)) != nil }

    /// The bytes of the regular file at `path`.
    public static func read(_ path: String) throws -> Data {
        try check(path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IOError.notARegularFile(path, "unreadable (\(String(cString: strerror(errno))))")
        }
        return data
    }
}
