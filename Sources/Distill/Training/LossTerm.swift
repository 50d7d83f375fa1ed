/// One value that an objective reports for a batch. The raw value is its name in the progress line,
/// in `metrics.jsonl` and in the report; the order of the cases is the order in which they are shown.
/// A new term is a case here (the progress line, the metrics log and the rank reduction follow from
/// it) and the objective that computes it; `docs/metrics.md` must describe it (a test checks).
public enum LossTerm: String, CaseIterable, Sendable {
    /// The weighted total that is optimised (training steps only).
    case loss
    /// Next-token cross-entropy with the data's labels, nats per token.
    case ce
    /// The logit distillation divergence (times τ² when asked), mean over the distilled tokens.
    case kd
    /// Feature distillation: normalised hidden-state distance through the learned projection.
    case feature
    /// Relational distillation, distance part (Huber between normalised pairwise distances).
    case rkdDistance = "rkd_distance"
    /// Relational distillation, angle part (Huber between triplet angles).
    case rkdAngle = "rkd_angle"
    /// Cross-tokenizer runs: the share of the window's bytes inside aligned chunks (not a loss).
    case alignedBytes = "aligned_bytes"
    /// exp(ce), added to validation terms.
    case perplexity
}

/// The terms an objective reports for a batch, each at most once.
public struct LossTerms: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    private var values: [LossTerm: Double]

    public init() { values = [:] }

    public init(dictionaryLiteral elements: (LossTerm, Double)...) {
        values = Dictionary(elements, uniquingKeysWith: { _, last in last })
    }

    public subscript(term: LossTerm) -> Double? {
        get { values[term] }
        set { values[term] = newValue }
    }

    public subscript(term: LossTerm, default value: Double) -> Double {
        get { values[term] ?? value }
        set { values[term] = newValue }
    }

    /// The terms present, in the order of `LossTerm`'s cases.
    public var present: [(term: LossTerm, value: Double)] {
        LossTerm.allCases.compactMap { term in values[term].map { (term, $0) } }
    }

    public var isEmpty: Bool { values.isEmpty }

    /// Adds `factor` × each of `other`'s terms (a term missing here counts as 0).
    public mutating func add(_ other: LossTerms, times factor: Double = 1) {
        for (term, value) in other.values { values[term, default: 0] += value * factor }
    }

    /// Each term transformed by `transform`.
    public func mapValues(_ transform: (Double) -> Double) -> LossTerms {
        var result = self
        result.values = values.mapValues(transform)
        return result
    }

    /// The terms by their names (for `metrics.jsonl`).
    public var byName: [String: Double] {
        Dictionary(uniqueKeysWithValues: values.map { ($0.key.rawValue, $0.value) })
    }
}

/// What a progress report measured beside the loss terms: speed and time shares.
public struct StepStatistics: Sendable, Equatable {
    /// On-policy runs: the speed of the generation inside the steps and its share of their time.
    public var generationTokensPerSecond: Double?
    public var generationShare: Double?
    /// Under mpirun: sequences per optimizer step over all ranks.
    public var globalBatch: Int?
    /// Under mpirun: the share of the time spent summing gradients, and of it the share spent waiting
    /// for the slowest rank (where that can be told apart).
    public var allreduceShare: Double?
    public var allreduceWaitShare: Double?

    public init() {}

    /// The statistics present, by their `metrics.jsonl` names.
    public var byName: [String: Double] {
        var result: [String: Double] = [:]
        result["generation_tokens_per_second"] = generationTokensPerSecond
        result["generation_share"] = generationShare
        result["global_batch"] = globalBatch.map(Double.init)
        result["allreduce_share"] = allreduceShare
        result["allreduce_wait_share"] = allreduceWaitShare
        return result
    }
}

/// One progress report of the training loop.
public struct StepReport: Sendable {
    /// The step just taken (1-based) and the run's total.
    public var step: Int
    public var total: Int
    /// The step's loss terms, averaged over its micro-batches (and ranks).
    public var terms: LossTerms
    public var statistics: StepStatistics
    public var learningRate: Float
    public var gradientNorm: Float
    public var tokensPerSecond: Double
    public var secondsLeft: Double
}
