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
    let window = min(context ?? ensemble.context, ensemble.context)
    let step = stride ?? window
    guard step >= 1 && step <= window else { throw EvaluationError.badStride(step, context: window) }
    guard tokens.count >= 2 else { throw EvaluationError.tooShort(tokens.count) }
    let perWindow = ensemble.members.map { $0.activationBytes(batch: 1, length: window, keepForBackward: false) }.reduce(0, +)
    let batchSize = max(1, min(batchSize, Int(1e9 / max(perWindow, 1))))
    // The same plan as scoreTokens(model:): (begin, length, first target index that counts).
    var plans: [(begin: Int, length: Int, firstNew: Int)] = []
    var scoredThrough = 0, begin = 0
    while scoredThrough < tokens.count - 1 {
        let length = min(window, tokens.count - 1 - begin)
        plans.append((begin, length, scoredThrough + 1))
        scoredThrough = begin + length
        begin += step
    }
    try agreeOnScoring(ranks, tokens: tokens, bytes: bytes,
                       model: ensemble.members.map { String(weightsHash(UnsafeBufferPointer($0.parameters)), radix: 16) }.joined(separator: " ")
                           + " weights \(ensemble.weights)",
                       windows: "\(window) \(step) \(batchSize)")
    var nll = 0.0, counted = 0, index = 0, batchNumber = 0
    while index < plans.count {
        var group = [plans[index]]
        while group.count < batchSize, index + group.count < plans.count, plans[index + group.count].length == group[0].length {
            group.append(plans[index + group.count])
        }
        index += group.count
        batchNumber += 1
        guard (batchNumber - 1) % ranks.size == ranks.rank else { continue }
        let length = group[0].length
        var inputs = [Int32](), targets = [Int32]()
        for plan in group {
            inputs += tokens[plan.begin ..< plan.begin + length]
            for position in 0..<length {
                let target = plan.begin + position + 1
                targets.append(target >= plan.firstNew ? tokens[target] : -1)
            }
        }
        // log of the mixture: its cross-entropy is −log Σ_i w_i p_i(target).
        let logits = inputs.withUnsafeBufferPointer {
            ensemble.logits(tokens: $0.baseAddress!, batch: group.count, length: length, temperature: 1)
        }
        let mean = try targets.withUnsafeBufferPointer {
            try crossEntropyForwardBackward(dLogits: nil, logits: logits, targets: $0.baseAddress!, rows: group.count * length,
                                            vocab: ensemble.vocabSize, gradientScale: 0)
        }
        let scored = targets.filter { $0 >= 0 }.count
        nll += Double(mean) * Double(scored)
        counted += scored
    }
    if ranks.size > 1 {
        let totals = ranks.orderedSum([nll, Double(counted)])
        nll = totals[0]
        counted = Int(totals[1])
    }
    return PerplexityReport(tokens: counted, nllSum: nll, bytes: bytes)
}
