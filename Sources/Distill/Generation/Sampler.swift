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
        // Candidates cut to top-k, then softmax at the temperature. Only the cuts need them sorted; a
        // plain draw over the whole vocabulary does not pay for a sort per token.
        var candidates = Array(0..<count)
        // Ties go to the lower id, as in `argmax`, so that top-k = 1 is greedy whatever the sort does.
        if topK != nil || topP != nil {
            candidates.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        }
        if let topK, topK < count { candidates.removeSubrange(topK...) }
        let maximum = candidates.reduce(-Float.infinity) { max($0, logits[$1]) }
        var weights = candidates.map { Double(exp((logits[$0] - maximum) / temperature)) }
        var total = weights.reduce(0, +)
        if let topP, topP < 1 {
            // Keep the smallest prefix whose probability reaches top-p.
            var cumulative = 0.0, keep = 0
            while keep < weights.count {
                cumulative += weights[keep] / total
                keep += 1
                if cumulative >= Double(topP) { break }
            }
            candidates.removeSubrange(keep...)
            weights.removeSubrange(keep...)
            total = weights.reduce(0, +)
        }
        var threshold = Double(random.nextFloat()) * total
        for (index, weight) in zip(candidates, weights) {
            threshold -= weight
            if threshold < 0 { return index }
        }
        return candidates[candidates.count - 1]
    }
}
