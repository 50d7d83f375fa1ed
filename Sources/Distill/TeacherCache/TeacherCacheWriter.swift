import Foundation

/// One position's stored distribution: ids with counts (samples) or probabilities (top-K), and
/// for top-K the mass of the other tokens. A split's first token has an empty record.
struct TeacherCacheRecord {
    var ids: [Int32] = []
    /// Counts (samples) or probabilities (top-K), one per id.
    var values: [Float] = []
    var rest: Float = 0
}

/// Writes a cache as a stream of blocks into `OUTPUT.partial`, committing now and then (blocks made
/// durable first, then the header that counts them), so an interrupted build resumes at the last
/// commit and ends byte for byte as an uninterrupted one; `finish` seals it and renames it into place.
final class TeacherCacheWriter {
    let path: String
    let partialPath: String
    private(set) var header: TeacherCacheFormat.Header
    private let descriptor: Int32
    /// Serialised blocks not yet written, with the directory entries (their ends) that go with them.
    private var pending: [UInt8] = []
    private var pendingEnds: [UInt64] = []
    /// Where the next block starts in the file (written and pending blocks included).
    private var end: Int
    private var blocksDone: Int
    /// Records of the block being filled.
    private var current: [TeacherCacheRecord] = []
    /// The running hash with the pending blocks included.
    private var pendingHash: UInt64

    /// Positions handed to `append` so far (resumed ones included).
    var positionsDone: Int { blocksDone * TeacherCacheFormat.blockPositions + current.count }

    static func partialPath(for path: String) -> String { path + ".partial" }

    /// Opens the build of `header`: continues `path.partial` when it holds a build with the same
    /// binding (taking its windows per pass), otherwise starts one. A partial of another build, or
    /// one whose committed part is damaged, is refused rather than overwritten.
    init(path: String, header requested: TeacherCacheFormat.Header) throws {
        self.path = path
        partialPath = Self.partialPath(for: path)
        var header = requested
        if FileManager.default.fileExists(atPath: partialPath) {
            let fd = open(partialPath, O_RDWR)
            guard fd >= 0 else { throw IOError.unwritable(partialPath) }
            do {
                let existing = try Self.readHeader(fd, path: partialPath)
                guard existing.binding == requested.binding else { throw TeacherCacheError.foreignPartial(partialPath) }
                header = existing
                // Drop whatever follows the last commit, after checking that the committed part is whole.
                let committedEnd = try Self.readUInt64(fd, at: header.directoryOffset + header.blocksWritten * 8, path: partialPath)
                guard committedEnd >= header.bodyOffset, committedEnd <= Int(lseek(fd, 0, SEEK_END)) else {
                    throw TeacherCacheError.damagedPartial(partialPath, reason: "its last commit points past its end")
                }
                var hash = fnv1a64(continuing: fnvOffsetBasis, header.binding.withUnsafeBytes { $0 })
                hash = try Self.hashRange(fd, from: header.bodyOffset, to: committedEnd, continuing: hash, path: partialPath)
                guard hash == header.runningHash else {
                    throw TeacherCacheError.damagedPartial(partialPath, reason: "its committed blocks do not match their checksum")
                }
                guard ftruncate(fd, off_t(committedEnd)) == 0 else { throw IOError.unwritable(partialPath) }
                end = committedEnd
            } catch {
                close(fd)
                throw error
            }
            descriptor = fd
        } else {
            let fd = open(partialPath, O_RDWR | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw IOError.unwritable(partialPath) }
            header.blocksWritten = 0
            header.checksum = 0
            header.runningHash = fnv1a64(continuing: fnvOffsetBasis, header.binding.withUnsafeBytes { $0 })
            end = header.bodyOffset
            descriptor = fd
            do {
                try Self.writeAll(fd, header.encoded(), at: 0, path: partialPath)
                var first = withUnsafeBytes(of: UInt64(header.bodyOffset).littleEndian) { Array($0) }
                first += [UInt8](repeating: 0, count: header.blockCount * 8)
                try Self.writeAll(fd, first, at: header.directoryOffset, path: partialPath)
                guard fsync(fd) == 0 else { throw IOError.unwritable(partialPath) }
            } catch {
                close(fd)
                throw error
            }
        }
        self.header = header
        blocksDone = header.blocksWritten
        pendingHash = header.runningHash
    }

    deinit { close(descriptor) }

    /// Adds the record of the next position.
    func append(_ record: TeacherCacheRecord) {
        current.append(record)
        if current.count == header.positions(inBlock: blocksDone) {
            serialise(current)
            current.removeAll(keepingCapacity: true)
            blocksDone += 1
        }
    }

