import CKernels
import Foundation

/// The KD term a cached (sparse) target allows.
public enum CachedTargetLoss: String, Sendable, Equatable, CaseIterable {
    /// KL(p̂ ‖ q_τ) against the cached distribution p̂ (reported; 0 when the student matches it).
    case forwardKL = "forward-kl"
    /// The seed's soft cross-entropy −Σ p̂ log q_τ: the same gradient, reported with p̂'s entropy.
    case softCrossEntropy = "soft-cross-entropy"
}

/// Training objective of a student whose teacher is a cache (`distill cache-teacher`): `w_ce·CE +
/// w_kd·(τ² or 1)·D(p̂, q_τ)` where p̂ is the cached distribution of each target token: the empirical
/// distribution of S teacher samples (an unbiased target: E[p̂] = p_τ, so the expected gradient is full
/// KD's), or the teacher's top K with the remaining mass as one more outcome (the student's mass
/// outside the K tokens is compared with it). No teacher runs. Batches must carry their rows' file
/// positions (`Batch.starts`), which `BatchSampler` fills.
public final class CachedTeacherObjective: TermwiseObjective {
    public let cache: TeacherCache
    public let settings: DistillationSettings
    public let loss: CachedTargetLoss
    public var extraTensors: [TrainableTensor] { [] }
    private let dLogits = ScratchBuffer()  // [B·T, V]

    /// Refuses, in one line each, what a sparse target cannot serve: a divergence other than forward
    /// KL, a teacher top-K on top of the cache, feature or relational terms, a temperature other than
    /// the cache's and a student of another vocabulary.
    public init(cache: TeacherCache, studentConfig: LlamaConfig, settings: DistillationSettings,
                loss: CachedTargetLoss = .forwardKL) throws {
        try settings.validate()
        guard settings.logits.divergence == .forwardKL else {
            throw SettingError(.divergence, "is \(settings.logits.divergence.name), which needs the teacher's full distribution, but a teacher cache holds a sparse target: use forward-kl (or the soft cross-entropy), or a live teacher")
        }
        if settings.logits.teacherTopK != nil {
            throw SettingError(.teacherTopK, "cuts a live teacher's distribution; a cache's targets are fixed when it is built (its top-K setting)")
        }
        let weights = settings.weights
        for (setting, weight) in [(Setting.featureWeight, weights.feature), (.rkdDistanceWeight, weights.rkdDistance),
                                  (.rkdAngleWeight, weights.rkdAngle)] where weight > 0 {
            throw SettingError(setting, "needs the teacher's hidden states, which a teacher cache does not hold: leave it at 0 or use a live teacher")
        }
        if settings.schedule.temperature != nil {
            throw SettingError(.temperatureSchedule, "anneals τ, but the teacher cache \(cache.path) holds distributions at one τ = \(cache.temperature): leave it out, or use a live teacher")
        }
        guard settings.logits.temperature == cache.temperature else {
            throw SettingError(.temperature, "is \(settings.logits.temperature), but the teacher cache \(cache.path) holds distributions at τ = \(cache.temperature): leave it out or give \(cache.temperature)")
        }
        guard studentConfig.vocabSize == cache.vocabSize else {
            throw TeacherCacheError.mismatch(cache.path, what: "a vocabulary of \(cache.vocabSize), but the student has \(studentConfig.vocabSize)")
        }
        self.cache = cache
        self.settings = settings
        self.loss = loss
    }

    /// The weights, τ, the loss and the cache's checksum (which binds its teacher, data, mode and seed).
    public var identity: [String: String] {
        let w = settings.weights
        var result: [String: String] = [
            "objective": "cached-teacher",
            Setting.ceWeight.rawValue: "\(w.ce)", Setting.kdWeight.rawValue: "\(w.kd)",
            Setting.teacherCache.rawValue: String(cache.identity, radix: 16),
        ]
        if w.kd > 0 {
            result[Setting.temperature.rawValue] = "\(settings.logits.temperature)"
            result[Setting.divergence.rawValue] = loss.rawValue
            result[Setting.tauSquared.rawValue] = "\(settings.logits.tauSquared)"
        }
        return result
    }

    public func terms(student: LlamaModel, batch: Batch, gradientScale scale: Float, backward: Bool) throws -> LossTerms {
        let rows = batch.batchSize * batch.contextLength, vocab = student.config.vocabSize, t = batch.contextLength
        let weights = settings.weights
        try checkPositions(batch)
        let output = student.forward(tokens: batch.inputs, batch: batch.batchSize, length: t, keepForBackward: backward)
        let d = backward ? dLogits.zeroed(rows * vocab) : nil
        // Cross-entropy (and its gradient) as for any student.
        let ce = try batch.targets.withUnsafeBufferPointer { targets in
            try logitLossesForwardBackward(dStudentLogits: d, studentLogits: output.logits, teacherLogits: nil,
                                           targets: targets.baseAddress, rows: rows, vocab: vocab,
                                           distillation: settings.logits, crossEntropyWeight: weights.ce,
                                           distillationWeight: 0, gradientScale: scale).crossEntropy
        }
        var result: LossTerms = [.ce: Double(ce)]
        var total = Double(weights.ce) * Double(ce)
        if weights.kd > 0 {
            let kd = cachedDistillationForwardBackward(
                dStudentLogits: d, studentLogits: output.logits, positions: batch.starts, length: t, rows: rows, vocab: vocab,
                gradientScale: scale * weights.kd)
            result[.kd] = kd
            total += Double(weights.kd) * kd
        }
        result[.loss] = total
        if let d { student.backward(dLogits: d) }
        return result
    }

