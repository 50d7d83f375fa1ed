/// Decodes several sequences together: every row has a prompt of the same length and receives the same
/// number of new tokens, so all rows sit at the same position at every step and one forward pass over
/// the batch's rows (the products over all rows at once, attention per row over that row's own key/value
/// cache) advances them all. Built once for a shape and reused: a decoding run allocates nothing per
/// token. Reads the model's weights in place, so it always decodes with the model's current weights.
///
/// Threads: a small model's decoding step is a few dozen products and row passes, each too short to hand
/// to another thread, so its rows are split in two groups that decode side by side, each on one thread
/// (one hand-off per run instead of dozens per token). A large step runs whole on the compute team. The
/// split depends on the model and the rows only, so the tokens do not depend on the thread count.
public final class BatchedDecoder {
    public let model: LlamaModel
    /// Sequences decoded together, B.
    public let rows: Int
    /// Prompt tokens per row, P ≥ 1.
    public let promptLength: Int
    /// Tokens sampled per row, N ≥ 1.
    public let newTokens: Int
    /// The rows split for the threads: one group, or two of about half the rows each.
    private let groups: [RowGroup]

    /// Weights × rows of a decoding step below which its rows decode in two single-threaded groups.
    /// Measured here on the tiny-student preset (230k weights), 4 rows: 32,900 tokens/s on one thread,
    /// 917 on the two-thread team while the other core was busy (each hand-off then waits for a time slice).
    static let smallStepWork = 32_000_000

    /// Refuses an empty shape, a sequence of P + N tokens longer than the model's context, and caches
    /// beyond the machine's memory.
    public init(model: LlamaModel, rows: Int, promptLength: Int, newTokens: Int) throws {
        guard rows >= 1 else { throw GenerationError.emptyBatch }
        guard promptLength >= 1 else { throw GenerationError.emptyPrompt }
        guard newTokens >= 1 else { throw GenerationError.noNewTokens }
        let context = model.config.maxPositionEmbeddings
        guard promptLength + newTokens <= context else {
            throw GenerationError.promptTooLong(tokens: promptLength + newTokens, context: context)
        }
        self.model = model
        self.rows = rows
        self.promptLength = promptLength
        self.newTokens = newTokens
        let split = rows >= 2 && model.parameterCount * rows < Self.smallStepWork
        let bounds = split ? [0, rows / 2, rows] : [0, rows]
        groups = try zip(bounds, bounds.dropFirst()).map { start, end in
            try RowGroup(model: model, rows: start..<end, promptLength: promptLength, newTokens: newTokens)
        }
        // The groups read the rotary table side by side: it must not grow while they do.
        model.reserveRotaryPositions(promptLength - 1 + newTokens)
    }

    /// Tokens per row, P + N.
    public var sequenceLength: Int { promptLength + newTokens }

    /// Continues every row of `sequences` [B, P + N]: on entry the first P tokens of each row are its
    /// prompt; on return positions P..<P+N hold the tokens drawn by `samplers[row]` (one per row, so that
    /// a row's tokens do not depend on the other rows: decoding them together or one at a time draws the
    /// same). No stop token: every row receives exactly N tokens.
    public func generate(sequences: UnsafeMutablePointer<Int32>, samplers: inout [Sampler]) throws {
        precondition(samplers.count == rows, "one sampler per row")
        let vocab = model.config.vocabSize
        for row in 0..<rows {
            for position in 0..<promptLength {
                let token = sequences[row * sequenceLength + position]
                guard token >= 0 && Int(token) < vocab else { throw GenerationError.badToken(Int(token)) }
            }
        }
        samplers.withUnsafeMutableBufferPointer { rowSamplers in
            guard groups.count > 1 else { return groups[0].decode(model: model, sequences: sequences, samplers: rowSamplers) }
            let threads = Compute.threads
            // Each group on one thread: the steps' own loops and products run inline.
            Compute.withThreads(1) {
                if threads >= 2 {
                    DispatchQueue.concurrentPerform(iterations: groups.count) { group in
                        groups[group].decode(model: model, sequences: sequences, samplers: rowSamplers)
                    }
                } else {
                    for group in groups { group.decode(model: model, sequences: sequences, samplers: rowSamplers) }
                }
            }
        }
    }
}

