import CBLAS
import CKernels
import Foundation

/// A Llama-style decoder implemented over flat buffers: token embedding; per block pre-RMSNorm,
/// rotary attention (Hugging Face's rotate-half convention) with optional grouped-query heads, and a
/// SwiGLU MLP; final RMSNorm; an LM head tied to the embedding or separate. No biases.
public final class LlamaModel {
    public let config: LlamaConfig
    public let layout: ParameterLayout
    /// All weights, in `layout` order.  [P]
    public let parameters: UnsafeMutableBufferPointer<Float>
    /// All gradients, same layout; allocated on first backward.  [P]
    public private(set) var gradients: UnsafeMutableBufferPointer<Float>?
    /// cos/sin of the positions used so far; grows with them, up to the context.
    private(set) var rope: RotaryTable
    private var activations: Activations?
    /// `headInChunks`' logits and their gradient.  [headChunkRows, V] each
    private let headChunk = ScratchBuffer(), headChunkGradient = ScratchBuffer()

    /// A new model for training, with weights drawn from N(0, 0.02²) (Hugging Face's `initializer_range`)
    /// and unit norm gains. Refuses a config whose weights, gradients and optimizer state cannot fit in
    /// this machine's memory (a random model is only good for training).
    public convenience init(config: LlamaConfig, seed: UInt64) throws {
        try self.init(zeroedFor: config, use: .training)
        var random = SeededRandom(seed: seed)
        for tensor in layout.tensors {
            let base = parameters.baseAddress! + tensor.offset
            for i in 0..<tensor.count { base[i] = tensor.decays ? 0.02 * random.nextGaussian() : 1 }
        }
    }

    /// A model whose weights are copied from `values` (same layout); refuses NaN or infinite weights.
    public convenience init(config: LlamaConfig, parameters values: UnsafeBufferPointer<Float>) throws {
        try self.init(zeroedFor: config, use: .inference)
        guard values.count == layout.count else {
            throw ModelError.badCheckpoint("expected \(layout.count) parameters, found \(values.count)")
        }
        _ = parameters.update(fromContentsOf: values)
        try checkFiniteWeights(source: "the given weights")
    }

    /// A model with all weights zero, for a loader to fill; the config is validated and its memory
    /// checked before anything is allocated.
    init(zeroedFor config: LlamaConfig, use: ModelUse) throws {
        try config.validate()
        try config.checkMemory(for: use)
        self.config = config
        layout = ParameterLayout(config: config)
        parameters = .allocate(capacity: layout.count)
        parameters.initialize(repeating: 0)
        rope = RotaryTable(headDim: config.headDim, theta: config.ropeTheta)
    }

    deinit {
        parameters.deallocate()
        gradients?.deallocate()
    }

    /// Refuses weights that hold NaN or infinite values, naming the first such tensor.
    public func checkFiniteWeights(source: String) throws {
        for tensor in layout.tensors {
            var nan = 0, infinite = 0
            for value in UnsafeBufferPointer(rebasing: parameters[tensor.offset..<(tensor.offset + tensor.count)])
            where !value.isFinite {
                if value.isNaN { nan += 1 } else { infinite += 1 }
            }
            if nan + infinite > 0 {
                throw ModelError.nonFinite(tensor: tensor.name, nan: nan, infinite: infinite, source: source)
            }
        }
    }

    /// Keep one gate/up buffer for all blocks and recompute it in backward, by forward's own product (so
    /// the same bits), instead of one per block: about a fifth less training memory at the `small` preset
    /// (the largest per-block buffer, 2F floats a token; 90 MB a layer at batch 8 × 2,048 tokens) for about
    /// 9% more of a step's FLOPs. Off by default (then `firstBlocksRecomputingGateUp` do);
    /// `--recompute-activations` turns it on.
    public var recomputesGateUp = false

    /// Blocks, from the first, that recompute gate/up in backward when `recomputesGateUp` is off: one,
    /// 11 MB of `bench --preset small`'s training peak for one product (about 1.5% of a step's FLOPs; in
    /// alternated runs `train --preset small` took 0.99× the time of keeping it, within the noise, and two
    /// blocks 1.04×).
    public static let defaultGateUpRecomputedBlocks = 1
    /// The count above for this model (clamped to 0...L−1; 0 keeps every block's gate/up).
    public var firstBlocksRecomputingGateUp = LlamaModel.defaultGateUpRecomputedBlocks

    /// Blocks, from the first, whose gate/up is recomputed in backward (`ActivationSizes.gateUpRecomputedBlocks`).
    var gateUpRecomputedBlocks: Int {
        Self.gateUpRecomputedBlocks(layers: config.numHiddenLayers, all: recomputesGateUp, first: firstBlocksRecomputingGateUp)
    }

