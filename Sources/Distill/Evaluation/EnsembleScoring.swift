import Foundation

/// Scores `tokens` with an ensemble, whose probability of each token is the weighted mean of its
/// members' probabilities, windowed exactly as `scoreTokens(model:...)` does (the context is the
/// shortest member's unless given). An ensemble of one is that model, scored by `scoreTokens` itself.
/// `group`: the ranks of an mpirun job that share the batches, as in `scoreTokens(model:...)`.
public func scoreTokens(ensemble: ModelEnsemble, tokens: [Int32], bytes: Int, context: Int? = nil, stride: Int? = nil,
                        batchSize: Int = 8, group ranks: ProcessGroup = .single) throws -> PerplexityReport {
    if ensemble.members.count == 1 {
        return try scoreTokens(model: ensemble.members[0], tokens: tokens, bytes: bytes, context: context, stride: stride,
                               batchSize: batchSize, group: ranks)
    }
    let identity = ensemble.members.map { String(weightsHash(UnsafeBufferPointer($0.parameters)), radix: 16) }.joined(separator: " ")
        + " weights \(ensemble.weights)"
    return try scoreWindows(tokens: tokens, bytes: bytes, window: min(context ?? ensemble.context, ensemble.context), stride: stride,
                            batchSize: batchSize, group: ranks,
                            activationBytes: { length in
                                ensemble.members.map { $0.activationBytes(batch: 1, length: length, keepForBackward: false) }.reduce(0, +)
                            },
                            identity: identity) { batch in
        // log of the mixture: its cross-entropy is −log Σ_i w_i p_i(target).
        let logits = batch.inputs.withUnsafeBufferPointer {
            ensemble.logits(tokens: $0.baseAddress!, batch: batch.batchSize, length: batch.contextLength, temperature: 1)
        }
        return try batch.targets.withUnsafeBufferPointer {
            try crossEntropyForwardBackward(dLogits: nil, logits: logits, targets: $0.baseAddress!,
                                            rows: batch.batchSize * batch.contextLength, vocab: ensemble.vocabSize, gradientScale: 0)
        }
    }
}
