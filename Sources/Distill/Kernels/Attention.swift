import CBLAS
import CKernels

// Causal multi-head attention over the fused qkv buffer [B·T, C + 2·KVd], with H query heads and KV
// key/value heads of width d (C = H·d, KVd = KV·d): query heads at column h·d, key heads at C + g·d,
// value heads at C + KVd + g·d. Query head h reads key/value head h / (H / KV) (grouped-query
// attention).
//
// Memory: scores are computed a block of query rows at a time into a per-thread scratch
// [attentionBlock, T], and only each row's softmax maximum and 1/sum are kept for backward ([B, H, T, 2]),
// which recomputes the block's probabilities from the same scores. Kept state grows as B·H·T, not
// B·H·T², and the scratch as threads·T.

/// Query rows per block of the causal products.
let attentionBlock = 64

/// Floats of scratch attention needs per thread: a block of probabilities and one of their gradients.
func attentionScratchPerThread(length: Int) -> Int { saturatingProduct(2, attentionBlock, length) }

/// Runs `body(worker, jobs)` on the cores, the jobs 0..<count split into contiguous ranges (each worker
/// calls OpenBLAS, single-threaded, on its own small products).
private func forEachWorker(jobs count: Int, _ body: (Int, Range<Int>) -> Void) {
    let workers = min(Compute.threads, count)
    guard workers > 1 else {
        body(0, 0..<count)
        return
    }
    Compute.parallel(workers) { worker in
        body(worker, (count * worker / workers)..<(count * (worker + 1) / workers))
    }
}

/// out[B·T, C] = softmax(mask(Q Kᵀ / √d)) V per head; writes each row's softmax maximum and 1/sum to
/// rowStats [B, H, T, 2] for backward. scratch: [threads, 2·attentionBlock, T].
func attentionForward(out: UnsafeMutablePointer<Float>, rowStats: UnsafeMutablePointer<Float>,
                      scratch: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>, batch: Int, length: Int,
                      heads: Int, kvHeads: Int, headDim d: Int) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let scale = 1 / Float(d).squareRoot(), t = length
    forEachWorker(jobs: batch * heads) { worker, jobs in
        let p = scratch + worker * attentionScratchPerThread(length: t)  // [attentionBlock, T]
        for job in jobs {
            let b = job / heads, h = job % heads, g = h / (heads / kvHeads)
            let q = qkv + b * t * stride + h * d
            let k = qkv + b * t * stride + c + g * d
            let v = qkv + b * t * stride + c + kvWidth + g * d
            let stats = rowStats + job * t * 2
            // Causal: query rows [r0, r1) only see keys [0, r1), so each block of rows multiplies only the
            // columns it can see (about 5/8 of the full T×T work at T = 256).
            for r0 in Swift.stride(from: 0, to: t, by: attentionBlock) {
                let r1 = min(r0 + attentionBlock, t), rows = Int32(r1 - r0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, Int32(r1), Int32(d),
                            scale, q + r0 * stride, Int32(stride), k, Int32(stride), 0, p, Int32(t))
                for row in r0..<r1 {
                    ck_softmax_prefix_keeping(p + (row - r0) * t, row + 1, r1, stats + 2 * row, stats + 2 * row + 1)
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Int32(d), Int32(r1),
                            1, p, Int32(t), v, Int32(stride), 0, out + (b * t + r0) * c + h * d, Int32(c))
            }
        }
    }
}

