import Foundation

/// FNV-1a, 64-bit: a fast, stable fingerprint (not a cryptographic hash) of token files, tokenizers,
/// weights, caches and run stages.
let fnvOffsetBasis: UInt64 = 0xCBF2_9CE4_8422_2325

/// FNV-1a 64 of `bytes`, continued from `hash` (start from `fnvOffsetBasis`), so that a file written in
/// pieces is hashed as it goes.
func fnv1a64(continuing hash: UInt64 = fnvOffsetBasis, _ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var hash = hash
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return hash
}

/// FNV-1a 64 of `data`.
func fnv1a64(_ data: Data) -> UInt64 {
    data.withUnsafeBytes { fnv1a64($0) }
}
