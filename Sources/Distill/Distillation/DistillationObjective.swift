import CKernels
import Foundation

/// What `distill student` optimises besides plain cross-entropy, and how.
public struct DistillationSettings: Sendable {
    public var weights = DistillationWeights()
    public var logits = LogitDistillation()
    /// Student block ↔ teacher block pairs for feature distillation (used when weights.feature > 0).
    public var layerMap: LayerMap?
    public var featureDistance: FeatureDistance = .l1
    /// The CE/KD weights and the temperature over the run (constant unless asked); `weights` and
    /// `logits.temperature` are the values it ends at.
    public var schedule = DistillationSchedule()

    /// CE + τ²·forward KL at τ = 2 with equal weights (Hinton et al.'s recipe): what `mutual` and the
    /// benchmark use. `student` starts from `DistillationSettings.student` instead.
    public init() {}

    public func validate() throws {
        try weights.validate()
        try logits.validate()
        try schedule.validate(weights)
        // The schedule's end is the run's temperature; a different fixed one is a contradiction.
        if let annealed = schedule.temperature, annealed.end != logits.temperature {
            throw SettingError(.temperatureSchedule, "conflicts with temperature \(logits.temperature): the schedule ends at \(annealed.end); give one of them")
        }
    }
}

extension DistillationSettings {
    /// The defaults of `distill student`, chosen by the sweep (tools/sweep; README, "Does distillation
    /// help?"): forward KL alone at τ = 1 (CE weight 0, KD weight 1), which closed the largest share of the
    /// baseline→teacher gap on both corpora; adding CE, or raising τ, closed less.
    public static var student: DistillationSettings {
        var settings = DistillationSettings()
        settings.weights.ce = 0
        settings.weights.kd = 1
        settings.logits.temperature = 1
        return settings
    }
}

/// Training objective of a student: `w_ce·CE + w_kd·KD(teacher, student) + w_feat·L_feat + w_rd·RKD-D + w_ra·RKD-A`.
/// The teacher is frozen and runs forward only, keeping nothing for backward. Several teachers form an
/// ensemble whose KD target is the mean of their tempered distributions; the hidden-state and
/// relational terms use the first teacher. Feature distillation owns
/// one learned projection per layer pair (student width → teacher width), trained with the student and
/// saved in its training state, not in its weights.
public final class DistillationObjective: TermwiseObjective {
    public let teachers: [LlamaModel]
    /// The teacher whose hidden states the feature and relational terms match.
    public var teacher: LlamaModel { teachers[0] }
    public let settings: DistillationSettings
    /// The members' weights in the ensemble target, adding up to 1 (nil: equal weights).
    public let teacherWeights: [Float]?
    /// The settings of the current step: `settings` moved along its schedule by `prepare(step:totalSteps:)`.
    public private(set) var current: DistillationSettings
    public let extraTensors: [TrainableTensor]
    private var dHidden: [Int: ScratchBuffer] = [:]      // student block → [B·T, Cs]
    private let dFinal = ScratchBuffer()                 // [B·T, Cs]
    private let dEmbedding = ScratchBuffer()             // [B, Cs]
    private let teacherChunk = ScratchBuffer()           // [headChunkRows, V], the one teacher's logits
    private let ensembleLogits = ScratchBuffer()         // [B·T, V], with several teachers
    private let ensembleScratch = ScratchBuffer()        // [threads, V]

    public convenience init(teacher: LlamaModel, studentConfig: LlamaConfig, settings: DistillationSettings, seed: UInt64) throws {
        try self.init(teachers: [teacher], studentConfig: studentConfig, settings: settings, seed: seed)
    }

