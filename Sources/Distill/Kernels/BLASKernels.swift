import CBLAS
import CKernels
import Foundation

/// Which kernels OpenBLAS runs. It picks them by CPU model when it loads, unless `OPENBLAS_CORETYPE`
/// says otherwise; the choice matters (on this project's AMD machine its AVX-512 "Cooperlake" kernels
/// run sgemm at about 450 GFLOP/s, its AVX2 "Haswell" ones at about 240), so the benchmark reports it.
public enum BLASKernels {
    /// The core type OpenBLAS chose at load time, e.g. "Haswell" or "Cooperlake".
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// OpenBLAS cores with AVX-512 kernels, and with AVX2 kernels (at least).
    static let avx512Cores: Set<String> = ["SkylakeX", "Cooperlake", "SapphireRapids"]
    static let avx2Cores: Set<String> = avx512Cores.union(["Haswell", "Zen", "SkylakeX"])

    /// The OpenBLAS core type this CPU can run that is better than the one OpenBLAS chose, if any.
    /// An OpenBLAS older than the CPU does not recognise it and falls back to its SSE3 "Prescott" kernels:
    /// Debian 12's 0.3.21 does so on Sapphire and Emerald Rapids Xeons, where its sgemm then runs at a
    /// third of the SkylakeX kernels' rate. OpenBLAS reads `OPENBLAS_CORETYPE` only when it loads, so the
    /// command line sets it and starts again (`DistillCommand.main`).
    public static var betterCoreType: String? { betterCoreType(than: coreName) }

    /// When the user's `OPENBLAS_CORETYPE` holds OpenBLAS to weaker kernels than this CPU runs (an
    /// AVX-512 CPU on "Haswell", say), one line saying so and what to do; nil otherwise. The setting is
    /// kept (the user may have a reason), but `bench` says what it costs.
    public static var weakerKernelsNote: String? {
        let environment = ProcessInfo.processInfo.environment
        guard let setting = environment["OPENBLAS_CORETYPE"], environment["DISTILL_CHOSE_OPENBLAS_CORETYPE"] == nil,
              let better = betterCoreType else { return nil }
        return "note: OPENBLAS_CORETYPE=\(setting) holds OpenBLAS to its \(coreName) kernels, but this CPU runs its \(better) ones, "
            + "which multiplied matrices about twice as fast on an AVX-512 machine (docs/performance.md): unset it to let OpenBLAS choose"
    }

    /// The OpenBLAS core type this CPU can run that is better than `chosen`, if any.
    public static func betterCoreType(than chosen: String) -> String? {
        if ck_cpu_has_avx512() != 0 && !avx512Cores.contains(chosen) { return "SkylakeX" }
        if ck_cpu_has_avx2() != 0 && !avx2Cores.contains(chosen) { return "Haswell" }
        return nil
    }
}

/// Which bodies our own kernels (`CKernels`) run: the CPU's best instruction set, unless the environment
/// variable `DISTILL_ISA` (`avx512`, `avx2` or `baseline`) caps it, so that one machine can run the
/// code paths of another.
public enum OwnKernels {
    static let names = [CK_ISA_BASELINE: "baseline", CK_ISA_AVX2: "avx2", CK_ISA_AVX512: "avx512"]

    /// The instruction set in force, e.g. "avx2".
    public static var instructionSet: String { names[Int(ck_isa_level())] ?? "baseline" }

    /// A `DISTILL_ISA` that names no instruction set, as one line saying what to do; nil when it is unset or valid.
    public static func environmentProblem(_ environment: [String: String]) -> String? {
        guard let value = environment["DISTILL_ISA"], ck_isa_parse(value) < 0 else { return nil }
        return "DISTILL_ISA=\(value) names no instruction set: use avx512, avx2 or baseline, or unset it"
    }
}

/// The kernel path a process takes, for `bench` and the report: OpenBLAS's core type and our own
/// kernels' instruction set, each with the variable that chose it when one did.
public enum KernelPath {
    public static var description: String {
        let environment = ProcessInfo.processInfo.environment
        // A setting that holds OpenBLAS below the CPU says so: the figures of a report or a bench are then
        // not what this machine can do.
        let core = environment["DISTILL_CHOSE_OPENBLAS_CORETYPE"] != nil ? " (chosen by distill for this CPU)"
            : environment["OPENBLAS_CORETYPE"].map { setting in
                BLASKernels.betterCoreType.map { " (OPENBLAS_CORETYPE=\(setting); this CPU runs its \($0) kernels)" }
                    ?? " (OPENBLAS_CORETYPE=\(setting))"
            } ?? ""
        let isa = environment["DISTILL_ISA"].map { " (DISTILL_ISA=\($0))" } ?? ""
        return "OpenBLAS \(BLASKernels.coreName) kernels\(core), own kernels \(OwnKernels.instructionSet)\(isa)"
    }
}
