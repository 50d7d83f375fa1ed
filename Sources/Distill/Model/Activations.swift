/// The element count of every activation buffer for one batch shape: the one table that `Activations`
/// carves its buffers from (a single allocation, as llm.c's `fill_in_activation_sizes` and
/// `malloc_and_point_activations`) and that the memory estimate sums, so the two cannot drift apart.
/// Counts saturate at Int.max instead of overflowing.
struct ActivationSizes {
    /// One block's buffers, in `BlockActivations` order.
    struct Block {
        let attentionRstd: Int      // [B·T]
        let qkv: Int                // [B·T, C + 2·KVd]
        let attentionRowStats: Int  // [B, H, T, 2]
        let attentionOut: Int       // [B·T, C]; 0 when recomputed in backward (then the SwiGLU buffer holds it)
        let attentionResidual: Int  // [B·T, C]
        let mlpRstd: Int            // [B·T]
        let gateUp: Int             // [B·T, 2F]; 0 when recomputed (then one buffer serves all blocks)

        var total: Int {
            saturatingSum([attentionRstd, qkv, attentionRowStats, attentionOut, attentionResidual, mlpRstd, gateUp]
                .map(ActivationSizes.padded))
        }
    }

    let tokens: Int          // [B·T] Int32, allocated apart
    let residual: Int        // [B·T, C], one per block boundary
    let residualCount: Int   // L + 1
    let block: Block
    let blockCount: Int      // L when kept for backward, else 1 (shared)
    // Shared by all blocks and recomputed in backward (cheap element-wise work): the normed input of
    // attention and of the MLP, and the SwiGLU output; with `recomputeGateUp`, gate/up too (one product,
    // the same call as forward's, so the same bits: about 9% more of a step's work for the largest
    // per-block buffer).
    let normed: Int          // [B·T, C]
    let sharedGateUp: Int    // [B·T, 2F] with recomputeGateUp, else 0
    let swiglu: Int          // [B·T, F]
    let finalNormed: Int     // [B·T, C]
    let finalRstd: Int       // [B·T]
    let logits: Int          // [B·T, V], allocated apart and only when the head runs whole
    // Backward scratch shared by all blocks; none for inference.
    let dResidual: Int       // [B·T, C]
    let scratchNormed: Int   // [B·T, C]
    let dAttentionOut: Int   // [B·T, C]
    let dQKV: Int            // [B·T, C + 2·KVd]
    let recomputeGateUp: Bool
    /// d normed and d attention output live in the SwiGLU output's buffer (shared by all blocks, recomputed
    /// in backward) and d qkv in the block's gate/up (dead once dW_gateUp has read it, rewritten by the
    /// next forward pass) while those are dead in a block's backward, when they fit (F ≥ C, 2F ≥ C + 2·KVd);
    /// they then take no room of their own (0 above): 10 MB of `bench --preset small`'s training peak.
    let backwardScratchInSharedBuffers: Bool
    /// The attention output is not kept per block: forward writes it into the SwiGLU output's buffer (dead
    /// from a block's start until its SwiGLU), and backward writes it again, bitwise, from the
    /// probabilities its attention backward recomputes anyway, into gate/up's buffer behind d qkv, when it
    /// fits there too (2F ≥ 2C + 2·KVd): 12 MB of `bench --preset small`'s training peak for one more
    /// p·V a block in attention backward (about 1% of a step).
    let attentionOutRecomputed: Bool
    // Attention's per-thread scratch, forward and backward.
    let attentionScratch: Int  // [threads, attentionScratchPerThread]