    public init(teachers: [LlamaModel], studentConfig: LlamaConfig, settings: DistillationSettings, seed: UInt64,
                teacherWeights: [Float]? = nil) throws {
        try settings.validate()
        guard let teacher = teachers.first else { throw DistillationError.missingInput("at least one teacher") }
        self.teacherWeights = try teacherWeights.map { try ModelEnsemble.normalised($0, count: teachers.count) }
        for member in teachers where member.config.vocabSize != studentConfig.vocabSize && settings.weights.kd > 0 {
            throw DistillationError.invalidShape("the teacher's vocabulary (\(member.config.vocabSize)) differs from the student's (\(studentConfig.vocabSize)): logit distillation needs a shared vocabulary")
        }
        self.teachers = teachers
        self.settings = settings
        current = settings
        teacherHashes = teachers.map { String(weightsHash(UnsafeBufferPointer($0.parameters)), radix: 16) }
        var projections: [TrainableTensor] = []
        if settings.weights.feature > 0, let map = settings.layerMap {
            // nn.Linear's default initialisation: U(−1/√in, 1/√in).
            var random = SeededRandom(seed: seed &+ 0xFEA7)
            let bound = 1 / Float(studentConfig.hiddenSize).squareRoot()
            for pair in map.pairs {
                let count = teacher.config.hiddenSize * studentConfig.hiddenSize
                let initial = (0..<count).map { _ in (2 * random.nextFloat() - 1) * bound }
                projections.append(TrainableTensor(name: "projection.\(pair.student)_\(pair.teacher)",
                                                   shape: [teacher.config.hiddenSize, studentConfig.hiddenSize], initial: initial))
            }
        }
        extraTensors = projections
        for member in teachers { member.releaseActivations() }
    }

    /// The weights, the logit settings, the feature and relational settings, and the teachers' identity.
    /// A teacher whose weights change during training (a mutual peer) is named by `peerIdentity` instead.
    public var identity: [String: String] {
        let w = settings.weights, logits = settings.logits
        var result: [String: String] = [
            "objective": "distillation",
            Setting.ceWeight.rawValue: "\(w.ce)", Setting.kdWeight.rawValue: "\(w.kd)",
            Setting.featureWeight.rawValue: "\(w.feature)", Setting.rkdDistanceWeight.rawValue: "\(w.rkdDistance)",
            Setting.rkdAngleWeight.rawValue: "\(w.rkdAngle)",
        ]
        if w.kd > 0 {
            result[Setting.temperature.rawValue] = "\(logits.temperature)"
            result[Setting.divergence.rawValue] = logits.divergence.name
            result[Setting.tauSquared.rawValue] = "\(logits.tauSquared)"
            if let k = logits.teacherTopK { result[Setting.teacherTopK.rawValue] = "\(k)" }
            switch logits.divergence {
            case .jsd(let beta): result[Setting.beta.rawValue] = "\(beta)"
            case .skewKL(let alpha), .skewReverseKL(let alpha): result[Setting.skewAlpha.rawValue] = "\(alpha)"
            default: break
            }
            if let temperature = settings.schedule.temperature {
                result[Setting.temperatureSchedule.rawValue] = "\(temperature)"
                result[Setting.temperature.rawValue] = nil
            }
        }
        // Only a schedule that moves is named, so checkpoints from before schedules existed still resume.
        if settings.schedule.kd != .constant { result[Setting.kdSchedule.rawValue] = settings.schedule.kd.rawValue }
        if w.feature > 0 {
            result[Setting.layerMap.rawValue] = settings.layerMap.map { "\($0)" } ?? "uniform"
            result[Setting.featureDistance.rawValue] = settings.featureDistance.rawValue
        }
        result[Setting.teacher.rawValue] = peerIdentity ?? teacherHashes.joined(separator: ",")
        if let teacherWeights, w.kd > 0 { result[Setting.teacherWeights.rawValue] = teacherWeights.map { "\($0)" }.joined(separator: ",") }
        return result
    }

    /// Names the teachers in `identity` when their weights are not fixed (mutual learning's peers).
    public var peerIdentity: String?
    /// The hash of each teacher's weights, taken once: frozen teachers do not change.
    private let teacherHashes: [String]

    /// Deep Mutual Learning's two objectives: each model learns from the other's current distribution.
    /// The peers' weights change as they train, so they are named by their role, not a hash.
    public static func mutual(_ models: [LlamaModel], settings: DistillationSettings, seed: UInt64) throws -> [DistillationObjective] {
        guard models.count == 2 else { throw DistillationError.missingInput("two models for mutual learning, got \(models.count)") }
        return try models.indices.map { index in
            let objective = try DistillationObjective(teacher: models[1 - index], studentConfig: models[index].config,
                                                      settings: settings, seed: seed)
            objective.peerIdentity = "mutual peer \(2 - index) of 2"
            return objective
        }
    }

    /// Moves the weights and the temperature to their scheduled values for optimizer step `step`.
    public func prepare(step: Int, totalSteps: Int) {
        guard !settings.schedule.isConstant else { return }
        current = settings.schedule.settings(settings, progress: DistillationSchedule.progress(step: step, totalSteps: totalSteps))
    }

