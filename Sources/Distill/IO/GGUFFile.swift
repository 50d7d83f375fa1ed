import Foundation

/// The ggml tensor types distill writes and reads, with their numbers in a GGUF file: floats, and Q8_0
/// (blocks of 32 values along the innermost dimension: an f16 scale d, then 32 signed bytes q; value d·q).
public enum GGMLType: UInt32, CaseIterable, Sendable {
    case f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30

    /// Bytes of a Q8_0 block: the f16 scale and 32 quants.
    static let q8_0BlockBytes = 2 + Q8_0.blockSize

    /// Bytes of `elements` values (for Q8_0 a multiple of 32).
    public func byteCount(elements: Int) -> Int {
        switch self {
        case .f32: return 4 * elements
        case .f16, .bf16: return 2 * elements
        case .q8_0: return elements / Q8_0.blockSize * Self.q8_0BlockBytes
        }
    }

    /// Whether a tensor whose innermost dimension is `innermost` can be stored as this type.
    public func fits(innermost: Int) -> Bool { self != .q8_0 || Q8_0.fits(columns: innermost) }

    /// Appends `values` in this type, little-endian (floats rounded to nearest-even when narrowing;
    /// Q8_0 quantized block by block as llama.cpp does).
    func append(_ values: [Float], to data: inout Data) {
        switch self {
        case .f32: FloatFormat.f32.append(values, to: &data)
        case .f16: FloatFormat.f16.append(values, to: &data)
        case .bf16: FloatFormat.bf16.append(values, to: &data)
        case .q8_0:
            var block = [UInt8](repeating: 0, count: Self.q8_0BlockBytes)
            values.withUnsafeBufferPointer { source in
                for start in stride(from: 0, to: values.count, by: Q8_0.blockSize) {
                    block.withUnsafeMutableBytes { bytes in
                        let quants = bytes.baseAddress!.advanced(by: 2).assumingMemoryBound(to: Int8.self)
                        let scale = Q8_0.quantize(UnsafeBufferPointer(rebasing: source[start..<(start + Q8_0.blockSize)]), into: quants)
                        bytes.storeBytes(of: scale.littleEndian, toByteOffset: 0, as: UInt16.self)
                    }
                    data.append(contentsOf: block)
                }
            }
        }
    }

    /// Decodes `count` values starting at `start` (need not be aligned).
    func decode(_ start: UnsafeRawPointer, count: Int) -> [Float] {
        switch self {
        case .f32: return StoredFloatEncoding.f32.decode(start, count: count)
        case .f16: return StoredFloatEncoding.f16.decode(start, count: count)
        case .bf16: return StoredFloatEncoding.bf16.decode(start, count: count)
        case .q8_0:
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                for block in 0..<(count / Q8_0.blockSize) {
                    let base = start + block * Self.q8_0BlockBytes
                    let scale = ReducedPrecision.float(fromF16: UInt16(littleEndian: base.loadUnaligned(as: UInt16.self)))
                    for i in 0..<Q8_0.blockSize {
                        buffer[block * Q8_0.blockSize + i] = scale * Float(base.load(fromByteOffset: 2 + i, as: Int8.self))
                    }
                }
                initialized = count / Q8_0.blockSize * Q8_0.blockSize
            }
        }
    }
}

/// A float tensor to write to GGUF: row-major `values` of `shape` (as in PyTorch), stored as `type`.
public struct GGUFTensor: Equatable, Sendable {
    public var name: String
    /// Row-major shape, outermost first; the file stores it reversed (`ne[0]` is the innermost size).
    public var shape: [Int]
    public var values: [Float]
    public var type: GGMLType

    public init(name: String, shape: [Int], values: [Float], type: GGMLType = .f32) {
        self.name = name
        self.shape = shape
        self.values = values
        self.type = type
    }
}

/// A tensor description read from a GGUF file.
public struct GGUFTensorInfo: Equatable, Sendable {
    public let name: String
    /// Sizes in GGUF order: `dimensions[0]` (ggml's `ne[0]`) is the innermost, fastest-varying one.
    public let dimensions: [Int]
    /// The ggml type number; `type` is nil for types distill does not read (quantized ones but Q8_0).
    public let typeCode: UInt32
    /// Byte offset relative to the start of the tensor data.
    public let offset: Int

    public var type: GGMLType? { GGMLType(rawValue: typeCode) }
    /// Row-major shape, outermost first (the dimensions reversed).
    public var shape: [Int] { dimensions.reversed() }
    public var elementCount: Int { dimensions.reduce(1, *) }
}

// MARK: - writing

/// Writes GGUF version 3 files: header, metadata key-values in the given order, tensor descriptions, then
/// tensor data, each tensor starting at a multiple of `alignment` (recorded as `general.alignment`).
public struct GGUFWriter {
    public var metadata: [(key: String, value: GGUFValue)]
    public var tensors: [GGUFTensor]
    public var alignment: Int

