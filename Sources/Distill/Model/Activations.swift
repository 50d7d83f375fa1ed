/// The buffers of one forward/backward pass for a batch shape. Per-block buffers exist once per block
/// when a backward pass will follow, and once in all otherwise (a teacher keeps nothing).
final class Activations {
    let batch: Int, length: Int, perBlock: Bool
    private var allocations: [UnsafeMutablePointer<Float>] = []

    let tokens: UnsafeMutablePointer<Int32>          // [B·T]
    var residual: [UnsafeMutablePointer<Float>] = []  // L+1 × [B·T, C]: the stream before block l; the last is the output
    private var blocks: [BlockActivations] = []
    let finalNormed: UnsafeMutablePointer<Float>      // [B·T, C]
    let finalRstd: UnsafeMutablePointer<Float>        // [B·T]
    let logits: UnsafeMutablePointer<Float>           // [B·T, V]

    // Backward scratch, shared by all blocks.
    let dResidual: UnsafeMutablePointer<Float>        // [B·T, C]
    let scratchNormed: UnsafeMutablePointer<Float>    // [B·T, C]
    let dAttentionOut: UnsafeMutablePointer<Float>    // [B·T, C]
    let dQKV: UnsafeMutablePointer<Float>             // [B·T, C + 2·KVd]
    let dGateUp: UnsafeMutablePointer<Float>          // [B·T, 2F]
    let dSwiglu: UnsafeMutablePointer<Float>          // [B·T, F]
    let dScores: UnsafeMutablePointer<Float>          // [threads, T, T]

    init(config: LlamaConfig, batch: Int, length: Int, perBlock: Bool) {
        self.batch = batch
        self.length = length
        self.perBlock = perBlock
        let rows = batch * length, c = config.hiddenSize, f = config.intermediateSize
        let qkvWidth = c + 2 * config.numKeyValueHeads * config.headDim
        var allocations: [UnsafeMutablePointer<Float>] = []
        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
            let pointer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            pointer.initialize(repeating: 0, count: max(count, 1))
            allocations.append(pointer)
            return pointer
        }
        tokens = .allocate(capacity: rows)
        residual = (0...config.numHiddenLayers).map { _ in buffer(rows * c) }
        let distinctBlocks = perBlock ? config.numHiddenLayers : 1
        blocks = (0..<distinctBlocks).map { _ in
            BlockActivations(
                attentionNormed: buffer(rows * c), attentionRstd: buffer(rows), qkv: buffer(rows * qkvWidth),
                probabilities: buffer(batch * config.numAttentionHeads * length * length),
                attentionOut: buffer(rows * c), attentionResidual: buffer(rows * c),
                mlpNormed: buffer(rows * c), mlpRstd: buffer(rows), gateUp: buffer(rows * 2 * f), swiglu: buffer(rows * f))
        }
        finalNormed = buffer(rows * c)
        finalRstd = buffer(rows)
        logits = buffer(rows * config.vocabSize)
        let scratch = perBlock ? 1 : 0  // inference needs no backward scratch
        dResidual = buffer(scratch * rows * c)
        scratchNormed = buffer(scratch * rows * c)
        dAttentionOut = buffer(scratch * rows * c)
        dQKV = buffer(scratch * rows * qkvWidth)
        dGateUp = buffer(scratch * rows * 2 * f)
        dSwiglu = buffer(scratch * rows * f)
        dScores = buffer(scratch * Compute.threads * length * length)
        self.allocations = allocations
    }

    func block(_ layer: Int) -> BlockActivations { blocks[perBlock ? layer : 0] }

    /// Bytes `init` would allocate for these shapes (to refuse impossible runs before allocating).
    static func bytes(config: LlamaConfig, batch: Int, length: Int, perBlock: Bool, threads: Int) -> Double {
        let rows = Double(batch * length), c = Double(config.hiddenSize), f = Double(config.intermediateSize)
        let qkv = c + 2 * Double(config.numKeyValueHeads * config.headDim)
        let attention = Double(batch * config.numAttentionHeads) * Double(length) * Double(length)
        let perBlockFloats = rows * (6 * c + qkv + 3 * f + 2) + attention
        let blocks = perBlock ? Double(config.numHiddenLayers) : 1
        let shared = rows * c * Double(config.numHiddenLayers + 2) + rows * (1 + Double(config.vocabSize))
        let backward = perBlock ? rows * (3 * c + qkv + 3 * f) + Double(threads * length * length) : 0
        return 4 * (blocks * perBlockFloats + shared + backward)
    }

    deinit {
        for pointer in allocations { pointer.deallocate() }
        tokens.deallocate()
    }
}

/// What one block keeps for its backward pass.
struct BlockActivations {
    let attentionNormed: UnsafeMutablePointer<Float>   // [B·T, C]
    let attentionRstd: UnsafeMutablePointer<Float>     // [B·T]
    let qkv: UnsafeMutablePointer<Float>               // [B·T, C + 2·KVd], q and k after rotation
    let probabilities: UnsafeMutablePointer<Float>     // [B, H, T, T]
    let attentionOut: UnsafeMutablePointer<Float>      // [B·T, C], heads side by side
    let attentionResidual: UnsafeMutablePointer<Float> // [B·T, C], the stream after attention
    let mlpNormed: UnsafeMutablePointer<Float>         // [B·T, C]
    let mlpRstd: UnsafeMutablePointer<Float>           // [B·T]
    let gateUp: UnsafeMutablePointer<Float>            // [B·T, 2F]
    let swiglu: UnsafeMutablePointer<Float>            // [B·T, F]
}
