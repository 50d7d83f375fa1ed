import CBLAS
import CKernels

// Causal multi-head attention over the fused qkv buffer [B·T, C + 2·KVd], with H query heads and KV
// key/value heads of width d (C = H·d, KVd = KV·d): query heads at column h·d, key heads at C + g·d,
// value heads at C + KVd + g·d. Query head h reads key/value head h / (H / KV) (grouped-query
// attention). Scores and probabilities are [T, T] per (b, h).

/// Query rows per block of the causal products.
let attentionBlock = 64

/// out[B·T, C] = softmax(mask(Q Kᵀ / √d)) V per head; keeps probabilities [B, H, T, T] for backward.
func attentionForward(out: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                      qkv: UnsafePointer<Float>, batch: Int, length: Int, heads: Int, kvHeads: Int, headDim d: Int) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let scale = 1 / Float(d).squareRoot(), t = length
    parallelFor(batch * heads) { job in
        let b = job / heads, h = job % heads, g = h / (heads / kvHeads)
        let q = qkv + b * t * stride + h * d
        let k = qkv + b * t * stride + c + g * d
        let v = qkv + b * t * stride + c + kvWidth + g * d
        let p = probabilities + job * t * t
        // Causal: query rows [r0, r1) only see keys [0, r1), so each block of rows multiplies only the
        // columns it can see (about 5/8 of the full T×T work at T = 256). Entries right of a block stay
        // as they are and are never read: the softmax writes zeros over them.
        for r0 in Swift.stride(from: 0, to: t, by: attentionBlock) {
            let r1 = min(r0 + attentionBlock, t), rows = Int32(r1 - r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, Int32(r1), Int32(d),
                        scale, q + r0 * stride, Int32(stride), k, Int32(stride), 0, p + r0 * t, Int32(t))
            for row in r0..<r1 { ck_softmax_prefix(p + row * t, row + 1, t) }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Int32(d), Int32(r1),
                        1, p + r0 * t, Int32(t), v, Int32(stride), 0, out + (b * t + r0) * c + h * d, Int32(c))
        }
    }
}

/// Accumulates dqkv [B·T, C + 2·KVd] (gradient w.r.t. the rotated q and k, and v) from dOut [B·T, C].
/// Work is split by (batch, key/value head) so that heads sharing keys never write the same rows at once.
func attentionBackward(dqkv: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                       probabilities: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>, batch: Int, length: Int, heads: Int, kvHeads: Int,
                       headDim d: Int) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let group = heads / kvHeads, scale = 1 / Float(d).squareRoot(), t = length
    let workers = min(Compute.threads, batch * kvHeads)
    Compute.withSingleThreadedBLAS {
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let dScores = scratch + worker * t * t
            let first = batch * kvHeads * worker / workers, last = batch * kvHeads * (worker + 1) / workers
            for job in first..<last {
                let b = job / kvHeads, g = job % kvHeads
                let k = qkv + b * t * stride + c + g * d, v = k + kvWidth
                let dk = dqkv + b * t * stride + c + g * d, dv = dk + kvWidth
                for h in (g * group)..<((g + 1) * group) {
                    let q = qkv + b * t * stride + h * d, dq = dqkv + b * t * stride + h * d
                    let p = probabilities + (b * heads + h) * t * t
                    let dO = dOut + b * t * c + h * d
                    for r0 in Swift.stride(from: 0, to: t, by: attentionBlock) {
                        // Query rows [r0, r1) against the keys [0, r1) they can see, as in the forward.
                        let r1 = min(r0 + attentionBlock, t), rows = Int32(r1 - r0), seen = Int32(r1)
                        let pBlock = p + r0 * t, dSBlock = dScores + r0 * t
                        // dP = dO Vᵀ;  dV += Pᵀ dO
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, seen, Int32(d),
                                    1, dO + r0 * c, Int32(c), v, Int32(stride), 0, dSBlock, Int32(t))
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, seen, Int32(d), rows,
                                    1, pBlock, Int32(t), dO + r0 * c, Int32(c), 1, dv, Int32(stride))
                        // dS = P ⊙ (dP − rowsum(P ⊙ dP)); masked entries have P = 0 and stay 0.
                        for row in r0..<r1 {
                            ck_softmax_backward_row(dScores + row * t, p + row * t, row + 1)
                            (dScores + row * t + row + 1).update(repeating: 0, count: r1 - row - 1)
                        }
                        // dQ += scale · dS K;  dK += scale · dSᵀ Q
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Int32(d), seen,
                                    scale, dSBlock, Int32(t), k, Int32(stride), 1, dq + r0 * stride, Int32(stride))
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, seen, Int32(d), rows,
                                    scale, dSBlock, Int32(t), q + r0 * stride, Int32(stride), 1, dk, Int32(stride))
                    }
                }
            }
        }
    }
}

import Dispatch

/// Attention of `length` new rows of one sequence, at positions start..<start+length, against a key/value
/// cache: the rows' keys and values (from qkv [length, C + 2·KVd]) are written to `keys` and `values`
/// [positions, KVd] first, then query row r sees the cached positions [0, start + r]. out: [length, C].
/// Nothing is kept for backward. `scores` holds at least start + length floats.
func cachedAttentionForward(out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>,
                            keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>,
                            scores: UnsafeMutablePointer<Float>, start: Int, length: Int,
                            heads: Int, kvHeads: Int, headDim d: Int) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let group = heads / kvHeads, scale = 1 / Float(d).squareRoot()
    for r in 0..<length {
        (keys + (start + r) * kvWidth).update(from: qkv + r * stride + c, count: kvWidth)
        (values + (start + r) * kvWidth).update(from: qkv + r * stride + c + kvWidth, count: kvWidth)
    }
    for r in 0..<length {
        let seen = start + r + 1
        for h in 0..<heads {
            let g = h / group
            // scores[0..<seen] = K[0..<seen, g] · q_h / √d, then softmax, then Σ p·V.
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(seen), Int32(d), scale, keys + g * d, Int32(kvWidth),
                        qkv + r * stride + h * d, 1, 0, scores, 1)
            ck_softmax_prefix(scores, seen, seen)
            cblas_sgemv(CblasRowMajor, CblasTrans, Int32(seen), Int32(d), 1, values + g * d, Int32(kvWidth),
                        scores, 1, 0, out + r * c + h * d, 1)
        }
    }
}
