/// Generates up to `maxTokens` tokens after `prompt`, calling `onToken` with each new id as soon as it
/// is chosen. Stops at `stopToken` (EOS). When the context fills up, the cache restarts from the
/// last half-context of tokens (positions from 0, as every training window starts), so generation can
/// run past the context. Returns the new ids.
@discardableResult
public func generate(session: KVCacheSession, prompt: [Int32], maxTokens: Int, sampler: inout Sampler,
                     stopToken: Int32? = nil, onToken: (Int32) -> Void = { _ in }) throws -> [Int32] {
    guard !prompt.isEmpty else { throw GenerationError.emptyPrompt }
    guard prompt.count <= session.capacity else {
        throw GenerationError.promptTooLong(tokens: prompt.count, context: session.capacity)
    }
    return try Compute.withThreads(decodeThreads(session.model)) {
        session.reset()
        for token in prompt { try session.feed(token) }
        var history = prompt, produced: [Int32] = []
        let vocab = session.model.config.vocabSize
        while produced.count < maxTokens {
            let next = Int32(sampler.sample(session.logits, count: vocab))
            if next == stopToken { break }
            produced.append(next)
            history.append(next)
            onToken(next)
            if produced.count == maxTokens { break }
            if session.position >= session.capacity {
                // Keep the most recent half of the context (at least one token) and refill the cache.
                session.reset()
                for token in history.suffix(max(1, session.capacity / 2)) { try session.feed(token) }
            } else {
                try session.feed(next)
            }
        }
        return produced
    }
}

/// Threads for decoding one token at a time (the prompt too: it is fed a token at a time). Each step is
/// a string of matrix-vector products of the model's width, too small to share: below `singleThreadDecodeParameters` parameters a second thread
/// costs more in hand-offs than it gives (`distill bench`, `tiny` preset on 2 cores: 4,685 tokens/s on 1
/// thread against 903 on 2 with the other core busy; README, *Measured figures*).
func decodeThreads(_ model: LlamaModel) -> Int {
    model.parameterCount < singleThreadDecodeParameters ? 1 : Compute.threads
}

/// Models up to this size decode on one thread.
let singleThreadDecodeParameters = 32_000_000
