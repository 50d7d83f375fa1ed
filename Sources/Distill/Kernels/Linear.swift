import CBLAS
import CKernels
import Dispatch
import Foundation

// Matrix products of the model, all through OpenBLAS. Weights use PyTorch's nn.Linear layout
// W[out, in], so y = x · Wᵀ.
//
// Threads: OpenBLAS always runs on one thread, and the products are split over the cores by rows of
// their output here (`sgemm`, on the `ComputeTeam`). With OpenBLAS's own threads beside ours
// (attention, the element-wise kernels, the loss), its idle workers spun in sched_yield for a fifth of
// a training step; with one pool the cores do only work. Every output element is still one single-threaded dot product, so the
// result does not depend on the split or the thread count.

/// Rows of the output below which a product is not split (the hand-off costs more than it saves).
let minimumRowsPerThread = 32

/// Multiply-adds up to which OpenBLAS (0.3.21, SkylakeX and later kernels) may take its small-matrix
/// kernel, which sums in another order than its blocked one.
let openBLASSmallProductLimit = 1_000_000

/// C[M, N] = alpha · op(A) · op(B) + beta · C, row-major, with op(A) [M, K] and op(B) [K, N]; the M
/// rows of C are split over the cores, each part one single-threaded OpenBLAS call. A product at most
/// `openBLASSmallProductLimit` is not split, and a larger one only into parts above it, so that no
/// part crosses into the small-matrix kernel: then the result is bitwise the same on any number of
/// threads. Unless `SmallKernelPlan` takes the product: then every call is a small-matrix one, on a grid
/// fixed by the shape.
package func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
           c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m * n * k > openBLASSmallProductLimit, let plan = SmallKernelPlan(transposeA: transposeA, transposeB: transposeB, n: n, k: k) {
        return plan.run(m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }
    forEachProductPart(m: m, n: n, k: k) { rows in
        // Rows of op(A) are rows of A, or columns of A when it is transposed.
        let aStart = transposeA ? a + rows.lowerBound : a + rows.lowerBound * lda
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(rows.count), Int32(n), Int32(k), alpha, aStart, Int32(lda), b, Int32(ldb), beta,
                    c + rows.lowerBound * ldc, Int32(ldc))
    }
}

/// A product cut into calls of at most `openBLASSmallProductLimit` multiply-adds, which OpenBLAS's AVX-512
/// cores run in their small-matrix kernels: those read both operands in place, so nothing is packed, and
/// write C without zeroing it first for beta = 0. The rows of C go in parts of `rows`, each claimed as a
/// part of its own; a part sums over K in calls of `depth` rows of op(B), in order, the first with the
/// product's beta and the rest adding to it. The grid is fixed by the shape alone, never by the thread
/// count, so the bits do not depend on the threads, and a slowed core takes fewer parts.
/// On the model's backward products (a C harness, one core, caches flushed) they took 0.87–0.98× the time
/// of one blocked call for d x at `tiny`, 0.91× for the head's d x (16 rows over 488 of its 2,048), 0.93–0.98×
/// for `small`'s d x, and 0.69–0.98× for d W at `tiny`. Only where the calls stay large enough to pay:
/// OpenBLAS's AVX2 cores have no small-matrix kernel; a d W whose calls would sum fewer than
/// `smallKernelShortestDepth` rows lost (0.99–1.17× at `small`'s width 688), and so did one over fewer than
/// `smallKernelFewestSummedRows` in all; forward products x · Wᵀ have no small-matrix kernel (row-major N·Tᵀ
/// is OpenBLAS's column-major TN, which it takes only for a C of at most 1,200 elements), and with W copied
/// transposed first (then x · (Wᵀ) takes the plan) a `tiny` training step took 1.5–2% less time but a forward
/// pass of `eval` 3.5% more (the copy, made at every pass, costs what the product saves on warm outputs).
package struct SmallKernelPlan {
    /// Rows of C a part computes.
    package let rows: Int
    /// Rows of op(B) a call sums over (K when the calls do not split it).
    package let depth: Int
    /// d W += d yᵀ · x (A transposed), else d x = d y · W.
    let transposeA: Bool

    /// The plan for a product op(A) [M, K] · op(B) [K, N] (nil: one blocked call a part), on OpenBLAS's
    /// cores with small-matrix kernels (`smallKernels`; the tests run the grid on any core).
    package init?(transposeA: Bool, transposeB: Bool, n: Int, k: Int, smallKernels: Bool = smallKernelProducts) {
        guard smallKernels, !transposeB, n > 0, k > 0 else { return nil }
        self.transposeA = transposeA
        let limit = openBLASSmallProductLimit
        if transposeA {
            // W's gradient in blocks of its rows, each summed over the tokens a slice at a time.
            rows = smallKernelBlockRows
            depth = limit / (rows * n) / 8 * 8
            guard depth >= smallKernelShortestDepth, k >= smallKernelFewestSummedRows else { return nil }
        } else if limit / (n * k) >= 8 {
            // Whole rows of d x: as many as the limit allows, in multiples of 8.
            rows = limit / (n * k) / 8 * 8
            depth = k
        } else {
            // A long K (the head's vocabulary): 16 rows, summed a slice of K at a time.
            rows = 16
            depth = limit / (rows * n) / 8 * 8
            guard depth >= smallKernelShortestDepth else { return nil }
        }
    }

    package func run(m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        Compute.parallel((m + rows - 1) / rows) { part in
            let start = part * rows, count = min(rows, m - start)
            for depthStart in stride(from: 0, to: k, by: depth) {
                // op(A)'s rows start..<start + count and columns depthStart..<: rows of A, or columns when transposed.
                let aStart = transposeA ? a + depthStart * lda + start : a + start * lda + depthStart
                cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, CblasNoTrans, Int32(count), Int32(n),
                            Int32(min(depth, k - depthStart)), alpha, aStart, Int32(lda), b + depthStart * ldb, Int32(ldb),
                            depthStart == 0 ? beta : 1, c + start * ldc, Int32(ldc))
            }
        }
    }
}