    public init(metadata: [(key: String, value: GGUFValue)], tensors: [GGUFTensor], alignment: Int = 32) {
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
    }

    /// Writes the file atomically.
    public func write(to url: URL) throws {
        try AtomicFile.write(encoded(file: url.path), to: url)
    }

    /// The file's bytes; `file` only names it in errors.
    public func encoded(file: String = "GGUF") throws -> Data {
        func invalid(_ reason: String) -> GGUFError { .invalidInput(file: file, reason: reason) }
        guard alignment > 0, alignment.nonzeroBitCount == 1, alignment % 8 == 0 else {
            throw invalid("alignment \(alignment) must be a power of two and a multiple of 8")
        }
        var entries = metadata
        if let given = entries.first(where: { $0.key == GGUFFile.alignmentKey }) {
            guard given.value == .uint32(UInt32(alignment)) else {
                throw invalid("\(GGUFFile.alignmentKey) is \(given.value) but the writer aligns to \(alignment) (it must be a uint32 equal to it)")
            }
        } else {
            entries.append((GGUFFile.alignmentKey, .uint32(UInt32(alignment))))
        }
        var seenKeys = Set<String>()
        for (key, value) in entries {
            guard seenKeys.insert(key).inserted else { throw invalid("metadata key '\(key)' is given twice") }
            try checkHomogeneous(value, key: key, file: file)
        }
        var seenTensors = Set<String>()
        for tensor in tensors {
            guard seenTensors.insert(tensor.name).inserted else { throw invalid("tensor '\(tensor.name)' is given twice") }
            guard (1...4).contains(tensor.shape.count), tensor.shape.allSatisfy({ $0 > 0 }) else {
                throw invalid("tensor '\(tensor.name)' has shape \(tensor.shape); ggml needs 1 to 4 positive sizes")
            }
            guard tensor.shape.reduce(1, *) == tensor.values.count else {
                throw invalid("tensor '\(tensor.name)' has shape \(tensor.shape), which needs \(tensor.shape.reduce(1, *)) values, but \(tensor.values.count) are given")
            }
        }

        var data = Data()
        data.append(contentsOf: GGUFFile.magic)
        data.appendLittleEndian(UInt32(3))
        data.appendLittleEndian(UInt64(tensors.count))
        data.appendLittleEndian(UInt64(entries.count))
        for (key, value) in entries {
            appendString(key, to: &data)
            data.appendLittleEndian(value.type.rawValue)
            appendValue(value, to: &data)
        }
        var offset = 0
        for tensor in tensors {
            guard tensor.type.fits(innermost: tensor.shape.last ?? 0) else {
                throw GGUFError.invalidInput(file: file, reason: "tensor '\(tensor.name)' of shape \(tensor.shape) cannot be \(tensor.type): its rows are not a multiple of \(Q8_0.blockSize) long")
            }
            appendString(tensor.name, to: &data)
            data.appendLittleEndian(UInt32(tensor.shape.count))
            for size in tensor.shape.reversed() { data.appendLittleEndian(UInt64(size)) }
            data.appendLittleEndian(tensor.type.rawValue)
            data.appendLittleEndian(UInt64(offset))
            offset += padded(tensor.type.byteCount(elements: tensor.values.count))
        }
        data.append(contentsOf: [UInt8](repeating: 0, count: padded(data.count) - data.count))
        for tensor in tensors {
            let start = data.count
            tensor.type.append(tensor.values, to: &data)
            data.append(contentsOf: [UInt8](repeating: 0, count: padded(data.count - start) - (data.count - start)))
        }
        return data
    }

    private func padded(_ count: Int) -> Int { (count + alignment - 1) / alignment * alignment }

    private func checkHomogeneous(_ value: GGUFValue, key: String, file: String) throws {
        guard case .array(let elementType, let elements) = value else { return }
        for element in elements {
            guard element.type == elementType else {
                throw GGUFError.invalidInput(file: file, reason: "metadata '\(key)' is an array of \(elementType) holding a \(element.type)")
            }
            try checkHomogeneous(element, key: key, file: file)
        }
    }

    private func appendString(_ string: String, to data: inout Data) {
        let bytes = Array(string.utf8)
        data.appendLittleEndian(UInt64(bytes.count))
        data.append(contentsOf: bytes)
    }

