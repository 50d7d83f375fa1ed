import CKernels

/// A 16-bit copy of a model's weights for decoding (`KVCacheSession(model:weights:)`). A decoding step
/// reads every weight once and does two flops with it, so its speed is that of the memory, and half
/// the bytes make it up to twice as fast. Opt-in: the logits are those of the model with its weights
/// rounded to `format` (products and sums stay float), not those of the f32 model. The copy is taken
/// once; later changes to the model's weights do not reach it.
public final class HalfPrecisionWeights {
    /// `.bf16` or `.f16`.
    public let format: FloatFormat
    /// The model's parameters rounded to `format` (nearest, ties to even), in its layout.  [P]
    let bits: UnsafeMutableBufferPointer<UInt16>

    /// Rounds `model`'s weights to `format`, which must be 16-bit; refuses when the copy would not fit
    /// in this machine's memory beside the model.
    public init(model: LlamaModel, format: FloatFormat) throws {
        precondition(format != .f32, "HalfPrecisionWeights holds 16-bit weights")
        let copyBytes = 2 * Double(model.parameters.count), modelBytes = 4 * Double(model.parameters.count)
        guard modelBytes + copyBytes <= MachineMemory.usableFraction * MachineMemory.physicalBytes else {
            throw ModelError.insufficientMemory("a \(format.rawValue) copy of the weights for decoding needs \(MachineMemory.describe(copyBytes)) beside the model's \(MachineMemory.describe(modelBytes)); this machine has \(MachineMemory.describe(MachineMemory.physicalBytes)): decode from the f32 weights instead")
        }
        self.format = format
        bits = .allocate(capacity: model.parameters.count)
        let round = format == .bf16 ? ReducedPrecision.bf16(from:) : ReducedPrecision.f16(from:)
        for (index, value) in model.parameters.enumerated() { bits[index] = round(value) }
    }

    deinit { bits.deallocate() }

    /// Writes the `count` weights from `offset` of the layout, widened to float, into `values`.
    func widen(at offset: Int, count: Int, into values: UnsafeMutablePointer<Float>) {
        let widen = format == .bf16 ? ReducedPrecision.float(fromBF16:) : ReducedPrecision.float(fromF16:)
        for i in 0..<count { values[i] = widen(bits[offset + i]) }
    }

    /// The format's code in `ck_linear_half`.
    var kernelFormat: Int32 { format == .bf16 ? Int32(CK_HALF_BF16) : Int32(CK_HALF_F16) }
}