/// Whether OpenBLAS's cores have small-matrix kernels for single precision (its AVX-512 ones in 0.3.21).
package let smallKernelProducts = BLASKernels.avx512Cores.contains(BLASKernels.coreName)

/// Rows of W's gradient a small-kernel part holds: 64 gives `tiny`'s 128-row products two parts.
let smallKernelBlockRows = 64

/// The fewest rows of op(B) a small-kernel call sums over when K is split: fewer read and write C too often.
let smallKernelShortestDepth = 32

/// The fewest rows a W's gradient must sum over to take the plan: over fewer, one blocked call reads and
/// writes C once where the plan does so at every call (the LM head's d W, over a chunk of 256 rows: 1.03–1.10×
/// the time in blocks of 64, C harness).
let smallKernelFewestSummedRows = 512

/// Runs `body` over the parts of 0..<m that a product of M × N × K splits into over the cores (bounds at
/// OpenBLAS's row groups, no part inside its small-matrix kernel), or over 0..<m at once.
private func forEachProductPart(m: Int, n: Int, k: Int, _ body: (Range<Int>) -> Void) {
    var parts = min(Compute.threads * Compute.productPartsPerThread, m / max(minimumRowsPerThread, openBLASRowGroup))
    // A part's bounds move to a row group by up to a group's rows: its smallest must stay above the limit.
    while parts > 1 && (m / parts - openBLASRowGroup) * n * k <= openBLASSmallProductLimit { parts -= 1 }
    guard parts > 1 else { return body(0..<m) }
    Compute.parallel(parts) { part in body(alignedPart(part, of: parts, splitting: m)) }
}

/// Products of at most this many rows (decoding: one token, or a few sequences together) are
/// `ck_linear_f32`'s, which reads each weight once for all rows; larger ones OpenBLAS's sgemm.
let decodingRows = 32

