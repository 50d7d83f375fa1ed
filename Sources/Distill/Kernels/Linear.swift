import CBLAS
import Dispatch

// Matrix products of the model, all through OpenBLAS. Weights use PyTorch's nn.Linear layout
// W[out, in], so y = x · Wᵀ.

/// y[N, out] = x[N, in] · W[out, in]ᵀ  (overwrites y, or adds when `accumulate`).
@inline(__always)
func linearForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                   rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
    if rows == 1 {
        // One row (a decoding step) is a matrix–vector product; OpenBLAS's sgemm does not switch to gemv.
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), 1, weight, Int32(inFeatures),
                    x, 1, accumulate ? 1 : 0, y, 1)
        return
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outFeatures), Int32(inFeatures),
                1, x, Int32(inFeatures), weight, Int32(inFeatures), accumulate ? 1 : 0, y, Int32(outFeatures))
}

/// Accumulates dx[N, in] += dy[N, out] · W[out, in] and dW[out, in] += dy[N, out]ᵀ · x[N, in].
/// Either output may be nil (a frozen weight, or an input that needs no gradient).
@inline(__always)
func linearBackward(dx: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                    dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                    rows: Int, inFeatures: Int, outFeatures: Int) {
    if let dx {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(inFeatures), Int32(outFeatures),
                    1, dy, Int32(outFeatures), weight, Int32(inFeatures), 1, dx, Int32(inFeatures))
    }
    if let dWeight {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), Int32(rows),
                    1, dy, Int32(outFeatures), x, Int32(inFeatures), 1, dWeight, Int32(inFeatures))
    }
}

/// Runs `body(i)` for i in 0..<count on the machine's cores. Work is split into contiguous chunks so
/// that results written per index never race; OpenBLAS is set to one thread meanwhile, so that the two
/// levels of threads do not fight over the cores.
func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    let workers = min(Compute.threads, count)
    if workers <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    Compute.withSingleThreadedBLAS {
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let start = count * worker / workers, end = count * (worker + 1) / workers
            for i in start..<end { body(i) }
        }
    }
}

/// Thread settings shared by the kernels.
public enum Compute {
    /// Threads used by our own loops and by OpenBLAS (defaults to the number of cores).
    nonisolated(unsafe) public static var threads: Int = {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        openblas_set_num_threads(Int32(cores))
        return cores
    }()

    /// Sets the threads for our loops and OpenBLAS alike.
    public static func setThreads(_ count: Int) {
        // A safety net under the commands' own checks: Int32 conversion and per-thread buffers stay sane.
        threads = min(max(1, count), 1024)
        openblas_set_num_threads(Int32(threads))
    }

    /// Runs `body` with `count` threads for our loops and OpenBLAS, then restores the setting.
    public static func withThreads<R>(_ count: Int, _ body: () throws -> R) rethrows -> R {
        let saved = threads
        setThreads(count)
        defer { setThreads(saved) }
        return try body()
    }

    static func withSingleThreadedBLAS<R>(_ body: () -> R) -> R {
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threads)) }
        return body()
    }
}

import Foundation
