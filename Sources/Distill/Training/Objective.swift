/// A trainable tensor that is not part of the model (a feature-distillation projection): kept in the
/// training state, updated by the same optimizer, left out of the model's weights.
public final class TrainableTensor {
    public let name: String
    public let shape: [Int]
    public let values: UnsafeMutableBufferPointer<Float>
    public let gradients: UnsafeMutableBufferPointer<Float>

    public init(name: String, shape: [Int], initial: [Float]) {
        self.name = name
        self.shape = shape
        values = .allocate(capacity: initial.count)
        _ = values.initialize(from: initial)
        gradients = .allocate(capacity: initial.count)
        gradients.initialize(repeating: 0)
    }

    deinit {
        values.deallocate()
        gradients.deallocate()
    }

    public var segment: TrainableSegment {
        TrainableSegment(parameters: values.baseAddress!, gradients: gradients.baseAddress!, count: values.count, decays: true)
    }
}

/// What a training step optimises. `train` uses cross-entropy; `student` adds distillation terms.
public protocol TrainingObjective: AnyObject {
    /// Trainable tensors besides the model's weights.
    var extraTensors: [TrainableTensor] { get }
    /// Every setting that changes what is optimised, by `Setting` raw value (teachers by the hash of
    /// their weights). Saved with a checkpoint; a resume with any difference is refused.
    var identity: [String: String] { get }
    /// Forward and backward on one micro-batch; accumulates gradientScale × gradients. Returns the
    /// loss terms (`.loss` is the total that is optimised).
    func trainStep(model: LlamaModel, batch: Batch, gradientScale: Float) throws -> LossTerms
    /// Validation terms on one batch, no gradients (`.ce` is the student's cross-entropy in nats).
    func evaluate(model: LlamaModel, batch: Batch) throws -> LossTerms
    /// Called before each optimizer step with its 0-based index: a scheduled objective sets the weights
    /// of that step. It must depend on nothing else, so that a resumed run is exact.
    func prepare(step: Int, totalSteps: Int)
}

extension TrainingObjective {
    /// Most objectives do not change over a run.
    public func prepare(step: Int, totalSteps: Int) {}
}

/// An objective that draws random numbers of its own while it trains (on-policy samples): the trainer
/// saves their generator with the checkpoint and restores it on resume, so that a resumed run draws the
/// samples an uninterrupted one would.
public protocol SamplingObjective: TrainingObjective {
    var generationRandom: SeededRandom { get set }
    /// Seconds spent generating and tokens generated since the last call (which resets both): the
    /// progress line's generation speed and share of the step time.
    func takeGenerationTiming() -> (seconds: Double, tokens: Int)
}

/// An objective written as one function of its terms, forward and, with `backward`, backward: a training
/// step is that function with gradients, validation the same without them (and without the total).
public protocol TermwiseObjective: TrainingObjective {
    /// Every active term on one batch (`.loss` is their weighted total); with `backward`, accumulates
    /// gradientScale × gradients into the student and the extra tensors.
    func terms(student: LlamaModel, batch: Batch, gradientScale: Float, backward: Bool) throws -> LossTerms
}

extension TermwiseObjective {
    public func trainStep(model: LlamaModel, batch: Batch, gradientScale: Float) throws -> LossTerms {
        try terms(student: model, batch: batch, gradientScale: gradientScale, backward: true)
    }

    public func evaluate(model: LlamaModel, batch: Batch) throws -> LossTerms {
        var result = try terms(student: model, batch: batch, gradientScale: 0, backward: false)
        result[.loss] = nil
        return result
    }
}

/// Plain next-token cross-entropy.
public final class CrossEntropyObjective: TrainingObjective {
    public var extraTensors: [TrainableTensor] { [] }
    public var identity: [String: String] { ["objective": "cross-entropy"] }

    public init() {}

    public func trainStep(model: LlamaModel, batch: Batch, gradientScale: Float) throws -> LossTerms {
        let (loss, dFinalHidden) = try crossEntropy(model: model, batch: batch, gradientScale: gradientScale, backward: true)
        model.backward(dLogits: nil, dFinalHidden: dFinalHidden)
        return [.loss: Double(loss), .ce: Double(loss)]
    }

    public func evaluate(model: LlamaModel, batch: Batch) throws -> LossTerms {
        [.ce: Double(try meanCrossEntropy(model: model, batch: batch))]
    }
}

/// Mean next-token cross-entropy (nats) of `model` on a batch, with no backward state kept.
public func meanCrossEntropy(model: LlamaModel, batch: Batch) throws -> Float {
    try crossEntropy(model: model, batch: batch, gradientScale: 0, backward: false).loss
}

/// Forward pass and mean cross-entropy of a batch, the LM head a chunk of rows at a time so that the
/// [B·T, V] logits are never held whole. With `backward` the pass keeps what backward needs, the head's
/// backward runs, and d finalHidden comes back (written over the final hidden states) for
/// `backward(dLogits: nil, dFinalHidden:)`.
private func crossEntropy(model: LlamaModel, batch: Batch, gradientScale: Float,
                          backward: Bool) throws -> (loss: Float, dFinalHidden: UnsafePointer<Float>?) {
    model.forwardHidden(tokens: batch.inputs, batch: batch.batchSize, length: batch.contextLength, keepForBackward: backward)
    var loss: Float = 0
    let dFinalHidden = try batch.targets.withUnsafeBufferPointer { targets -> UnsafePointer<Float>? in
        let share = try BatchShare(targets: targets, vocab: model.config.vocabSize)
        func chunk(_ rows: Range<Int>, _ logits: UnsafePointer<Float>, _ dLogits: UnsafeMutablePointer<Float>?) throws {
            loss += try crossEntropyForwardBackward(dLogits: dLogits, logits: logits, targets: targets.baseAddress! + rows.lowerBound,
                                                    rows: rows.count, vocab: model.config.vocabSize,
                                                    gradientScale: gradientScale, meanOver: share)
        }
        if backward { return try model.headInChunksWithGradientOverFinalHidden(chunk) }
        try model.headInChunks(dFinalHidden: nil, chunk)
        return nil
    }
    return (loss, dFinalHidden)
}
