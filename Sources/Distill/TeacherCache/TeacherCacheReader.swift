import Foundation

/// A finished teacher cache, memory-mapped and checked once when opened: header, sizes, directory,
/// checksum and every record. Reading a position's target afterwards costs O(1) and allocates nothing.
public final class TeacherCache: @unchecked Sendable {
    /// The path the cache was opened from.
    public let path: String
    let header: TeacherCacheFormat.Header
    private let mapped: MappedFile
    private let bytes: UnsafeRawBufferPointer

    /// Samples (S) or top-K (K).
    public var mode: TeacherCacheMode { header.mode }
    public var vocabSize: Int { header.vocabSize }
    /// The temperature τ of the stored distributions; a student must train at this τ.
    public var temperature: Float { header.temperature }
    /// Tokens of context the teacher saw at most.
    public var window: Int { header.window }
    /// Tokens of the token file the cache was made for (one position each).
    public var tokenCount: Int { header.tokenCount }
    public var splitIndex: Int { header.splitIndex }
    public var tokenFileHash: UInt64 { header.tokenFileHash }
    public var tokenizerHash: UInt64 { header.tokenizerHash }
    public var teacherHash: UInt64 { header.teacherHash }
    public var seed: UInt64 { header.seed }
    /// The checksum of the whole file: one number that names this cache (for resume checks).
    public var identity: UInt64 { header.checksum }
    /// Size of the file.
    public var byteCount: Int { bytes.count }
    /// The most entries one position holds (S or K): the size of the buffers `target` writes.
    public var maximumEntries: Int { mode.parameter }

    /// Opens and checks a cache. Throws `TeacherCacheError` for a missing, unfinished, truncated or
    /// damaged file, or one whose header contradicts its size.
    public init(path: String) throws {
        do { mapped = try MappedFile(path: path) } catch {
            throw TeacherCacheError.unreadable(path, reason: error.reason)
        }
        self.path = path
        bytes = mapped.bytes
        header = try TeacherCacheFormat.Header(decoding: bytes, path: path)
        guard header.blocksWritten == header.blockCount, header.checksum != 0 else { throw TeacherCacheError.incomplete(path) }
        mapped.advise(MADV_SEQUENTIAL)
        try checkStructure()
        try checkChecksum()
        try checkRecords()
        // Training reads positions at random.
        mapped.advise(MADV_RANDOM)
    }

    // MARK: reading

    /// The sparse target of the token at `position` (0 ..< tokenCount): writes the ids and their
    /// probabilities (counts / S, or the top-K probabilities) and returns how many, and the mass left
    /// outside them (0 for samples). The first token of each split has no history: 0 entries.
    public func target(at position: Int, ids: UnsafeMutablePointer<Int32>, probabilities: UnsafeMutablePointer<Float>)
        -> (count: Int, rest: Float) {
        precondition(position >= 0 && position < header.tokenCount, "position \(position) outside the cache")
        let block = position / TeacherCacheFormat.blockPositions, slot = position % TeacherCacheFormat.blockPositions
        let n = header.positions(inBlock: block), base = directory(block)
        let idBytes = header.idBytes, entryBytes = header.entryBytes
        switch header.mode {
        case .samples(let s):
            let entries = base + n * header.startBytes
            let first = start(base, slot)
            let end = slot + 1 < n ? start(base, slot + 1) : (directory(block + 1) - entries) / entryBytes
            let scale = 1 / Float(s)
            for i in 0..<(end - first) {
                let offset = entries + (first + i) * entryBytes
                ids[i] = readID(offset, idBytes)
                probabilities[i] = Float(readValue(offset + idBytes)) * scale
            }
            return (end - first, 0)
        case .topK(let k):
            guard header.hasHistory(position) else { return (0, 0) }
            let rest = ReducedPrecision.float(fromF16: read(base + slot * 2, as: UInt16.self))
            let entries = base + n * 2 + slot * k * entryBytes
            for i in 0..<k {
                let offset = entries + i * entryBytes
                ids[i] = readID(offset, idBytes)
                probabilities[i] = ReducedPrecision.float(fromF16: read(offset + idBytes, as: UInt16.self))
            }
            return (k, rest)
        }
    }

    /// The target at `position` as arrays (for tests and inspection).
    public func target(at position: Int) -> (ids: [Int32], probabilities: [Float], rest: Float) {
        var ids = [Int32](repeating: 0, count: maximumEntries), probabilities = [Float](repeating: 0, count: maximumEntries)
        let (count, rest) = ids.withUnsafeMutableBufferPointer { i in
            probabilities.withUnsafeMutableBufferPointer { p in target(at: position, ids: i.baseAddress!, probabilities: p.baseAddress!) }
        }
        return (Array(ids[0..<count]), Array(probabilities[0..<count]), rest)
    }

    /// Throws unless the cache was made for `data` (the same token file, hence the same tokenizer).
    public func check(against data: TokenFile) throws {
        guard header.tokenizerHash == data.tokenizerHash, header.vocabSize == data.vocabSize else {
            throw TeacherCacheError.mismatch(path, what: "data of another tokenizer than \(data.path)")
        }
        guard header.tokenCount == data.tokenCount, header.splitIndex == data.splitIndex,
              header.tokenFileHash == (try TeacherCache.hash(tokenFile: data)) else {
            throw TeacherCacheError.mismatch(path, what: "another token file than \(data.path)")
        }
    }

    /// FNV-1a 64 of a token file's bytes, header included: what a cache is bound to.
    public static func hash(tokenFile: TokenFile) throws -> UInt64 {
        let mapped: MappedFile
        do { mapped = try MappedFile(path: tokenFile.path) } catch {
            throw DataError.unreadableTokenFile(tokenFile.path, reason: error.reason)
        }
        mapped.advise(MADV_SEQUENTIAL)
        return fnv1a64(continuing: fnvOffsetBasis, mapped.bytes)
    }

