import CKernels

/// Incremental decoding of an ensemble: one KV cache per member, fed the same tokens; the next-token
/// logits are log of the weighted mean of the members' probabilities (a sampler's temperature then
/// applies to the mixture).
public final class EnsembleSession {
    public let sessions: [KVCacheSession]
    /// Member weights, adding up to 1.
    public let weights: [Float]
    /// log Σ_i w_i softmax(logits_i) after the last `feed`.  [V]
    public let logits: UnsafeMutablePointer<Float>
    private let scratch: UnsafeMutablePointer<Float>
    public let vocabSize: Int
    /// The thread count the last generation chose (see `TokenStream`).
    public internal(set) var decodingThreads: DecodingThreads?

    /// One session per member, each over its f32 weights or a reduced copy (`precision`; refused when
    /// the copies would not fit in memory).
    public init(ensemble: ModelEnsemble, precision: WeightFormat = .f32) throws {
        sessions = try ensemble.members.map { try KVCacheSession(model: $0, precision: precision) }
        weights = ensemble.weights
        vocabSize = ensemble.vocabSize
        logits = .allocate(capacity: vocabSize)
        scratch = .allocate(capacity: vocabSize)
    }

    deinit {
        logits.deallocate()
        scratch.deallocate()
    }

    /// Tokens fed so far.
    public var position: Int { sessions[0].position }
    /// The shortest member context.
    public var capacity: Int { sessions.map(\.capacity).min() ?? 0 }

    public func reset() { sessions.forEach { $0.reset() } }

    public func feed(_ token: Int32) throws {
        guard position < capacity else { throw GenerationError.contextFull(capacity) }
        for session in sessions { try session.feed(token) }
        var rows = sessions.map { Optional(UnsafePointer($0.logits)) }
        weights.withUnsafeBufferPointer {
            ck_weighted_mixture_row(logits, &rows, $0.baseAddress!, sessions.count, vocabSize, 1, scratch)
        }
    }
}

/// `generate(session:...)` for an ensemble: the same prompt handling, stop token and restart from the
/// last half-context when the (shortest) context fills up. An ensemble of one generates exactly what
/// its member does.
@discardableResult
public func generate(ensemble: EnsembleSession, prompt: [Int32], maxTokens: Int, sampler: inout Sampler,
                     stopToken: Int32? = nil, onToken: (Int32) -> Void = { _ in }) throws -> [Int32] {
    if ensemble.sessions.count == 1 {
        return try generate(session: ensemble.sessions[0], prompt: prompt, maxTokens: maxTokens, sampler: &sampler,
                            stopToken: stopToken, onToken: onToken)
    }
    return try generate(stream: ensemble, prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopToken: stopToken, onToken: onToken)
}

extension EnsembleSession: TokenStream {}