    static func gateUpRecomputedBlocks(layers: Int, all: Bool, first: Int = defaultGateUpRecomputedBlocks) -> Int {
        max(0, min(layers - 1, all ? layers : first))
    }

    /// Number of weights (a tied head counted once).
    public var parameterCount: Int { layout.count }

    /// Bytes of the buffers a forward pass on [batch, length] allocates (with or without what backward
    /// needs): the sum of the same size table the buffers are allocated from.
    public func activationBytes(batch: Int, length: Int, keepForBackward: Bool = true) -> Double {
        Double(ActivationSizes(config: config, batch: batch, length: length, perBlock: keepForBackward,
                               threads: Compute.threads, gateUpRecomputedBlocks: gateUpRecomputedBlocks).bytes)
    }

    /// Bytes of the forward/backward buffers the model holds now (0 before the first forward pass).
    public var activationBytesHeld: Int { activations?.bytes ?? 0 }

    /// Sets every gradient to zero (allocating them the first time).
    public func zeroGradients() {
        if gradients == nil { gradients = .allocate(capacity: layout.count) }
        zeroInParallel(gradients!.baseAddress!, count: layout.count)
    }

    // MARK: forward

    /// What a forward pass keeps: logits always; hidden states of the residual stream after the
    /// blocks in `hiddenLayers`; the final normed hidden states (for sentence embeddings).
    public struct Output {
        /// [B·T, V]
        public let logits: UnsafeMutablePointer<Float>
        /// block index → [B·T, C], the residual stream after that block (before the final norm)
        public let hidden: [Int: UnsafeMutablePointer<Float>]
        /// [B·T, C], after the final norm (Hugging Face's `last_hidden_state`)
        public let finalHidden: UnsafeMutablePointer<Float>
        public let batch: Int
        public let length: Int
    }

    /// Runs the model on `tokens` [B, T]. With `keepForBackward` false (a teacher, evaluation) the
    /// blocks share their scratch buffers and nothing is kept for a backward pass.
    @discardableResult
    public func forward(tokens: UnsafePointer<Int32>, batch: Int, length: Int,
                        captureLayers: Set<Int> = [], keepForBackward: Bool = true) -> Output {
        let acts = forwardWithoutHead(tokens: tokens, batch: batch, length: length, keepForBackward: keepForBackward)
        linearForward(acts.logits, acts.finalNormed, parameters.baseAddress! + layout.lmHead,
                      rows: batch * length, inFeatures: config.hiddenSize, outFeatures: config.vocabSize)
        return Output(logits: acts.logits, hidden: captured(captureLayers, acts), finalHidden: acts.finalNormed,
                      batch: batch, length: length)
    }

    /// What `forwardHidden` keeps: `Output` without the logits.
    public struct HiddenStates {
        /// block index → [B·T, C], the residual stream after that block (before the final norm)
        public let hidden: [Int: UnsafeMutablePointer<Float>]
        /// [B·T, C], after the final norm
        public let finalHidden: UnsafeMutablePointer<Float>
    }

    /// Runs the model on `tokens` [B, T] up to the final norm, leaving the LM head to `headInChunks`, so
    /// that the [B·T, V] logits are never held whole.
    @discardableResult
    public func forwardHidden(tokens: UnsafePointer<Int32>, batch: Int, length: Int, captureLayers: Set<Int> = [],
                              keepForBackward: Bool = true) -> HiddenStates {
        let acts = forwardWithoutHead(tokens: tokens, batch: batch, length: length, keepForBackward: keepForBackward)
        return HiddenStates(hidden: captured(captureLayers, acts), finalHidden: acts.finalNormed)
    }

    private func forwardWithoutHead(tokens: UnsafePointer<Int32>, batch: Int, length: Int, keepForBackward: Bool) -> Activations {
        precondition(length <= config.maxPositionEmbeddings, "sequence longer than the context")
        let acts = activationsFor(batch: batch, length: length, perBlock: keepForBackward)
        forward(tokens: tokens, batch: batch, length: length, startPosition: 0, caches: [], into: acts, head: false)
        return acts
    }

    private func captured(_ layers: Set<Int>, _ acts: Activations) -> [Int: UnsafeMutablePointer<Float>] {
        var hidden: [Int: UnsafeMutablePointer<Float>] = [:]
        for layer in layers where layer >= 0 && layer < config.numHiddenLayers {
            hidden[layer] = acts.residual[layer + 1]
        }
        return hidden
    }

