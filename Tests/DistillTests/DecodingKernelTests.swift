import CKernels
import Distill
import XCTest

/// The decoding products, `ck_linear_f32` and over reduced weights `ck_linear_half` (bf16/f16) and `ck_linear_q8_0`: each
/// of their bodies this CPU runs (AVX-512, AVX2, plain C) against a double-precision sum over the
/// exactly widened weights, on shapes that are not multiples of their 16 lanes or 4 rows, two input
/// rows, a row stride wider than the output, and accumulation into y.
final class DecodingKernelTests: XCTestCase {
    func testEveryBodyMatchesThePlainSum() {
        var random = SeededRandom(seed: 21)
        for (format, code) in [(FloatFormat.bf16, Int32(CK_HALF_BF16)), (.f16, Int32(CK_HALF_F16))] {
            let round = format == .bf16 ? ReducedPrecision.bf16(from:) : ReducedPrecision.f16(from:)
            let widen = format == .bf16 ? ReducedPrecision.float(fromBF16:) : ReducedPrecision.float(fromF16:)
            for (inFeatures, outFeatures) in [(1, 1), (7, 3), (16, 4), (17, 5), (33, 9), (300, 67)] {
                let weights = (0..<outFeatures * inFeatures).map { _ in round(random.nextGaussian()) }
                checkEveryBody("\(format)", inFeatures: inFeatures, outFeatures: outFeatures, random: &random,
                               weight: { o, k in Double(widen(weights[o * inFeatures + k])) }) { level, y, stride, x, rows, accumulate in
                    ck_linear_half_at_level(level, y, stride, x, weights, code, rows, inFeatures, outFeatures, accumulate)
                }
            }
        }
    }

    func testEveryQ8_0BodyMatchesThePlainSum() {
        var random = SeededRandom(seed: 22)
        for (inFeatures, outFeatures) in [(32, 1), (32, 3), (64, 4), (96, 5), (320, 67)] {
            let blocks = inFeatures / 32
            let quants = (0..<outFeatures * inFeatures).map { _ in Int8(truncatingIfNeeded: Int(random.next() % 255) - 127) }
            let scales = (0..<outFeatures * blocks).map { _ in
                ReducedPrecision.float(fromF16: ReducedPrecision.f16(from: 0.01 * random.nextGaussian()))
            }
            checkEveryBody("q8_0", inFeatures: inFeatures, outFeatures: outFeatures, random: &random,
                           weight: { o, k in Double(scales[o * blocks + k / 32]) * Double(quants[o * inFeatures + k]) }) {
                level, y, stride, x, rows, accumulate in
                ck_linear_q8_0_at_level(level, y, stride, x, quants, scales, rows, inFeatures, outFeatures, accumulate)
            }
        }
    }

    /// `ck_linear_f32`, the f32 decoding product in place of OpenBLAS's sgemv and sgemm: every body
    /// against the double sum; a part of the outputs (as a thread computes it) and each row alone bitwise
    /// equal to the same outputs of the whole product, for group starts that are and are not multiples of
    /// four, and 9 rows (two tiles of four rows and one row alone in the AVX-512 body, four tiles of two
    /// and one alone in the AVX2 body).
    func testEveryF32BodyMatchesThePlainSumAndAPartIsBitwiseTheWhole() {
        var random = SeededRandom(seed: 23)
        for (inFeatures, outFeatures) in [(1, 1), (7, 3), (8, 4), (16, 5), (17, 9), (33, 7), (300, 67)] {
            let weights = (0..<outFeatures * inFeatures).map { _ in random.nextGaussian() }
            checkEveryBody("f32", inFeatures: inFeatures, outFeatures: outFeatures, random: &random,
                           weight: { o, k in Double(weights[o * inFeatures + k]) }) { level, y, stride, x, rows, accumulate in
                ck_linear_f32_at_level(level, y, stride, x, rows, weights, inFeatures, outFeatures, accumulate)
            }
            let rows = 9
            let x = (0..<rows * inFeatures).map { _ in random.nextGaussian() }
            for level in 0...ck_isa_level() {
                var whole = [Float](repeating: 0, count: rows * outFeatures)
                ck_linear_f32_at_level(level, &whole, outFeatures, x, rows, weights, inFeatures, outFeatures, 0)
                for part in [0..<outFeatures, (outFeatures / 3)..<outFeatures, 0..<(outFeatures / 2 + 1)] where !part.isEmpty {
                    for row in 0..<rows {
                        var y = [Float](repeating: 0, count: part.count)
                        weights.withUnsafeBufferPointer { w in
                            x.withUnsafeBufferPointer { x in
                                ck_linear_f32_at_level(level, &y, part.count, x.baseAddress! + row * inFeatures, 1,
                                                       w.baseAddress! + part.lowerBound * inFeatures, inFeatures, part.count, 0)
                            }
                        }
                        let expected = whole[(row * outFeatures + part.lowerBound)..<(row * outFeatures + part.upperBound)]
                        XCTAssertEqual(y.map(\.bitPattern), expected.map(\.bitPattern),
                                       "level \(level) in \(inFeatures) out \(outFeatures) part \(part) row \(row)")
                    }
                }
            }
        }
    }

    /// Runs `product(level, y, stride, x, rows, accumulate)` with each body this CPU has on random x and
    /// y (two rows, three floats of padding after each row of y), and checks every output against the
    /// double sum of `weight(o, k) · x[r, k]`, within a few ulps of the sum of the terms' sizes.
    private func checkEveryBody(_ name: String, inFeatures: Int, outFeatures: Int, random: inout SeededRandom,
                                weight: (Int, Int) -> Double,
                                product: (Int32, UnsafeMutablePointer<Float>, Int, UnsafePointer<Float>, Int, Int32) -> Void) {
        let rows = 2, stride = outFeatures + 3
        let x = (0..<rows * inFeatures).map { _ in random.nextGaussian() }
        let start = (0..<rows * stride).map { _ in random.nextGaussian() }
        for accumulate in [false, true] {
            var expected = start, sizes = [Double](repeating: 0, count: start.count)
            for r in 0..<rows {
                for o in 0..<outFeatures {
                    var sum = 0.0, size = 0.0
                    for k in 0..<inFeatures {
                        let term = weight(o, k) * Double(x[r * inFeatures + k])
                        sum += term
                        size += abs(term)
                    }
                    let base = accumulate ? Double(start[r * stride + o]) : 0
                    expected[r * stride + o] = Float(base + sum)
                    sizes[r * stride + o] = size + abs(base)
                }
            }
            // Every body up to the one in force (DISTILL_ISA caps it; the suite's second pass runs with avx2).
            for level in 0...ck_isa_level() {
                var y = start
                product(level, &y, stride, x, rows, accumulate ? 1 : 0)
                for r in 0..<rows {
                    for o in 0..<stride {
                        let i = r * stride + o
                        if o < outFeatures {
                            XCTAssertLessThanOrEqual(Double(abs(y[i] - expected[i])), 4e-6 * sizes[i] + 1e-7,
                                                     "\(name) level \(level) in \(inFeatures) out \(outFeatures) row \(r) output \(o)")
                        } else {
                            XCTAssertEqual(y[i], start[i], "\(name): padding between rows is not touched")
                        }
                    }
                }
            }
        }
    }
}
