/// Decodes several sequences together: every row has a prompt of the same length and receives the same
/// number of new tokens, so all rows sit at the same position at every step and one forward pass over
/// the batch's rows (the products over all rows at once, attention per row over that row's own key/value
/// cache) advances them all. Built once for a shape and reused: a decoding run allocates nothing per
/// token. Reads the model's weights in place, so it always decodes with the model's current weights.
public final class BatchedDecoder {
    public let model: LlamaModel
    /// Sequences decoded together, B.
    public let rows: Int
    /// Prompt tokens per row, P ≥ 1.
    public let promptLength: Int
    /// Tokens sampled per row, N ≥ 1.
    public let newTokens: Int
    /// One key/value cache per row, with room for the P − 1 + N positions a run feeds.
    private let caches: [KeyValueCache]
    /// The forward pass over the first P − 1 prompt tokens of every row (nil when P = 1).
    private let promptActivations: Activations?
    /// The forward pass of one decoding step, one token per row.
    private let stepActivations: Activations
    private let promptTokens: UnsafeMutablePointer<Int32>  // [B, P − 1]
    private let stepTokens: UnsafeMutablePointer<Int32>    // [B]
    private let workspace: SamplingWorkspace

    /// Refuses an empty shape, a sequence of P + N tokens longer than the model's context, and caches
    /// beyond the machine's memory.
    public init(model: LlamaModel, rows: Int, promptLength: Int, newTokens: Int) throws {
        guard rows >= 1 else { throw GenerationError.emptyBatch }
        guard promptLength >= 1 else { throw GenerationError.emptyPrompt }
        guard newTokens >= 1 else { throw GenerationError.noNewTokens }
        let config = model.config
        guard promptLength + newTokens <= config.maxPositionEmbeddings else {
            throw GenerationError.promptTooLong(tokens: promptLength + newTokens, context: config.maxPositionEmbeddings)
        }
        self.model = model
        self.rows = rows
        self.promptLength = promptLength
        self.newTokens = newTokens
        // The last sampled token is never fed: P − 1 + N positions.
        let positions = promptLength - 1 + newTokens
        caches = try (0..<rows).map { _ in
            let cache = KeyValueCache(layers: config.numHiddenLayers, heads: config.numKeyValueHeads, headDim: config.headDim,
                                      limit: config.maxPositionEmbeddings)
            try cache.reserve(positions, filled: 0)
            return cache
        }
        promptActivations = promptLength > 1 ? Activations(config: config, batch: rows, length: promptLength - 1, perBlock: false) : nil
        stepActivations = Activations(config: config, batch: rows, length: 1, perBlock: false)
        promptTokens = .allocate(capacity: rows * max(promptLength - 1, 1))
        stepTokens = .allocate(capacity: rows)
        workspace = SamplingWorkspace(vocabSize: config.vocabSize)
    }

    deinit {
        promptTokens.deallocate()
        stepTokens.deallocate()
    }

    /// Tokens per row, P + N.
    public var sequenceLength: Int { promptLength + newTokens }

    /// Continues every row of `sequences` [B, P + N]: on entry the first P tokens of each row are its
    /// prompt; on return positions P..<P+N hold the tokens drawn by `samplers[row]` (one per row, so that
    /// a row's tokens do not depend on the other rows: decoding them together or one at a time draws the
    /// same). No stop token: every row receives exactly N tokens.
    public func generate(sequences: UnsafeMutablePointer<Int32>, samplers: inout [Sampler]) throws {
        precondition(samplers.count == rows, "one sampler per row")
        // The result does not depend on the thread count (the split products are bitwise the whole ones).
        try Compute.withThreads(decodingThreads) { try decode(sequences: sequences, samplers: &samplers) }
    }

    /// Weights × rows of a decoding step below which it runs on one thread: such a step is a few dozen
    /// small products and row passes, each too short to hand to another thread. Measured here on the
    /// tiny-student preset (230k weights), 4 rows: 32,900 tokens/s on one thread, 917 on two while the
    /// other core was busy (each hand-off then waits for a time slice).
    static let singleThreadStepWork = 32_000_000

    /// One thread for small steps, the compute team for large ones.
    var decodingThreads: Int { model.parameterCount * rows < Self.singleThreadStepWork ? 1 : Compute.threads }

    private func decode(sequences: UnsafeMutablePointer<Int32>, samplers: inout [Sampler]) throws {
        let length = sequenceLength, vocab = model.config.vocabSize
        for row in 0..<rows {
            for position in 0..<promptLength {
                let token = sequences[row * length + position]
                guard token >= 0 && Int(token) < vocab else { throw GenerationError.badToken(Int(token)) }
            }
        }
        // The prompt but its last token in one pass; the last token starts the decoding steps, whose
        // logits give the first new token.
        if let promptActivations {
            let prefix = promptLength - 1
            for row in 0..<rows { (promptTokens + row * prefix).update(from: sequences + row * length, count: prefix) }
            model.forward(tokens: promptTokens, batch: rows, length: prefix, startPosition: 0, caches: caches,
                          into: promptActivations, head: false)
        }
        for row in 0..<rows { stepTokens[row] = sequences[row * length + promptLength - 1] }
        for step in 0..<newTokens {
            model.forward(tokens: stepTokens, batch: rows, length: 1, startPosition: promptLength - 1 + step, caches: caches,
                          into: stepActivations)
            let logits = stepActivations.logits
            for row in 0..<rows {
                let next = Int32(samplers[row].sample(logits + row * vocab, count: vocab, workspace: workspace))
                sequences[row * length + promptLength + step] = next
                stepTokens[row] = next
            }
        }
    }
}