    init(config: LlamaConfig, batch: Int, length: Int, perBlock: Bool, threads: Int, recomputeGateUp: Bool = false) {
        let rows = saturatingProduct(batch, length), c = config.hiddenSize, f = config.intermediateSize
        let qkvWidth = saturatingSum([c, saturatingProduct(2, config.numKeyValueHeads, config.headDim)])
        tokens = rows
        residual = saturatingProduct(rows, c)
        residualCount = config.numHiddenLayers + 1
        backwardScratchInSharedBuffers = perBlock && f >= c && saturatingProduct(2, f) >= qkvWidth
        attentionOutRecomputed = backwardScratchInSharedBuffers && saturatingProduct(2, f) >= saturatingSum([qkvWidth, c])
        block = Block(attentionRstd: rows, qkv: saturatingProduct(rows, qkvWidth),
                      attentionRowStats: saturatingProduct(batch, config.numAttentionHeads, length, 2),
                      attentionOut: attentionOutRecomputed ? 0 : residual, attentionResidual: residual, mlpRstd: rows,
                      gateUp: recomputeGateUp && perBlock ? 0 : saturatingProduct(rows, 2, f))
        blockCount = perBlock ? config.numHiddenLayers : 1
        normed = residual
        self.recomputeGateUp = recomputeGateUp && perBlock
        sharedGateUp = self.recomputeGateUp ? saturatingProduct(rows, 2, f) : 0
        swiglu = saturatingProduct(rows, f)
        finalNormed = residual
        finalRstd = rows
        logits = saturatingProduct(rows, config.vocabSize)
        let scratch = perBlock ? 1 : 0
        let ownScratch = backwardScratchInSharedBuffers ? 0 : scratch
        dResidual = scratch * residual
        scratchNormed = ownScratch * residual
        dAttentionOut = ownScratch * residual
        dQKV = ownScratch * block.qkv
        attentionScratch = saturatingProduct(threads, attentionScratchPerThread(length: length, headDim: config.headDim))
    }

    /// Each buffer starts on a 64-byte boundary of the allocation, as separate allocations would.
    static func padded(_ count: Int) -> Int { count >= Int.max - 15 ? Int.max : (count + 15) / 16 * 16 }

    /// Floats of all the buffers `Activations` carves, padding included.
    var floatCount: Int {
        saturatingSum([saturatingProduct(Self.padded(residual), residualCount), saturatingProduct(block.total, blockCount)]
                      + [normed, sharedGateUp, swiglu, finalNormed, finalRstd, dResidual, scratchNormed, dAttentionOut, dQKV,
                         attentionScratch].map(Self.padded))
    }

    /// Bytes of every buffer, the tokens and the whole logits included (the most a pass may hold).
    var bytes: Int { saturatingProduct(saturatingSum([floatCount, tokens, logits]), 4) }
}

/// The buffers of one forward/backward pass for a batch shape, carved in one allocation from the sizes
/// of `ActivationSizes`. Per-block buffers exist once per block when a backward pass will follow, and
/// once in all otherwise (a teacher keeps nothing).
final class Activations {
    let batch: Int, length: Int, perBlock: Bool, threads: Int
    /// Set by a backward pass, cleared by a forward one: backward writes gradients over some of the kept
    /// state (gate/up, the SwiGLU output), so it may run only once per forward pass.
    var backwardDone = false
    let sizes: ActivationSizes
    private let storage: UnsafeMutablePointer<Float>

    let tokens: UnsafeMutablePointer<Int32>          // [B·T]
    let residual: [UnsafeMutablePointer<Float>]       // L+1 × [B·T, C]: the stream before block l; the last is the output
    private let blocks: [BlockActivations]
    let finalNormed: UnsafeMutablePointer<Float>      // [B·T, C]
    let finalRstd: UnsafeMutablePointer<Float>        // [B·T]
    /// [B·T, V], allocated on first use: a caller that takes the head in chunks never needs it.
    private(set) lazy var logits: UnsafeMutablePointer<Float> = {
        let buffer = alignedFloats(max(sizes.logits, 1))
        logitsAllocated = true
        return buffer
    }()
    private var logitsAllocated = false

    // Backward scratch, shared by all blocks.
    let dResidual: UnsafeMutablePointer<Float>        // [B·T, C]
    let scratchNormed: UnsafeMutablePointer<Float>    // [B·T, C]
    let dAttentionOut: UnsafeMutablePointer<Float>    // [B·T, C]
    private let ownDQKV: UnsafeMutablePointer<Float>? // [B·T, C + 2·KVd], unless it lives in gate/up
    let attentionScratch: UnsafeMutablePointer<Float> // [threads, attentionScratchPerThread]

