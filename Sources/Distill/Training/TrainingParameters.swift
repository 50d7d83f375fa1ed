/// Every knob of a training run in one place. Saved with the checkpoint, so that `--resume` continues
/// the same run.
public struct TrainingParameters: Codable, Equatable, Sendable {
    /// Optimizer steps.
    public var steps = 1000
    /// Sequences per micro-batch.
    public var batchSize = 8
    /// Tokens per sequence.
    public var context = 256
    /// Micro-batches whose gradients add up to one step.
    public var accumulationSteps = 1
    /// Peak learning rate, reached after `warmupSteps`, then cosine decay to 10% of it.
    public var learningRate: Float = 1e-3
    public var warmupSteps = 100
    public var minimumLearningRateFraction: Float = 0.1
    /// AdamW settings; no decay on norm gains.
    public var weightDecay: Float = 0.1
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    /// Global gradient-norm clip (0 turns it off).
    public var gradientClip: Float = 1.0
    /// Seed of the initial weights and of the batch sampler.
    public var seed: UInt64 = 1
    /// Validation every N steps (0: only at the end), over `evalBatches` fixed batches.
    public var evalEvery = 100
    public var evalBatches = 8
    /// Checkpoint every N steps (0: only at the end).
    public var saveEvery = 500
    /// A progress line every N steps.
    public var logEvery = 10

    public init() {}

    /// `validate` before the context is known (it is decided from the model's shape later).
    public func validateIgnoringContext() throws {
        var copy = self
        copy.context = 1
        try copy.validate()
    }

    /// Rejects values a run cannot use, naming the setting.
    public func validate() throws {
        func positive(_ value: Int, _ setting: Setting) throws {
            if value <= 0 { throw SettingError(setting, "must be positive (got \(value))") }
        }
        func notNegative(_ value: Int, _ setting: Setting) throws {
            if value < 0 { throw SettingError(setting, "must be 0 or more (got \(value))") }
        }
        try positive(steps, .steps)
        try positive(batchSize, .batchSize)
        try positive(context, .context)
        try positive(accumulationSteps, .accumulation)
        try positive(evalBatches, .evalBatches)
        try positive(logEvery, .logEvery)
        try notNegative(warmupSteps, .warmup)
        try notNegative(evalEvery, .evalEvery)
        try notNegative(saveEvery, .saveEvery)
        for (value, setting) in [(learningRate, Setting.learningRate), (weightDecay, .weightDecay), (gradientClip, .gradientClip)] {
            try SettingError.requireFinite(value, setting)
        }
        if !(learningRate > 0) { throw SettingError(.learningRate, "must be positive (got \(learningRate))") }
        // A rate this large diverges at the first step; say so before any work.
        if learningRate > 10 { throw SettingError(.learningRate, "is \(learningRate); learning rates above 10 diverge at once (try 1e-3)") }
        if weightDecay < 0 { throw SettingError(.weightDecay, "must be 0 or more (got \(weightDecay))") }
        if gradientClip < 0 { throw SettingError(.gradientClip, "must be 0 or more (got \(gradientClip))") }
        // Beyond these a run never ends in practice; they are typing mistakes, not plans.
        if accumulationSteps > 65_536 { throw SettingError(.accumulation, "is \(accumulationSteps); at most 65536 micro-batches per step") }
        if steps > 1_000_000_000 { throw SettingError(.steps, "is \(steps); at most 10^9") }
    }
}

/// Errors of training runs that a user can act on.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case cannotResume(String)
    case tokenizerMismatch(String)
    /// The loss or the gradient norm (`what`) stopped being finite at `step`; nothing of that step was saved.
    case diverged(step: Int, what: String)

    public var description: String {
        switch self {
        case .cannotResume(let why): return "cannot resume: \(why)"
        case .tokenizerMismatch(let why): return why
        case let .diverged(step, what):
            return "the \(what) became NaN or infinite at step \(step); stopped without saving it (the last checkpoint is kept): "
                + "lower the learning rate or raise the warm-up"
        }
    }
}