    private func appendValue(_ value: GGUFValue, to data: inout Data) {
        switch value {
        case .uint8(let number): data.appendLittleEndian(number)
        case .int8(let number): data.appendLittleEndian(number)
        case .uint16(let number): data.appendLittleEndian(number)
        case .int16(let number): data.appendLittleEndian(number)
        case .uint32(let number): data.appendLittleEndian(number)
        case .int32(let number): data.appendLittleEndian(number)
        case .uint64(let number): data.appendLittleEndian(number)
        case .int64(let number): data.appendLittleEndian(number)
        case .float32(let number): data.appendLittleEndian(number.bitPattern)
        case .float64(let number): data.appendLittleEndian(number.bitPattern)
        case .bool(let flag): data.append(flag ? 1 : 0)
        case .string(let string): appendString(string, to: &data)
        case .array(let elementType, let elements):
            data.appendLittleEndian(elementType.rawValue)
            data.appendLittleEndian(UInt64(elements.count))
            for element in elements { appendValue(element, to: &data) }
        }
    }
}

// MARK: - reading

/// A GGUF file (versions 2 and 3), memory-mapped read-only and parsed completely on opening: metadata,
/// tensor descriptions and the bounds of every F32/F16/BF16 tensor's data are checked before any use.
/// Immutable and read-only, so threads may share it.
public final class GGUFFile: @unchecked Sendable {
    static let magic: [UInt8] = Array("GGUF".utf8)
    static let alignmentKey = "general.alignment"
    /// GGUF's alignment when `general.alignment` is absent.
    static let defaultAlignment = 32

    public let url: URL
    public let version: UInt32
    /// Metadata in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    /// Tensor descriptions in file order.
    public let tensorInfos: [GGUFTensorInfo]
    public let alignment: Int
    /// Byte offset of the tensor data in the file.
    public let dataOffset: Int

    private let mapping: MappedFile

    /// Opens and parses `url`; throws `GGUFError` at the first problem.
    public init(url: URL) throws {
        self.url = url
        let file = url.path
        do { mapping = try MappedFile(path: url.path) } catch {
            throw GGUFError.unreadable(file: file, reason: error.reason)
        }
        var cursor = GGUFCursor(bytes: mapping.bytes, file: file)
        guard mapping.bytes.count >= 4, Array(mapping.bytes[0..<4]) == Self.magic else { throw GGUFError.notGGUF(file: file) }
        cursor.offset = 4
        version = try cursor.read(UInt32.self, "the version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(file: file, version: version) }
        let tensorCount = try cursor.readCount("the tensor count")
        let keyCount = try cursor.readCount("the metadata count")

        var metadata: [(key: String, value: GGUFValue)] = []
        for _ in 0..<keyCount {
            let key = try cursor.readString("a metadata key")
            let typeCode = try cursor.read(UInt32.self, "the type of '\(key)'")
            metadata.append((key, try cursor.readValue(typeCode: typeCode, key: key, depth: 0)))
        }
        self.metadata = metadata
        switch metadata.first(where: { $0.key == Self.alignmentKey })?.value {
        case nil: alignment = Self.defaultAlignment
        case .uint32(let value) where value > 0 && value.nonzeroBitCount == 1: alignment = Int(value)
        case let other?:
            throw GGUFError.badMetadata(file: file, key: Self.alignmentKey, reason: "\(other) is not a uint32 power of two")
        }

        var infos: [GGUFTensorInfo] = []
        for _ in 0..<tensorCount {
            let name = try cursor.readString("a tensor name")
            let dimensionCount = try cursor.read(UInt32.self, "the dimensions of '\(name)'")
            guard (1...4).contains(dimensionCount) else {
                throw GGUFError.badTensor(file: file, tensor: name, reason: "it has \(dimensionCount) dimensions; ggml allows 1 to 4")
            }
            let dimensions = try (0..<Int(dimensionCount)).map { _ in try cursor.readCount("the dimensions of '\(name)'") }
            let typeCode = try cursor.read(UInt32.self, "the type of '\(name)'")
            let offset = try cursor.readCount("the offset of '\(name)'")
            infos.append(GGUFTensorInfo(name: name, dimensions: dimensions, typeCode: typeCode, offset: offset))
        }
        tensorInfos = infos
        dataOffset = (cursor.offset + alignment - 1) / alignment * alignment
        try validateTensors()
    }

    /// The value of a metadata key, or nil when the file has no such key.
    public func value(_ key: String) -> GGUFValue? { metadata.first { $0.key == key }?.value }

    /// The description of a tensor.
    public func tensorInfo(_ name: String) throws -> GGUFTensorInfo {
        guard let info = tensorInfos.first(where: { $0.name == name }) else {
            throw GGUFError.missingTensor(file: url.path, tensor: name)
        }
        return info
    }

    /// A tensor's values as `Float`, row-major (the GGUF dimensions reversed). F32, F16, BF16 and Q8_0 only.
    public func floats(_ name: String) throws -> [Float] {
        let info = try tensorInfo(name)
        guard let type = info.type else {
            throw GGUFError.unsupportedTensorType(file: url.path, tensor: name, type: info.typeCode)
        }
        // Bounds were checked at open for every float tensor.
        let start = mapping.bytes.baseAddress.unsafelyUnwrapped + dataOffset + info.offset
        return type.decode(start, count: info.elementCount)
    }

    private func validateTensors() throws {
        let file = url.path
        var names = Set<String>()
        for info in tensorInfos {
            func bad(_ reason: String) -> GGUFError { .badTensor(file: file, tensor: info.name, reason: reason) }
            guard names.insert(info.name).inserted else { throw bad("the name appears twice") }
            guard info.offset % alignment == 0 else { throw bad("its offset \(info.offset) is not a multiple of the alignment \(alignment)") }
            // Other quantized types have block layouts distill does not read, so only its own types get a size.
            guard let type = info.type else { continue }
            if !type.fits(innermost: info.dimensions.first ?? 0) {
                throw bad("its innermost size \(info.dimensions.first ?? 0) is not a multiple of \(Q8_0.blockSize), as \(type) needs")
            }
            let end = dataOffset + info.offset
            guard let elements = checkedElementCount(info.dimensions), elements <= Int.max / 8,
                  end <= mapping.bytes.count, type.byteCount(elements: elements) <= mapping.bytes.count - end else {
                throw bad("its \(info.dimensions) \(type) values at data offset \(info.offset) reach past the end of the file (\(mapping.bytes.count) bytes)")
            }
        }
    }
}

/// Reads GGUF's little-endian fields from a mapped file, with a clear error when the file ends early.
private struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var offset = 0