    /// Rows per chunk of `headInChunks`: a chunk of about [256, V] logits and one of their gradient stay
    /// in cache, and the products are still large enough for OpenBLAS's kernels. The first multiple of
    /// twice OpenBLAS's row group from 256 (256 under its AVX-512 kernels, 288 under Haswell and Zen): a
    /// product splits in two at the group's multiples (`alignedPart`), and 256 rows under groups of 24
    /// went 120 and 136, so that one core waited for the other at every chunk (7–10% of the head's time
    /// at `tiny`). Not fewer rows: each chunk's products pack all of W_head again. Not tied to the
    /// thread count, so that the bits are not either.
    public static let headChunkRows: Int = {
        let pair = 2 * openBLASRowGroup
        return (256 + pair - 1) / pair * pair
    }()

    /// The LM head over the final hidden states of the last `forwardHidden` (or `forward`), a chunk of
    /// rows at a time: for each chunk, logits [n, V] = finalHidden[rows] · W_headᵀ, then
    /// `body(rows, logits, dLogits)`, where dLogits [n, V] (zeroed; nil without `dFinalHidden`) takes
    /// d loss/d logits of those rows. With `backward`, the head's backward then accumulates dW_head and
    /// adds d finalHidden into `dFinalHidden` [B·T, C]; pass that to `backward(dLogits: nil, dFinalHidden:)`.
    public func headInChunks(dFinalHidden: UnsafeMutablePointer<Float>?,
                             _ body: (Range<Int>, UnsafePointer<Float>, UnsafeMutablePointer<Float>?) throws -> Void) rethrows {
        try head(gradient: dFinalHidden.map { .addedInto($0) } ?? .none, body)
    }

    /// `headInChunks` with the head's backward, for a loss whose only path to the final hidden states is the
    /// head: d finalHidden [B·T, C] is written over the final hidden states themselves, a chunk's rows once
    /// the chunk is done with them, and returned for `backward(dLogits: nil, dFinalHidden:)`. A loss that
    /// reads the final hidden states after the head (sentence embeddings) must use `headInChunks`.
    /// No [B·T, C] buffer of its own: 2 MB of `bench --preset small`'s training peak.
    public func headInChunksWithGradientOverFinalHidden(
        _ body: (Range<Int>, UnsafePointer<Float>, UnsafeMutablePointer<Float>?) throws -> Void) rethrows -> UnsafePointer<Float> {
        try head(gradient: .overFinalHidden, body)
        return UnsafePointer(activations!.finalNormed)  // `head` has checked that there was a forward pass
    }

    /// Where the head's backward puts d finalHidden.
    private enum HeadGradient {
        case none
        case addedInto(UnsafeMutablePointer<Float>)
        case overFinalHidden

        var runsBackward: Bool { if case .none = self { false } else { true } }
    }

    private func head(gradient: HeadGradient, _ body: (Range<Int>, UnsafePointer<Float>, UnsafeMutablePointer<Float>?) throws -> Void) rethrows {
        guard let acts = activations else { preconditionFailure("headInChunks needs a forward pass") }
        let c = config.hiddenSize, vocab = config.vocabSize, rows = acts.batch * acts.length
        let weights = parameters.baseAddress! + layout.lmHead
        let backward = gradient.runsBackward
        if backward && gradients == nil { zeroGradients() }
        let (chunk, lent) = headChunkPlacement(withGradient: backward)
        // Both are written for every chunk: the logits by their product, the gradient zeroed for `body`.
        let logits = lent ? acts.headChunkSpace.pointer : headChunk.reserved(chunk * vocab)
        let dLogits = !backward ? nil
            : lent ? logits + ActivationSizes.padded(chunk * vocab) : headChunkGradient.reserved(chunk * vocab)
        for start in stride(from: 0, to: rows, by: chunk) {
            let n = min(chunk, rows - start), hidden = acts.finalNormed + start * c
            headLogits(rows: start..<(start + n), into: logits)
            guard let dLogits else {
                try body(start..<(start + n), logits, nil)
                continue
            }
            zeroInParallel(dLogits, count: n * vocab)
            try body(start..<(start + n), logits, dLogits)
            // dW_head reads the chunk's hidden rows before d hidden may be written over them.
            linearBackward(dx: nil, dWeight: gradients!.baseAddress! + layout.lmHead, dy: dLogits, x: hidden, weight: weights,
                           rows: n, inFeatures: c, outFeatures: vocab)
            switch gradient {
            case .none: break
            case .addedInto(let dFinalHidden):
                linearBackward(dx: dFinalHidden + start * c, dWeight: nil, dy: dLogits, x: hidden, weight: weights,
                               rows: n, inFeatures: c, outFeatures: vocab)
            case .overFinalHidden:
                linearBackward(dx: hidden, dWeight: nil, dy: dLogits, x: hidden, weight: weights,
                               rows: n, inFeatures: c, outFeatures: vocab, overwritingDx: true)
            }
        }
    }

