import Foundation
import CKernels
import Distill
import XCTest

/// Our training attention kernel (`ck_attention_forward` / `ck_attention_backward`, attention.c), in the
/// body this CPU runs (`tools/test` runs it again with the AVX2 and plain C bodies), against a
/// double-precision causal softmax and its gradients: sequence lengths around the 16-row blocks and the
/// 64-column score chunks, head widths that are and are not multiples of the vector tiles, rows wider
/// than a head (the fused qkv layout), and gradients added to what dq, dk and dv already hold or written
/// there (the model's way: no zeroing first). Backward's second writing of the output (so that training
/// need not keep it) is bitwise the forward's.
final class AttentionKernelTests: XCTestCase {
    func testForwardAndBackwardMatchTheDoubleReference() {
        var random = SeededRandom(seed: 31)
        for (length, d) in [(1, 1), (5, 3), (16, 32), (17, 32), (33, 5), (64, 16), (100, 48), (130, 113), (200, 32)] {
            let stride = 3 * d + 7, outStride = d + 3, scale = 1 / Float(d).squareRoot()
            let qkv = (0..<length * stride).map { _ in random.nextGaussian() }
            let dOut = (0..<length * outStride).map { _ in random.nextGaussian() }
            let start = (0..<length * stride).map { _ in random.nextGaussian() }
            func q(_ t: Int, _ k: Int) -> Double { Double(qkv[t * stride + k]) }
            func key(_ t: Int, _ k: Int) -> Double { Double(qkv[t * stride + d + k]) }
            func value(_ t: Int, _ k: Int) -> Double { Double(qkv[t * stride + 2 * d + k]) }

            // The reference: p_t = softmax_j≤t(scale · q_t · k_j), out_t = Σ p_tj v_j, and
            // dS_tj = p_tj (dP_tj − Σ_j p_tj dP_tj) with dP_tj = dO_t · v_j. Beside each result, a bound on
            // the float kernel's error, from the computation rather than from this CPU: a sum of n float
            // terms is within γ(n) = n·u/(1 − n·u) of the exact sum, relative to the sum of the terms' sizes
            // (u = 2⁻²⁴, in any order, with or without FMA); fast_expf is within 2e-7 relative; an error e in
            // a score changes its probability by a factor of about 1 + e.
            let u = 0x1p-24
            func gamma(_ n: Int) -> Double { Double(n) * u / (1 - Double(n) * u) }
            var out = [Double](repeating: 0, count: length * d), outBound = out
            var dq = start.map(Double.init), dk = dq, dv = dq
            var gradientBound = start.map { gamma(2 * length + 2) * abs(Double($0)) }
            for t in 0..<length {
                let seen = 0...t
                let scores = seen.map { j in (0..<d).reduce(0.0) { $0 + q(t, $1) * key(j, $1) } * Double(scale) }
                let scoreError = seen.map { j in gamma(d + 1) * Double(scale) * (0..<d).reduce(0.0) { $0 + abs(q(t, $1) * key(j, $1)) } }
                let maximum = scores.max()!
                let weights = scores.map { Foundation.exp($0 - maximum) }
                let total = weights.reduce(0, +)
                let p = weights.map { $0 / total }
                // Each probability's relative error: its score's, the maximum's, the rounding of s − max as
                // the exponent, the exponential's, then the normalisation's (the weighted mean of all those,
                // the sum of t + 1 terms, 1/sum and the product).
                let ownError = seen.map { j in scoreError[j] + scoreError.max()! + u * abs(scores[j] - maximum) + 2e-7 }
                let meanError = zip(p, ownError).reduce(0.0) { $0 + $1.0 * $1.1 }
                let pError = ownError.map { $0 + meanError + gamma(t + 3) }
                for j in seen {
                    for k in 0..<d {
                        out[t * d + k] += p[j] * value(j, k)
                        outBound[t * d + k] += (pError[j] + gamma(t + 1)) * p[j] * abs(value(j, k))
                    }
                }
                let dP = seen.map { j in (0..<d).reduce(0.0) { $0 + Double(dOut[t * outStride + $1]) * value(j, $1) } }
                let dPSize = seen.map { j in (0..<d).reduce(0.0) { $0 + abs(Double(dOut[t * outStride + $1]) * value(j, $1)) } }
                let mean = zip(p, dP).reduce(0.0) { $0 + $1.0 * $1.1 }
                let meanSize = zip(p, dPSize).reduce(0.0) { $0 + $1.0 * $1.1 }
                for j in seen {
                    let dS = p[j] * (dP[j] - mean) * Double(scale)
                    // dS's error: P's, dP's sums of d terms, the mean's sum of t + 1, the subtraction and scaling.
                    let dSError = Double(scale) * p[j] * (pError[j] * (dPSize[j] + meanSize) + gamma(d + 1) * (dPSize[j] + meanSize)
                                                          + gamma(t + 2) * meanSize + 3 * u * (abs(dP[j]) + meanSize))
                    for k in 0..<d {
                        dq[t * stride + k] += dS * key(j, k)
                        dk[j * stride + d + k] += dS * q(t, k)
                        dv[j * stride + 2 * d + k] += p[j] * Double(dOut[t * outStride + k])
                        // Each gradient sums at most 2T + 1 terms (the start included) in some order.
                        let accumulation = gamma(2 * length + 2)
                        gradientBound[t * stride + k] += dSError * abs(key(j, k)) + accumulation * abs(dS * key(j, k))
                        gradientBound[j * stride + d + k] += dSError * abs(q(t, k)) + accumulation * abs(dS * q(t, k))
                        gradientBound[j * stride + 2 * d + k] += (pError[j] + accumulation) * p[j] * abs(Double(dOut[t * outStride + k]))
                    }
                }
            }

            // Scratch full of NaN: the kernel must not read anything it did not write.
            let scratchCount = Int(ck_attention_scratch_floats(length, d))
            var scratch = [Float](repeating: .nan, count: scratchCount)
            var output = [Float](repeating: .nan, count: length * outStride), stats = [Float](repeating: 0, count: 2 * length)
            qkv.withUnsafeBufferPointer { rows in
                let base = rows.baseAddress!
                ck_attention_forward(&output, outStride, &stats, base, base + d, base + 2 * d, stride, length, d, scale, &scratch)
            }
            for t in 0..<length {
                for k in 0..<d {
                    let expected = out[t * d + k]
                    XCTAssertEqual(Double(output[t * outStride + k]), expected, accuracy: 2 * outBound[t * d + k],
                                   "forward T \(length) d \(d) row \(t) column \(k)")
                }
                XCTAssert(output[(t * outStride + d)..<((t + 1) * outStride)].allSatisfy(\.isNaN), "forward wrote past its head")
            }

            var gradient = start, recomputed = [Float](repeating: .nan, count: length * outStride)
            scratch = [Float](repeating: .nan, count: scratchCount)
            qkv.withUnsafeBufferPointer { rows in
                gradient.withUnsafeMutableBufferPointer { g in
                    let base = rows.baseAddress!, gBase = g.baseAddress!
                    ck_attention_backward(gBase, gBase + d, gBase + 2 * d, &recomputed, dOut, outStride, stats, base, base + d,
                                          base + 2 * d, stride, length, d, scale, 1, 1, &scratch)
                }
            }
            // Where a flag says write, every gradient of those heads is written (none may stay NaN), with the
            // values of adding to zero; where it says add, the start is added to; the padding stays as it was.
            func backward(addingToQueries: Int32, addingToKeysAndValues: Int32, holding value: Float) -> [Float] {
                var gradient = start
                for t in 0..<length {
                    for column in 0..<(3 * d) where (column < d ? addingToQueries : addingToKeysAndValues) == 0 {
                        gradient[t * stride + column] = value
                    }
                }
                qkv.withUnsafeBufferPointer { rows in
                    gradient.withUnsafeMutableBufferPointer { g in
                        let base = rows.baseAddress!, gBase = g.baseAddress!
                        ck_attention_backward(gBase, gBase + d, gBase + 2 * d, nil, dOut, outStride, stats, base, base + d,
                                              base + 2 * d, stride, length, d, scale, addingToQueries, addingToKeysAndValues,
                                              &scratch)
                    }
                }
                return gradient
            }
            for (toQueries, toKeysAndValues) in [(Int32(0), Int32(0)), (0, 1), (1, 0)] {
                XCTAssertEqual(backward(addingToQueries: toQueries, addingToKeysAndValues: toKeysAndValues, holding: .nan),
                               backward(addingToQueries: toQueries, addingToKeysAndValues: toKeysAndValues, holding: 0),
                               "written against added to zero, T \(length) d \(d), adding \(toQueries) \(toKeysAndValues)")
            }
            // The output written again by backward is bitwise the forward's (NaN past each head as well).
            XCTAssertEqual(recomputed.map(\.bitPattern), output.map(\.bitPattern), "recomputed output, T \(length) d \(d)")
            for t in 0..<length {
                for column in 0..<stride {
                    let i = t * stride + column
                    // Columns past the three heads are padding that must stay as it was.
                    let expected = column < d ? dq[i] : column < 2 * d ? dk[i] : column < 3 * d ? dv[i] : Double(start[i])
                    XCTAssertEqual(Double(gradient[i]), expected, accuracy: column < 3 * d ? 2 * gradientBound[i] : 0,
                                   "backward T \(length) d \(d) row \(t) column \(column)")
                }
            }
        }
    }
}