/// y[N, out] = x[N, in] · W[out, in]ᵀ (overwrites y, or adds when `accumulate`) with row-wise passes that
/// ride in the product's parallel parts: `before` prepares a part's rows of the input ahead of the part of
/// the product that reads them, `after` finishes the same rows of the output behind it, on the same thread.
/// An output row depends on its input row alone, so a part needs no other part's rows: one hand-off between
/// the cores where three took turns (a norm, the product, a rotation), and the rows still in cache. Each
/// pass must give a row the same bits on any range of rows. A decoding step's few rows run them whole.
func linearForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                   rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false,
                   before: (Range<Int>) -> Void, after: (Range<Int>) -> Void) {
    guard rows > decodingRows else {
        before(0..<rows)
        linearForward(y, x, weight, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate)
        return after(0..<rows)
    }
    forEachProductPart(m: rows, n: outFeatures, k: inFeatures) { part in
        before(part)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(part.count), Int32(outFeatures), Int32(inFeatures), 1,
                    x + part.lowerBound * inFeatures, Int32(inFeatures), weight, Int32(inFeatures), accumulate ? 1 : 0,
                    y + part.lowerBound * outFeatures, Int32(outFeatures))
        after(part)
    }
}

/// y[N, out] = x[N, in] · W[out, in]ᵀ  (overwrites y, or adds when `accumulate`).
@inline(__always)
func linearForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                   rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
    if rows <= decodingRows {
        // A decoding step (one token, or a few sequences decoded together): our own product, which reads
        // each weight once for all the rows; OpenBLAS's sgemv ran one row at a quarter of our bf16
        // kernel's speed, and its sgemm packed the whole weight matrix again at each call (f32gemv.c).
        splitDecodingOutputs(outFeatures) { outputs in
            ck_linear_f32(y + outputs.lowerBound, outFeatures, x, rows, weight + outputs.lowerBound * inFeatures, inFeatures,
                          outputs.count, accumulate ? 1 : 0)
        }
        return
    }
    sgemm(transposeA: false, transposeB: true, m: rows, n: outFeatures, k: inFeatures, alpha: 1, a: x, lda: inFeatures,
          b: weight, ldb: inFeatures, beta: accumulate ? 1 : 0, c: y, ldc: outFeatures)
}

/// y[N, out] = x[N, in] · W[out, in]ᵀ with W as 16-bit floats (`format`: a `ck_linear_half` code), for
/// decoding with `DecodingWeights`; overwrites y, or adds when `accumulate`.
func linearForwardHalf(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<UInt16>,
                       format: Int32, rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
    splitDecodingOutputs(outFeatures) { outputs in
        ck_linear_half(y + outputs.lowerBound, outFeatures, x, weight + outputs.lowerBound * inFeatures, format,
                       rows, inFeatures, outputs.count, accumulate ? 1 : 0)
    }
}

/// y[N, out] = x[N, in] · W[out, in]ᵀ with W in Q8_0 (quants [out, in], scales [out, in / 32]), for
/// decoding with `DecodingWeights`; overwrites y, or adds when `accumulate`.
func linearForwardQ8_0(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ quants: UnsafePointer<Int8>,
                       scales: UnsafePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
    let blocks = inFeatures / Q8_0.blockSize
    splitDecodingOutputs(outFeatures) { outputs in
        ck_linear_q8_0(y + outputs.lowerBound, outFeatures, x, quants + outputs.lowerBound * inFeatures,
                       scales + outputs.lowerBound * blocks, rows, inFeatures, outputs.count, accumulate ? 1 : 0)
    }
}

/// Runs `product` over the output features 0..<count of a decoding step, split over the cores (at
/// least `minimumRowsPerThread` rows each, bounds at multiples of 16: our kernels' outputs do not depend
/// on the split, and each part keeps whole groups of four rows).
@inline(__always)
private func splitDecodingOutputs(_ count: Int, _ product: (Range<Int>) -> Void) {
    let parts = min(Compute.threads, count / minimumRowsPerThread)
    guard parts > 1 else { return product(0..<count) }
    Compute.parallel(parts) { part in product(alignedPart(part, of: parts, splitting: count, alignment: 16)) }
}

/// Rows at whose multiples a product may be split with every row in the same group as in the whole:
/// OpenBLAS works on rows in groups (16 in its AVX-512 kernels, 24 in its Haswell and Zen ones, measured)
/// and sums a last, partial group in another order; any other core type gets 48, a multiple of both (its
/// SSE3 "Prescott" kernels pass the test with it). Splits at multiples of 16 changed a few percent of the
/// outputs' last bits under the Haswell kernels (`testProductPartsGiveBitwiseTheSameResult`).
let openBLASRowGroup: Int = {
    let core = BLASKernels.coreName
    return BLASKernels.avx512Cores.contains(core) ? 16 : ["Haswell", "Zen"].contains(core) ? 24 : 48
}()