    /// Rows of `headInChunks`' chunks after the last forward pass, and whether the chunks (logits, and their
    /// gradient `withGradient`) go into activation buffers that are dead while the head runs
    /// (`Activations.headChunkSpace`): when they fit there (8 MB of `bench --preset small`'s training
    /// peak), else into scratch of their own. Smaller chunks to make them fit would cost speed (149 rows at
    /// `tiny`: `train` took 1.03× the time).
    public func headChunkPlacement(withGradient: Bool) -> (rows: Int, lent: Bool) {
        guard let acts = activations else { return (Self.headChunkRows, false) }
        let rows = min(Self.headChunkRows, acts.batch * acts.length)
        let floats = ActivationSizes.padded(rows * config.vocabSize) * (withGradient ? 2 : 1)
        return (rows, floats <= acts.headChunkSpace.floats)
    }

    /// Logits [n, V] of `rows` (n of them) of the last forward pass's final hidden states: a teacher's
    /// head taken a chunk at a time beside its student's.
    public func headLogits(rows: Range<Int>, into logits: UnsafeMutablePointer<Float>) {
        guard let acts = activations, rows.upperBound <= acts.batch * acts.length else {
            preconditionFailure("headLogits needs a forward pass over those rows")
        }
        linearForward(logits, acts.finalNormed + rows.lowerBound * config.hiddenSize, parameters.baseAddress! + layout.lmHead,
                      rows: rows.count, inFeatures: config.hiddenSize, outFeatures: config.vocabSize)
    }

    /// The forward pass, written once for training, evaluation and generation: embedding lookup, the
    /// blocks, the final norm and the head, into `acts`. Without caches the rows are `batch` sequences
    /// starting at position 0; with them (one per sequence), they are positions
    /// startPosition..<startPosition+length of `batch` sequences whose earlier keys and values the caches
    /// hold (and to which they add these): the products run over all the sequences' rows at once, only
    /// attention reads each sequence's own cache.
    /// With `reducedWeights`, the products read that reduced copy of the weights (decoding only).
    func forward(tokens: UnsafePointer<Int32>, batch: Int, length: Int, startPosition: Int, caches: [KeyValueCache],
                 into acts: Activations, head: Bool = true, reducedWeights: DecodingWeights? = nil) {
        precondition(caches.isEmpty || caches.count == batch, "a key/value cache holds one sequence")
        let end = startPosition + length
        precondition(end <= config.maxPositionEmbeddings, "sequence longer than the context")
        if end > rope.positions { rope.reserve(min(config.maxPositionEmbeddings, max(end, 2 * rope.positions))) }
        let c = config.hiddenSize, rows = batch * length
        let weights = UnsafeMutablePointer(parameters.baseAddress!)

        // Embedding lookup: residual[0][n] = E[token[n]]; the tokens are kept for the embedding's backward.
        acts.tokens.update(from: tokens, count: rows)
        acts.backwardDone = false
        if let reducedWeights {
            for n in 0..<rows {
                precondition(tokens[n] >= 0 && Int(tokens[n]) < config.vocabSize, "token id out of range")
                reducedWeights.widenRow(Int(tokens[n]), ofMatrixAt: layout.embedding, into: acts.residual[0] + n * c)
            }
        } else {
            embed(tokens, rows: rows, into: acts.residual[0])
        }
        for layer in 0..<config.numHiddenLayers {
            blockForward(layer: layer, acts: acts.block(layer), input: acts.residual[layer], output: acts.residual[layer + 1],
                         scratch: acts.attentionScratch,
                         batch: batch, length: length, startPosition: startPosition, caches: caches, keepForBackward: acts.perBlock,
                         reducedWeights: reducedWeights)
        }
        rmsnormForward(acts.finalNormed, acts.finalRstd, acts.residual[config.numHiddenLayers],
                       gain: weights + layout.finalNorm, rows: rows)
        if head {
            project(acts.logits, acts.finalNormed, weightAt: layout.lmHead, rows: rows, inFeatures: c,
                    outFeatures: config.vocabSize, reducedWeights: reducedWeights)
        }
    }