    // MARK: checks

    private func checkStructure() throws {
        let blockCount = header.blockCount
        // The directory must fit before anything in it is read.
        guard header.bodyOffset <= bytes.count else {
            throw TeacherCacheError.corrupt(path, reason: "\(bytes.count) bytes, but its header needs \(header.bodyOffset) for the directory of \(header.tokenCount) positions")
        }
        guard directory(0) == header.bodyOffset, directory(blockCount) == bytes.count else {
            throw TeacherCacheError.corrupt(path, reason: "its directory ends at \(directory(blockCount)) but the file has \(bytes.count) bytes (truncated?)")
        }
        let entryBytes = header.entryBytes
        for block in 0..<blockCount {
            let begin = directory(block), end = directory(block + 1), n = header.positions(inBlock: block)
            guard begin <= end, end <= bytes.count else {
                throw TeacherCacheError.corrupt(path, reason: "block \(block) spans \(begin)..<\(end)")
            }
            let size = end - begin
            switch header.mode {
            case .samples(let s):
                let startsSize = n * header.startBytes
                guard size >= startsSize, (size - startsSize) % entryBytes == 0 else {
                    throw TeacherCacheError.corrupt(path, reason: "block \(block) has \(size) bytes, not whole records")
                }
                let entries = (size - startsSize) / entryBytes
                var previous = 0
                for slot in 0...n {
                    let next = slot < n ? start(begin, slot) : entries
                    guard slot == 0 ? next == 0 : (next >= previous && next - previous <= s) else {
                        throw TeacherCacheError.corrupt(path, reason: "record \(block * TeacherCacheFormat.blockPositions + slot) of block \(block) has bad bounds")
                    }
                    previous = next
                }
            case .topK(let k):
                guard size == n * 2 + n * k * entryBytes else {
                    throw TeacherCacheError.corrupt(path, reason: "block \(block) has \(size) bytes instead of \(n * 2 + n * k * entryBytes)")
                }
            }
        }
    }

    private func checkChecksum() throws {
        var hash = fnv1a64(continuing: fnvOffsetBasis, UnsafeRawBufferPointer(rebasing: bytes[0..<TeacherCacheFormat.boundBytes]))
        hash = fnv1a64(continuing: hash, UnsafeRawBufferPointer(rebasing: bytes[header.bodyOffset...]))
        guard hash == header.runningHash else { throw TeacherCacheError.corrupt(path, reason: "checksum mismatch") }
        hash = fnv1a64(continuing: hash, UnsafeRawBufferPointer(rebasing: bytes[header.directoryOffset..<header.bodyOffset]))
        guard hash == header.checksum else { throw TeacherCacheError.corrupt(path, reason: "checksum mismatch") }
    }

    /// Every record: ids inside the vocabulary; samples ascending, distinct, counting up to S; top-K
    /// probabilities and masses finite in [0, 1].
    private func checkRecords() throws {
        let vocab = header.vocabSize
        var ids = [Int32](repeating: 0, count: maximumEntries), probabilities = [Float](repeating: 0, count: maximumEntries)
        try ids.withUnsafeMutableBufferPointer { idBuffer in
            try probabilities.withUnsafeMutableBufferPointer { probabilityBuffer in
                for position in 0..<header.tokenCount {
                    let (count, rest) = target(at: position, ids: idBuffer.baseAddress!, probabilities: probabilityBuffer.baseAddress!)
                    func fail(_ why: String) -> TeacherCacheError { .corrupt(path, reason: "position \(position) \(why)") }
                    guard header.hasHistory(position) else {
                        if count != 0 { throw fail("has a record but no history") }
                        continue
                    }
                    switch header.mode {
                    case .samples(let s):
                        var total = 0, previous: Int32 = -1
                        for i in 0..<count {
                            let id = idBuffer[i], drawn = Int((probabilityBuffer[i] * Float(s)).rounded())
                            guard id > previous, Int(id) < vocab, drawn >= 1 else { throw fail("has a bad sample") }
                            previous = id
                            total += drawn
                        }
                        if total != s { throw fail("has \(total) samples instead of \(s)") }
                    case .topK:
                        guard rest.isFinite, rest >= 0, rest <= 1 else { throw fail("has a remaining mass of \(rest)") }
                        for i in 0..<count {
                            let p = probabilityBuffer[i]
                            guard idBuffer[i] >= 0, Int(idBuffer[i]) < vocab, p.isFinite, p >= 0, p <= 1 else {
                                throw fail("has a bad entry")
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: raw access

    private func read<Integer: FixedWidthInteger>(_ offset: Int, as type: Integer.Type) -> Integer {
        Integer(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: type))
    }

    /// The file offset of block `block` (block `blockCount` is the end of the file), clamped into Int.
    private func directory(_ block: Int) -> Int {
        Int(clamping: read(header.directoryOffset + block * 8, as: UInt64.self))
    }

    private func start(_ base: Int, _ slot: Int) -> Int {
        header.startBytes == 2 ? Int(read(base + slot * 2, as: UInt16.self)) : Int(read(base + slot * 4, as: UInt32.self))
    }

    private func readID(_ offset: Int, _ width: Int) -> Int32 {
        width == 2 ? Int32(read(offset, as: UInt16.self)) : Int32(bitPattern: read(offset, as: UInt32.self))
    }

    private func readValue(_ offset: Int) -> Int {
        header.valueBytes == 1 ? Int(bytes[offset]) : Int(read(offset, as: UInt16.self))
    }
}
