import CKernels

/// How a model's weight matrices are stored: as f32, as a 16-bit float, or in llama.cpp's Q8_0 (8-bit
/// integers with one f16 scale per block of 32 weights of a row). Norm gains always stay f32.
public enum WeightFormat: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0

    /// The float format of the matrices, or nil for Q8_0.
    public var floatFormat: FloatFormat? {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return nil
        }
    }

    public init(_ format: FloatFormat) {
        switch format {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        }
    }
}

/// A reduced copy of a model's weight matrices for decoding (`KVCacheSession(model:precision:)`): bf16,
/// f16 or Q8_0. A decoding step reads every weight once and does two flops with it, so its speed is that
/// of the memory: half the bytes (16-bit) make it up to twice as fast, a little over a quarter (Q8_0)
/// faster still. Opt-in: the logits are those of the model with its matrices rounded (products and sums
/// stay float), not those of the f32 model. Norm gains stay f32. The copy is taken once; later changes
/// to the model's weights do not reach it.
public final class DecodingWeights {
    public let format: WeightFormat

    /// One weight matrix [rows, columns] as stored: 16-bit bits, or Q8_0 quants with their scales (the
    /// half-precision scales widened to float, [rows, columns / 32]).
    enum Matrix {
        case half(UnsafeMutableBufferPointer<UInt16>, bf16: Bool)
        case q8_0(quants: UnsafeMutableBufferPointer<Int8>, scales: UnsafeMutableBufferPointer<Float>)
    }

    /// The stored matrices by their offset in the model's layout, with their shape.
    private var matrices: [Int: (matrix: Matrix, rows: Int, columns: Int)] = [:]

    /// Stores `model`'s weight matrices as `format`, which must not be f32 (matrices whose rows are not a
    /// multiple of 32 go to f16 under Q8_0, as in llama.cpp); refuses when the copy would not fit in this
    /// machine's memory beside the model.
    public init(model: LlamaModel, format: WeightFormat) throws {
        precondition(format != .f32, "DecodingWeights holds reduced weights")
        self.format = format
        let shapes = Self.matrixShapes(model)
        let copyBytes = shapes.reduce(0.0) { total, shape in
            let count = Double(shape.rows * shape.columns)
            return total + (format == .q8_0 && Q8_0.fits(columns: shape.columns) ? count * 1.125 : count * 2)
        }
        let modelBytes = 4 * Double(model.parameters.count)
        guard modelBytes + copyBytes <= MachineMemory.usableFraction * MachineMemory.physicalBytes else {
            throw ModelError.insufficientMemory("a \(format.rawValue) copy of the weights for decoding needs \(MachineMemory.describe(copyBytes)) beside the model's \(MachineMemory.describe(modelBytes)); this machine has \(MachineMemory.describe(MachineMemory.physicalBytes)): decode from the f32 weights instead")
        }
        for shape in shapes {
            let values = UnsafeBufferPointer(rebasing: model.parameters[shape.offset..<(shape.offset + shape.rows * shape.columns)])
            matrices[shape.offset] = (Self.store(values, columns: shape.columns, as: format), shape.rows, shape.columns)
        }
    }

    deinit {
        for (matrix, _, _) in matrices.values {
            switch matrix {
            case .half(let bits, _): bits.deallocate()
            case .q8_0(let quants, let scales):
                quants.deallocate()
                scales.deallocate()
            }
        }
    }

    /// The weight matrices decoding reads: offset in the layout, rows and columns (the tied head once).
    private static func matrixShapes(_ model: LlamaModel) -> [(offset: Int, rows: Int, columns: Int)] {
        let config = model.config, layout = model.layout, c = config.hiddenSize, f = config.intermediateSize
        let qkvRows = c + 2 * config.numKeyValueHeads * config.headDim
        var shapes = layout.blocks.flatMap { block in
            [(block.qkv, qkvRows, c), (block.output, c, c), (block.gateUp, 2 * f, c), (block.down, c, f)]
        }
        shapes.append((layout.embedding, config.vocabSize, c))
        if layout.lmHead != layout.embedding { shapes.append((layout.lmHead, config.vocabSize, c)) }
        return shapes.map { (offset: $0.0, rows: $0.1, columns: $0.2) }
    }

