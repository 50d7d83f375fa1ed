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
        // In this (test) process OpenBLAS chose by itself; the command line must end no worse.
        if let better = BLASKernels.betterCoreType {
            XCTAssertEqual(core, better, "OpenBLAS chose \(BLASKernels.coreName) in the tests; the command line ran \(core)")
        } else {
            XCTAssertEqual(core, BLASKernels.coreName)
        }
        for key in ["inferenceTokensPerSecond", "generationOneThreadTokensPerSecond", "peakResidentMBByWorkload"] {
            XCTAssertNotNil(figures[key], key)
        }

        let kept = try runProcess(executable, ["bench", "--preset", "tiny", "--repeats", "1", "--json"],
                                  environment: ProcessInfo.processInfo.environment.merging(["OPENBLAS_CORETYPE": "Prescott"]) { $1 })
        XCTAssertTrue(kept.output.contains(#""blasCore":"Prescott""#), kept.transcript)
    }
}
