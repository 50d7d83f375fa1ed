import Foundation

// Token file layout, version 1. All integers are little-endian.
//
//   offset  size  field
//        0     8  magic "DSTLTOK\0"
//        8     4  UInt32 format version (1)
//       12     4  UInt32 bytes per token: 2 (UInt16 ids, vocabulary ≤ 65,536) or 4 (UInt32 ids)
//       16     4  UInt32 vocabulary size
//       20     4  UInt32 reserved, 0
//       24     8  UInt64 tokenizer hash (FNV-1a 64 of the .model file, `Tokenizer.modelHash`)
//       32     8  UInt64 token count N
//       40     8  UInt64 UTF-8 byte count of the whole source text
//       48     8  UInt64 split point S: tokens [0, S) are training data, [S, N) validation data
//       56     8  UInt64 UTF-8 byte count of the validation text (for bits per byte)
//       64     N × bytes-per-token token ids
//
// The split falls at a line boundary of the text, so both splits decode to whole lines. The 64-byte
// header keeps the ids aligned when the file is memory-mapped.

/// Constants and header of the token file format.
enum TokenFileFormat {
    static let magic: [UInt8] = Array("DSTLTOK\0".utf8)
    static let version: UInt32 = 1
    static let headerSize = 64

    /// UInt16 ids are enough for up to 65,536 pieces (ids 0...65,535) and halve the file.
    static func bytesPerToken(vocabSize: Int) -> Int { vocabSize <= 65_536 ? 2 : 4 }

    struct Header: Equatable {
        var bytesPerToken: Int
        var vocabSize: Int
        var tokenizerHash: UInt64
        var tokenCount: Int
        var sourceByteCount: Int
        var splitIndex: Int
        var validationByteCount: Int

        func encoded() -> [UInt8] {
            var bytes = TokenFileFormat.magic
            func append<Integer: FixedWidthInteger>(_ value: Integer) {
                withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
            }
            append(TokenFileFormat.version)
            append(UInt32(bytesPerToken))
            append(UInt32(vocabSize))
            append(UInt32(0))
            append(tokenizerHash)
            append(UInt64(tokenCount))
            append(UInt64(sourceByteCount))
            append(UInt64(splitIndex))
            append(UInt64(validationByteCount))
            return bytes
        }

        /// Reads and checks the header of `path` from the file's first bytes and its size.
        init(decoding bytes: UnsafeRawBufferPointer, path: String) throws {
            let size = TokenFileFormat.headerSize
            guard bytes.count >= TokenFileFormat.magic.count,
                  Array(bytes[0..<TokenFileFormat.magic.count]) == TokenFileFormat.magic else {
                throw DataError.notATokenFile(path)
            }
            guard bytes.count >= size else {
                throw DataError.truncatedTokenFile(path, expectedBytes: size, actualBytes: bytes.count)
            }
            func read<Integer: FixedWidthInteger>(_ offset: Int, as type: Integer.Type) -> Integer {
                Integer(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: type))
            }
            let version = read(8, as: UInt32.self)
            guard version == TokenFileFormat.version else {
                throw DataError.unsupportedVersion(path, found: version, supported: TokenFileFormat.version)
            }
            // Counts beyond Int.max can only come from damage; clamp so the checks below reject them.
            func count(_ offset: Int) -> Int { Int(clamping: read(offset, as: UInt64.self)) }
            bytesPerToken = Int(read(12, as: UInt32.self))
            vocabSize = Int(read(16, as: UInt32.self))
            tokenizerHash = read(24, as: UInt64.self)
            tokenCount = count(32)
            sourceByteCount = count(40)
            splitIndex = count(48)
            validationByteCount = count(56)

            guard bytesPerToken == TokenFileFormat.bytesPerToken(vocabSize: vocabSize) else {
                throw DataError.corruptHeader(path, reason: "\(bytesPerToken) bytes per token for a vocabulary of \(vocabSize)")
            }
            guard vocabSize > 0 else { throw DataError.corruptHeader(path, reason: "empty vocabulary") }
            guard splitIndex <= tokenCount else {
                throw DataError.corruptHeader(path, reason: "split point \(splitIndex) beyond \(tokenCount) tokens")
            }
            guard validationByteCount <= sourceByteCount else {
                throw DataError.corruptHeader(path, reason: "validation bytes exceed the text's bytes")
            }
            let (tokenBytes, overflow) = tokenCount.multipliedReportingOverflow(by: bytesPerToken)
            let expected = overflow ? Int.max : tokenBytes.addingReportingOverflow(size).partialValue
            guard !overflow, expected == bytes.count else {
                throw DataError.truncatedTokenFile(path, expectedBytes: expected, actualBytes: bytes.count)
            }
        }

        init(bytesPerToken: Int, vocabSize: Int, tokenizerHash: UInt64, tokenCount: Int, sourceByteCount: Int,
             splitIndex: Int, validationByteCount: Int) {
            self.bytesPerToken = bytesPerToken
            self.vocabSize = vocabSize
            self.tokenizerHash = tokenizerHash
            self.tokenCount = tokenCount
            self.sourceByteCount = sourceByteCount
            self.splitIndex = splitIndex
            self.validationByteCount = validationByteCount
        }
    }
}

/// Which part of a token file.
public enum DataSplit: String, Sendable, CaseIterable {
    case train
    case validation
}