/// Part `part` of 0..<count split into `parts` nearly equal ranges whose inner bounds are the multiples
/// of `alignment` nearest to equal shares (count ≥ alignment·parts), so that with OpenBLAS's row groups a
/// split product is bitwise the whole one.
func alignedPart(_ part: Int, of parts: Int, splitting count: Int, alignment: Int = openBLASRowGroup) -> Range<Int> {
    func bound(_ index: Int) -> Int {
        index == parts ? count : (count * index / parts + alignment / 2) / alignment * alignment
    }
    return bound(part)..<bound(part + 1)
}

/// Accumulates dx[N, in] += dy[N, out] · W[out, in] (or overwrites dx, `overwritingDx`) and
/// dW[out, in] += dy[N, out]ᵀ · x[N, in]. Either output may be nil (a frozen weight, or an input that
/// needs no gradient).
@inline(__always)
func linearBackward(dx: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                    dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                    rows: Int, inFeatures: Int, outFeatures: Int, overwritingDx: Bool = false) {
    if let dx {
        sgemm(transposeA: false, transposeB: false, m: rows, n: inFeatures, k: outFeatures, alpha: 1, a: dy, lda: outFeatures,
              b: weight, ldb: inFeatures, beta: overwritingDx ? 0 : 1, c: dx, ldc: inFeatures)
    }
    if let dWeight {
        sgemm(transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: rows, alpha: 1, a: dy, lda: outFeatures,
              b: x, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
    }
}

/// Runs `body(i)` for i in 0..<count on the machine's cores. Work is split into contiguous chunks so
/// that results written per index never race.
func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    let workers = min(Compute.threads, count)
    if workers <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    Compute.parallel(workers) { worker in
        let start = count * worker / workers, end = count * (worker + 1) / workers
        for i in start..<end { body(i) }
    }
}

/// Runs `body` on contiguous ranges that cover 0..<rows, up to `rowRangesPerThread` per core with at least
/// `minimumRows` rows each, claimed one at a time: for row-wise passes (norms, rotations, activations)
/// whose rows are independent, so the split does not change a bit of the result.
func forEachRowRange(_ rows: Int, minimumRows: Int = 16, _ body: (Range<Int>) -> Void) {
    let parts = Compute.threads > 1 ? max(1, min(Compute.threads * rowRangesPerThread, rows / minimumRows)) : 1
    guard parts > 1 else { return body(0..<rows) }
    Compute.parallel(parts) { part in body((rows * part / parts)..<(rows * (part + 1) / parts)) }
}

/// Ranges a thread's share of a row-wise pass is cut into: one range a thread left the first to finish
/// waiting for the other (on a shared machine the two halves of a pass rarely take the same time), and a
/// range costs only its claim.
let rowRangesPerThread = 4

/// Sets `count` floats from `buffer` to zero, split over the cores: a step's gradients are megabytes,
/// and one core's memset kept the other waiting.
func zeroInParallel(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
    forEachRowRange(count, minimumRows: 1 << 16) { range in
        (buffer + range.lowerBound).update(repeating: 0, count: range.count)
    }
}

/// Thread settings shared by the kernels.
public enum Compute {
    /// Threads used by our own loops, the products' split included (defaults to the number of cores).
    /// OpenBLAS itself always runs on one thread (see `sgemm`).
    nonisolated(unsafe) public static var threads: Int = {
        openblas_set_num_threads(1)
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Sets the threads for our loops and products.
    public static func setThreads(_ count: Int) {
        // A safety net under the commands' own checks: Int32 conversion and per-thread buffers stay sane.
        threads = min(max(1, count), 1024)
        openblas_set_num_threads(1)
    }

    /// Runs `body` with `count` threads, then restores the setting.
    public static func withThreads<R>(_ count: Int, _ body: () throws -> R) rethrows -> R {
        // Decoding calls this at every step (`DecodingThreads`): nothing to change, nothing to do.
        guard count != threads else { return try body() }
        let saved = threads
        setThreads(count)
        defer { setThreads(saved) }
        return try body()
    }
}
