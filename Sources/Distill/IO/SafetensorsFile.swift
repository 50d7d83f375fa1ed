import Foundation

/// The element types the safetensors format defines, by their header names.
public enum SafetensorsDType: String, CaseIterable, Sendable {
    case bool = "BOOL", u8 = "U8", i8 = "I8", f8E4M3 = "F8_E4M3", f8E5M2 = "F8_E5M2", f8E8M0 = "F8_E8M0"
    case i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32"
    case i64 = "I64", u64 = "U64", f64 = "F64"

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .bool, .u8, .i8, .f8E4M3, .f8E5M2, .f8E8M0: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .i64, .u64, .f64: return 8
        }
    }

    /// How to widen this dtype to `Float`, or nil when it is not a float type `floats` reads.
    var floatEncoding: StoredFloatEncoding? {
        switch self {
        case .f16: return .f16
        case .bf16: return .bf16
        case .f32: return .f32
        case .f64: return .f64
        default: return nil
        }
    }
}

/// Where one tensor lives in a safetensors file and what it holds.
public struct SafetensorsTensorInfo: Equatable, Sendable {
    public let dtype: SafetensorsDType
    /// Row-major shape; `[]` is a scalar.
    public let shape: [Int]
    /// Byte range relative to the start of the data area (the `data_offsets` of the header).
    public let dataOffsets: Range<Int>

    /// Number of elements, the product of the shape.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A named float tensor to be written: row-major `values` of the given `shape`.
public struct SafetensorsTensor: Equatable, Sendable {
    public var name: String
    public var shape: [Int]
    public var values: [Float]

