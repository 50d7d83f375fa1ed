import Foundation

/// Deep Mutual Learning for N ≥ 2 peers (Zhang et al., 2018): peer k minimises
/// `w_ce·CE + w_kd·(1/(N−1))·Σ_{j≠k} D(p_j ‖ p_k)` at temperature τ, with the other peers' current
/// distributions as fixed targets (they run forward only; no gradient reaches them). Train the peers
/// in lockstep, one optimizer step of each in turn (`Trainer.runTogether`), each with its own objective
/// from `MutualObjective.objectives`. With two peers each objective is exactly a `DistillationObjective`
/// whose teacher is the other peer, the two-peer `mutual` of before, bit for bit.
public final class MutualObjective: TrainingObjective {
    /// The peers this one learns from.
    public let others: [LlamaModel]
    public let settings: DistillationSettings
    public var extraTensors: [TrainableTensor] { [] }
    /// With one other peer: that peer as a plain teacher.
    private let single: DistillationObjective?
    private let dLogits = ScratchBuffer()  // [B·T, V]

    /// The objective of one peer. Only logit terms apply (CE and a divergence); feature and relational
    /// weights are refused, as peers of different shapes have no layer map.
    public init(others: [LlamaModel], peerConfig: LlamaConfig, settings: DistillationSettings) throws {
        try settings.validate()
        guard !others.isEmpty else { throw DistillationError.missingInput("at least one other peer") }
        let weights = settings.weights
        for (setting, weight) in [(Setting.featureWeight, weights.feature), (.rkdDistanceWeight, weights.rkdDistance),
                                  (.rkdAngleWeight, weights.rkdAngle)] where weight > 0 {
            throw SettingError(setting, "does not apply to mutual learning, which uses the logit terms only: leave it at 0")
        }
        for other in others where other.config.vocabSize != peerConfig.vocabSize {
            throw DistillationError.invalidShape("peers have vocabularies of \(peerConfig.vocabSize) and \(other.config.vocabSize): mutual learning needs a shared vocabulary")
        }
        self.others = others
        self.settings = settings
        single = others.count == 1
            ? try DistillationObjective(teachers: others, studentConfig: peerConfig, settings: settings, seed: 0) : nil
    }

    /// One objective per peer, peer k learning from all the others (in peer order).
    public static func objectives(peers: [LlamaModel], settings: DistillationSettings) throws -> [MutualObjective] {
        guard peers.count >= 2 else { throw DistillationError.missingInput("at least two peers for mutual learning") }
        return try peers.indices.map { k in
            let others = peers.indices.filter { $0 != k }
            let objective = try MutualObjective(others: others.map { peers[$0] }, peerConfig: peers[k].config, settings: settings)
            // The peers' weights change as they train, so they are named by their role, not a hash (the
            // two-peer name is `DistillationObjective.mutual`'s, so two-peer checkpoints still resume).
            objective.peerIdentity = others.count == 1 ? "mutual peer \(others[0] + 1) of 2"
                : "mutual peers \(others.map { String($0 + 1) }.joined(separator: ",")) of \(peers.count)"
            return objective
        }
    }

    /// Names the other peers in `identity`.
    public var peerIdentity: String {
        get { _peerIdentity }
        set {
            _peerIdentity = newValue
            single?.peerIdentity = newValue
        }
    }
    private var _peerIdentity = "mutual peers"

    /// The logit settings and the other peers' roles; with two peers, `DistillationObjective`'s.
    public var identity: [String: String] {
        if let single { return single.identity }
        let w = settings.weights, logits = settings.logits
        var result: [String: String] = [
            "objective": "distillation",
            Setting.ceWeight.rawValue: "\(w.ce)", Setting.kdWeight.rawValue: "\(w.kd)",
            Setting.featureWeight.rawValue: "\(w.feature)", Setting.rkdDistanceWeight.rawValue: "\(w.rkdDistance)",
            Setting.rkdAngleWeight.rawValue: "\(w.rkdAngle)", Setting.teacher.rawValue: peerIdentity,
        ]
        if w.kd > 0 {
            result[Setting.temperature.rawValue] = "\(logits.temperature)"
            result[Setting.divergence.rawValue] = logits.divergence.name
            result[Setting.tauSquared.rawValue] = "\(logits.tauSquared)"
            switch logits.divergence {
            case .jsd(let beta): result[Setting.beta.rawValue] = "\(beta)"
            case .skewKL(let alpha), .skewReverseKL(let alpha): result[Setting.skewAlpha.rawValue] = "\(alpha)"
            default: break
            }
        }
        return result
    }

    public func trainStep(model: LlamaModel, batch: Batch, gradientScale: Float) throws -> LossTerms {
        if let single { return try single.trainStep(model: model, batch: batch, gradientScale: gradientScale) }
        return try terms(peer: model, batch: batch, gradientScale: gradientScale, backward: true)
    }

    public func evaluate(model: LlamaModel, batch: Batch) throws -> LossTerms {
        if let single { return try single.evaluate(model: model, batch: batch) }
        var result = try terms(peer: model, batch: batch, gradientScale: 0, backward: false)
        result[.loss] = nil
        return result
    }

    /// CE once, then each other peer's divergence with weight w_kd/(N−1), into one logit gradient.
    private func terms(peer: LlamaModel, batch: Batch, gradientScale scale: Float, backward: Bool) throws -> LossTerms {
        let rows = batch.batchSize * batch.contextLength, vocab = peer.config.vocabSize
        let weights = settings.weights, share = weights.kd / Float(others.count)
        // The others first: their logits stay valid, as each model keeps its own buffers.
        let targets = weights.kd > 0 ? others.map {
            UnsafePointer($0.forward(tokens: batch.inputs, batch: batch.batchSize, length: batch.contextLength, keepForBackward: false).logits)
        } : []
        let output = peer.forward(tokens: batch.inputs, batch: batch.batchSize, length: batch.contextLength, keepForBackward: backward)
        let d = backward ? dLogits.zeroed(rows * vocab) : nil
        let ce = try batch.targets.withUnsafeBufferPointer { labels in
            try logitLossesForwardBackward(dStudentLogits: d, studentLogits: output.logits, teacherLogits: nil,
                                           targets: labels.baseAddress, rows: rows, vocab: vocab, distillation: settings.logits,
                                           crossEntropyWeight: weights.ce, distillationWeight: 0, gradientScale: scale).crossEntropy
        }
        var kd = 0.0
        for target in targets {
            kd += Double(try logitLossesForwardBackward(
                dStudentLogits: d, studentLogits: output.logits, teacherLogits: target, targets: nil, rows: rows, vocab: vocab,
                distillation: settings.logits, crossEntropyWeight: 0, distillationWeight: share, gradientScale: scale).distillation)
        }
        var result: LossTerms = [.ce: Double(ce), .loss: Double(weights.ce) * Double(ce)]
        if weights.kd > 0 {
            result[.kd] = kd / Double(others.count)
            result[.loss, default: 0] += Double(weights.kd) * kd / Double(others.count)
        }
        if let d { peer.backward(dLogits: d) }
        return result
    }
}
