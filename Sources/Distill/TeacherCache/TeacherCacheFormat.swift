import Foundation

// Teacher cache layout, version 1. All integers are little-endian.
//
//   offset  size  field
//        0     8  magic "DSTLTCH\0"
//        8     4  UInt32 format version (1)
//       12     4  UInt32 mode: 1 = samples, 2 = top-k
//       16     4  UInt32 S (samples per position) or K (tokens kept per position)
//       20     4  UInt32 vocabulary size
//       24     4  UInt32 bytes per id: 2 (vocabulary ≤ 65,536) or 4
//       28     4  UInt32 bytes per value: 1 (counts, S ≤ 255) or 2 (counts, or F16 probabilities)
//       32     4  Float32 temperature τ of the stored distributions
//       36     4  UInt32 teacher window (tokens of context the teacher saw at most)
//       40     8  UInt64 token count N of the token file: one position per token
//       48     8  UInt64 split index of the token file (first validation token)
//       56     8  UInt64 token file hash (FNV-1a 64 of the whole token file)
//       64     8  UInt64 tokenizer hash (`Tokenizer.modelHash`)
//       72     8  UInt64 teacher hash (weights, configs and member weights of the teacher or ensemble)
//       80     8  UInt64 sampling seed
//       88     4  UInt32 positions per block B (256)
//       92     4  UInt32 windows per teacher forward pass (fixed at the build's start, kept on resume)
//   -- progress, rewritten at each commit of a build:
//       96     8  UInt64 blocks written
//      104     8  UInt64 running FNV-1a 64 over bytes 0..<92 of the header and the blocks written
//      112     8  UInt64 checksum: the running hash continued over the directory (0 until complete)
//      120     8  UInt64 reserved, 0
//      128        directory: (blocks + 1) UInt64 file offsets, of each block and of the end of the file
//                 then the blocks, back to back.
//
// Position p holds the teacher's distribution of token p given the tokens of its split before it
// (the first token of each split has no history and an empty record). A block holds B positions
// (the last one fewer), so position p is found in O(1): block p / B through the directory, then
// its slot p % B:
//   samples: n in-block entry starts (UInt16 when B·S ≤ 65,535, else UInt32), then the entries;
//            record i spans [start_i, start_{i+1}) (the last ends with the block). An entry is
//            (id, count): the distinct tokens drawn, ascending, whose counts add up to S.
//   top-k:   n F16 remaining masses (1 − the K probabilities), then n·K entries (id, F16
//            probability), most likely first.

/// How a cache stores each position's teacher distribution.
public enum TeacherCacheMode: Sendable, Equatable, CustomStringConvertible {
    /// S draws from the tempered distribution, kept as distinct (token, count) pairs: an unbiased target.
    case samples(Int)
    /// The K most likely tokens with their probabilities, and the mass of the rest.
    case topK(Int)

    /// The default: 16 samples per position.
    public static let `default` = TeacherCacheMode.samples(16)

    public var description: String {
        switch self {
        case .samples(let s): return "samples S = \(s)"
        case .topK(let k): return "top-\(k)"
        }
    }

    /// S or K.
    var parameter: Int {
        switch self {
        case .samples(let s): return s
        case .topK(let k): return k
        }
    }

    var code: UInt32 {
        switch self {
        case .samples: return 1
        case .topK: return 2
        }
    }

    /// Throws unless 1 ≤ S ≤ 65,535 and 1 ≤ K ≤ vocabulary.
    public func validate(vocabSize: Int) throws {
        switch self {
        case .samples(let s) where s < 1 || s > 65_535:
            throw SettingError(.samples, "must be between 1 and 65535 (got \(s))")
        case .topK(let k) where k < 1 || k > vocabSize:
            throw SettingError(.topK, "must be between 1 and the vocabulary size \(vocabSize) (got \(k))")
        default:
            return
        }
    }
}

enum TeacherCacheFormat {
    static let magic: [UInt8] = Array("DSTLTCH\0".utf8)
    static let version: UInt32 = 1
    static let headerSize = 128
    /// Bytes of the header covered by the checksum (everything the build is bound to).
    static let boundBytes = 92
    static let blockPositions = 256

    struct Header: Equatable {
        var mode: TeacherCacheMode
        var vocabSize: Int
        var temperature: Float
        var window: Int
        var tokenCount: Int
        var splitIndex: Int
        var tokenFileHash: UInt64
        var tokenizerHash: UInt64
        var teacherHash: UInt64
        var seed: UInt64
        var windowsPerPass: Int
        // progress
        var blocksWritten: Int = 0
        var runningHash: UInt64 = 0
        var checksum: UInt64 = 0

        var idBytes: Int { vocabSize <= 65_536 ? 2 : 4 }
        var valueBytes: Int {
            switch mode {
            case .samples(let s): return s <= 255 ? 1 : 2
            case .topK: return 2
            }
        }
        var entryBytes: Int { idBytes + valueBytes }
        /// Width of a samples block's in-block entry starts.
        var startBytes: Int { TeacherCacheFormat.blockPositions * mode.parameter <= 65_535 ? 2 : 4 }
        var blockCount: Int { (tokenCount + TeacherCacheFormat.blockPositions - 1) / TeacherCacheFormat.blockPositions }
        var directoryOffset: Int { TeacherCacheFormat.headerSize }
        /// Where the first block starts.
        var bodyOffset: Int { TeacherCacheFormat.headerSize + (blockCount + 1) * 8 }
        var isComplete: Bool { blocksWritten == blockCount && checksum != 0 }

        /// Positions held by block `block`.
        func positions(inBlock block: Int) -> Int {
            min(TeacherCacheFormat.blockPositions, tokenCount - block * TeacherCacheFormat.blockPositions)
        }