    /// Every target position must be one the cache holds a record for.
    private func checkPositions(_ batch: Batch) throws {
        guard batch.starts.count == batch.batchSize else {
            throw DistillationError.missingInput("the token-file positions of the batch's rows (Batch.starts), which a teacher cache needs")
        }
        for start in batch.starts {
            let first = start + 1, last = start + batch.contextLength
            guard first >= 1, last < cache.tokenCount, first > cache.splitIndex || last < cache.splitIndex else {
                throw TeacherCacheError.mismatch(cache.path, what: "\(cache.tokenCount) tokens, but a batch reads positions \(first)...\(last): is it the cache of this token file?")
            }
        }
    }

    /// (τ² or 1) · the mean over rows of D(p̂, q_τ), and when `dStudentLogits` is given ACCUMULATES
    /// gradientScale · its gradient with respect to the raw student logits.
    ///
    /// Per row, with u = s/τ, q = softmax(u), p̂ the cached probabilities on their ids K and r the mass
    /// outside them (0 for samples), Q = Σ_{j∉K} q_j:
    ///   KL = Σ_K p̂ log(p̂/q) + r log(r/Q),  soft CE = −Σ_K p̂ log q − r log Q,
    ///   ∂/∂u_j = q_j − p̂_j on K and q_j·(1 − r/Q) off K (so with r = 0: q − p̂).
    public func cachedDistillationForwardBackward(
        dStudentLogits: UnsafeMutablePointer<Float>?,  // [rows, vocab], accumulated into
        studentLogits: UnsafePointer<Float>,  // [rows, vocab]
        positions starts: [Int],  // [B] file index of each row's first input token
        length: Int, rows: Int, vocab: Int,
        gradientScale: Float
    ) -> Double {
        let tau = settings.logits.temperature, invTau = 1 / tau
        let factor: Float = settings.logits.tauSquared ? tau * tau : 1
        let gradScale = gradientScale * factor * invTau / Float(rows)
        let capacity = cache.maximumEntries, soft = loss == .softCrossEntropy
        let partials = mapRowChunks(rows: rows, rowsPerChunk: 16) { range -> Double in
            let weights = UnsafeMutablePointer<Float>.allocate(capacity: vocab)  // exp(u − max u)
            let ids = UnsafeMutablePointer<Int32>.allocate(capacity: capacity)
            let probabilities = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
            defer {
                weights.deallocate()
                ids.deallocate()
                probabilities.deallocate()
            }
            var sum = 0.0
            for row in range {
                let position = starts[row / length] + row % length + 1
                let (count, storedRest) = cache.target(at: position, ids: ids, probabilities: probabilities)
                // Stored probabilities are rounded: renormalise with the rest so that they add up to 1.
                var mass = Double(storedRest)
                for i in 0..<count { mass += Double(probabilities[i]) }
                guard mass > 0 else { continue }
                let s = studentLogits + row * vocab
                let maximum = ck_max(s, vocab)
                let z = Double(ck_exp_sum(weights, s, invTau, maximum * invTau, vocab))
                let lse = Double(maximum * invTau) + log(z)
                var rowLoss = 0.0, inside = 0.0
                for i in 0..<count {
                    let p = Double(probabilities[i]) / mass, id = Int(ids[i])
                    inside += Double(weights[id])
                    guard p > 0 else { continue }
                    let logQ = Double(s[id] * invTau) - lse
                    rowLoss += soft ? -p * logQ : p * (log(p) - logQ)
                }
                let rest = Double(storedRest) / mass
                // Q, the student's mass outside the stored ids; clamped so that log Q stays finite.
                let outside = max((z - inside) / z, 1e-30)
                if rest > 0 { rowLoss += soft ? -rest * log(outside) : rest * (log(rest) - log(outside)) }
                sum += rowLoss
                if let dBase = dStudentLogits, gradScale != 0 {
                    let dRow = dBase + row * vocab
                    // d += g·q − c·e over the row (c = g·r/(Q·Z) moves the rest's share off K), then
                    // on K: d −= g·p̂ and the c·e taken there is given back.
                    let c = rest > 0 ? Double(gradScale) * rest / (outside * z) : 0
                    ck_axpy(dRow, weights, Float(Double(gradScale) / z - c), vocab)
                    for i in 0..<count {
                        let id = Int(ids[i])
                        dRow[id] += Float(c * Double(weights[id]) - Double(gradScale) * Double(probabilities[i]) / mass)
                    }
                }
            }
            return sum
        }
        return Double(factor) * partials.reduce(0, +) / Double(max(rows, 1))
    }
}
