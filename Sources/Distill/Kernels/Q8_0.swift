import Foundation

/// llama.cpp's Q8_0 quantization (ggml's `quantize_row_q8_0_ref`): a row is cut into blocks of 32, and
/// each block stores d = max|w| / 127 rounded to an IEEE half and q = round(w / d) (the unrounded d; ties
/// away from zero) as 8-bit integers; the weight read back is d·q. Rows whose length is not a multiple
/// of 32 cannot be Q8_0: llama.cpp stores such a matrix as f16, and so does distill.
public enum Q8_0 {
    /// Weights per block.
    public static let blockSize = 32

    /// Whether rows of `columns` weights can be stored as Q8_0.
    public static func fits(columns: Int) -> Bool { columns > 0 && columns % blockSize == 0 }

    /// Quantizes `block` (32 values) into `quants`; returns the scale's half-precision bits.
    public static func quantize(_ block: UnsafeBufferPointer<Float>, into quants: UnsafeMutablePointer<Int8>) -> UInt16 {
        var largest: Float = 0
        for value in block { largest = max(largest, abs(value)) }
        let scale = largest / 127
        let inverse = scale != 0 ? 1 / scale : 0
        for index in block.indices {
            quants[index] = Int8((block[index] * inverse).rounded(.toNearestOrAwayFromZero))
        }
        return ReducedPrecision.f16(from: scale)
    }
}
