/// Decodes several sequences together, one forward pass over the rows still decoding per position (the
/// products over all of them at once, attention per row over that row's own key/value cache). Rows may
/// have prompts of different lengths and receive different numbers of new tokens: all rows start at
/// position 0, the shortest prompt but its last token goes in one pass, and from there every row is fed
/// one position per step, its own prompt token while its prompt lasts and its sampled token after; a row
/// that has all its tokens leaves the pass. So every row sits at the same position at every step, and a
/// row's tokens are those it would draw decoded alone. Built once for a shape and reused: a decoding run
/// allocates nothing per token. Reads the model's weights in place, so it always decodes with the
/// model's current weights; with a reduced `precision` (bf16, f16, Q8_0), it reads a copy made when it
/// is built, as `KVCacheSession(model:precision:)` does, and draws what such a session draws.
///
/// Threads: a small model's decoding step is a few dozen products and row passes, each too short to hand
/// to another thread, so its rows are split in two groups that decode side by side, each on one thread
/// (one hand-off per run instead of dozens per token). A large step runs whole on the compute team. The
/// split depends on the model and the rows only, so the tokens do not depend on the thread count.
public final class BatchedDecoder {
    public let model: LlamaModel
    /// Sequences decoded together, B.
    public let rows: Int
    /// Each row's prompt tokens P_r ≥ 1.
    public let promptLengths: [Int]
    /// Each row's sampled tokens N_r ≥ 1.
    public let newTokenCounts: [Int]
    /// The rows split for the threads: one group, or two of about half the rows each.
    private let groups: [RowGroup]
    /// The reduced copy of the weights the products read, or nil for the model's f32 weights.
    public let reducedWeights: DecodingWeights?

    /// Weights × rows of a decoding step below which its rows decode in two single-threaded groups.
    /// Measured here on the tiny-student preset (230k weights), 4 rows: 32,900 tokens/s on one thread,
    /// 917 on the two-thread team while the other core was busy (each hand-off then waits for a time slice).
    static let smallStepWork = 32_000_000

    /// `rows` sequences of one shape: P prompt tokens and N new ones each.
    public convenience init(model: LlamaModel, rows: Int, promptLength: Int, newTokens: Int, precision: WeightFormat = .f32) throws {
        guard rows >= 1 else { throw GenerationError.emptyBatch }
        try self.init(model: model, promptLengths: Array(repeating: promptLength, count: rows),
                      newTokens: Array(repeating: newTokens, count: rows), precision: precision)
    }

    /// Row r has `promptLengths[r]` prompt tokens and receives `newTokens[r]`. Refuses an empty shape, a
    /// sequence longer than the model's context, caches or a reduced copy beyond the machine's memory.
    public init(model: LlamaModel, promptLengths: [Int], newTokens: [Int], precision: WeightFormat = .f32) throws {
        precondition(promptLengths.count == newTokens.count, "one prompt length and one count of new tokens per row")
        guard !promptLengths.isEmpty else { throw GenerationError.emptyBatch }
        guard promptLengths.allSatisfy({ $0 >= 1 }) else { throw GenerationError.emptyPrompt }
        guard newTokens.allSatisfy({ $0 >= 1 }) else { throw GenerationError.noNewTokens }
        let context = model.config.maxPositionEmbeddings
        let longest = zip(promptLengths, newTokens).map { $0 + $1 }.max() ?? 0
        guard longest <= context else { throw GenerationError.promptTooLong(tokens: longest, context: context) }
        self.model = model
        rows = promptLengths.count
        self.promptLengths = promptLengths
        newTokenCounts = newTokens
        sequenceLength = longest
        let split = rows >= 2 && model.parameterCount * rows < Self.smallStepWork
        let bounds = split ? [0, rows / 2, rows] : [0, rows]
        groups = try zip(bounds, bounds.dropFirst()).map { start, end in
            try RowGroup(model: model, rows: start..<end, promptLengths: promptLengths, newTokens: newTokens, stride: longest)
        }
        // The groups read the rotary table side by side: it must not grow while they do.
        model.reserveRotaryPositions(longest - 1)
        reducedWeights = precision == .f32 ? nil : try DecodingWeights(model: model, format: precision)
    }

    /// Tokens from one row's start to the next in `generate`'s buffer: the longest row's P_r + N_r.
    public let sequenceLength: Int

    /// Continues every row of `sequences` [B, sequenceLength]: on entry the first P_r tokens of row r are
    /// its prompt; on return positions P_r ..< P_r + N_r hold the tokens drawn by `samplers[r]` (one per
    /// row, so that a row's tokens do not depend on the other rows: decoding them together or one at a
    /// time draws the same), and the positions after them are untouched. No stop token: every row
    /// receives exactly its N_r tokens.
    public func generate(sequences: UnsafeMutablePointer<Int32>, samplers: inout [Sampler]) throws {
        precondition(samplers.count == rows, "one sampler per row")
        let vocab = model.config.vocabSize
        for (row, promptLength) in promptLengths.enumerated() {
            for position in 0..<promptLength {
                let token = sequences[row * sequenceLength + position]
                guard token >= 0 && Int(token) < vocab else { throw GenerationError.badToken(Int(token)) }
            }
        }
        samplers.withUnsafeMutableBufferPointer { rowSamplers in
            guard groups.count > 1 else {
                return groups[0].decode(model: model, reducedWeights: reducedWeights, sequences: sequences, samplers: rowSamplers)
            }
            let threads = Compute.threads
            // Each group on one thread: the steps' own loops and products run inline.
            Compute.withThreads(1) {
                if threads >= 2 {
                    DispatchQueue.concurrentPerform(iterations: groups.count) { group in
                        groups[group].decode(model: model, reducedWeights: reducedWeights, sequences: sequences, samplers: rowSamplers)
                    }
                } else {
                    for group in groups {
                        group.decode(model: model, reducedWeights: reducedWeights, sequences: sequences, samplers: rowSamplers)
                    }
                }
            }
        }
    }
}

