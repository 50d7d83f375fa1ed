import CKernels
import Distill
import XCTest

/// `ck_linear_half`, the decoding product over bf16/f16 weights: each of its bodies this CPU runs
/// (AVX-512, AVX2, plain C) against a double-precision sum over the exactly widened weights, on shapes
/// that are not multiples of its 16 lanes or 4 rows, two input rows, a row stride wider than the
/// output, and accumulation into y.
final class HalfPrecisionKernelTests: XCTestCase {
    func testEveryBodyMatchesThePlainSum() {
        var random = SeededRandom(seed: 21)
        let levels = Array(0...Int(ck_linear_half_level()))
        XCTAssertFalse(levels.isEmpty)
        for (format, code) in [(FloatFormat.bf16, Int32(CK_HALF_BF16)), (.f16, Int32(CK_HALF_F16))] {
            let round = format == .bf16 ? ReducedPrecision.bf16(from:) : ReducedPrecision.f16(from:)
            let widen = format == .bf16 ? ReducedPrecision.float(fromBF16:) : ReducedPrecision.float(fromF16:)
            for (inFeatures, outFeatures) in [(1, 1), (7, 3), (16, 4), (17, 5), (33, 9), (300, 67)] {
                let rows = 2, stride = outFeatures + 3
                let weights = (0..<outFeatures * inFeatures).map { _ in round(random.nextGaussian()) }
                let x = (0..<rows * inFeatures).map { _ in random.nextGaussian() }
                let start = (0..<rows * stride).map { _ in random.nextGaussian() }
                for accumulate in [false, true] {
                    var expected = start, sizes = [Double](repeating: 0, count: start.count)
                    for r in 0..<rows {
                        for o in 0..<outFeatures {
                            var sum = 0.0, size = 0.0
                            for k in 0..<inFeatures {
                                let term = Double(widen(weights[o * inFeatures + k])) * Double(x[r * inFeatures + k])
                                sum += term
                                size += abs(term)
                            }
                            let base = accumulate ? Double(start[r * stride + o]) : 0
                            expected[r * stride + o] = Float(base + sum)
                            sizes[r * stride + o] = size + abs(base)
                        }
                    }
                    for level in levels {
                        var y = start
                        ck_linear_half_at_level(Int32(level), &y, stride, x, weights, code, rows, inFeatures, outFeatures,
                                                accumulate ? 1 : 0)
                        // Float sums of the same terms: within a few ulps of their absolute sum.
                        for r in 0..<rows {
                            for o in 0..<outFeatures {
                                let i = r * stride + o
                                XCTAssertLessThanOrEqual(Double(abs(y[i] - expected[i])), 4e-6 * sizes[i] + 1e-7,
                                                         "\(format) level \(level) in \(inFeatures) out \(outFeatures) row \(r) output \(o)")
                            }
                        }
                        // Padding between rows (stride > out) is not touched.
                        for r in 0..<rows {
                            for o in outFeatures..<stride { XCTAssertEqual(y[r * stride + o], start[r * stride + o]) }
                        }
                    }
                }
            }
        }
    }
}
