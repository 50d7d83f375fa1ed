import Foundation

/// What can be wrong with a distillation setting or its inputs; every message names the option to change.
public enum DistillationError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A loss weight is negative or not finite.
    case negativeWeight(Setting, value: Float)
    /// Every loss weight is zero, so training would learn nothing.
    case allWeightsZero
    /// A relational loss needs more sequences in the batch than it got.
    case batchTooSmall(loss: String, batch: Int, minimum: Int)
    /// A layer map could not be parsed.
    case invalidLayerMap(text: String, reason: String)
    /// A layer map names a block that the model does not have.
    case layerOutOfDepth(model: String, layer: Int, depth: Int)
    /// A target token id is not below the vocabulary size.
    case targetOutOfRange(row: Int, target: Int32, vocab: Int)
    /// A loss has a weight but its input was not given (a programming error in the caller).
    case missingInput(String)
    /// Buffer sizes that do not fit together.
    case invalidShape(String)

    public var description: String {
        switch self {
        case .negativeWeight(let setting, let value):
            return "\(setting.rawValue) must be a finite number ≥ 0 (got \(value))"
        case .allWeightsZero:
            return "every loss weight is 0, so nothing would be learned; give at least one of the CE, KD, "
                + "feature or relational weights a positive value"
        case .batchTooSmall(let loss, let batch, let minimum):
            return "relational \(loss) distillation needs a batch of at least \(minimum) sequences (got \(batch)); "
                + "raise the batch size"
        case .invalidLayerMap(let text, let reason):
            return "cannot read the layer map '\(text)': \(reason); write student:teacher pairs of 0-based "
                + "block numbers separated by commas, e.g. 0:1,1:3"
        case .layerOutOfDepth(let model, let layer, let depth):
            return "the layer map names \(model) block \(layer), but the \(model) has \(depth) blocks "
                + "(numbered 0...\(max(depth - 1, 0)))"
        case .targetOutOfRange(let row, let target, let vocab):
            return "target token \(target) at position \(row) is outside the vocabulary of \(vocab) tokens; "
                + "was the data tokenized with another tokenizer?"
        case .missingInput(let what):
            return "missing input: \(what)"
        case .invalidShape(let what):
            return "mismatched shapes: \(what)"
        }
    }
}

/// How much each term counts in the student's objective:
/// `ce·CE + kd·KD + feature·Σ_pairs feature + rkdDistance·RKD_d + rkdAngle·RKD_a`.
public struct DistillationWeights: Sendable, Equatable, Codable {
    /// Cross-entropy with the data's next tokens.
    public var ce: Float
    /// Logit distillation (the chosen divergence, τ²-scaled when asked).
    public var kd: Float
    /// Feature distillation, summed over the mapped layer pairs.
    public var feature: Float
    /// Relational distance loss on sentence embeddings (Park et al. use 1).
    public var rkdDistance: Float
    /// Relational angle loss on sentence embeddings (Park et al. use 2).
    public var rkdAngle: Float

    public init(ce: Float = 1, kd: Float = 1, feature: Float = 0, rkdDistance: Float = 0, rkdAngle: Float = 0) {
        self.ce = ce
        self.kd = kd
        self.feature = feature
        self.rkdDistance = rkdDistance
        self.rkdAngle = rkdAngle
    }

    /// Throws when a weight is negative or not finite, or when all are zero.
    public func validate() throws {
        let named: [(Setting, Float)] = [
            (.ceWeight, ce), (.kdWeight, kd), (.featureWeight, feature), (.rkdDistanceWeight, rkdDistance), (.rkdAngleWeight, rkdAngle),
        ]
        for (name, value) in named where !(value.isFinite && value >= 0) {
            throw DistillationError.negativeWeight(name, value: value)
        }
        if named.allSatisfy({ $0.1 == 0 }) { throw DistillationError.allWeightsZero }
    }

    /// The relational term that needs the most sequences per batch, with that count: angles take
    /// triplets (3), distances pairs (2); nil without relational terms.
    public var relationalMinimum: (loss: String, batch: Int)? {
        rkdAngle > 0 ? ("angle", 3) : rkdDistance > 0 ? ("distance", 2) : nil
    }

    /// Throws `DistillationError.batchTooSmall` when batches of `batchSize` sequences are too small for
    /// the relational terms: the one check that the commands, `distill run`'s dry run and the objective
    /// itself make.
    public func checkBatchSize(_ batchSize: Int) throws {
        if let (loss, minimum) = relationalMinimum, batchSize < minimum {
            throw DistillationError.batchTooSmall(loss: loss, batch: batchSize, minimum: minimum)
        }
    }
}