    /// Nested arrays deeper than this are refused instead of recursing without end on a damaged file.
    static let deepestArray = 8

    mutating func read<Integer: FixedWidthInteger>(_: Integer.Type, _ what: String) throws -> Integer {
        let size = MemoryLayout<Integer>.size
        guard let base = bytes.baseAddress, bytes.count - offset >= size else {
            throw GGUFError.truncated(file: file, reading: what, offset: bytes.count)
        }
        defer { offset += size }
        return Integer(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: Integer.self))
    }

    /// A u64 count or size that must also fit what remains of the file (a damaged count would otherwise
    /// make the reader allocate or loop for ever).
    mutating func readCount(_ what: String) throws -> Int {
        let count = try read(UInt64.self, what)
        guard count <= UInt64(bytes.count) else {
            throw GGUFError.truncated(file: file, reading: "\(what) (\(count) is larger than the file)", offset: bytes.count)
        }
        return Int(count)
    }

    mutating func readString(_ what: String) throws -> String {
        let length = try readCount(what)
        guard bytes.count - offset >= length else { throw GGUFError.truncated(file: file, reading: what, offset: bytes.count) }
        defer { offset += length }
        guard let string = String(validating: bytes[offset..<(offset + length)], as: UTF8.self) else {
            throw GGUFError.badMetadata(file: file, key: what, reason: "a string is not valid UTF-8")
        }
        return string
    }

    mutating func readValue(typeCode: UInt32, key: String, depth: Int) throws -> GGUFValue {
        guard let type = GGUFValueType(rawValue: typeCode) else {
            throw GGUFError.badMetadata(file: file, key: key, reason: "unknown value type \(typeCode)")
        }
        let what = "the value of '\(key)'"
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, what))
        case .int8: return .int8(try read(Int8.self, what))
        case .uint16: return .uint16(try read(UInt16.self, what))
        case .int16: return .int16(try read(Int16.self, what))
        case .uint32: return .uint32(try read(UInt32.self, what))
        case .int32: return .int32(try read(Int32.self, what))
        case .uint64: return .uint64(try read(UInt64.self, what))
        case .int64: return .int64(try read(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, what)))
        case .bool:
            let byte = try read(UInt8.self, what)
            guard byte <= 1 else { throw GGUFError.badMetadata(file: file, key: key, reason: "bool byte \(byte) is neither 0 nor 1") }
            return .bool(byte == 1)
        case .string: return .string(try readString(what))
        case .array:
            guard depth < Self.deepestArray else {
                throw GGUFError.badMetadata(file: file, key: key, reason: "arrays nest deeper than \(Self.deepestArray)")
            }
            let elementCode = try read(UInt32.self, what)
            guard let elementType = GGUFValueType(rawValue: elementCode) else {
                throw GGUFError.badMetadata(file: file, key: key, reason: "unknown array element type \(elementCode)")
            }
            let count = try readCount(what)
            var elements: [GGUFValue] = []
            elements.reserveCapacity(min(count, 1 << 20))
            for _ in 0..<count { elements.append(try readValue(typeCode: elementCode, key: key, depth: depth + 1)) }
            return .array(elementType, elements)
        }
    }
}