/// Accumulates dqkv [B·T, C + 2·KVd] (gradient w.r.t. the rotated q and k, and v) from dOut [B·T, C],
/// recomputing each block's probabilities from qkv and rowStats [B, H, T, 2].
/// scratch: [threads, 2·attentionBlock, T]. Work is split by (batch, key/value head) so that heads
/// sharing keys never write the same rows at once.
func attentionBackward(dqkv: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                       rowStats: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>, batch: Int, length: Int, heads: Int, kvHeads: Int,
                       headDim d: Int) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let group = heads / kvHeads, scale = 1 / Float(d).squareRoot(), t = length
    forEachWorker(jobs: batch * kvHeads) { worker, jobs in
        let p = scratch + worker * attentionScratchPerThread(length: t)  // [attentionBlock, T]
        let dScores = p + attentionBlock * t                             // [attentionBlock, T]
        for job in jobs {
            let b = job / kvHeads, g = job % kvHeads
            let k = qkv + b * t * stride + c + g * d, v = k + kvWidth
            let dk = dqkv + b * t * stride + c + g * d, dv = dk + kvWidth
            for h in (g * group)..<((g + 1) * group) {
                let q = qkv + b * t * stride + h * d, dq = dqkv + b * t * stride + h * d
                let stats = rowStats + (b * heads + h) * t * 2
                let dO = dOut + b * t * c + h * d
                for r0 in Swift.stride(from: 0, to: t, by: attentionBlock) {
                    // Query rows [r0, r1) against the keys [0, r1) they can see, as in the forward.
                    let r1 = min(r0 + attentionBlock, t), rows = Int32(r1 - r0), seen = Int32(r1)
                    // P again: the forward's scores, then its softmax from the kept maximum and 1/sum.
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, seen, Int32(d),
                                scale, q + r0 * stride, Int32(stride), k, Int32(stride), 0, p, Int32(t))
                    for row in r0..<r1 {
                        ck_softmax_prefix_recompute(p + (row - r0) * t, row + 1, r1, stats[2 * row], stats[2 * row + 1])
                    }
                    // dP = dO Vᵀ;  dV += Pᵀ dO
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, seen, Int32(d),
                                1, dO + r0 * c, Int32(c), v, Int32(stride), 0, dScores, Int32(t))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, seen, Int32(d), rows,
                                1, p, Int32(t), dO + r0 * c, Int32(c), 1, dv, Int32(stride))
                    // dS = P ⊙ (dP − rowsum(P ⊙ dP)); masked entries have P = 0, so dS is 0 there.
                    for row in r0..<r1 {
                        ck_softmax_backward_row(dScores + (row - r0) * t, p + (row - r0) * t, Int(seen))
                    }
                    // dQ += scale · dS K;  dK += scale · dSᵀ Q
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Int32(d), seen,
                                scale, dScores, Int32(t), k, Int32(stride), 1, dq + r0 * stride, Int32(stride))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, seen, Int32(d), rows,
                                scale, dScores, Int32(t), q + r0 * stride, Int32(stride), 1, dk, Int32(stride))
                }
            }
        }
    }
}

import Dispatch

/// Attention of `length` new rows of one sequence, at positions start..<start+length, against a key/value
/// cache: the rows' keys and values (from qkv [length, C + 2·KVd]) are written to `keys` [KV, d, capacity]
/// and `values` [KV, capacity, d] first, then query row r sees the cached positions [0, start + r].
/// out: [length, C].
/// Nothing is kept for backward. `scores` holds scoreRows·(start + length) floats: one row per thread,
/// the heads split over up to `scoreRows` threads, or all on the calling thread when not
/// `splittingHeads` (sequences decoded together split over the threads by sequence instead).
func cachedAttentionForward(out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>,
                            keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, capacity: Int,
                            scores: UnsafeMutablePointer<Float>, scoreRows: Int, start: Int, length: Int,
                            heads: Int, kvHeads: Int, headDim d: Int, splittingHeads: Bool = true) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let group = heads / kvHeads, scale = 1 / Float(d).squareRoot()
    precondition(start + length <= capacity, "the cache holds \(capacity) positions")
    for r in 0..<length {
        for g in 0..<kvHeads {
            let key = qkv + r * stride + c + g * d
            for k in 0..<d { keys[(g * d + k) * capacity + start + r] = key[k] }
            (values + (g * capacity + start + r) * d).update(from: qkv + r * stride + c + kvWidth + g * d, count: d)
        }
    }
    for r in 0..<length {
        let seen = start + r + 1
        func attend(_ headRange: Range<Int>, scores: UnsafeMutablePointer<Float>) {
            for h in headRange {
                let g = h / group
                // One C call: scores, softmax and Σ p·V. (OpenBLAS's sgemv over rows of d = 32 floats took a
                // tenth of an f32 token's time; dot products of 32 floats, 29% of batch-32 decoding's.)
                ck_attend_cached(out + r * c + h * d, qkv + r * stride + h * d, keys + g * d * capacity,
                                 values + g * capacity * d, capacity, seen, d, scale, scores)
            }
        }
        let parts = splittingHeads ? min(Compute.threads, heads, scoreRows) : 1
        Compute.parallel(parts) { part in
            attend((heads * part / parts)..<(heads * (part + 1) / parts), scores: scores + part * seen)
        }
    }
}