import Dispatch

/// Some rows of a `BatchedDecoder` and the buffers that decode them: one key/value cache per row, the
/// prompts' and the steps' forward-pass buffers, the tokens fed, a sampling workspace.
final class RowGroup {
    /// The decoder's rows this group decodes, longest sequence first (ties in row order): the rows still
    /// decoding at any position are the first ones of this order.
    private let order: [Int]
    /// Of the rows in `order`: the prompt length, and the positions fed (P_r − 1 + N_r: the last sampled
    /// token is never fed).
    private let promptLengths: [Int], fedPositions: [Int]
    /// Tokens from one row's start to the next in the decoder's buffer.
    private let stride: Int
    /// Positions 0 ..< sharedPrompt of every row are prompt tokens fed in one pass: the shortest prompt
    /// but its last token.
    private let sharedPrompt: Int
    /// One key/value cache per row of `order`, and for each k the first k of them (the forward pass takes
    /// an array: made once here, not per token).
    private let caches: [KeyValueCache], leadingCaches: [[KeyValueCache]]
    /// The forward pass over the shared prompt positions of every row (nil when there are none).
    private let promptActivations: Activations?
    /// The forward pass of one decoding step, one token per row.
    private let stepActivations: Activations
    private let promptTokens: UnsafeMutablePointer<Int32>  // [rows, sharedPrompt]
    private let stepTokens: UnsafeMutablePointer<Int32>    // [rows]
    private let workspace: SamplingWorkspace

    init(model: LlamaModel, rows: Range<Int>, promptLengths allPrompts: [Int], newTokens: [Int], stride: Int) throws {
        let config = model.config
        order = rows.sorted { (allPrompts[$0] + newTokens[$0], $1) > (allPrompts[$1] + newTokens[$1], $0) }
        let promptLengths = order.map { allPrompts[$0] }, fedPositions = order.map { allPrompts[$0] - 1 + newTokens[$0] }
        self.promptLengths = promptLengths
        self.fedPositions = fedPositions
        self.stride = stride
        let sharedPrompt = (promptLengths.min() ?? 1) - 1
        self.sharedPrompt = sharedPrompt
        let caches = try fedPositions.map { positions in
            let cache = KeyValueCache(layers: config.numHiddenLayers, heads: config.numKeyValueHeads, headDim: config.headDim,
                                      limit: config.maxPositionEmbeddings)
            try cache.reserve(positions, filled: 0)
            return cache
        }
        self.caches = caches
        leadingCaches = (0...caches.count).map { Array(caches[0..<$0]) }
        promptActivations = sharedPrompt > 0
            ? Activations(config: config, batch: rows.count, length: sharedPrompt, perBlock: false) : nil
        stepActivations = Activations(config: config, batch: rows.count, length: 1, perBlock: false)
        promptTokens = .allocate(capacity: rows.count * max(sharedPrompt, 1))
        stepTokens = .allocate(capacity: rows.count)
        workspace = SamplingWorkspace(vocabSize: config.vocabSize)
    }

    deinit {
        promptTokens.deallocate()
        stepTokens.deallocate()
    }

    /// Decodes this group's rows of `sequences` [B, stride] with their `samplers` [B] (see
    /// `BatchedDecoder.generate`; the prompts' tokens are checked there).
    func decode(model: LlamaModel, reducedWeights: DecodingWeights?, sequences: UnsafeMutablePointer<Int32>,
                samplers: UnsafeMutableBufferPointer<Sampler>) {
        let vocab = model.config.vocabSize
        if let promptActivations {
            for (index, row) in order.enumerated() {
                (promptTokens + index * sharedPrompt).update(from: sequences + row * stride, count: sharedPrompt)
            }
            model.forward(tokens: promptTokens, batch: order.count, length: sharedPrompt, startPosition: 0, caches: caches,
                          into: promptActivations, head: false, reducedWeights: reducedWeights)
        }
        // Each step feeds position `position` of every row that still has tokens to draw; its logits give
        // the token after it: the row's own prompt token while the prompt lasts, else a sampled one.
        var active = order.count
        for position in sharedPrompt..<(fedPositions.first ?? 0) {
            while fedPositions[active - 1] <= position { active -= 1 }
            for index in 0..<active { stepTokens[index] = sequences[order[index] * stride + position] }
            model.forward(tokens: stepTokens, batch: active, length: 1, startPosition: position, caches: leadingCaches[active],
                          into: stepActivations, reducedWeights: reducedWeights)
            let logits = stepActivations.logits
            for index in 0..<active where position + 1 >= promptLengths[index] {
                let row = order[index]
                sequences[row * stride + position + 1] = Int32(samplers[row].sample(logits + index * vocab, count: vocab,
                                                                                     workspace: workspace))
            }
        }
    }
}