    /// x [N, C] = E[tokens[n]]: the embedding rows of `rows` tokens.
    private func embed(_ tokens: UnsafePointer<Int32>, rows: Int, into x: UnsafeMutablePointer<Float>) {
        let c = config.hiddenSize, embedding = parameters.baseAddress! + layout.embedding
        for n in 0..<rows {
            let token = Int(tokens[n])
            precondition(token >= 0 && token < config.vocabSize, "token id out of range")
            (x + n * c).update(from: embedding + token * c, count: c)
        }
    }

    /// Grows the rotary table to `count` positions (at most the context) ahead of forward passes that run
    /// side by side on several threads (`BatchedDecoder`), which then only read it.
    func reserveRotaryPositions(_ count: Int) {
        let positions = min(count, config.maxPositionEmbeddings)
        if positions > rope.positions { rope.reserve(positions) }
    }

    /// y[N, out] = x[N, in] · Wᵀ for the weight matrix at `offset` in the layout: from `reducedWeights`
    /// when given, else from the f32 parameters.
    @inline(__always)
    private func project(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, weightAt offset: Int, rows: Int,
                         inFeatures: Int, outFeatures: Int, accumulate: Bool = false, reducedWeights: DecodingWeights?) {
        if let reducedWeights {
            reducedWeights.project(y, x, matrixAt: offset, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                   accumulate: accumulate)
        } else {
            linearForward(y, x, parameters.baseAddress! + offset, rows: rows, inFeatures: inFeatures,
                          outFeatures: outFeatures, accumulate: accumulate)
        }
    }

    /// `project` with row-wise passes before and after that ride in the product's parallel parts (see
    /// `linearForward(_:_:_:rows:inFeatures:outFeatures:accumulate:before:after:)`).
    @inline(__always)
    private func project(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, weightAt offset: Int, rows: Int,
                         inFeatures: Int, outFeatures: Int, accumulate: Bool = false, reducedWeights: DecodingWeights?,
                         before: (Range<Int>) -> Void, after: (Range<Int>) -> Void = { _ in }) {
        if reducedWeights == nil {
            linearForward(y, x, parameters.baseAddress! + offset, rows: rows, inFeatures: inFeatures,
                          outFeatures: outFeatures, accumulate: accumulate, before: before, after: after)
        } else {
            before(0..<rows)
            project(y, x, weightAt: offset, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                    accumulate: accumulate, reducedWeights: reducedWeights)
            after(0..<rows)
        }
    }

    /// One decoder block: output [B·T, C] = block(input [B·T, C]). With caches (one per sequence),
    /// attention reads the earlier positions' keys and values from them and nothing is kept for backward.
    private func blockForward(layer: Int, acts: BlockActivations, input: UnsafeMutablePointer<Float>,
                              output: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, batch: Int,
                              length: Int, startPosition: Int, caches: [KeyValueCache], keepForBackward: Bool,
                              reducedWeights: DecodingWeights?) {
        let c = config.hiddenSize, f = config.intermediateSize, rows = batch * length
        let heads = config.numAttentionHeads, kvHeads = config.numKeyValueHeads, d = config.headDim
        let qkvWidth = c + 2 * kvHeads * d
        let block = layout.blocks[layer], weights = UnsafeMutablePointer(parameters.baseAddress!)

        // Attention half: output = input + o_proj(attention(rope(qkv(norm(input))))). The row-wise passes
        // ride in the products' parts: the norm before qkv, the rotation after it, the residual
        // copy before o_proj; then the MLP's norm before gate/up, SwiGLU after it.
        project(acts.qkv, acts.attentionNormed, weightAt: block.qkv, rows: rows, inFeatures: c, outFeatures: qkvWidth,
                reducedWeights: reducedWeights, before: { part in
                    rmsnormRows(acts.attentionNormed, acts.attentionRstd, input, gain: weights + block.attentionNorm, rows: part)
                }, after: { part in
                    rope.apply(acts.qkv, rowStride: qkvWidth, rows: part, length: length, startPosition: startPosition,
                               queryHeads: heads, keyHeads: kvHeads, inverse: false)
                })
        if !caches.isEmpty {
            // Each sequence attends over its own cache; the sequences' rows lie one after another. One
            // sequence splits its heads over the cores; several (decoded together) are each one thread's,
            // claimed one at a time: a step per sequence and layer, each a few microseconds of work, spent a
            // fifth of batch 32's time handing off and waiting.
            func attend(_ sequence: Int, splittingHeads: Bool) {
                let cache = caches[sequence]
                cachedAttentionForward(out: acts.attentionOut + sequence * length * c, qkv: acts.qkv + sequence * length * qkvWidth,
                                       keys: cache.keys(layer: layer), values: cache.values(layer: layer),
                                       capacity: cache.capacity, scores: cache.scores, scoreRows: cache.scoreRows,
                                       start: startPosition, length: length, heads: heads, kvHeads: kvHeads, headDim: d,
                                       splittingHeads: splittingHeads)
            }
            if caches.count == 1 {
                attend(0, splittingHeads: true)
            } else {
                Compute.parallel(caches.count) { sequence in attend(sequence, splittingHeads: false) }
            }
        } else {
            attentionForward(out: acts.attentionOut, rowStats: acts.attentionRowStats, scratch: scratch,
                             qkv: acts.qkv, batch: batch, length: length, heads: heads, kvHeads: kvHeads, headDim: d)
        }
        project(output, acts.attentionOut, weightAt: block.output, rows: rows, inFeatures: c, outFeatures: c, accumulate: true,
                reducedWeights: reducedWeights, before: { part in
                    (output + part.lowerBound * c).update(from: input + part.lowerBound * c, count: part.count * c)
                })

        // MLP half: output += down(silu(gate(norm(x))) * up(norm(x)))
        project(acts.gateUp, acts.mlpNormed, weightAt: block.gateUp, rows: rows, inFeatures: c, outFeatures: 2 * f,
                reducedWeights: reducedWeights, before: { part in
                    rmsnormRows(acts.mlpNormed, acts.mlpRstd, output, gain: weights + block.mlpNorm, rows: part)
                }, after: { part in
                    ck_swiglu_forward(acts.swiglu + part.lowerBound * f, acts.gateUp + part.lowerBound * 2 * f, part.count, f)
                    // The residual before the MLP must survive for backward: keep it in `attentionResidual`.
                    if keepForBackward {
                        (acts.attentionResidual + part.lowerBound * c).update(from: output + part.lowerBound * c, count: part.count * c)
                    }
                })
        project(output, acts.swiglu, weightAt: block.down, rows: rows, inFeatures: f, outFeatures: c, accumulate: true,
                reducedWeights: reducedWeights)
    }

