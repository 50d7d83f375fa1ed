import Foundation

/// Picks the next token from logits: greedy at temperature 0, otherwise a multinomial draw from the
/// tempered softmax restricted by top-k and top-p (nucleus), from a seeded generator.
public struct Sampler {
    public var temperature: Float
    public var topK: Int?
    public var topP: Float?
    public var random: SeededRandom

    public init(temperature: Float = 0.8, topK: Int? = nil, topP: Float? = nil, seed: UInt64 = 0) throws {
        guard temperature >= 0, temperature.isFinite else {
            throw SettingError(.temperature, "must be 0 (greedy) or positive, got \(temperature)")
        }
        if let topK, topK < 1 { throw SettingError(.topK, "must be at least 1, got \(topK)") }
        if let topP, !(topP > 0 && topP <= 1) {
            throw SettingError(.topP, "must be in (0, 1], got \(topP)")
        }
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        random = SeededRandom(seed: seed)
    }

    /// The index of the largest logit (the first one on ties).
    public static func argmax(_ logits: UnsafePointer<Float>, count: Int) -> Int {
        var best = 0
        for i in 1..<count where logits[i] > logits[best] { best = i }
        return best
    }

    /// Draws an index from `count` logits: the `topK` largest (all when nil), softmax at `temperature`,
    /// then the smallest most-likely prefix whose probability reaches `topP`, renormalised.
    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int {
        if temperature == 0 { return Self.argmax(logits, count: count) }
        let workspace = SamplingWorkspace(vocabSize: count)
        return sample(logits, count: count, workspace: workspace)
    }

    /// `sample(_:count:)` with its candidates and weights in `workspace` (room for `count`), so that a
    /// decoding loop allocates nothing per token; draws exactly what `sample(_:count:)` draws.
    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int, workspace: SamplingWorkspace) -> Int {
        if temperature == 0 { return Self.argmax(logits, count: count) }
        precondition(workspace.vocabSize >= count, "the sampling workspace is smaller than the vocabulary")
        // Candidates cut to top-k, then softmax at the temperature. Only the cuts need them sorted; a
        // plain draw over the whole vocabulary does not pay for a sort per token.
        let candidates = workspace.candidates, weights = workspace.weights
        for i in 0..<count { candidates[i] = i }
        var kept = count
        // Ties go to the lower id, as in `argmax`, so that top-k = 1 is greedy whatever the sort does
        // (the order is total, so every sorting algorithm gives the same one).
        if topK != nil || topP != nil {
            var ranked = UnsafeMutableBufferPointer(rebasing: candidates[0..<count])
            ranked.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        }
        if let topK, topK < count { kept = topK }
        var maximum = -Float.infinity
        for i in 0..<kept { maximum = max(maximum, logits[candidates[i]]) }
        var total = 0.0
        for i in 0..<kept {
            weights[i] = Double(exp((logits[candidates[i]] - maximum) / temperature))
            total += weights[i]
        }
        if let topP, topP < 1 {
            // Keep the smallest prefix whose probability reaches top-p.
            var cumulative = 0.0, keep = 0
            while keep < kept {
                cumulative += weights[keep] / total
                keep += 1
                if cumulative >= Double(topP) { break }
            }
            kept = keep
            total = 0
            for i in 0..<kept { total += weights[i] }
        }
        var threshold = Double(random.nextFloat()) * total
        for i in 0..<kept {
            threshold -= weights[i]
            if threshold < 0 { return candidates[i] }
        }
        return candidates[kept - 1]
    }
}

/// The candidates and weights of one draw over a vocabulary, allocated once for a whole decoding run.
public final class SamplingWorkspace {
    public let vocabSize: Int
    /// Token ids, sorted by logit when top-k or top-p cuts them.  [V]
    let candidates: UnsafeMutableBufferPointer<Int>
    /// exp((logit − max)/temperature) of the candidates, in their order.  [V]
    let weights: UnsafeMutableBufferPointer<Double>

    public init(vocabSize: Int) {
        self.vocabSize = vocabSize
        candidates = .allocate(capacity: max(vocabSize, 1))
        weights = .allocate(capacity: max(vocabSize, 1))
    }

    deinit {
        candidates.deallocate()
        weights.deallocate()
    }
}
