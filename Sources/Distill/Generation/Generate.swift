/// Generates up to `maxTokens` tokens after `prompt`, calling `onToken` with each new id as soon as it
/// is chosen. Stops at `stopToken` (EOS) or when the context is full. Returns the new ids.
@discardableResult
public func generate(session: KVCacheSession, prompt: [Int32], maxTokens: Int, sampler: inout Sampler,
                     stopToken: Int32? = nil, onToken: (Int32) -> Void = { _ in }) throws -> [Int32] {
    guard !prompt.isEmpty else { throw GenerationError.emptyPrompt }
    guard prompt.count <= session.capacity else {
        throw GenerationError.promptTooLong(tokens: prompt.count, context: session.capacity)
    }
    session.reset()
    for token in prompt { try session.feed(token) }
    var produced: [Int32] = []
    let vocab = session.model.config.vocabSize
    while produced.count < maxTokens {
        let next = Int32(sampler.sample(session.logits, count: vocab))
        if next == stopToken { break }
        produced.append(next)
        onToken(next)
        if session.position >= session.capacity || produced.count == maxTokens { break }
        try session.feed(next)
    }
    return produced
}