    /// swiglu [N, F] = silu(gate) ⊙ up from gateUp [N, 2F], the rows split over the cores.
    private func swigluForward(_ swiglu: UnsafeMutablePointer<Float>, _ gateUp: UnsafePointer<Float>, rows: Int) {
        let f = config.intermediateSize
        forEachRowRange(rows) { range in
            ck_swiglu_forward(swiglu + range.lowerBound * f, gateUp + range.lowerBound * 2 * f, range.count, f)
        }
    }

    /// out [N, C] = RMSNorm(x [N, C]) · gain, rstd [N] kept for backward; the rows split over the cores.
    private func rmsnormForward(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                                _ x: UnsafePointer<Float>, gain: UnsafePointer<Float>, rows: Int) {
        forEachRowRange(rows) { range in rmsnormRows(out, rstd, x, gain: gain, rows: range) }
    }

    /// The same for the rows `rows` only, on the calling thread.
    private func rmsnormRows(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                             _ x: UnsafePointer<Float>, gain: UnsafePointer<Float>, rows: Range<Int>) {
        let c = config.hiddenSize
        ck_rmsnorm_forward(out + rows.lowerBound * c, rstd + rows.lowerBound, x + rows.lowerBound * c, gain,
                           rows.count, c, config.rmsNormEps)
    }

    /// RMSNorm's backward over all rows, split over the cores: dx [rows, C] += d x, dGain [C] += d gain.
    /// The gain's gradient sums over rows, so each fixed chunk of `rmsnormBackwardChunkRows` rows sums its
    /// own part and the parts are added in chunk order: the same bits on any number of threads (one core's
    /// pass over all rows kept the other waiting for 3–4% of a `tiny` training step).
    private func rmsnormBackward(dx: UnsafeMutablePointer<Float>, dGain: UnsafeMutablePointer<Float>,
                                 dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, gain: UnsafePointer<Float>,
                                 rstd: UnsafePointer<Float>, rows: Int) {
        let c = config.hiddenSize, chunkRows = Self.rmsnormBackwardChunkRows
        let chunks = (rows + chunkRows - 1) / chunkRows
        guard chunks > 1 else { return ck_rmsnorm_backward(dx, dGain, dOut, x, gain, rstd, rows, c) }
        let parts = UnsafeMutablePointer<Float>.allocate(capacity: chunks * c)  // [chunks, C]
        defer { parts.deallocate() }
        forEachRowRange(chunks, minimumRows: 1) { chunkRange in
            for chunk in chunkRange {
                let start = chunk * chunkRows, count = min(chunkRows, rows - start), part = parts + chunk * c
                part.update(repeating: 0, count: c)
                ck_rmsnorm_backward(dx + start * c, part, dOut + start * c, x + start * c, gain, rstd + start, count, c)
            }
        }
        for chunk in 0..<chunks { ck_add_inplace(dGain, parts + chunk * c, c) }
    }

