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

    /// Rejects values a run cannot use, naming the flag.
    public func validate() throws {
        func positive(_ value: Int, _ flag: String) throws {
            if value <= 0 { throw TrainingError.invalidSetting("\(flag) must be positive, got \(value)") }
        }
        try positive(steps, "--steps")
        try positive(batchSize, "--batch-size")
        try positive(context, "--context")
        try positive(accumulationSteps, "--accumulation")
        try positive(evalBatches, "--eval-batches")
        if !(learningRate > 0) || !learningRate.isFinite { throw TrainingError.invalidSetting("--lr must be positive, got \(learningRate)") }
        if warmupSteps < 0 { throw TrainingError.invalidSetting("--warmup must be 0 or more, got \(warmupSteps)") }
        if evalEvery < 0 || saveEvery < 0 { throw TrainingError.invalidSetting("--eval-every and --save-every must be 0 or more") }
        if weightDecay < 0 { throw TrainingError.invalidSetting("--weight-decay must be 0 or more") }
        if gradientClip < 0 { throw TrainingError.invalidSetting("--grad-clip must be 0 or more") }
    }
}

/// Errors of training runs that a user can act on.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case invalidSetting(String)
    case cannotResume(String)
    case tokenizerMismatch(String)
    case diverged(step: Int)

    public var description: String {
        switch self {
        case .invalidSetting(let why): return why
        case .cannotResume(let why): return "cannot resume: \(why)"
        case .tokenizerMismatch(let why): return why
        case .diverged(let step): return "the loss became NaN or infinite at step \(step): lower --lr or raise --warmup"
        }
    }
}
