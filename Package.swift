// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "distill",
    products: [
        // MARK: public API
        .library(name: "Distill", targets: ["Distill"]),
        .executable(name: "distill", targets: ["DistillCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: C shims
        /// extern "C" wrapper over Debian's libsentencepiece (Swift's C++ interop cannot import its processor).
        .target(
            name: "CSentencePiece",
            linkerSettings: [.linkedLibrary("sentencepiece"), .linkedLibrary("sentencepiece_train"), .linkedLibrary("stdc++")]
        ),
        /// OpenBLAS through pkg-config: every matrix product goes through cblas_sgemm / cblas_sgemv.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        /// Element-wise hot loops compiled with target_clones, so they get AVX2/AVX-512 on a baseline build.
        .target(name: "CKernels"),
        /// Open MPI reached through dlopen at run time (data-parallel runs under mpirun): the build and a
        /// plain run need no MPI installed.
        .target(name: "CMPI", linkerSettings: [.linkedLibrary("dl")]),

        // MARK: library and executable
        .target(
            name: "Distill",
            dependencies: ["CSentencePiece", "CBLAS", "CKernels", "CMPI"]
        ),
        .executableTarget(
            name: "DistillCLI",
            dependencies: ["Distill", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        // MARK: tests
        .testTarget(
            name: "DistillTests",
            dependencies: ["Distill", "CKernels"],
            resources: [.copy("Fixtures"), .copy("FuzzSeeds")]
        ),
    ],
    swiftLanguageModes: [.v5],
    cxxLanguageStandard: .cxx17
)
