import CKernels
import Foundation

/// What can be wrong with an ensemble of models; every message says what to change.
public enum EnsembleError: Error, CustomStringConvertible, Equatable, Sendable {
    case noMembers
    /// Two members (or a member and the data) were made with different tokenizers.
    case tokenizerMismatch(String, String)
    case vocabularyMismatch(String, Int, String, Int)

    public var description: String {
        switch self {
        case .noMembers: return "an ensemble needs at least one model"
        case let .tokenizerMismatch(first, second):
            return "\(first) and \(second) use different tokenizers: the models of an ensemble must share one vocabulary"
        case let .vocabularyMismatch(first, firstSize, second, secondSize):
            return "\(first) has a vocabulary of \(firstSize) and \(second) one of \(secondSize): the models of an ensemble must share one vocabulary"
        }
    }
}

/// Several models whose prediction is the weighted mean of their (tempered) distributions: the
/// teacher of an ensemble, an ensemble scored by `eval`, sampled by `sample`, or the generations of
/// born-again training taken together.
public final class ModelEnsemble {
    public let members: [LlamaModel]
    /// The members' weights, normalised to add up to 1.
    public let weights: [Float]
    private let mixture = ScratchBuffer()   // [B·T, V]
    private let scratch = ScratchBuffer()   // [threads, V]

    /// `weights` nil gives every member the same weight. Members must share one vocabulary size.
    public init(members: [LlamaModel], weights: [Float]? = nil) throws {
        guard let first = members.first else { throw EnsembleError.noMembers }
        for (index, member) in members.enumerated() where member.config.vocabSize != first.config.vocabSize {
            throw EnsembleError.vocabularyMismatch("model 1", first.config.vocabSize, "model \(index + 1)", member.config.vocabSize)
        }
        self.members = members
        self.weights = try Self.normalised(weights, count: members.count)
    }

    /// Checks weights (one per member, finite, ≥ 0, not all 0) and scales them to add up to 1.
    public static func normalised(_ weights: [Float]?, count: Int) throws -> [Float] {
        guard count >= 1 else { throw EnsembleError.noMembers }
        guard let weights else { return [Float](repeating: 1 / Float(count), count: count) }
        guard weights.count == count else {
            throw SettingError(.teacherWeights, "gives \(weights.count) weight(s) for \(count) model(s): give one per model, e.g. 0.5,0.5")
        }
        for weight in weights where !(weight.isFinite && weight >= 0) {
            throw SettingError(.teacherWeights, "must be finite numbers ≥ 0 (got \(weight))")
        }
        let total = weights.reduce(0, +)
        guard total > 0 else { throw SettingError(.teacherWeights, "are all 0: give at least one member a positive weight") }
        return weights.map { $0 / total }
    }

    /// Parses "w1,w2,..." as given to `--teacher-weights`.
    public static func parseWeights(_ text: String) throws -> [Float] {
        try text.split(separator: ",", omittingEmptySubsequences: false).map { piece in
            guard let value = Float(piece.trimmingCharacters(in: .whitespaces)) else {
                throw SettingError(.teacherWeights, "must be numbers separated by commas, e.g. 0.5,0.5 (got '\(text)')")
            }
            return value
        }
    }

    public var vocabSize: Int { members[0].config.vocabSize }
    /// The longest window every member can read.
    public var context: Int { members.map(\.config.maxPositionEmbeddings).min() ?? 0 }

    /// Logits whose softmax at `temperature` is the ensemble's tempered distribution: a single
    /// member's own logits, otherwise τ·log of the weighted mean of the members' softmax(z/τ).
    /// Valid until the next call.  [batch·length, V]
    public func logits(tokens: UnsafePointer<Int32>, batch: Int, length: Int, temperature: Float = 1) -> UnsafePointer<Float> {
        let first = members[0].forward(tokens: tokens, batch: batch, length: length, keepForBackward: false).logits
        guard members.count > 1 else { return UnsafePointer(first) }
        var outputs = [UnsafePointer<Float>(first)]
        for member in members.dropFirst() {
            outputs.append(UnsafePointer(member.forward(tokens: tokens, batch: batch, length: length, keepForBackward: false).logits))
        }
        let rows = batch * length, out = mixture.zeroed(rows * vocabSize)
        temperedMixture(out: out, members: outputs, weights: weights, rows: rows, vocab: vocabSize,
                        temperature: temperature, scratch: scratch)
        return UnsafePointer(out)
    }

    /// Frees the members' activation buffers.
    public func releaseActivations() { members.forEach { $0.releaseActivations() } }
}

/// out[r] = τ·log(Σ_i weights[i]·softmax(members[i][r]/τ)) for each of `rows` rows, so that
/// softmax(out/τ) is the weighted mixture. `weights` must add up to 1; nil weighs the members equally.
public func temperedMixture(out: UnsafeMutablePointer<Float>,  // [rows, vocab]
                            members: [UnsafePointer<Float>],  // each [rows, vocab]
                            weights: [Float]?, rows: Int, vocab: Int, temperature: Float,
                            scratch: ScratchBuffer = ScratchBuffer()) {
    let workers = max(1, min(Compute.threads, rows))
    let space = scratch.zeroed(workers * vocab)
    members.withUnsafeBufferPointer { pointers in
        (weights ?? []).withUnsafeBufferPointer { given in
            let weightPointer = weights == nil ? nil : given.baseAddress
            // Each worker takes a contiguous range of rows and its own scratch row (a row's result does
            // not depend on the split).
            parallelFor(workers) { worker in
                for row in (rows * worker / workers)..<(rows * (worker + 1) / workers) {
                    var rowPointers = pointers.map { Optional($0 + row * vocab) }
                    ck_weighted_mixture_row(out + row * vocab, &rowPointers, weightPointer, pointers.count, vocab,
                                            temperature, space + worker * vocab)
                }
            }
        }
    }
}
