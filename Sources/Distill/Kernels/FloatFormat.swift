import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How floats are stored in a weight file.
public enum FloatFormat: String, CaseIterable, Sendable {
    case f32, f16, bf16

    /// Bytes per value.
    public var byteWidth: Int { self == .f32 ? 4 : 2 }

    /// Appends `values` to `data`, little-endian, rounding to nearest-even when narrowing.
    func append(_ values: [Float], to data: inout Data) {
        // Convert to little-endian words first, then append them in one go: appending value by value is slow.
        switch self {
        case .f32: appendWords(values.map { $0.bitPattern.littleEndian }, to: &data)
        case .f16: appendWords(values.map { ReducedPrecision.f16(from: $0).littleEndian }, to: &data)
        case .bf16: appendWords(values.map { ReducedPrecision.bf16(from: $0).littleEndian }, to: &data)
        }
    }

    private func appendWords<Word: FixedWidthInteger>(_ words: [Word], to data: inout Data) {
        words.withUnsafeBytes { data.append(contentsOf: $0) }
    }
}

/// The float encodings a reader can widen to `Float` (F64 narrows, rounding to nearest).
enum StoredFloatEncoding {
    case f16, bf16, f32, f64

    var byteWidth: Int {
        switch self {
        case .f16, .bf16: return 2
        case .f32: return 4
        case .f64: return 8
        }
    }

    /// Decodes `count` little-endian values starting at `start`, which need not be aligned.
    func decode(_ start: UnsafeRawPointer, count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            switch self {
            case .f32:
                for index in 0..<count {
                    buffer[index] = Float(bitPattern: UInt32(littleEndian: start.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self)))
                }
            case .f16:
                for index in 0..<count {
                    buffer[index] = ReducedPrecision.float(fromF16: UInt16(littleEndian: start.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self)))
                }
            case .bf16:
                for index in 0..<count {
                    buffer[index] = ReducedPrecision.float(fromBF16: UInt16(littleEndian: start.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self)))
                }
            case .f64:
                for index in 0..<count {
                    buffer[index] = Float(Double(bitPattern: UInt64(littleEndian: start.loadUnaligned(fromByteOffset: 8 * index, as: UInt64.self))))
                }
            }
            initialized = count
        }
    }
}

extension Data {
    /// Appends an integer in little-endian byte order, as every weight format here stores them.
    mutating func appendLittleEndian<Integer: FixedWidthInteger>(_ value: Integer) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
/// The number of elements of a tensor of this shape, or nil when the product overflows `Int` (a damaged
/// header can claim any sizes).
func checkedElementCount(_ shape: [Int]) -> Int? {
    var count = 1
    for size in shape {
        let product = count.multipliedReportingOverflow(by: size)
        if product.overflow { return nil }
        count = product.partialValue
    }
    return count
}