    public init(name: String, shape: [Int], values: [Float]) {
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// A safetensors file (8-byte little-endian header length, JSON header, raw little-endian data), memory-mapped
/// read-only. Opening validates the whole header against the file, so that every later read is in bounds;
/// tensors are decoded only when asked for, and the file is never copied into memory as a whole.
/// Immutable and read-only, so threads may share it.
public final class SafetensorsFile: @unchecked Sendable {
    /// The file, as given.
    public let url: URL
    /// The header's `__metadata__` (string to string); empty when there is none.
    public let metadata: [String: String]
    /// Every tensor's name, sorted.
    public let tensorNames: [String]

    private let mapping: MappedFile
    private let entries: [String: SafetensorsTensorInfo]
    /// Offset of the data area in the file: 8 + header length.
    private let dataStart: Int

    /// The header of the reference implementation may not exceed 100 MB; a larger claim means damage.
    private static let largestHeader = 100_000_000

    /// Opens and validates `url`; throws `SafetensorsError` naming the file and tensor at the first problem.
    public init(url: URL) throws {
        let file = url.path
        self.url = url
        do { mapping = try MappedFile(path: file) } catch {
            throw SafetensorsError.unreadable(file: file, reason: error.reason)
        }
        let bytes = mapping.bytes
        guard bytes.count >= 8, let base = bytes.baseAddress else {
            throw SafetensorsError.tooShort(file: file, size: bytes.count)
        }
        let headerLength = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw SafetensorsError.headerBeyondFile(file: file, headerLength: headerLength, fileSize: bytes.count)
        }
        guard headerLength <= UInt64(Self.largestHeader) else {
            throw SafetensorsError.badHeader(file: file, reason: "it claims \(headerLength) bytes, more than the 100 MB the format allows")
        }
        dataStart = 8 + Int(headerLength)
        let header = try Self.parseHeader(Data(bytes[8..<dataStart]), file: file)
        metadata = header.metadata
        entries = try Self.validate(header.entries, dataSize: bytes.count - dataStart, file: file)
        tensorNames = entries.keys.sorted()
    }

    /// Whether the file holds a tensor of that name.
    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// The dtype, shape and byte range of a tensor.
    public func info(_ name: String) throws -> SafetensorsTensorInfo {
        guard let info = entries[name] else {
            throw SafetensorsError.missingTensor(file: url.path, tensor: name, known: entries.count)
        }
        return info
    }

    /// The tensor's values as `Float`, row-major. F32, F16, BF16 widen exactly; F64 rounds to nearest.
    public func floats(_ name: String) throws -> [Float] {
        let info = try info(name)
        guard let encoding = info.dtype.floatEncoding else {
            throw SafetensorsError.wrongDType(file: url.path, tensor: name, dtype: info.dtype.rawValue, wanted: "floats (F32, F16, BF16 or F64)")
        }
        return encoding.decode(start(of: info), count: info.elementCount)
    }

    /// The tensor's values as `Int64`; any integer dtype is accepted.
    public func int64s(_ name: String) throws -> [Int64] {
        try integers(name, as: Int64.self)
    }

    /// The tensor's values as `Int32`; any integer dtype is accepted as long as every value fits
    /// (token ids saved by numpy are usually I64).
    public func int32s(_ name: String) throws -> [Int32] {
        try integers(name, as: Int32.self)
    }

    private func start(of info: SafetensorsTensorInfo) -> UnsafeRawPointer {
        // Validated at open: the range lies inside the mapping, which is non-empty.
        mapping.bytes.baseAddress.unsafelyUnwrapped + dataStart + info.dataOffsets.lowerBound
    }

    private func integers<Result: FixedWidthInteger & SignedInteger>(_ name: String, as: Result.Type) throws -> [Result] {
        let info = try info(name)
        let start = start(of: info)
        let wanted = "\(Result.self)"
        let load: (Int) -> Int64?
        switch info.dtype {
        case .i8: load = { Int64(start.load(fromByteOffset: $0, as: Int8.self)) }
        case .u8: load = { Int64(start.load(fromByteOffset: $0, as: UInt8.self)) }
        case .i16: load = { Int64(Int16(littleEndian: start.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self))) }
        case .u16: load = { Int64(UInt16(littleEndian: start.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
        case .i32: load = { Int64(Int32(littleEndian: start.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
        case .u32: load = { Int64(UInt32(littleEndian: start.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        case .i64: load = { Int64(littleEndian: start.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        case .u64: load = { Int64(exactly: UInt64(littleEndian: start.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) }
        default:
            throw SafetensorsError.wrongDType(file: url.path, tensor: name, dtype: info.dtype.rawValue, wanted: "integers (\(wanted))")
        }
        var values: [Result] = []
        values.reserveCapacity(info.elementCount)
        for index in 0..<info.elementCount {
            guard let wide = load(index), let value = Result(exactly: wide) else {
                let shown = info.dtype == .u64
                    ? "\(UInt64(littleEndian: start.loadUnaligned(fromByteOffset: 8 * index, as: UInt64.self)))"
                    : "\(load(index) ?? 0)"
                throw SafetensorsError.valueOutOfRange(file: url.path, tensor: name, value: "\(shown) at index \(index)", wanted: wanted)
            }
            values.append(value)
        }
        return values
    }
}

// MARK: - header parsing and validation

extension SafetensorsFile {
    /// A header entry as written, before it is checked against the data area.
    private struct RawEntry {
        let name: String
        let dtype: SafetensorsDType
        let shape: [Int]
        let begin: Int
        let end: Int
    }

    private static func parseHeader(_ header: Data, file: String) throws -> (metadata: [String: String], entries: [RawEntry]) {
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: header) } catch {
            throw SafetensorsError.badHeader(file: file, reason: "it is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw SafetensorsError.badHeader(file: file, reason: "it is JSON but not an object")
        }
        var metadata: [String: String] = [:]
        var entries: [RawEntry] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let strings = value as? [String: String] else {
                    throw SafetensorsError.badHeader(file: file, reason: "__metadata__ must map strings to strings")
                }
                metadata = strings
                continue
            }
            entries.append(try parseEntry(name: name, value, file: file))
        }
        return (metadata, entries)
    }

    private static func parseEntry(name: String, _ value: Any, file: String) throws -> RawEntry {
        func bad(_ reason: String) -> SafetensorsError { .badEntry(file: file, tensor: name, reason: reason) }
        guard let fields = value as? [String: Any] else { throw bad("its entry is not an object") }
        guard let dtypeName = fields["dtype"] as? String else { throw bad("it has no dtype string") }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            throw SafetensorsError.unknownDType(file: file, tensor: name, dtype: dtypeName)
        }
        guard let shapeValues = fields["shape"] as? [Any] else { throw bad("it has no shape list") }
        let shape = try shapeValues.map { dimension -> Int in
            guard let size = nonNegativeInteger(dimension) else {
                throw bad("its shape \(shapeValues) must hold non-negative integers")
            }
            return size
        }
        guard let offsetValues = fields["data_offsets"] as? [Any], offsetValues.count == 2,
              let begin = nonNegativeInteger(offsetValues[0]), let end = nonNegativeInteger(offsetValues[1]) else {
            throw bad("data_offsets must be two non-negative integers [begin, end]")
        }
        guard begin <= end else { throw bad("data_offsets [\(begin), \(end)] end before they begin") }
        return RawEntry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    /// A JSON number that is a non-negative integer (not a boolean, not a fraction), as an `Int`.
    private static func nonNegativeInteger(_ value: Any) -> Int? {
        guard let number = value as? NSNumber else { return nil }
        // Booleans and fractions also arrive as NSNumber; only integer encodings count.
        let encoding = String(cString: number.objCType)
        guard !["c", "B", "d", "f"].contains(encoding), let integer = value as? Int, integer >= 0 else { return nil }
        return integer
    }

    private static func validate(_ rawEntries: [RawEntry], dataSize: Int, file: String) throws -> [String: SafetensorsTensorInfo] {
        var entries: [String: SafetensorsTensorInfo] = [:]
        for entry in rawEntries {
            guard entry.end <= dataSize else {
                throw SafetensorsError.outsideData(file: file, tensor: entry.name, begin: entry.begin, end: entry.end, dataSize: dataSize)
            }
            guard let elements = checkedElementCount(entry.shape),
                  case let needed = elements.multipliedReportingOverflow(by: entry.dtype.byteWidth), !needed.overflow else {
                throw SafetensorsError.badEntry(file: file, tensor: entry.name, reason: "its shape \(entry.shape) is too large to exist")
            }
            guard entry.end - entry.begin == needed.partialValue else {
                throw SafetensorsError.sizeMismatch(file: file, tensor: entry.name, claimedBytes: entry.end - entry.begin,
                                                    shape: entry.shape, dtype: entry.dtype.rawValue, neededBytes: needed.partialValue)
            }
            entries[entry.name] = SafetensorsTensorInfo(dtype: entry.dtype, shape: entry.shape, dataOffsets: entry.begin..<entry.end)
        }
        // Sorted by start, any overlap shows up between neighbours; empty tensors own no bytes.
        let byStart = rawEntries.filter { $0.begin < $0.end }.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }
        for (previous, next) in zip(byStart, byStart.dropFirst()) where next.begin < previous.end {
            throw SafetensorsError.overlap(file: file, first: previous.name, second: next.name)
        }
        return entries
    }
}

// MARK: - writing

extension SafetensorsFile {
    /// Writes `tensors` (any order; stored sorted by name) and `metadata` as a safetensors file, atomically.
    /// The header is JSON with sorted keys, padded with spaces to a multiple of 8 bytes like the reference
    /// implementation, so the data area starts aligned. Values are stored as `dtype`, rounding to nearest
    /// even when it is F16 or BF16.
    public static func write(tensors: [SafetensorsTensor], metadata: [String: String] = [:], to url: URL,
                             dtype: FloatFormat = .f32) throws {
        let file = url.path
        var seen = Set<String>()
        for tensor in tensors {
            func invalid(_ reason: String) -> SafetensorsError { .invalidTensor(file: file, tensor: tensor.name, reason: reason) }
            guard !tensor.name.isEmpty, tensor.name != "__metadata__" else { throw invalid("the name is empty or reserved") }
            guard seen.insert(tensor.name).inserted else { throw invalid("two tensors have this name") }
            guard tensor.shape.allSatisfy({ $0 >= 0 }) else { throw invalid("its shape \(tensor.shape) has a negative size") }
            let elements = tensor.shape.reduce(1, *)
            guard elements == tensor.values.count else {
                throw invalid("its shape \(tensor.shape) needs \(elements) values but it has \(tensor.values.count)")
            }
        }
        let ordered = tensors.sorted { $0.name < $1.name }
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for tensor in ordered {
            let byteCount = tensor.values.count * dtype.byteWidth
            header[tensor.name] = ["dtype": dtype.rawValue.uppercased(), "shape": tensor.shape, "data_offsets": [offset, offset + byteCount]] as [String: Any]
            offset += byteCount
        }
        var headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        headerBytes.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - headerBytes.count % 8) % 8))

        var contents = Data(capacity: 8 + headerBytes.count + offset)
        contents.appendLittleEndian(UInt64(headerBytes.count))
        contents.append(headerBytes)
        for tensor in ordered { dtype.append(tensor.values, to: &contents) }
        try AtomicFile.write(contents, to: url)
    }
}