    /// Rows per chunk of `rmsnormBackward`'s partial gain gradients: few enough partial sums to add
    /// (1/64 of the pass's work), enough chunks to share out (16 at `tiny`'s 1,024 rows).
    static let rmsnormBackwardChunkRows = 64

    // MARK: backward

    /// Accumulates parameter gradients for the last forward pass (which must have kept its state); once
    /// per forward pass, since it writes gradients over part of that state.
    /// Gradient enters at the logits `dLogits` [B·T, V], at any captured hidden state `dHidden[layer]`
    /// [B·T, C], and at the final normed hidden states `dFinalHidden` [B·T, C]. Any may be absent.
    public func backward(dLogits: UnsafePointer<Float>?, dHidden: [Int: UnsafePointer<Float>] = [:],
                         dFinalHidden: UnsafePointer<Float>? = nil) {
        guard let acts = activations, acts.perBlock, !acts.backwardDone else {
            preconditionFailure("backward needs a forward pass with keepForBackward, and runs once per forward pass")
        }
        acts.backwardDone = true
        if gradients == nil { zeroGradients() }
        let grads = gradients!.baseAddress!, weights = UnsafeMutablePointer(parameters.baseAddress!)
        let c = config.hiddenSize, rows = acts.batch * acts.length, vocab = config.vocabSize
        let layers = config.numHiddenLayers

        // d finalNormed = dLogits · W_head (+ dFinalHidden)
        let dNormed = acts.scratchNormed
        zeroInParallel(dNormed, count: rows * c)
        if let dLogits {
            linearBackward(dx: dNormed, dWeight: grads + layout.lmHead, dy: dLogits, x: acts.finalNormed,
                           weight: weights + layout.lmHead, rows: rows, inFeatures: c, outFeatures: vocab)
        }
        if let dFinalHidden { ck_add_inplace(dNormed, dFinalHidden, rows * c) }
        let dResidual = acts.dResidual
        zeroInParallel(dResidual, count: rows * c)
        rmsnormBackward(dx: dResidual, dGain: grads + layout.finalNorm, dOut: dNormed, x: acts.residual[layers],
                        gain: weights + layout.finalNorm, rstd: acts.finalRstd, rows: rows)
        for layer in stride(from: layers - 1, through: 0, by: -1) {
            if let dh = dHidden[layer] { ck_add_inplace(dResidual, dh, rows * c) }
            // Block 0's input shares block 1's stream after attention, dead now: copy the rows again.
            if layer == 0 && acts.sizes.inputEmbeddingsBorrowed { embed(acts.tokens, rows: rows, into: acts.residual[0]) }
            blockBackward(layer: layer, acts: acts.block(layer), input: acts.residual[layer], dResidual: dResidual, scratch: acts)
        }
        // Embedding rows receive the gradient of the residual stream's start.
        let tokens = acts.tokens
        for n in 0..<rows {
            ck_add_inplace(grads + layout.embedding + Int(tokens[n]) * c, dResidual + n * c, c)
        }
    }

