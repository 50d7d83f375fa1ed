import Distill
import Foundation
import XCTest

/// distill runs the OpenBLAS kernels the CPU can run, even where OpenBLAS does not recognise the CPU.
final class BLASKernelTests: XCTestCase {
    /// The command line starts again with a better `OPENBLAS_CORETYPE` when OpenBLAS chose weaker
    /// kernels than the CPU runs, and keeps a user's own choice.
    func testTheCommandLineRunsTheKernelsTheCPUCanRun() throws {
        try skipUnlessDistillIsBuilt()
        let executable = Self.distillExecutable
        let report = try runProcess(executable, ["bench", "--preset", "tiny", "--repeats", "1", "--json"],
                                    environment: ProcessInfo.processInfo.environment.filter { $0.key != "OPENBLAS_CORETYPE" })
        XCTAssertEqual(report.status, 0, report.transcript)
        let json = try XCTUnwrap(report.output.split(separator: "\n").last { $0.hasPrefix("{") })
        let figures = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let core = try XCTUnwrap(figures["blasCore"] as? String)
        // The child inherits this process's DISTILL_ISA, so it runs the same bodies.
        XCTAssertEqual(figures["ownKernels"] as? String, OwnKernels.instructionSet)
        // Whatever OpenBLAS chose by itself, the command line runs kernels as good as the CPU can run.
        XCTAssertNil(BLASKernels.betterCoreType(than: core), "the command line ran \(core)")
        for key in ["inferenceTokensPerSecond", "generationOneThreadTokensPerSecond", "peakResidentMBByWorkload"] {
            XCTAssertNotNil(figures[key], key)
        }
        // The sgemm rate is measured after the workloads, its memory apart from theirs.
        let peaks = try XCTUnwrap(figures["peakResidentMBByWorkload"] as? [String: Double])
        XCTAssertGreaterThan(peaks["sgemm probe"] ?? 0, 0)
        XCTAssertGreaterThan(figures["sgemmGFLOPS"] as? Double ?? 0, 0)
        let reducedGeneration = try XCTUnwrap(figures["generationTokensPerSecondByReducedWeights"] as? [String: Double])
        XCTAssertEqual(Set(reducedGeneration.keys), ["bf16", "f16", "q8_0", "bf16 1 thread", "f16 1 thread", "q8_0 1 thread"])
        XCTAssertTrue(reducedGeneration.values.allSatisfy { $0 > 0 }, "\(reducedGeneration)")
        // The cross-tokenizer step with each loss, beside the same student's CE-only step, on synthetic text
        // whose two tokenizations align almost everywhere.
        let crossTokenizer = try XCTUnwrap(figures["crossTokenizerTokensPerSecond"] as? [String: Double])
        XCTAssertEqual(Set(crossTokenizer.keys), ["alm", "uld", "ce"])
        XCTAssertTrue(crossTokenizer.values.allSatisfy { $0 > 0 }, "\(crossTokenizer)")
        XCTAssertGreaterThan(try XCTUnwrap(figures["crossTokenizerAlignedBytes"] as? Double), 0.9)

        XCTAssertNil(BLASKernels.betterCoreType(than: "SkylakeX"), "no x86 core beats SkylakeX here")
        // Every machine this project meets has AVX2, so OpenBLAS's SSE3 kernels always have a better choice.
        XCTAssertNotNil(BLASKernels.betterCoreType(than: "Prescott"))

        // A user's setting is kept, and bench's first line (as the run report's machine line) and a note
        // on stderr say that this CPU runs better kernels.
        let kept = try runProcess(executable, ["bench", "--preset", "tiny", "--repeats", "1"],
                                  environment: ProcessInfo.processInfo.environment.merging(["OPENBLAS_CORETYPE": "Prescott"]) { $1 })
        let better = try XCTUnwrap(BLASKernels.betterCoreType(than: "Prescott"))
        XCTAssertTrue(kept.output.contains("OpenBLAS Prescott kernels (OPENBLAS_CORETYPE=Prescott; this CPU runs its \(better) kernels)"),
                      kept.transcript)
        XCTAssertTrue(kept.errors.contains("note: OPENBLAS_CORETYPE=Prescott holds OpenBLAS to its Prescott kernels"), kept.transcript)
    }

    /// `DISTILL_ISA` caps our own kernels' instruction set; bench names the path taken; a value that names
    /// no instruction set is one line and exit 2.
    func testDistillISACapsOurKernelsAndBenchNamesThePath() throws {
        try skipUnlessDistillIsBuilt()
        let executable = Self.distillExecutable
        let environment = ProcessInfo.processInfo.environment
        let capped = try runProcess(executable, ["bench", "--preset", "tiny", "--repeats", "1"],
                                    environment: environment.merging(["DISTILL_ISA": "baseline"]) { $1 })
        XCTAssertEqual(capped.status, 0, capped.transcript)
        XCTAssertTrue(capped.output.contains("own kernels baseline (DISTILL_ISA=baseline)"), capped.transcript)

        let wrong = try runProcess(executable, ["bench", "--preset", "tiny"],
                                   environment: environment.merging(["DISTILL_ISA": "sse9"]) { $1 })
        XCTAssertEqual(wrong.status, 2, wrong.transcript)
        XCTAssertEqual(wrong.errors.split(separator: "\n").count, 1, wrong.transcript)
        XCTAssertTrue(wrong.errors.contains("DISTILL_ISA=sse9 names no instruction set"), wrong.transcript)
    }

