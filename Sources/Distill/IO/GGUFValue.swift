/// The value types of GGUF metadata, with their numbers in the file.
public enum GGUFValueType: UInt32, CaseIterable, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// One GGUF metadata value. Arrays carry their element type, so that an empty array is still typed.
public indirect enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array(GGUFValueType, [GGUFValue])

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    public static func strings(_ values: [String]) -> GGUFValue { .array(.string, values.map { .string($0) }) }
    /// An array of 32-bit floats (e.g. `tokenizer.ggml.scores`).
    public static func floats(_ values: [Float]) -> GGUFValue { .array(.float32, values.map { .float32($0) }) }
    /// An array of 32-bit signed integers (e.g. `tokenizer.ggml.token_type`).
    public static func int32s(_ values: [Int32]) -> GGUFValue { .array(.int32, values.map { .int32($0) }) }

    /// The value's type number in the file.
    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// Any integer value as `Int`, when it fits; nil for other types.
    public var intValue: Int? {
        switch self {
        case .uint8(let value): return Int(value)
        case .int8(let value): return Int(value)
        case .uint16(let value): return Int(value)
        case .int16(let value): return Int(value)
        case .uint32(let value): return Int(value)
        case .int32(let value): return Int(value)
        case .uint64(let value): return Int(exactly: value)
        case .int64(let value): return Int(exactly: value)
        default: return nil
        }
    }

    /// A string value; nil for other types.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The elements of an array value; nil for other types.
    public var arrayValues: [GGUFValue]? {
        if case .array(_, let values) = self { return values }
        return nil
    }
}
