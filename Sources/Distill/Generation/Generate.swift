/// Generates up to `maxTokens` tokens after `prompt`, calling `onToken` with each new id as soon as it
/// is chosen. Stops at `stopToken` (EOS). When the context fills up, the cache restarts from the
/// last half-context of tokens (positions from 0, as every training window starts), so generation can
/// run past the context. Returns the new ids.
@discardableResult
public func generate(session: KVCacheSession, prompt: [Int32], maxTokens: Int, sampler: inout Sampler,
                     stopToken: Int32? = nil, onToken: (Int32) -> Void = { _ in }) throws -> [Int32] {
    try generate(stream: session, prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopToken: stopToken, onToken: onToken)
}

/// A model, or an ensemble of models, fed one token at a time; after each `feed`, `logits` holds the
/// next-token logits.
protocol TokenStream: AnyObject {
    /// Tokens fed so far.
    var position: Int { get }
    /// The most positions it holds (the context).
    var capacity: Int { get }
    var vocabSize: Int { get }
    var logits: UnsafeMutablePointer<Float> { get }
    func reset()
    func feed(_ token: Int32) throws
}

extension KVCacheSession: TokenStream {
    var vocabSize: Int { model.config.vocabSize }
}

/// The one decoding loop of `generate(session:)` and `generate(ensemble:)`.
func generate(stream: some TokenStream, prompt: [Int32], maxTokens: Int, sampler: inout Sampler,
              stopToken: Int32?, onToken: (Int32) -> Void) throws -> [Int32] {
    guard !prompt.isEmpty else { throw GenerationError.emptyPrompt }
    guard prompt.count <= stream.capacity else {
        throw GenerationError.promptTooLong(tokens: prompt.count, context: stream.capacity)
    }
    stream.reset()
    for token in prompt { try stream.feed(token) }
    var history = prompt, produced: [Int32] = []
    // One workspace for the whole run: a draw per token allocates nothing.
    let workspace = SamplingWorkspace(vocabSize: stream.vocabSize)
    while produced.count < maxTokens {
        let next = Int32(sampler.sample(stream.logits, count: stream.vocabSize, workspace: workspace))
        if next == stopToken { break }
        produced.append(next)
        history.append(next)
        onToken(next)
        if produced.count == maxTokens { break }
        if stream.position >= stream.capacity {
            // Keep the most recent half of the context (at least one token) and refill the cache.
            stream.reset()
            for token in history.suffix(max(1, stream.capacity / 2)) { try stream.feed(token) }
        } else {
            try stream.feed(next)
        }
    }
    return produced
}