    /// The backward products on OpenBLAS's small-matrix kernels (`SmallKernelPlan`): each within the bound of
    /// float rounding of a double-precision product on shapes whose rows, depth and blocks fall off the grid, with
    /// leading dimensions wider than the matrices, alpha ≠ 1 and beta 0 and 1; and bitwise the same on 1, 2
    /// and 3 threads. Run on any core: where OpenBLAS has no small-matrix kernel the calls are blocked ones,
    /// and the grid is what is checked.
    func testSmallKernelProductsMatchADoublePrecisionProductOnAnyThreadCount() throws {
        // (transposeA, m, n, k): d x = d y · W (rows 24 + 24 + 24 + 5, and 80 + 80 + 43; rows 16 + 16 + 8 over
        // depth 208 × 3 + 76); d W += d yᵀ · x (blocks 64 + 64 + 22 over depth 152 × 4 + 5, and 64 + 6 over
        // 416 + 416 + 168).
        for (transposeA, m, n, k) in [(false, 77, 40, 1000), (false, 203, 128, 96), (false, 40, 300, 700), (true, 150, 100, 613),
                                      (true, 70, 37, 1000)] {
            let plan = try XCTUnwrap(SmallKernelPlan(transposeA: transposeA, transposeB: false, n: n, k: k, smallKernels: true))
            let lda = transposeA ? m + 3 : k + 5, ldb = n + 2, ldc = n + 1
            var random = SeededRandom(seed: UInt64(m * n + k))
            let a = (0..<(transposeA ? k : m) * lda).map { _ in random.nextGaussian() }
            let b = (0..<k * ldb).map { _ in random.nextGaussian() }
            let start = (0..<m * ldc).map { _ in random.nextGaussian() }
            for beta: Float in [0, 1] {
                var once: [Float]?
                for threads in [1, 2, 3] {
                    var c = start
                    Compute.withThreads(threads) {
                        plan.run(m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &c, ldc: ldc)
                    }
                    if let once {
                        XCTAssertEqual(zip(c, once).filter { $0 != $1 }.count, 0, "\(m)×\(n)×\(k) on \(threads) threads")
                        continue
                    }
                    once = c
                    let worst = worstRelativeError(c, ldc: ldc, m: m, n: n, k: k, base: { Double(beta) * Double(start[$0 * ldc + $1]) }) {
                        0.5 * Double(transposeA ? a[$2 * lda + $0] : a[$0 * lda + $2]) * Double(b[$2 * ldb + $1])
                    }
                    // A float sum of k + 1 terms in any order errs by at most about k·ε of the sum of their sizes;
                    // a part misplaced errs by the size of its values (0.2 and more).
                    XCTAssertLessThan(worst, Double(k + 1) * Double(Float.ulpOfOne), "\(transposeA ? "dW" : "dx") \(m)×\(n)×\(k), beta \(beta)")
                    // Past the matrix, within the leading dimension: untouched.
                    XCTAssertEqual(c[ldc - 1], start[ldc - 1])
                }
            }
        }
        // `tiny`'s backward products take the plan on OpenBLAS's AVX-512 cores, the head's d x (K = 2,048) over
        // slices of K; its forward products (x · Wᵀ) and the head's d W (a chunk's 256 rows) do not.
        let plan = { (transposeA: Bool, n: Int, k: Int) in
            SmallKernelPlan(transposeA: transposeA, transposeB: false, n: n, k: k, smallKernels: true).map { [$0.rows, $0.depth] }
        }
        XCTAssertEqual(plan(false, 128, 384), [16, 384])
        XCTAssertEqual(plan(false, 128, 2048), [16, 488])
        XCTAssertEqual(plan(true, 128, 1024), [64, 120])
        XCTAssertNil(SmallKernelPlan(transposeA: false, transposeB: true, n: 384, k: 128, smallKernels: true))
        XCTAssertNil(SmallKernelPlan(transposeA: true, transposeB: false, n: 688, k: 2048, smallKernels: true))
        XCTAssertNil(SmallKernelPlan(transposeA: true, transposeB: false, n: 128, k: 256, smallKernels: true), "the head's d W")
        XCTAssertNil(SmallKernelPlan(transposeA: false, transposeB: false, n: 128, k: 384, smallKernels: false))
    }

    /// The largest |c − exact| / (|base| + Σ |terms|) over C [m, n] (rows `ldc` apart), where exact =
    /// base(i, j) + Σ_p term(i, j, p) in double precision.
    private func worstRelativeError(_ c: [Float], ldc: Int, m: Int, n: Int, k: Int, base: (Int, Int) -> Double,
                                    term: (Int, Int, Int) -> Double) -> Double {
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var exact = base(i, j), size = abs(exact)
                for p in 0..<k {
                    let value = term(i, j, p)
                    exact += value
                    size += abs(value)
                }
                worst = max(worst, abs(Double(c[i * ldc + j]) - exact) / size)
            }
        }
        return worst
    }
}