import Dispatch

/// Some rows of a `BatchedDecoder` and the buffers that decode them: one key/value cache per row, the
/// prompt's and the steps' forward-pass buffers, the tokens fed, a sampling workspace.
final class RowGroup {
    /// The rows of the decoder's batch this group decodes.
    let rows: Range<Int>
    let promptLength: Int, newTokens: Int
    /// One key/value cache per row, with room for the P − 1 + N positions a run feeds.
    private let caches: [KeyValueCache]
    /// The forward pass over the first P − 1 prompt tokens of every row (nil when P = 1).
    private let promptActivations: Activations?
    /// The forward pass of one decoding step, one token per row.
    private let stepActivations: Activations
    private let promptTokens: UnsafeMutablePointer<Int32>  // [rows, P − 1]
    private let stepTokens: UnsafeMutablePointer<Int32>    // [rows]
    private let workspace: SamplingWorkspace

    init(model: LlamaModel, rows: Range<Int>, promptLength: Int, newTokens: Int) throws {
        let config = model.config
        self.rows = rows
        self.promptLength = promptLength
        self.newTokens = newTokens
        // The last sampled token is never fed: P − 1 + N positions.
        let positions = promptLength - 1 + newTokens
        caches = try rows.map { _ in
            let cache = KeyValueCache(layers: config.numHiddenLayers, heads: config.numKeyValueHeads, headDim: config.headDim,
                                      limit: config.maxPositionEmbeddings)
            try cache.reserve(positions, filled: 0)
            return cache
        }
        promptActivations = promptLength > 1
            ? Activations(config: config, batch: rows.count, length: promptLength - 1, perBlock: false) : nil
        stepActivations = Activations(config: config, batch: rows.count, length: 1, perBlock: false)
        promptTokens = .allocate(capacity: rows.count * max(promptLength - 1, 1))
        stepTokens = .allocate(capacity: rows.count)
        workspace = SamplingWorkspace(vocabSize: config.vocabSize)
    }

    deinit {
        promptTokens.deallocate()
        stepTokens.deallocate()
    }

    /// Decodes this group's rows of `sequences` [B, P + N] with their `samplers` [B] (see
    /// `BatchedDecoder.generate`; the prompts' tokens are checked there).
    func decode(model: LlamaModel, sequences: UnsafeMutablePointer<Int32>, samplers: UnsafeMutableBufferPointer<Sampler>) {
        let length = promptLength + newTokens, vocab = model.config.vocabSize, count = rows.count
        // The prompt but its last token in one pass; the last token starts the decoding steps, whose
        // logits give the first new token.
        if let promptActivations {
            let prefix = promptLength - 1
            for (index, row) in rows.enumerated() {
                (promptTokens + index * prefix).update(from: sequences + row * length, count: prefix)
            }
            model.forward(tokens: promptTokens, batch: count, length: prefix, startPosition: 0, caches: caches,
                          into: promptActivations, head: false)
        }
        for (index, row) in rows.enumerated() { stepTokens[index] = sequences[row * length + promptLength - 1] }
        for step in 0..<newTokens {
            model.forward(tokens: stepTokens, batch: count, length: 1, startPosition: promptLength - 1 + step, caches: caches,
                          into: stepActivations)
            let logits = stepActivations.logits
            for (index, row) in rows.enumerated() {
                let next = Int32(samplers[row].sample(logits + index * vocab, count: vocab, workspace: workspace))
                sequences[row * length + promptLength + step] = next
                stepTokens[index] = next
            }
        }
    }
}
