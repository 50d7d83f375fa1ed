import Foundation

/// A whole file mapped read-only into memory, so that files larger than RAM can be read: the
/// kernel pages bytes in as they are touched and drops them under memory pressure.
final class MappedFile: @unchecked Sendable {
    /// Why a file could not be mapped; callers turn this into their own area's error.
    enum Failure: Error {
        case missing
        case isDirectory
        case unreadable(String)

        /// The failure in words, for an error message.
        var reason: String {
            switch self {
            case .missing: return "the file does not exist"
            case .isDirectory: return "it is a directory, not a file"
            case .unreadable(let why): return why
            }
        }
    }

    let path: String
    /// The file's bytes; empty (with a nil base) for an empty file, which cannot be mapped.
    let bytes: UnsafeRawBufferPointer

    init(path: String) throws(Failure) {
        self.path = path
        var status = stat()
        guard stat(path, &status) == 0 else {
            if errno == ELOOP { throw .unreadable("it is a loop of symbolic links") }
            throw errno == ENOENT || errno == ENOTDIR ? .missing : .unreadable(String(cString: strerror(errno)))
        }
        guard (status.st_mode & S_IFMT) != S_IFDIR else { throw .isDirectory }
        // Opening a FIFO would block (and a device never ends): only regular files are mapped.
        if let what = RegularFile.kind(status.st_mode) { throw .unreadable("it is \(what), not a regular file") }
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw .unreadable(String(cString: strerror(errno))) }
        defer { close(descriptor) }
        let size = Int(status.st_size)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), base != MAP_FAILED else {
            throw .unreadable(String(cString: strerror(errno)))
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    /// Tells the kernel how the bytes will be read (e.g. MADV_SEQUENTIAL for one pass, MADV_RANDOM
    /// for batch sampling), so read-ahead helps instead of wasting memory.
    func advise(_ advice: Int32) {
        guard let base = bytes.baseAddress else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, advice)
    }

    deinit {
        if let base = bytes.baseAddress {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }
}