    /// Every active term on one batch; with `backward`, gradients go into the student and projections.
    public func terms(student: LlamaModel, batch: Batch, gradientScale scale: Float, backward: Bool) throws -> LossTerms {
        try terms(student: student, batch: batch, distillationMask: nil, gradientScale: scale, backward: backward)
    }

    /// `terms` with the logit divergence taken only at the positions whose `distillationMask` entry
    /// [B·T] is not 0 (nil: all), its mean over those positions: on-policy rows are distilled at their
    /// generated tokens alone. The feature and relational terms take no mask (on-policy runs refuse them).
    public func terms(student: LlamaModel, batch: Batch, distillationMask: [UInt8]?, gradientScale scale: Float,
                      backward: Bool) throws -> LossTerms {
        let weights = current.weights, rows = batch.batchSize * batch.contextLength
        let vocab = student.config.vocabSize, cs = student.config.hiddenSize, ct = teacher.config.hiddenSize
        let pairs = weights.feature > 0 ? settings.layerMap?.pairs ?? [] : []
        let rkd = weights.rkdDistance > 0 || weights.rkdAngle > 0
        try weights.checkBatchSize(batch.batchSize)

        // One teacher: its head is taken a chunk of rows at a time beside the student's (below). An
        // ensemble's target mixes whole distributions and is built at once.
        let teacherCapture = Set(pairs.map(\.teacher))
        let teacherOut: LlamaModel.HiddenStates
        var wholeTarget: UnsafePointer<Float>? = nil
        if teachers.count == 1 {
            teacherOut = teacher.forwardHidden(tokens: batch.inputs, batch: batch.batchSize, length: batch.contextLength,
                                               captureLayers: teacherCapture, keepForBackward: false)
        } else {
            let whole = teacher.forward(tokens: batch.inputs, batch: batch.batchSize, length: batch.contextLength,
                                        captureLayers: teacherCapture, keepForBackward: false)
            teacherOut = LlamaModel.HiddenStates(hidden: whole.hidden, finalHidden: whole.finalHidden)
            if weights.kd > 0 { wholeTarget = try ensembleTarget(first: whole.logits, batch: batch) }
        }
        func teacherLogits(_ chunk: Range<Int>) -> UnsafePointer<Float>? {
            guard weights.kd > 0 else { return nil }
            if let wholeTarget { return wholeTarget + chunk.lowerBound * vocab }
            let logits = teacherChunk.reserved(chunk.count * vocab)
            teacher.headLogits(rows: chunk, into: logits)
            return UnsafePointer(logits)
        }
        let studentOut = student.forwardHidden(tokens: batch.inputs, batch: batch.batchSize, length: batch.contextLength,
                                               captureLayers: Set(pairs.map(\.student)), keepForBackward: backward)
        var result = LossTerms()
        var total = 0.0

        // Logits: CE and the divergence in one pass per row, the student's head a chunk of rows at a time
        // (its [B·T, V] logits and their gradient are never held whole); d finalHidden gathers the head's
        // gradient and the relational terms'.
        let logitGradient = backward && (weights.ce > 0 || weights.kd > 0)
        let dFinalPointer = backward ? dFinal.zeroed(rows * cs) : nil
        var crossEntropy: Float = 0, distillation: Float = 0
        precondition(distillationMask.map { $0.count == rows } ?? true, "one mask entry per position")
        // The mask's pointer lives only inside its closure; an empty buffer stands for "no mask".
        try (distillationMask ?? []).withUnsafeBufferPointer { maskBuffer in
            try batch.targets.withUnsafeBufferPointer { targets in
                let mask = distillationMask == nil ? nil : maskBuffer
                let share = try mask.map { try BatchShare(targets: targets, vocab: vocab, distillationMask: $0) }
                    ?? BatchShare(targets: targets, vocab: vocab)
                try student.headInChunks(dFinalHidden: logitGradient ? dFinalPointer : nil) { chunk, logits, dLogits in
                    let losses = try logitLossesForwardBackward(
                        dStudentLogits: dLogits, studentLogits: logits,
                        teacherLogits: teacherLogits(chunk), targets: targets.baseAddress! + chunk.lowerBound,
                        rows: chunk.count, vocab: vocab, distillation: current.logits, crossEntropyWeight: weights.ce,
                        distillationWeight: weights.kd, gradientScale: scale, meanOver: share,
                        distillationMask: mask.map { $0.baseAddress! + chunk.lowerBound })
                    crossEntropy += losses.crossEntropy
                    distillation += losses.distillation
                }
            }
        }
        result[.ce] = Double(crossEntropy)
        total += Double(weights.ce) * Double(crossEntropy)
        if weights.kd > 0 {
            result[.kd] = Double(distillation)
            total += Double(weights.kd) * Double(distillation)
        }

        // Hidden states: one projection per pair, averaged over pairs.
        var hiddenGradients: [Int: UnsafePointer<Float>] = [:]
        if !pairs.isEmpty {
            if backward {
                for pair in pairs {
                    let buffer = dHidden[pair.student] ?? ScratchBuffer()
                    dHidden[pair.student] = buffer
                    hiddenGradients[pair.student] = UnsafePointer(buffer.zeroed(rows * cs))
                }
            }
            var feature = 0.0
            let pairScale = scale * weights.feature / Float(pairs.count)
            for (pair, projection) in zip(pairs, extraTensors) {
                let value: Float
                if backward {
                    value = featureDistillationForwardBackward(
                        dStudentHidden: dHidden[pair.student]!.pointer, dProjection: projection.gradients.baseAddress,
                        studentHidden: studentOut.hidden[pair.student]!, teacherHidden: teacherOut.hidden[pair.teacher]!,
                        projection: projection.values.baseAddress!, tokens: rows, studentWidth: cs, teacherWidth: ct,
                        distance: settings.featureDistance, gradientScale: pairScale)
                } else {
                    value = featureDistillationForwardBackward(
                        dStudentHidden: nil, dProjection: nil, studentHidden: studentOut.hidden[pair.student]!,
                        teacherHidden: teacherOut.hidden[pair.teacher]!, projection: projection.values.baseAddress!,
                        tokens: rows, studentWidth: cs, teacherWidth: ct, distance: settings.featureDistance, gradientScale: 0)
                }
                feature += Double(value) / Double(pairs.count)
            }
            result[.feature] = feature
            total += Double(weights.feature) * feature
        }

        // Sentence embeddings: mean of the final hidden states; distance and angle relations.
        if rkd {
            let b = batch.batchSize, t = batch.contextLength
            var studentEmbedding = [Float](repeating: 0, count: b * cs), teacherEmbedding = [Float](repeating: 0, count: b * ct)
            meanPoolForward(out: &studentEmbedding, hidden: studentOut.finalHidden, batch: b, tokens: t, width: cs)
            meanPoolForward(out: &teacherEmbedding, hidden: teacherOut.finalHidden, batch: b, tokens: t, width: ct)
            let dEmbeddingPointer = backward ? dEmbedding.zeroed(b * cs) : nil
            let relations = [(LossTerm.rkdDistance, weights.rkdDistance, rkdDistanceForwardBackward),
                             (LossTerm.rkdAngle, weights.rkdAngle, rkdAngleForwardBackward)]
            for (term, weight, relation) in relations where weight > 0 {
                let value = try relation(dEmbeddingPointer, studentEmbedding, teacherEmbedding, b, cs, ct, scale * weight)
                result[term] = Double(value)
                total += Double(weight) * Double(value)
            }
            if let dEmbeddingPointer, let dFinalPointer {
                meanPoolBackward(dHidden: dFinalPointer, dOut: dEmbeddingPointer, batch: b, tokens: t, width: cs)
            }
        }
        result[.loss] = total

        if backward {
            student.backward(dLogits: nil, dHidden: hiddenGradients, dFinalHidden: dFinalPointer.map { UnsafePointer($0) })
        }
        return result
    }

    /// The KD target's logits: the teacher's own, or for an ensemble τ·log of the mean of the members'
    /// tempered distributions (softmax of it at τ is that mean).
    private func ensembleTarget(first: UnsafeMutablePointer<Float>, batch: Batch) throws -> UnsafePointer<Float> {
        guard teachers.count > 1 else { return UnsafePointer(first) }
        let rows = batch.batchSize * batch.contextLength, vocab = teacher.config.vocabSize
        var members = [UnsafePointer<Float>(first)]
        for member in teachers.dropFirst() {
            members.append(UnsafePointer(member.forward(tokens: batch.inputs, batch: batch.batchSize, length: batch.contextLength,
                                                        keepForBackward: false).logits))
        }
        let out = ensembleLogits.zeroed(rows * vocab)
        temperedMixture(out: out, members: members, weights: teacherWeights, rows: rows, vocab: vocab,
                        temperature: current.logits.temperature, scratch: ensembleScratch)
        return UnsafePointer(out)
    }
}
