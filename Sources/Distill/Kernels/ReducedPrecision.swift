/// Bit-exact conversions between `Float` and the 16-bit float formats of weight files: IEEE half (F16)
/// and bfloat16 (BF16). Narrowing rounds to nearest, ties to even, like PyTorch and numpy; widening is
/// exact, subnormals, infinities and NaNs included.
public enum ReducedPrecision {
    /// The `Float` an IEEE half-precision bit pattern stands for (exact).
    public static func float(fromF16 bits: UInt16) -> Float {
        let sign: UInt32 = UInt32(bits & 0x8000) << 16
        let exponent = Int((bits >> 10) & 0x1F)
        let mantissa = UInt32(bits & 0x3FF)
        switch exponent {
        case 0:
            // Subnormal halves are mantissa·2⁻²⁴, always a normal Float, and the product is exact.
            let magnitude = Float(mantissa) * 0x1p-24
            return Float(bitPattern: sign | magnitude.bitPattern)
        case 0x1F:
            // Infinity or NaN; the NaN payload moves to the top of the wider mantissa.
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        default:
            return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
        }
    }

    /// The nearest IEEE half to `value` (ties to even); too large becomes ±infinity, NaN stays NaN.
    public static func f16(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let floatExponent = Int((bits >> 23) & 0xFF)
        let mantissa = bits & 0x7F_FFFF
        if floatExponent == 0xFF {
            // Keep NaN a NaN even when its payload lies only in the bits that are dropped.
            return mantissa == 0 ? sign | 0x7C00 : sign | 0x7E00 | UInt16(mantissa >> 13)
        }
        let halfExponent = floatExponent - 127 + 15
        if halfExponent >= 0x1F { return sign | 0x7C00 }
        if halfExponent <= 0 {
            // Below 2⁻²⁵ everything rounds to zero; otherwise the result is a half subnormal
            // (or, after rounding up, the smallest normal), counted in units of 2⁻²⁴.
            if halfExponent < -10 { return sign }
            let significand = mantissa | 0x80_0000
            return sign | UInt16(roundShiftRight(significand, by: UInt32(14 - halfExponent)))
        }
        // A carry out of the mantissa correctly bumps the exponent, up to infinity.
        let unrounded = UInt32(halfExponent) << 23 | mantissa
        return sign | UInt16(roundShiftRight(unrounded, by: 13))
    }

    /// The `Float` a bfloat16 bit pattern stands for (exact: bfloat16 is a truncated Float).
    public static func float(fromBF16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// The nearest bfloat16 to `value` (ties to even); NaN stays NaN.
    public static func bf16(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: roundShiftRight(bits, by: 16))
    }

    /// `value >> shift`, rounded to nearest with ties to even (`shift` in 1...31). Masking shifts: the
    /// checked ones kept this from being inlined, and rounding a model's weights at load spent most
    /// of its time here.
    @inline(__always)
    private static func roundShiftRight(_ value: UInt32, by shift: UInt32) -> UInt32 {
        let kept = value &>> shift
        let dropped = value & ((1 &<< shift) &- 1)
        let halfway: UInt32 = 1 &<< (shift &- 1)
        return dropped > halfway || (dropped == halfway && kept & 1 == 1) ? kept + 1 : kept
    }
}
