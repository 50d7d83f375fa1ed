import CKernels

// Causal multi-head attention over the fused qkv buffer [B·T, C + 2·KVd], with H query heads and KV
// key/value heads of width d (C = H·d, KVd = KV·d): query heads at column h·d, key heads at C + g·d,
// value heads at C + KVd + g·d. Query head h reads key/value head h / (H / KV) (grouped-query
// attention).
//
// Each (sequence, head) is one call of our own kernel (`ck_attention_forward` / `_backward`,
// attention.c): scores, softmax and p·V in blocks of 16 query rows, with only each row's softmax maximum
// and 1/sum kept for backward ([B, H, T, 2]), which recomputes the probabilities from the same scores.
// Kept state grows as B·H·T, not B·H·T², and the scratch as threads·T·d.

/// Floats of scratch attention needs per thread, forward or backward.
func attentionScratchPerThread(length: Int, headDim: Int) -> Int {
    Int(ck_attention_scratch_floats(length, headDim))
}

/// out[B·T, C] = softmax(mask(Q Kᵀ / √d)) V per head; writes each row's softmax maximum and 1/sum to
/// rowStats [B, H, T, 2] for backward. scratch: [threads, attentionScratchPerThread].
func attentionForward(out: UnsafeMutablePointer<Float>, rowStats: UnsafeMutablePointer<Float>,
                      scratch: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>, batch: Int, length: Int,
                      heads: Int, kvHeads: Int, headDim d: Int) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let scale = 1 / Float(d).squareRoot(), t = length
    // One (sequence, head) a part, claimed one at a time.
    Compute.parallelWithSlots(batch * heads) { job, slot in
        let p = scratch + slot * attentionScratchPerThread(length: t, headDim: d)
        let b = job / heads, h = job % heads, g = h / (heads / kvHeads)
        let rows = qkv + b * t * stride
        ck_attention_forward(out + b * t * c + h * d, c, rowStats + job * t * 2, rows + h * d, rows + c + g * d,
                             rows + c + kvWidth + g * d, stride, t, d, scale, p)
    }
}

/// Writes dqkv [B·T, C + 2·KVd] (gradient w.r.t. the rotated q and k, and v; every element, so it need not
/// be zeroed) from dOut [B·T, C], recomputing the probabilities from qkv and rowStats [B, H, T, 2]; with
/// `recomputedOut` [B·T, C] it also writes the forward's output there again, bitwise.
/// scratch: [threads, attentionScratchPerThread]. Work is split by (batch, key/value head) so that heads
/// sharing keys never write the same rows at once.
func attentionBackward(dqkv: UnsafeMutablePointer<Float>, recomputedOut: UnsafeMutablePointer<Float>? = nil,
                       dOut: UnsafePointer<Float>, rowStats: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>, batch: Int, length: Int, heads: Int, kvHeads: Int,
                       headDim d: Int) {
    let c = heads * d, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let group = heads / kvHeads, scale = 1 / Float(d).squareRoot(), t = length
    // One (sequence, key/value head) a part, claimed one at a time.
    Compute.parallelWithSlots(batch * kvHeads) { job, slot in
        let p = scratch + slot * attentionScratchPerThread(length: t, headDim: d)
        let b = job / kvHeads, g = job % kvHeads
        let rows = qkv + b * t * stride, dRows = dqkv + b * t * stride
        for h in (g * group)..<((g + 1) * group) {
            // Each head writes its queries' gradient; the group's first head writes its keys' and values',
            // the others add to them.
            ck_attention_backward(dRows + h * d, dRows + c + g * d, dRows + c + kvWidth + g * d,
                                  recomputedOut.map { $0 + b * t * c + h * d }, dOut + b * t * c + h * d, c, rowStats + (b * heads + h) * t * 2,
                                  rows + h * d, rows + c + g * d, rows + c + kvWidth + g * d, stride, t, d, scale,
                                  0, h == g * group ? 0 : 1, p)
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