/// A token file written by `TokenFile.prepare`, memory-mapped so that corpora larger than memory
/// can be used: ids are read from the page cache as they are touched.
public final class TokenFile: Sendable {
    /// The path the file was opened from.
    public let path: String
    /// The vocabulary size of the tokenizer that made the file; every id is below it.
    public let vocabSize: Int
    /// `Tokenizer.modelHash` of the tokenizer that made the file.
    public let tokenizerHash: UInt64
    /// Number of tokens in both splits.
    public let tokenCount: Int
    /// UTF-8 bytes of the whole source text.
    public let sourceByteCount: Int
    /// UTF-8 bytes of the validation text, the denominator of bits per byte on the validation split.
    public let validationByteCount: Int
    /// Index of the first validation token; training tokens are those before it.
    public let splitIndex: Int
    /// 2 for UInt16 ids, 4 for UInt32 ids.
    public let bytesPerToken: Int

    private let mapped: MappedFile

    /// Opens and checks a token file. Throws `DataError` for a missing file, wrong magic, another
    /// format version, or a size that does not match the header.
    public init(path: String) throws {
        do { mapped = try MappedFile(path: path) } catch {
            switch error {
            case .missing: throw DataError.missingTokenFile(path)
            case .isDirectory: throw DataError.tokenFileIsFolder(path)
            case .unreadable(let reason): throw DataError.unreadableTokenFile(path, reason: reason)
            }
        }
        let header = try TokenFileFormat.Header(decoding: mapped.bytes, path: path)
        self.path = path
        vocabSize = header.vocabSize
        tokenizerHash = header.tokenizerHash
        tokenCount = header.tokenCount
        sourceByteCount = header.sourceByteCount
        validationByteCount = header.validationByteCount
        splitIndex = header.splitIndex
        bytesPerToken = header.bytesPerToken
        // Batches read windows at random places.
        mapped.advise(MADV_RANDOM)
    }

    /// Number of training tokens.
    public var trainTokenCount: Int { splitIndex }
    /// Number of validation tokens.
    public var validationTokenCount: Int { tokenCount - splitIndex }
    /// UTF-8 bytes of the training text.
    public var trainByteCount: Int { sourceByteCount - validationByteCount }

    /// The training tokens.
    public var trainTokens: TokenView { tokens(.train) }
    /// The validation tokens (empty when the file was prepared with a validation fraction of 0).
    public var validationTokens: TokenView { tokens(.validation) }

    /// The tokens of one split.
    public func tokens(_ split: DataSplit) -> TokenView {
        let range = split == .train ? 0..<splitIndex : splitIndex..<tokenCount
        return TokenView(file: self, split: split, tokenRange: range)
    }

    /// The id at `index` in the whole file (both splits); `index` must be in 0..<tokenCount.
    public func token(at index: Int) -> Int32 {
        precondition(index >= 0 && index < tokenCount, "token index \(index) outside 0..<\(tokenCount)")
        return unsafeToken(at: index)
    }

    fileprivate func unsafeToken(at index: Int) -> Int32 {
        let offset = TokenFileFormat.headerSize + index * bytesPerToken
        if bytesPerToken == 2 {
            return Int32(UInt16(littleEndian: mapped.bytes.load(fromByteOffset: offset, as: UInt16.self)))
        }
        return Int32(bitPattern: UInt32(littleEndian: mapped.bytes.load(fromByteOffset: offset, as: UInt32.self)))
    }

    /// Throws `DataError.tokenizerMismatch` unless this file was made with `tokenizer`.
    public func checkTokenizer(_ tokenizer: Tokenizer) throws {
        guard tokenizer.modelHash == tokenizerHash, tokenizer.vocabSize == vocabSize else {
            throw DataError.tokenizerMismatch(tokenFile: path, tokenizer: tokenizer.modelPath)
        }
    }

    /// Reads every id and throws `DataError.tokenOutOfRange` for the first one outside the
    /// vocabulary. Opening does not do this, since it touches the whole file.
    public func checkTokenRange() throws {
        for index in 0..<tokenCount {
            let id = unsafeToken(at: index)
            if id < 0 || Int(id) >= vocabSize {
                throw DataError.tokenOutOfRange(path, index: index, id: id, vocabSize: vocabSize)
            }
        }
    }
}

/// A read-only view of the ids of one split, indexed from 0; it keeps its token file open.
public struct TokenView: RandomAccessCollection, Sendable {
    /// The file the ids live in.
    public let file: TokenFile
    /// Which split this is.
    public let split: DataSplit
    /// The ids' positions in the whole file.
    public let tokenRange: Range<Int>

    public var startIndex: Int { 0 }
    public var endIndex: Int { tokenRange.count }

    public subscript(position: Int) -> Int32 {
        precondition(position >= 0 && position < tokenRange.count, "token \(position) outside 0..<\(tokenRange.count)")
        return file.unsafeToken(at: tokenRange.lowerBound + position)
    }

    /// Copies `destination.count` ids starting at `start` into `destination`.
    public func copy(from start: Int, into destination: UnsafeMutableBufferPointer<Int32>) {
        precondition(start >= 0 && start + destination.count <= tokenRange.count, "copy outside the split")
        for offset in 0..<destination.count {
            destination[offset] = file.unsafeToken(at: tokenRange.lowerBound + start + offset)
        }
    }
}
