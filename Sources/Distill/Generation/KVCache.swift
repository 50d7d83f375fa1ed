/// Incremental decoding for one sequence: each call feeds one token through the model's own forward
/// pass (the same code as training and evaluation), with a key/value cache of the earlier positions, and
/// leaves the next-token logits in `logits`. The cache grows with the positions used.
public final class KVCacheSession {
    public let model: LlamaModel
    /// Tokens fed so far (the next token's position).
    public private(set) var position = 0
    private let cache: KeyValueCache
    /// `cache` as the model's forward pass takes it, made once rather than at every token.
    private let caches: [KeyValueCache]
    /// The buffers of a one-token forward pass.
    private let activations: Activations
    /// The reduced (bf16, f16 or Q8_0) copy of the weights that decoding reads, if it was asked for.
    public let reducedWeights: DecodingWeights?
    /// Next-token logits after the last `feed`.  [V]
    public var logits: UnsafeMutablePointer<Float> { activations.logits }
    /// The thread count the last generation chose (see `TokenStream`).
    public internal(set) var decodingThreads: DecodingThreads?

    /// A session over `model`'s f32 weights.
    public convenience init(model: LlamaModel) {
        self.init(model: model, reducedWeights: nil)
    }

    /// A session over `model`'s f32 weights, or over a bf16/f16/Q8_0 copy of them (`precision`):
    /// decoding reads half (a little over a quarter) of the bytes per token and runs faster, with the
    /// rounded weights' logits. Refuses a copy that would not fit in memory.
    public convenience init(model: LlamaModel, precision: WeightFormat) throws {
        self.init(model: model, reducedWeights: precision == .f32 ? nil : try DecodingWeights(model: model, format: precision))
    }

    private init(model: LlamaModel, reducedWeights: DecodingWeights?) {
        self.model = model
        self.reducedWeights = reducedWeights
        let config = model.config
        cache = KeyValueCache(layers: config.numHiddenLayers, heads: config.numKeyValueHeads, headDim: config.headDim,
                              limit: config.maxPositionEmbeddings)
        caches = [cache]
        activations = Activations(config: config, batch: 1, length: 1, perBlock: false)
    }

    /// The number of positions the cache holds at most (the model's context).
    public var capacity: Int { model.config.maxPositionEmbeddings }

    /// Forgets the sequence.
    public func reset() { position = 0 }

    /// Feeds one token at the next position and computes `logits`.
    public func feed(_ token: Int32) throws {
        guard position < capacity else { throw GenerationError.contextFull(capacity) }
        guard token >= 0 && Int(token) < model.config.vocabSize else { throw GenerationError.badToken(Int(token)) }
        try cache.reserve(position + 1, filled: position)
        var token = token
        model.forward(tokens: &token, batch: 1, length: 1, startPosition: position, caches: caches, into: activations,
                      reducedWeights: reducedWeights)
        position += 1
    }
}

/// Errors of text generation that a user can act on.
public enum GenerationError: NamesSettings, Equatable {
    case contextFull(Int)
    case badToken(Int)
    case promptTooLong(tokens: Int, context: Int)
    case emptyPrompt
    /// A batched decoder asked for no rows, or for no new tokens.
    case emptyBatch, noNewTokens

    public func message(naming name: (Setting) -> String) -> String {
        switch self {
        case .contextFull(let n): return "the model's context of \(n) tokens is full"
        case .badToken(let id): return "token id \(id) is outside the model's vocabulary"
        case .promptTooLong(let tokens, let context):
            return "the prompt is \(tokens) tokens but the model's context is \(context): shorten the prompt"
        case .emptyPrompt: return "the prompt encodes to no tokens and the tokenizer has no BOS token: give a \(name(.prompt))"
        case .emptyBatch: return "a batched decoder needs at least one sequence"
        case .noNewTokens: return "a batched decoder needs at least one new token per sequence"
        }
    }
}
