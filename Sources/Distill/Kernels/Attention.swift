import CBLAS
import CKernels

// Causal multi-head attention over the fused qkv buffer [B·T, C + 2·KVd]: query heads at column
// h·d, key heads at C + g·d, value heads at C + KVd + g·d. Query head h reads key/value head
// h / (H / KV) (grouped-query attention). Scores and probabilities are [T, T] per (b, h).

/// out[B·T, C] = softmax(mask(Q Kᵀ / √d)) V per head; keeps probabilities [B, H, T, T] for backward.
func attentionForward(out: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                      qkv: UnsafePointer<Float>, config: LlamaConfig, batch: Int, length: Int) {
    let c = config.hiddenSize, d = config.headDim, heads = config.numAttentionHeads
    let kvHeads = config.numKeyValueHeads, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
    let scale = 1 / Float(d).squareRoot(), t = length
    parallelFor(batch * heads) { job in
        let b = job / heads, h = job % heads, g = h / (heads / kvHeads)
        let q = qkv + b * t * stride + h * d
        let k = qkv + b * t * stride + c + g * d
        let v = qkv + b * t * stride + c + kvWidth + g * d
        let p = probabilities + job * t * t
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(t), Int32(t), Int32(d),
                    scale, q, Int32(stride), k, Int32(stride), 0, p, Int32(t))
        for row in 0..<t { ck_softmax_prefix(p + row * t, row + 1, t) }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(t), Int32(d), Int32(t),
                    1, p, Int32(t), v, Int32(stride), 0, out + b * t * c + h * d, Int32(c))
    }
}

/// Accumulates dqkv [B·T, C + 2·KVd] (gradient w.r.t. the rotated q and k, and v) from dOut [B·T, C].
/// Work is split by (batch, key/value head) so that heads sharing keys never write the same rows at once.
func attentionBackward(dqkv: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                       probabilities: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>, config: LlamaConfig, batch: Int, length: Int) {
    let c = config.hiddenSize, d = config.headDim, heads = config.numAttentionHeads
    let kvHeads = config.numKeyValueHeads, kvWidth = kvHeads * d, stride = c + 2 * kvWidth
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
                    // dP = dO Vᵀ;  dV += Pᵀ dO
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(t), Int32(t), Int32(d),
                                1, dO, Int32(c), v, Int32(stride), 0, dScores, Int32(t))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(t), Int32(d), Int32(t),
                                1, p, Int32(t), dO, Int32(c), 1, dv, Int32(stride))
                    // dS = P ⊙ (dP − rowsum(P ⊙ dP)); masked entries have P = 0 and stay 0.
                    for row in 0..<t {
                        ck_softmax_backward_row(dScores + row * t, p + row * t, row + 1)
                        (dScores + row * t + row + 1).update(repeating: 0, count: t - row - 1)
                    }
                    // dQ += scale · dS K;  dK += scale · dSᵀ Q
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(t), Int32(d), Int32(t),
                                scale, dScores, Int32(t), k, Int32(stride), 1, dq, Int32(stride))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(t), Int32(d), Int32(t),
                                scale, dScores, Int32(t), q, Int32(stride), 1, dk, Int32(stride))
                }
            }
        }
    }
}

import Dispatch