    /// Makes the finished blocks durable: the blocks and their directory entries, then the header.
    func commit() throws {
        guard !pendingEnds.isEmpty else { return }
        try writeAll(pending, at: end - pending.count)
        var directory: [UInt8] = []
        for entry in pendingEnds { withUnsafeBytes(of: entry.littleEndian) { directory.append(contentsOf: $0) } }
        try writeAll(directory, at: header.directoryOffset + (header.blocksWritten + 1) * 8)
        try sync()
        header.blocksWritten = blocksDone
        header.runningHash = pendingHash
        try writeAll(header.encoded(), at: 0)
        try sync()
        pending.removeAll(keepingCapacity: true)
        pendingEnds.removeAll(keepingCapacity: true)
    }

    /// After the last position: seals the checksum over the directory and renames the file into place.
    func finish() throws {
        precondition(blocksDone == header.blockCount && current.isEmpty, "the cache is not full")
        try commit()
        header.checksum = try Self.hashRange(descriptor, from: header.directoryOffset, to: header.bodyOffset,
                                             continuing: header.runningHash, path: partialPath)
        try writeAll(header.encoded(), at: 0)
        try sync()
        guard rename(partialPath, path) == 0 else { throw IOError.unwritable(path) }
    }

    // MARK: blocks

    private func serialise(_ records: [TeacherCacheRecord]) {
        var block: [UInt8] = []
        func append<Integer: FixedWidthInteger>(_ value: Integer) {
            withUnsafeBytes(of: value.littleEndian) { block.append(contentsOf: $0) }
        }
        let idBytes = header.idBytes
        func appendID(_ id: Int32) { idBytes == 2 ? append(UInt16(truncatingIfNeeded: id)) : append(UInt32(bitPattern: id)) }
        switch header.mode {
        case .samples:
            var start = 0
            for record in records {
                header.startBytes == 2 ? append(UInt16(start)) : append(UInt32(start))
                start += record.ids.count
            }
            for record in records {
                for (id, count) in zip(record.ids, record.values) {
                    appendID(id)
                    header.valueBytes == 1 ? block.append(UInt8(count)) : append(UInt16(count))
                }
            }
        case .topK(let k):
            for record in records { append(ReducedPrecision.f16(from: record.rest)) }
            for record in records {
                for i in 0..<k {
                    appendID(i < record.ids.count ? record.ids[i] : 0)
                    append(ReducedPrecision.f16(from: i < record.values.count ? record.values[i] : 0))
                }
            }
        }
        pendingHash = block.withUnsafeBytes { fnv1a64(continuing: pendingHash, $0) }
        pending += block
        end += block.count
        pendingEnds.append(UInt64(end))
    }

    // MARK: file access

    private func writeAll(_ bytes: [UInt8], at offset: Int) throws {
        try Self.writeAll(descriptor, bytes, at: offset, path: partialPath)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String) throws {
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + written, bytes.count - written, off_t(offset + written)) }
            guard result > 0 else { throw IOError.unwritable(path) }
            written += result
        }
    }

    private func sync() throws {
        guard fsync(descriptor) == 0 else { throw IOError.unwritable(partialPath) }
    }

    private static func readExactly(_ fd: Int32, count: Int, at offset: Int, path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let result = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            guard result > 0 else { throw TeacherCacheError.foreignPartial(path) }
            done += result
        }
        return bytes
    }

    private static func readHeader(_ fd: Int32, path: String) throws -> TeacherCacheFormat.Header {
        let bytes = try readExactly(fd, count: TeacherCacheFormat.headerSize, at: 0, path: path)
        do { return try bytes.withUnsafeBytes { try TeacherCacheFormat.Header(decoding: $0, path: path) } }
        catch { throw TeacherCacheError.damagedPartial(path, reason: "its header is not a teacher cache's") }
    }

    private static func readUInt64(_ fd: Int32, at offset: Int, path: String) throws -> Int {
        let bytes = try readExactly(fd, count: 8, at: offset, path: path)
        return Int(clamping: bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
    }

    /// FNV-1a 64 of the file's bytes in [from, to), continued from `hash`, read in 1 MB pieces.
    private static func hashRange(_ fd: Int32, from: Int, to: Int, continuing hash: UInt64, path: String) throws -> UInt64 {
        var hash = hash, offset = from
        while offset < to {
            let piece = try readExactly(fd, count: min(1 << 20, to - offset), at: offset, path: path)
            hash = piece.withUnsafeBytes { fnv1a64(continuing: hash, $0) }
            offset += piece.count
        }
        return hash
    }
}
