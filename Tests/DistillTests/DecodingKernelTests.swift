import Foundation
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
                // Several rows (sequences decoded together): each bitwise what it gives alone.
                let rows = 9
                let x = (0..<rows * inFeatures).map { _ in random.nextGaussian() }
                for level in 0...ck_isa_level() {
                    var whole = [Float](repeating: 0, count: rows * outFeatures)
                    ck_linear_half_at_level(level, &whole, outFeatures, x, weights, code, rows, inFeatures, outFeatures, 0)
                    for row in 0..<rows {
                        var alone = [Float](repeating: 0, count: outFeatures)
                        x.withUnsafeBufferPointer { x in
                            ck_linear_half_at_level(level, &alone, outFeatures, x.baseAddress! + row * inFeatures, weights, code, 1,
                                                    inFeatures, outFeatures, 0)
                        }
                        XCTAssertEqual(alone.map(\.bitPattern), whole[(row * outFeatures)..<((row + 1) * outFeatures)].map(\.bitPattern),
                                       "\(format) level \(level) in \(inFeatures) out \(outFeatures) row \(row)")
                    }
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

    /// `ck_attend_cached`, decoding attention of one row and head (the body DISTILL_ISA leaves in force;
    /// `tools/test` runs it on each): against a double-precision softmax and sum, for head widths that are
    /// and are not multiples of the column blocks, position counts around the 64-position blocks and the
    /// four p·V streams, and caches that end within a block. Positions past `seen` hold NaN, which must not
    /// reach the output; the same keys and values in a larger cache give the same bits.
    func testCachedAttentionMatchesThePlainSoftmaxAndSum() {
        var random = SeededRandom(seed: 24)
        for (d, seen) in [(1, 1), (7, 5), (16, 64), (32, 63), (32, 65), (48, 130), (80, 3), (32, 200), (113, 70)] {
            let q = (0..<d).map { _ in random.nextGaussian() }
            let keys = (0..<seen * d).map { _ in random.nextGaussian() }   // [seen, d]
            let values = (0..<seen * d).map { _ in random.nextGaussian() } // [seen, d]
            let scale = 1 / Float(d).squareRoot()
            var expected = [Double](repeating: 0, count: d)
            let scores = (0..<seen).map { j in (0..<d).reduce(0.0) { $0 + Double(q[$1]) * Double(keys[j * d + $1]) } * Double(scale) }
            let maximum = scores.max() ?? 0
            let weights = scores.map { Foundation.exp($0 - maximum) }
            let total = weights.reduce(0, +)
            for j in 0..<seen { for k in 0..<d { expected[k] += weights[j] / total * Double(values[j * d + k]) } }
            var outputs: [[Float]] = []
            for capacity in [seen, seen + 67] {
                var keysT = [Float](repeating: .nan, count: d * capacity), cachedValues = [Float](repeating: .nan, count: capacity * d)
                for j in 0..<seen {
                    for k in 0..<d { keysT[k * capacity + j] = keys[j * d + k]; cachedValues[j * d + k] = values[j * d + k] }
                }
                var out = [Float](repeating: 0, count: d), scratch = [Float](repeating: 0, count: capacity)
                ck_attend_cached(&out, q, keysT, cachedValues, capacity, seen, d, scale, &scratch)
                for k in 0..<d {
                    XCTAssertEqual(Double(out[k]), expected[k], accuracy: 1e-5 * (1 + abs(expected[k])), "d \(d), seen \(seen), capacity \(capacity)")
                }
                outputs.append(out)
            }
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[1].map(\.bitPattern), "d \(d), seen \(seen): the cache's size changed the bits")
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