        /// The first token of each split has no history, hence no record.
        func hasHistory(_ position: Int) -> Bool { position != 0 && position != splitIndex }

        func encoded() -> [UInt8] {
            var bytes = TeacherCacheFormat.magic
            func append<Integer: FixedWidthInteger>(_ value: Integer) {
                withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
            }
            append(TeacherCacheFormat.version)
            append(mode.code)
            append(UInt32(mode.parameter))
            append(UInt32(vocabSize))
            append(UInt32(idBytes))
            append(UInt32(valueBytes))
            append(temperature.bitPattern)
            append(UInt32(window))
            append(UInt64(tokenCount))
            append(UInt64(splitIndex))
            append(tokenFileHash)
            append(tokenizerHash)
            append(teacherHash)
            append(seed)
            append(UInt32(TeacherCacheFormat.blockPositions))
            append(UInt32(windowsPerPass))
            append(UInt64(blocksWritten))
            append(runningHash)
            append(checksum)
            append(UInt64(0))
            return bytes
        }

        /// Reads and checks a header: magic, version, and fields that agree with each other. The
        /// sizes are checked against the file by the reader.
        init(decoding bytes: UnsafeRawBufferPointer, path: String) throws {
            guard bytes.count >= TeacherCacheFormat.magic.count,
                  Array(bytes[0..<TeacherCacheFormat.magic.count]) == TeacherCacheFormat.magic else {
                throw TeacherCacheError.notACache(path)
            }
            guard bytes.count >= TeacherCacheFormat.headerSize else {
                throw TeacherCacheError.corrupt(path, reason: "\(bytes.count) bytes, shorter than the \(TeacherCacheFormat.headerSize)-byte header")
            }
            func read<Integer: FixedWidthInteger>(_ offset: Int, as type: Integer.Type) -> Integer {
                Integer(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: type))
            }
            // Counts beyond Int.max can only come from damage; clamp so the checks below reject them.
            func count(_ offset: Int) -> Int { Int(clamping: read(offset, as: UInt64.self)) }
            let version = read(8, as: UInt32.self)
            guard version == TeacherCacheFormat.version else {
                throw TeacherCacheError.unsupportedVersion(path, found: version, supported: TeacherCacheFormat.version)
            }
            let parameter = Int(read(16, as: UInt32.self))
            switch read(12, as: UInt32.self) {
            case 1: mode = .samples(parameter)
            case 2: mode = .topK(parameter)
            case let other: throw TeacherCacheError.corrupt(path, reason: "unknown mode \(other)")
            }
            vocabSize = Int(read(20, as: UInt32.self))
            temperature = Float(bitPattern: read(32, as: UInt32.self))
            window = Int(read(36, as: UInt32.self))
            tokenCount = count(40)
            splitIndex = count(48)
            tokenFileHash = read(56, as: UInt64.self)
            tokenizerHash = read(64, as: UInt64.self)
            teacherHash = read(72, as: UInt64.self)
            seed = read(80, as: UInt64.self)
            windowsPerPass = Int(read(92, as: UInt32.self))
            blocksWritten = count(96)
            runningHash = read(104, as: UInt64.self)
            checksum = read(112, as: UInt64.self)

            guard vocabSize >= 1 else { throw TeacherCacheError.corrupt(path, reason: "empty vocabulary") }
            do { try mode.validate(vocabSize: vocabSize) } catch {
                throw TeacherCacheError.corrupt(path, reason: "\(mode) for a vocabulary of \(vocabSize)")
            }
            guard Int(read(24, as: UInt32.self)) == idBytes, Int(read(28, as: UInt32.self)) == valueBytes,
                  Int(read(88, as: UInt32.self)) == TeacherCacheFormat.blockPositions else {
                throw TeacherCacheError.corrupt(path, reason: "entry sizes that do not fit its mode and vocabulary")
            }
            guard temperature.isFinite && temperature > 0 else {
                throw TeacherCacheError.corrupt(path, reason: "temperature \(temperature)")
            }
            guard window >= 1, windowsPerPass >= 1 else { throw TeacherCacheError.corrupt(path, reason: "an empty teacher window") }
            // A position costs at least one byte of the file, so no real cache has more than 2⁴⁸.
            guard tokenCount < 1 << 48, splitIndex <= tokenCount else {
                throw TeacherCacheError.corrupt(path, reason: "split point \(splitIndex) and \(tokenCount) tokens")
            }
            guard blocksWritten <= blockCount else {
                throw TeacherCacheError.corrupt(path, reason: "\(blocksWritten) blocks written of \(blockCount)")
            }
        }

        init(mode: TeacherCacheMode, vocabSize: Int, temperature: Float, window: Int, tokenCount: Int, splitIndex: Int,
             tokenFileHash: UInt64, tokenizerHash: UInt64, teacherHash: UInt64, seed: UInt64, windowsPerPass: Int) {
            self.mode = mode
            self.vocabSize = vocabSize
            self.temperature = temperature
            self.window = window
            self.tokenCount = tokenCount
            self.splitIndex = splitIndex
            self.tokenFileHash = tokenFileHash
            self.tokenizerHash = tokenizerHash
            self.teacherHash = teacherHash
            self.seed = seed
            self.windowsPerPass = windowsPerPass
        }

        /// The header bytes a build is bound to (progress and the windows per pass left out).
        var binding: [UInt8] { Array(encoded()[0..<TeacherCacheFormat.boundBytes]) }
    }
}


/// A 64-bit mix (SplitMix64's finaliser): spreads nearby inputs over the whole range.
func mix64(_ value: UInt64) -> UInt64 {
    var x = value &+ 0x9E37_79B9_7F4A_7C15
    x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
    x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
    return x ^ (x >> 31)
}
