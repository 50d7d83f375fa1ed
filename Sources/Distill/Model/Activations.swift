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
        let gateUp: Int             // [B·T, 2F]; blocks below `gateUpRecomputedBlocks` borrow another's

        /// All but gate/up, which not every block carves.
        var totalBesideGateUp: Int {
            saturatingSum([attentionRstd, qkv, attentionRowStats, attentionOut, attentionResidual, mlpRstd].map(ActivationSizes.padded))
        }
    }

    let tokens: Int          // [B·T] Int32, allocated apart
    let residual: Int        // [B·T, C], one per block boundary
    let residualCount: Int   // L + 1; L when the first is borrowed (`inputEmbeddingsBorrowed`)
    /// The block input of block 0 (the embedding rows of the tokens) lives in block 1's stream after
    /// attention, which forward writes only after block 0 is done, and backward copies the rows again from
    /// the embedding (the same bits: a copy of weights that have not changed) once block 1's backward has
    /// let go of that buffer: 2 MB of `bench --preset small`'s training peak for a gather of B·T rows.
    let inputEmbeddingsBorrowed: Bool
    let block: Block
    let blockCount: Int      // L when kept for backward, else 1 (shared)
    // Shared by all blocks and recomputed in backward (cheap element-wise work): the normed input of
    // attention and of the MLP, and the SwiGLU output.
    let normed: Int          // [B·T, C]
    let swiglu: Int          // [B·T, F]
    let finalNormed: Int     // [B·T, C]
    let finalRstd: Int       // [B·T]
    let logits: Int          // [B·T, V], allocated apart and only when the head runs whole
    // Backward scratch shared by all blocks; none for inference.
    let dResidual: Int       // [B·T, C]
    let scratchNormed: Int   // [B·T, C]
    let dAttentionOut: Int   // [B·T, C]
    let dQKV: Int            // [B·T, C + 2·KVd]
    /// The first k blocks keep no gate/up (the largest per-block buffer, 2F floats a token): they write
    /// it into block k's buffer, which block k's forward overwrites, and backward writes it there again
    /// by forward's own product (so the same bits) once block k's backward has let go of it. Each such
    /// block saves its gate/up for one more product in backward (about 1.5% of a step at `small`).
    /// At most L − 1 (`--recompute-activations`), 0 without backward.
    let gateUpRecomputedBlocks: Int
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

    init(config: LlamaConfig, batch: Int, length: Int, perBlock: Bool, threads: Int, gateUpRecomputedBlocks: Int = 0) {
        let rows = saturatingProduct(batch, length), c = config.hiddenSize, f = config.intermediateSize
        let qkvWidth = saturatingSum([c, saturatingProduct(2, config.numKeyValueHeads, config.headDim)])
        tokens = rows
        residual = saturatingProduct(rows, c)
        inputEmbeddingsBorrowed = perBlock && config.numHiddenLayers >= 2
        residualCount = config.numHiddenLayers + (inputEmbeddingsBorrowed ? 0 : 1)
        backwardScratchInSharedBuffers = perBlock && f >= c && saturatingProduct(2, f) >= qkvWidth
        attentionOutRecomputed = backwardScratchInSharedBuffers && saturatingProduct(2, f) >= saturatingSum([qkvWidth, c])
        block = Block(attentionRstd: rows, qkv: saturatingProduct(rows, qkvWidth),
                      attentionRowStats: saturatingProduct(batch, config.numAttentionHeads, length, 2),
                      attentionOut: attentionOutRecomputed ? 0 : residual, attentionResidual: residual, mlpRstd: rows,
                      gateUp: saturatingProduct(rows, 2, f))
        blockCount = perBlock ? config.numHiddenLayers : 1
        self.gateUpRecomputedBlocks = perBlock ? max(0, min(gateUpRecomputedBlocks, config.numHiddenLayers - 1)) : 0
        normed = residual
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
        saturatingSum([saturatingProduct(Self.padded(residual), residualCount), saturatingProduct(block.totalBesideGateUp, blockCount),
                       saturatingProduct(Self.padded(block.gateUp), blockCount - gateUpRecomputedBlocks)]
                      + [normed, swiglu, finalNormed, finalRstd, dResidual, scratchNormed, dAttentionOut, dQKV,
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
    /// Floats that are dead while the LM head runs (the normed input, the SwiGLU output, d residual, one
    /// after another from `pointer`): `LlamaModel.headInChunks` writes its chunks there when they fit.
    let headChunkSpace: (pointer: UnsafeMutablePointer<Float>, floats: Int)
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

    init(config: LlamaConfig, batch: Int, length: Int, perBlock: Bool, threads: Int = Compute.threads, gateUpRecomputedBlocks: Int = 0) {
        self.batch = batch
        self.length = length
        self.perBlock = perBlock
        self.threads = threads
        let sizes = ActivationSizes(config: config, batch: batch, length: length, perBlock: perBlock, threads: threads,
                                    gateUpRecomputedBlocks: gateUpRecomputedBlocks)
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
        let block = sizes.block
        // The normed input, the SwiGLU output and d residual one after another: together they are the
        // space `headChunkSpace` lends to the LM head's chunks, dead while the head runs.
        let normed = take(sizes.normed), swiglu = take(sizes.swiglu)
        dResidual = take(sizes.dResidual)
        headChunkSpace = (normed, cursor - (normed - base))
        // Blocks below `gateUpRecomputedBlocks` (k) carve no gate/up: they borrow block k's.
        let k = sizes.gateUpRecomputedBlocks
        var carved = (0..<sizes.blockCount).map { layer in
            BlockActivations(
                attentionNormed: normed, attentionRstd: take(block.attentionRstd), qkv: take(block.qkv),
                attentionRowStats: take(block.attentionRowStats),
                attentionOut: sizes.attentionOutRecomputed ? swiglu : take(block.attentionOut),
                attentionResidual: take(block.attentionResidual), mlpNormed: normed,
                mlpRstd: take(block.mlpRstd), gateUp: layer < k ? base : take(block.gateUp), swiglu: swiglu,
                recomputesGateUp: layer < k)
        }
        for layer in 0..<k { carved[layer].gateUp = carved[k].gateUp }
        blocks = carved
        let ownResiduals = (0..<sizes.residualCount).map { _ in take(sizes.residual) }
        residual = sizes.inputEmbeddingsBorrowed ? [blocks[1].attentionResidual] + ownResiduals : ownResiduals
        finalNormed = take(sizes.finalNormed)
        finalRstd = take(sizes.finalRstd)
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
    var gateUp: UnsafeMutablePointer<Float>            // [B·T, 2F]; backward overwrites it with its gradient
    let swiglu: UnsafeMutablePointer<Float>            // [B·T, F], shared; backward writes its gradient over it
    /// gate/up lives in a later block's buffer (`ActivationSizes.gateUpRecomputedBlocks`): backward writes it again.
    let recomputesGateUp: Bool
}