    init(config: LlamaConfig, batch: Int, length: Int, perBlock: Bool, threads: Int = Compute.threads, recomputeGateUp: Bool = false) {
        self.batch = batch
        self.length = length
        self.perBlock = perBlock
        self.threads = threads
        let sizes = ActivationSizes(config: config, batch: batch, length: length, perBlock: perBlock, threads: threads,
                                    recomputeGateUp: recomputeGateUp)
        self.sizes = sizes
        let total = sizes.floatCount
        let base = alignedFloats(max(total, 1))
        storage = base
        var cursor = 0
        func take(_ count: Int) -> UnsafeMutablePointer<Float> {
            defer { cursor += ActivationSizes.padded(count) }
            return base + cursor
        }
        tokens = .allocate(capacity: max(sizes.tokens, 1))
        residual = (0..<sizes.residualCount).map { _ in take(sizes.residual) }
        let block = sizes.block
        let normed = take(sizes.normed), sharedGateUp = take(sizes.sharedGateUp), swiglu = take(sizes.swiglu)
        blocks = (0..<sizes.blockCount).map { _ in
            BlockActivations(
                attentionNormed: normed, attentionRstd: take(block.attentionRstd), qkv: take(block.qkv),
                attentionRowStats: take(block.attentionRowStats),
                attentionOut: sizes.attentionOutRecomputed ? swiglu : take(block.attentionOut),
                attentionResidual: take(block.attentionResidual), mlpNormed: normed,
                mlpRstd: take(block.mlpRstd), gateUp: sizes.recomputeGateUp ? sharedGateUp : take(block.gateUp), swiglu: swiglu)
        }
        finalNormed = take(sizes.finalNormed)
        finalRstd = take(sizes.finalRstd)
        dResidual = take(sizes.dResidual)
        let shared = sizes.backwardScratchInSharedBuffers
        scratchNormed = shared ? swiglu : take(sizes.scratchNormed)
        dAttentionOut = shared ? swiglu : take(sizes.dAttentionOut)
        ownDQKV = shared ? nil : take(sizes.dQKV)
        attentionScratch = take(sizes.attentionScratch)
        // Every buffer is carved from the table, and the table's sum is what was carved.
        precondition(cursor == total, "activation buffers and ActivationSizes disagree")
    }

    func block(_ layer: Int) -> BlockActivations { blocks[perBlock ? layer : 0] }

    /// Where `block`'s backward puts d qkv [B·T, C + 2·KVd]: its gate/up buffer when that is dead by then
    /// (`ActivationSizes.backwardScratchInSharedBuffers`), else a buffer of its own.
    func dQKV(in block: BlockActivations) -> UnsafeMutablePointer<Float> { ownDQKV ?? block.gateUp }

    /// Where `block`'s backward writes the attention output again [B·T, C] when it was not kept
    /// (`ActivationSizes.attentionOutRecomputed`): gate/up's buffer behind d qkv.
    func recomputedAttentionOut(in block: BlockActivations) -> UnsafeMutablePointer<Float>? {
        sizes.attentionOutRecomputed ? dQKV(in: block) + sizes.block.qkv : nil
    }

    /// Bytes held: `sizes.bytes`, less the logits until they are first used.
    var bytes: Int { logitsAllocated ? sizes.bytes : sizes.bytes - 4 * sizes.logits }

    deinit {
        storage.deallocate()
        tokens.deallocate()
        if logitsAllocated { logits.deallocate() }
    }
}

/// What one block keeps for its backward pass. The normed inputs and the SwiGLU output are one buffer
/// shared by all blocks, which backward recomputes (`LlamaModel.blockBackward`).
struct BlockActivations {
    let attentionNormed: UnsafeMutablePointer<Float>   // [B·T, C], shared
    let attentionRstd: UnsafeMutablePointer<Float>     // [B·T]
    let qkv: UnsafeMutablePointer<Float>               // [B·T, C + 2·KVd], q and k after rotation
    let attentionRowStats: UnsafeMutablePointer<Float> // [B, H, T, 2], softmax maximum and 1/sum per row
    let attentionOut: UnsafeMutablePointer<Float>      // [B·T, C], heads side by side; the SwiGLU buffer when recomputed
    let attentionResidual: UnsafeMutablePointer<Float> // [B·T, C], the stream after attention
    let mlpNormed: UnsafeMutablePointer<Float>         // [B·T, C], shared (the same buffer as attentionNormed)
    let mlpRstd: UnsafeMutablePointer<Float>           // [B·T]
    let gateUp: UnsafeMutablePointer<Float>            // [B·T, 2F]; backward overwrites it with its gradient
    let swiglu: UnsafeMutablePointer<Float>            // [B·T, F], shared; backward writes its gradient over it
}