    private static func store(_ values: UnsafeBufferPointer<Float>, columns: Int, as format: WeightFormat) -> Matrix {
        if format == .q8_0 && Q8_0.fits(columns: columns) {
            let quants = UnsafeMutableBufferPointer<Int8>.allocate(capacity: values.count)
            let scales = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count / Q8_0.blockSize)
            for block in 0..<scales.count {
                let range = (block * Q8_0.blockSize)..<((block + 1) * Q8_0.blockSize)
                let bits = Q8_0.quantize(UnsafeBufferPointer(rebasing: values[range]), into: quants.baseAddress! + range.lowerBound)
                scales[block] = ReducedPrecision.float(fromF16: bits)
            }
            return .q8_0(quants: quants, scales: scales)
        }
        let bf16 = format == .bf16
        let round = bf16 ? ReducedPrecision.bf16(from:) : ReducedPrecision.f16(from:)
        let bits = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: values.count)
        for index in values.indices { bits[index] = round(values[index]) }
        return .half(bits, bf16: bf16)
    }

    private func matrix(at offset: Int) -> (matrix: Matrix, rows: Int, columns: Int) {
        guard let stored = matrices[offset] else { preconditionFailure("no weight matrix at offset \(offset)") }
        return stored
    }

    /// Writes row `row` of the matrix at `offset` of the layout, as stored, widened to float into `values`
    /// (an embedding lookup).
    func widenRow(_ row: Int, ofMatrixAt offset: Int, into values: UnsafeMutablePointer<Float>) {
        let (matrix, _, columns) = matrix(at: offset)
        switch matrix {
        case .half(let bits, let bf16):
            let widen = bf16 ? ReducedPrecision.float(fromBF16:) : ReducedPrecision.float(fromF16:)
            for i in 0..<columns { values[i] = widen(bits[row * columns + i]) }
        case .q8_0(let quants, let scales):
            for i in 0..<columns {
                values[i] = scales[(row * columns + i) / Q8_0.blockSize] * Float(quants[row * columns + i])
            }
        }
    }

    /// y[N, out] = x[N, in] · Wᵀ with W the stored matrix at `offset` of the layout (overwrites y, or
    /// adds when `accumulate`).
    func project(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, matrixAt offset: Int, rows: Int,
                 inFeatures: Int, outFeatures: Int, accumulate: Bool) {
        let (matrix, _, columns) = matrix(at: offset)
        precondition(columns == inFeatures, "the stored matrix has \(columns) columns, not \(inFeatures)")
        switch matrix {
        case .half(let bits, let bf16):
            linearForwardHalf(y, x, bits.baseAddress!, format: bf16 ? Int32(CK_HALF_BF16) : Int32(CK_HALF_F16), rows: rows, inFeatures: inFeatures,
                              outFeatures: outFeatures, accumulate: accumulate)
        case .q8_0(let quants, let scales):
            linearForwardQ8_0(y, x, quants.baseAddress!, scales: scales.baseAddress!, rows: rows, inFeatures: inFeatures,
                              outFeatures: outFeatures, accumulate: accumulate)
        }
    }

    /// The model's parameters with every matrix replaced by its stored values, widened (norm gains as
    /// they are): a model with these weights computes, in f32, what decoding from this copy computes.
    public func storedParameters(of model: LlamaModel) -> [Float] {
        var values = Array(model.parameters)
        for (offset, (_, rows, columns)) in matrices {
            values.withUnsafeMutableBufferPointer { buffer in
                for row in 0..<rows { widenRow(row, ofMatrixAt: offset, into: buffer.baseAddress! + offset + row * columns) }
            }
        }
        return values
    }
}

extension LlamaModel {
    /// This model with its weight matrices rounded to `format` as decoding from that format reads them
    /// (`DecodingWeights`), in f32: what `eval` scores to show what bf16, f16 or Q8_0 costs in
    /// perplexity. `.f32` returns the model itself.
    public func rounded(to format: WeightFormat) throws -> LlamaModel {
        guard format != .f32 else { return self }
        let stored = try DecodingWeights(model: self, format: format).storedParameters(of: self)
        return try stored.withUnsafeBufferPointer { try LlamaModel(config: config, parameters: $0) }
    }
}
