import CBLAS

/// Which kernels OpenBLAS runs. It picks them by CPU model when it loads, unless `OPENBLAS_CORETYPE`
/// says otherwise; the choice matters (on this project's AMD machine its AVX-512 "Cooperlake" kernels
/// run sgemm at about 450 GFLOP/s, its AVX2 "Haswell" ones at about 240), so the benchmark reports it.
public enum BLASKernels {
    /// The core type OpenBLAS chose at load time, e.g. "Haswell" or "Cooperlake".
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}