    /// Backward through one block. `dResidual` [B·T, C] holds d(block output) on entry and
    /// d(block input) on return.
    private func blockBackward(layer: Int, acts: BlockActivations, input: UnsafeMutablePointer<Float>,
                               dResidual: UnsafeMutablePointer<Float>, scratch: Activations) {
        let c = config.hiddenSize, f = config.intermediateSize, rows = scratch.batch * scratch.length
        let qkvWidth = c + 2 * config.numKeyValueHeads * config.headDim
        let block = layout.blocks[layer]
        let grads = gradients!.baseAddress!, weights = UnsafeMutablePointer(parameters.baseAddress!)

        // MLP: d swiglu = dOut · W_down; d gateUp; d mlpNormed; through the norm into dResidual.
        // The SwiGLU output and the normed input are recomputed (all blocks share one buffer for each), and
        // in the blocks that borrow a later block's gate/up buffer (`ActivationSizes.gateUpRecomputedBlocks`)
        // gate/up too, by the calls forward made on the same inputs, so bitwise as forward had them. Buffers are reused once
        // dead: d swiglu goes over the SwiGLU output once dW_down has read it, and gateUp's gradient over
        // gateUp; with `backwardScratchInSharedBuffers` (unless the shapes forbid it), d normed and d attention
        // output live in the SwiGLU buffer after its gradient is consumed, d qkv in gate/up's after dW_gateUp
        // has read it.
        let dSwiglu = acts.swiglu, dGateUp = acts.gateUp, dNormed = scratch.scratchNormed
        rmsnormForward(acts.mlpNormed, acts.mlpRstd, acts.attentionResidual, gain: weights + block.mlpNorm, rows: rows)
        if acts.recomputesGateUp {
            project(acts.gateUp, acts.mlpNormed, weightAt: block.gateUp, rows: rows, inFeatures: c, outFeatures: 2 * f,
                    reducedWeights: nil)
        }
        swigluForward(acts.swiglu, acts.gateUp, rows: rows)
        linearBackward(dx: nil, dWeight: grads + block.down, dy: dResidual, x: acts.swiglu,
                       weight: weights + block.down, rows: rows, inFeatures: f, outFeatures: c)
        linearBackward(dx: dSwiglu, dWeight: nil, dy: dResidual, x: acts.swiglu,
                       weight: weights + block.down, rows: rows, inFeatures: f, outFeatures: c, overwritingDx: true)
        forEachRowRange(rows) { range in
            ck_swiglu_backward_inplace(dGateUp + range.lowerBound * 2 * f, dSwiglu + range.lowerBound * f, range.count, f)
        }
        linearBackward(dx: dNormed, dWeight: grads + block.gateUp, dy: dGateUp, x: acts.mlpNormed,
                       weight: weights + block.gateUp, rows: rows, inFeatures: c, outFeatures: 2 * f, overwritingDx: true)
        rmsnormBackward(dx: dResidual, dGain: grads + block.mlpNorm, dOut: dNormed, x: acts.attentionResidual,
                        gain: weights + block.mlpNorm, rstd: acts.mlpRstd, rows: rows)

        // Attention: d attentionOut = dResidual · W_o; through attention and rope into dqkv. dW_o reads the
        // attention output, kept by forward or written again by attention backward (the same bits).
        let dAttention = scratch.dAttentionOut, dQKV = scratch.dQKV(in: acts)
        let recomputedOut = scratch.recomputedAttentionOut(in: acts)
        linearBackward(dx: dAttention, dWeight: recomputedOut == nil ? grads + block.output : nil, dy: dResidual,
                       x: acts.attentionOut, weight: weights + block.output, rows: rows, inFeatures: c, outFeatures: c,
                       overwritingDx: true)
        attentionBackward(dqkv: dQKV, recomputedOut: recomputedOut, dOut: dAttention, rowStats: acts.attentionRowStats,
                          qkv: acts.qkv, scratch: scratch.attentionScratch, batch: scratch.batch, length: scratch.length,
                          heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads, headDim: config.headDim)
        if let recomputedOut {
            linearBackward(dx: nil, dWeight: grads + block.output, dy: dResidual, x: recomputedOut,
                           weight: weights + block.output, rows: rows, inFeatures: c, outFeatures: c)
        }
        rope.apply(dQKV, rowStride: qkvWidth, batch: scratch.batch, length: scratch.length, startPosition: 0,
                   queryHeads: config.numAttentionHeads, keyHeads: config.numKeyValueHeads, inverse: true)
        rmsnormForward(acts.attentionNormed, acts.attentionRstd, input, gain: weights + block.attentionNorm, rows: rows)
        linearBackward(dx: dNormed, dWeight: grads + block.qkv, dy: dQKV, x: acts.attentionNormed,
                       weight: weights + block.qkv, rows: rows, inFeatures: c, outFeatures: qkvWidth, overwritingDx: true)
        rmsnormBackward(dx: dResidual, dGain: grads + block.attentionNorm, dOut: dNormed, x: input,
                        gain: weights + block.attentionNorm, rstd: acts.attentionRstd, rows: rows)
    }

    // MARK: buffers

    private func activationsFor(batch: Int, length: Int, perBlock: Bool) -> Activations {
        // Buffers kept for backward serve an inference pass as well.
        if let acts = activations, acts.batch == batch, acts.length == length, acts.perBlock || !perBlock,
           acts.threads >= Compute.threads, !acts.perBlock || acts.sizes.gateUpRecomputedBlocks == gateUpRecomputedBlocks {
            return acts
        }
        activations = nil  // free the old buffers before allocating new ones
        let acts = Activations(config: config, batch: batch, length: length, perBlock: perBlock,
                               gateUpRecomputedBlocks: gateUpRecomputedBlocks)
        activations = acts
        return acts
    }

    /// Frees the forward/backward buffers (a model kept only for its weights).
    public func releaseActivations() { activations = nil }
}
