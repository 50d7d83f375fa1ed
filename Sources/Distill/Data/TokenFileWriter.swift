import Foundation

/// Streams ids into a token file without holding them all in memory, atomically: everything goes to a
/// temporary file beside the destination, which is renamed over it only once complete, so a reader
/// never sees half a file and an interrupted run leaves the old file in place.
final class TokenFileWriter {
    let path: String
    let bytesPerToken: Int
    private let temporaryPath: String
    private var descriptor: Int32
    private let registration: TemporaryFiles.Registration
    private(set) var tokenCount = 0
    private var encoded: [UInt8] = []

    init(path: String, bytesPerToken: Int) throws {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw DataError.unwritableOutput(path, reason: "it is a folder")
        }
        try AtomicFile.ensureDirectory(url.deletingLastPathComponent())
        self.path = path
        self.bytesPerToken = bytesPerToken
        temporaryPath = AtomicFile.temporarySibling(of: url).path
        // Registered before it exists, so that an interrupt at any point can remove it.
        registration = TemporaryFiles.register(temporaryPath)
        descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard descriptor >= 0 else {
            TemporaryFiles.unregister(registration)
            throw DataError.unwritableOutput(path, reason: String(cString: strerror(errno)))
        }
        // The header is written last, when the counts are known; reserve its place.
        try write([UInt8](repeating: 0, count: TokenFileFormat.headerSize), at: nil)
    }

    deinit {
        if descriptor >= 0 {
            close(descriptor)
            unlink(temporaryPath)
        }
        TemporaryFiles.unregister(registration)
    }

    /// Appends ids (each below the vocabulary size the width was chosen for).
    func append(_ ids: [Int32]) throws {
        encoded.removeAll(keepingCapacity: true)
        encoded.reserveCapacity(ids.count * bytesPerToken)
        if bytesPerToken == 2 {
            for id in ids { withUnsafeBytes(of: UInt16(truncatingIfNeeded: id).littleEndian) { encoded.append(contentsOf: $0) } }
        } else {
            for id in ids { withUnsafeBytes(of: UInt32(bitPattern: id).littleEndian) { encoded.append(contentsOf: $0) } }
        }
        try write(encoded, at: nil)
        tokenCount += ids.count
    }

    /// Writes the header, flushes the file to disk and renames it into place.
    func finish(header: TokenFileFormat.Header) throws {
        try write(header.encoded(), at: 0)
        guard fsync(descriptor) == 0 else { throw DataError.unwritableOutput(path, reason: String(cString: strerror(errno))) }
        close(descriptor)
        descriptor = -1
        guard rename(temporaryPath, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            throw DataError.unwritableOutput(path, reason: reason)
        }
    }

    /// Writes all of `bytes` at `offset`, or at the end when nil; write(2) may write less than asked.
    private func write(_ bytes: [UInt8], at offset: Int?) throws {
        try bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let pointer = buffer.baseAddress.map { $0 + done }
                let written = offset.map { pwrite(descriptor, pointer, buffer.count - done, off_t($0 + done)) }
                    ?? Glibc.write(descriptor, pointer, buffer.count - done)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else {
                    throw DataError.unwritableOutput(path, reason: String(cString: strerror(errno)))
                }
                done += written
            }
        }
    }
}
