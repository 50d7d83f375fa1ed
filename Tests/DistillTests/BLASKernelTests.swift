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
}
