import CKernels
import Foundation

// Logit losses: cross-entropy with the data's next tokens and the distillation divergences between the
// teacher's and the student's next-token distributions at a temperature τ. Everything runs row by row
// (one row = one token position, `vocab` logits) inside the cache, so no [rows, vocab] temporaries are
// made; rows are split over the cores in fixed chunks whose partial sums are added in chunk order.
//
// Notation per row: s, t student/teacher logits; S = softmax(s/τ), T = softmax(t/τ); P = softmax(s).

/// A divergence between the teacher's distribution T and the student's S (both at temperature τ).
/// A new divergence is a case here (with its name, its place in `all` and its row in the kernel switch
/// of `logitLossesForwardBackward`) and its row kernel in CKernels.
public enum Divergence: Sendable, Equatable, CustomStringConvertible {
    /// KL(T‖S) = Σ T log(T/S), the classic (Hinton) distillation loss; mass-covering.
    case forwardKL
    /// KL(S‖T) = Σ S log(S/T); mode-seeking.
    case reverseKL
    /// Generalised Jensen–Shannon: β·KL(T‖M) + (1−β)·KL(S‖M), M = βT + (1−β)S. The formula is used as it
    /// stands for 0 < β < 1 (no division by β(1−β)); at the end points, where it degenerates to 0, we
    /// follow the generalised-JSD convention (Agarwal et al., GKD) whose limits after that division are
    /// the KLs: β = 0 is forward KL and β = 1 is reverse KL.
    case jsd(beta: Float)
    /// Total variation distance ½ Σ |T − S|.
    case tvd
    /// Skew KL(α) = KL(T ‖ αT + (1−α)S) (DistiLLM); α = 0 is forward KL.
    case skewKL(alpha: Float)
    /// Skew reverse KL(α) = KL(S ‖ αS + (1−α)T) (DistiLLM); α = 0 is reverse KL.
    case skewReverseKL(alpha: Float)

    /// JSD's β when none is given (the symmetric JSD).
    public static let defaultBeta: Float = 0.5
    /// The skew divergences' α when none is given (DistiLLM's value).
    public static let defaultAlpha: Float = 0.1

    /// Every divergence with its default parameter, in the order the command line and recipes list them.
    public static let all: [Divergence] = [
        .forwardKL, .reverseKL, .jsd(beta: defaultBeta), .tvd, .skewKL(alpha: defaultAlpha), .skewReverseKL(alpha: defaultAlpha),
    ]

    /// The names the command line and recipes accept.
    public static let names = all.map(\.name)

    /// The command-line and recipe name, without the parameter.
    public var name: String {
        switch self {
        case .forwardKL: return "forward-kl"
        case .reverseKL: return "reverse-kl"
        case .jsd: return "jsd"
        case .tvd: return "tvd"
        case .skewKL: return "skew-kl"
        case .skewReverseKL: return "skew-reverse-kl"
        }
    }

    /// Whether the divergence has a β (`jsd`) or an α (the skew divergences).
    public var takesBeta: Bool { if case .jsd = self { return true } else { return false } }
    public var takesAlpha: Bool {
        switch self {
        case .skewKL, .skewReverseKL: return true
        default: return false
        }
    }

    /// Parses a name (any case); `beta` is used by `jsd` and `alpha` by the skew divergences.
    public init(name: String, beta: Float = Divergence.defaultBeta, alpha: Float = Divergence.defaultAlpha) throws {
        guard let named = Divergence.all.first(where: { $0.name == name.lowercased() }) else {
            throw SettingError(.divergence, "is '\(name)'; use one of \(Divergence.names.joined(separator: ", "))")
        }
        switch named {
        case .jsd: self = .jsd(beta: beta)
        case .skewKL: self = .skewKL(alpha: alpha)
        case .skewReverseKL: self = .skewReverseKL(alpha: alpha)
        default: self = named
        }
        try validate()
    }

    public var description: String {
        switch self {
        case .jsd(let beta): return "jsd(beta: \(beta))"
        case .skewKL(let alpha), .skewReverseKL(let alpha): return "\(name)(alpha: \(alpha))"
        default: return name
        }
    }

    /// Throws when β or α lies outside [0, 1].
    public func validate() throws {
        switch self {
        case .jsd(let beta) where !(beta >= 0 && beta <= 1):
            throw SettingError(.beta, "must lie in [0, 1] (got \(beta))")
        case .skewKL(let alpha) where !(alpha >= 0 && alpha <= 1),
             .skewReverseKL(let alpha) where !(alpha >= 0 && alpha <= 1):
            throw SettingError(.skewAlpha, "must lie in [0, 1] (got \(alpha))")
        default:
            return
        }
    }

    /// The same divergence with its end points written as the plain KLs they equal (the form the row
    /// kernels are chosen by).
    var atEndPoints: Divergence {
        switch self {
        case .jsd(beta: 0), .skewKL(alpha: 0): return .forwardKL
        case .jsd(beta: 1), .skewReverseKL(alpha: 0): return .reverseKL
        default: return self
        }
    }
}

/// The settings of the logit distillation term.
public struct LogitDistillation: Sendable, Equatable {
    /// Which divergence between teacher and student.
    public var divergence: Divergence
    /// Softmax temperature τ > 0 of both distributions.
    public var temperature: Float
    /// Multiply the divergence by τ² (Hinton et al.), so its gradient does not shrink as τ grows.
    public var tauSquared: Bool
    /// Keep only the teacher's K most likely tokens per row, renormalised (nil: the whole vocabulary).
    ///
    /// The divergence then uses the truncated teacher T̃. Forward KL, skew KL, TVD and JSD with β < 1 are
    /// finite with T̃ = 0 off the support. Reverse KL (also JSD β = 1 and skew reverse KL α = 0) would be
    /// infinite, so for those the truncated teacher gets a floor: T' = (T̃ + 1e-8) / (1 + V·1e-8).
    /// A K of at least the vocabulary size is exactly the full distribution.
    public var teacherTopK: Int?

    /// The temperatures a run accepts.
    public static let temperatureRange: ClosedRange<Float> = 0.01...1000

    /// The floor added to a truncated teacher for the reverse divergences (see `teacherTopK`).
    public static let topKTeacherFloor: Float = 1e-8

    public init(divergence: Divergence = .forwardKL, temperature: Float = 2, tauSquared: Bool = true,
                teacherTopK: Int? = nil) {
        self.divergence = divergence
        self.temperature = temperature
        self.tauSquared = tauSquared
        self.teacherTopK = teacherTopK
    }

    /// Throws on τ ≤ 0 (or not finite), β/α outside [0, 1] and K < 1.
    public func validate() throws {
        // Outside this range the tempered softmax under- or overflows in Float and the loss turns NaN.
        guard temperature.isFinite && temperature >= Self.temperatureRange.lowerBound
                && temperature <= Self.temperatureRange.upperBound else {
            throw SettingError(.temperature, "must lie in [\(Self.temperatureRange.lowerBound), \(Self.temperatureRange.upperBound)] (got \(temperature)); try 2")
        }
        try divergence.validate()
        if let k = teacherTopK, k < 1 { throw SettingError(.teacherTopK, "must be at least 1 (got \(k)); leave it out to use the whole vocabulary") }
    }
}

/// The two logit loss values of one call, unweighted.
public struct LogitLosses: Sendable, Equatable {
    /// Mean negative log-likelihood over the rows whose target is ≥ 0 (0 when there is none).
    public var crossEntropy: Float
    /// Mean divergence over all rows, times τ² when `tauSquared` (0 without teacher logits).
    public var distillation: Float
    /// How many rows had a target ≥ 0.
    public var countedRows: Int

    public init(crossEntropy: Float, distillation: Float, countedRows: Int) {
        self.crossEntropy = crossEntropy
        self.distillation = distillation
        self.countedRows = countedRows
    }
}

/// The batch that a chunk of rows belongs to, for losses taken a chunk at a time (the LM head in
/// chunks): the means and their gradients are over the whole batch's rows and counted rows, so that the
/// chunks' results add up to the batch's.
public struct BatchShare: Sendable {
    public let rows: Int
    public let countedRows: Int
    /// Rows the distillation term is taken over: all of them, unless a mask says otherwise.
    public let distilledRows: Int

    /// The share of a batch whose targets are `targets` (rows with a target < 0 are not counted); refuses
    /// a target outside the vocabulary, naming its row in the batch (a chunk would name its own row).
    public init(targets: UnsafeBufferPointer<Int32>, vocab: Int) throws {
        rows = targets.count
        var counted = 0
        for (row, target) in targets.enumerated() where target >= 0 {
            guard Int(target) < vocab else { throw DistillationError.targetOutOfRange(row: row, target: target, vocab: vocab) }
            counted += 1
        }
        countedRows = counted
        distilledRows = rows
    }

    /// The same, with the distillation term over the rows whose `distillationMask` entry is not 0 only
    /// (on-policy rows: the positions of generated tokens, not the prompt's or the padding's).
    public init(targets: UnsafeBufferPointer<Int32>, vocab: Int, distillationMask: UnsafeBufferPointer<UInt8>) throws {
        precondition(distillationMask.count == targets.count, "one mask entry per row")
        let all = try BatchShare(targets: targets, vocab: vocab)
        rows = all.rows
        countedRows = all.countedRows
        distilledRows = distillationMask.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
    }
}

/// Cross-entropy and logit distillation in one pass over each row, forward and backward.
///
/// Returns CE = mean over rows with `targets[r] ≥ 0` of −log softmax(s)[target] and
/// KD = (τ² or 1) · mean over all rows (those whose `distillationMask` entry is not 0, when given) of
/// `divergence(T, S)`. When `dStudentLogits` is given it
/// ACCUMULATES `gradientScale · (crossEntropyWeight·∂CE/∂s + distillationWeight·∂KD/∂s)`, the gradient with
/// respect to the raw student logits (the 1/τ of the softmax included). For gradient accumulation over
/// k micro-batches pass gradientScale = 1/k. `targets` may be nil when crossEntropyWeight is 0 and
/// `teacherLogits` nil when distillationWeight is 0; a term whose input is given is always reported.
/// With `meanOver`, these rows are a chunk of that batch: both means (and gradients) divide by the
/// batch's counts, so the chunks' losses add up to the batch's.
/// Rows left out of KD by the mask still count for CE when they have a target.
public func logitLossesForwardBackward(
    dStudentLogits: UnsafeMutablePointer<Float>?,  // [rows, vocab], accumulated into
    studentLogits: UnsafePointer<Float>,  // [rows, vocab]
    teacherLogits: UnsafePointer<Float>?,  // [rows, vocab]
    targets: UnsafePointer<Int32>?,  // [rows], < 0 = ignored
    rows: Int, vocab: Int,
    distillation: LogitDistillation,
    crossEntropyWeight: Float, distillationWeight: Float,
    gradientScale: Float,
    meanOver batchShare: BatchShare? = nil,
    distillationMask: UnsafePointer<UInt8>? = nil  // [rows], 0 = no KD at this row
) throws -> LogitLosses {
    try distillation.validate()
    guard rows >= 0, vocab >= 1 else {
        throw DistillationError.invalidShape("logits of \(rows) rows × \(vocab) tokens")
    }
    for (setting, weight) in [(Setting.ceWeight, crossEntropyWeight), (.kdWeight, distillationWeight)]
    where !(weight.isFinite && weight >= 0) {
        throw DistillationError.negativeWeight(setting, value: weight)
    }
    if teacherLogits == nil && distillationWeight != 0 {
        throw DistillationError.missingInput("teacher logits for a KD weight of \(distillationWeight)")
    }
    if targets == nil && crossEntropyWeight != 0 {
        throw DistillationError.missingInput("target tokens for a CE weight of \(crossEntropyWeight)")
    }
    var countedRows = 0
    if let targets {
        for row in 0 ..< rows where targets[row] >= 0 {
            guard Int(targets[row]) < vocab else {
                throw DistillationError.targetOutOfRange(row: row, target: targets[row], vocab: vocab)
            }
            countedRows += 1
        }
    }
    guard rows > 0 else { return LogitLosses(crossEntropy: 0, distillation: 0, countedRows: 0) }

    let tau = distillation.temperature
    let invTau = 1 / tau
    let kdFactor: Float = distillation.tauSquared ? tau * tau : 1
    let kind = distillation.divergence.atEndPoints
    // A K that covers the vocabulary is the full distribution: skip the selection altogether.
    let topK = distillation.teacherTopK.flatMap { $0 < vocab ? $0 : nil }
    let floorTeacher = topK != nil && kind == .reverseKL
    // Means over these rows, or over the whole batch these rows are a chunk of.
    var distilledRows = rows
    if let distillationMask { distilledRows = (0..<rows).reduce(0) { $0 + (distillationMask[$1] != 0 ? 1 : 0) } }
    let ceDenominator = batchShare?.countedRows ?? countedRows, kdDenominator = batchShare?.distilledRows ?? distilledRows
    let ceGradScale: Float = ceDenominator > 0 ? gradientScale * crossEntropyWeight / Float(ceDenominator) : 0
    // No distilled row (a chunk of prompt positions alone): no KD gradient rather than a division by 0.
    let kdGradScale = kdDenominator > 0 ? gradientScale * distillationWeight * kdFactor * invTau / Float(kdDenominator) : 0
    let ceGradient = dStudentLogits != nil && targets != nil && ceGradScale != 0
    let kdGradient = dStudentLogits != nil && teacherLogits != nil && kdGradScale != 0

    let partials = mapRowChunks(rows: rows, rowsPerChunk: 16) { range -> (ce: Double, kd: Double) in
        // Per-chunk scratch, seven rows of `vocab` floats (a few 100 KB at most), reused row after row.
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 7 * vocab)
        defer { scratch.deallocate() }
        let studentExp = scratch  // [vocab] exp(s/τ − max), then S
        let teacherExp = scratch + vocab  // [vocab] exp(t/τ − max), then T
        let plainExp = scratch + 2 * vocab  // [vocab] exp(s − max)
        let studentLog = scratch + 3 * vocab  // [vocab] log S
        let teacherLog = scratch + 4 * vocab  // [vocab] log T
        let score = scratch + 5 * vocab  // [vocab] ∂(row loss)/∂S up to a constant
        let selection = scratch + 6 * vocab  // [vocab] top-K workspace
        var ceSum = 0.0, kdSum = 0.0
        for row in range {
            let s = studentLogits + row * vocab
            let dRow = dStudentLogits.map { $0 + row * vocab }
            let target = targets.map { Int($0[row]) } ?? -1
            // A masked row is a row without a teacher: CE alone, computed exactly as it is then.
            let rowTeacher = (distillationMask.map { $0[row] != 0 } ?? true) ? teacherLogits : nil
            let studentMax = ck_max(s, vocab)

            let studentShift = studentMax * invTau
            let studentSum = rowTeacher == nil ? 0 : ck_exp_sum(studentExp, s, invTau, studentShift, vocab)

            // Cross-entropy: log Σ exp(s) − s[target]; P is kept only for the gradient.
            var plain: UnsafePointer<Float>? = nil
            var plainScale: Float = 0
            if target >= 0 {
                // At the default τ = 2, exp(s − max) = exp((s − max)/2)²: a multiply instead of an exp.
                let plainSum = rowTeacher != nil && tau == 2
                    ? ck_square_sum(plainExp, studentExp, vocab) : ck_exp_sum(plainExp, s, 1, studentMax, vocab)
                ceSum += Double(studentMax) + log(Double(plainSum)) - Double(s[target])
                if ceGradient {
                    plain = UnsafePointer(plainExp)
                    plainScale = 1 / plainSum
                }
            }
            var ceGradientDone = false

            if let teacherBase = rowTeacher {
                let t = teacherBase + row * vocab
                let teacherMax = ck_max(t, vocab)
                let teacherShift = teacherMax * invTau
                var teacherSum = ck_exp_sum(teacherExp, t, invTau, teacherShift, vocab)
                if let k = topK {
                    teacherSum = keepTeacherTopK(teacherExp, logits: t, vocab: vocab, k: k, workspace: selection)
                }
                let studentLSE = Double(studentShift) + log(Double(studentSum))
                let teacherLSE = Double(teacherShift) + log(Double(teacherSum))

                if kind == .forwardKL {
                    // KL(T‖S) = Σ T·(t − s)/τ + lse_S − lse_T, since Σ T = 1; the gradient is S − T,
                    // written together with CE's P − onehot in the same sweep.
                    let writes = kdGradient || plain != nil
                    let cross = ck_forward_kl_row(
                        writes ? dRow : nil, s, t, studentExp, 1 / studentSum, teacherExp, 1 / teacherSum,
                        plain, plainScale, kdGradient ? kdGradScale : 0, ceGradScale, vocab)
                    kdSum += Double(invTau) * cross + studentLSE - teacherLSE
                    ceGradientDone = true
                } else {
                    ck_scale(studentExp, 1 / studentSum, vocab)
                    ck_scale(teacherExp, 1 / teacherSum, vocab)
                    let S = UnsafePointer(studentExp), T = UnsafePointer(teacherExp)
                    ck_affine_masked(studentLog, s, invTau, Float(studentLSE), nil, vocab)
                    if floorTeacher {
                        floorTruncatedTeacher(teacherExp, vocab: vocab)
                        ck_log(teacherLog, T, vocab)
                    } else {
                        ck_affine_masked(teacherLog, t, invTau, Float(teacherLSE), topK == nil ? nil : T, vocab)
                    }
                    let logS = UnsafePointer(studentLog), logT = UnsafePointer(teacherLog)
                    var sumSG = 0.0
                    switch kind {
                    case .reverseKL: kdSum += ck_reverse_kl_row(score, &sumSG, S, logS, logT, vocab)
                    case .jsd(let beta): kdSum += ck_jsd_row(score, &sumSG, S, logS, T, logT, beta, vocab)
                    case .tvd: kdSum += ck_tvd_row(score, &sumSG, S, T, vocab)
                    case .skewKL(let alpha): kdSum += ck_skew_kl_row(score, &sumSG, S, logS, T, logT, alpha, vocab)
                    case .skewReverseKL(let alpha):
                        kdSum += ck_skew_reverse_kl_row(score, &sumSG, S, logS, logT, alpha, vocab)
                    case .forwardKL: break
                    }
                    if kdGradient, let dRow {
                        ck_softmax_backward(dRow, S, score, Float(sumSG), kdGradScale, vocab)
                    }
                }
            }
            if let plain, let dRow {
                if !ceGradientDone { ck_axpy(dRow, plain, ceGradScale * plainScale, vocab) }
                dRow[target] -= ceGradScale
            }
        }
        return (ceSum, kdSum)
    }
    var ceTotal = 0.0, kdTotal = 0.0
    for partial in partials {
        ceTotal += partial.ce
        kdTotal += partial.kd
    }
    return LogitLosses(
        crossEntropy: ceDenominator > 0 ? Float(ceTotal / Double(ceDenominator)) : 0,
        distillation: teacherLogits == nil || kdDenominator == 0 ? 0 : Float(Double(kdFactor) * kdTotal / Double(kdDenominator)),
        countedRows: countedRows)
}

/// Logit distillation alone: returns (τ² or 1) · mean over rows of the divergence and, when
/// `dStudentLogits` is given, ACCUMULATES gradientScale · ∂loss/∂(raw student logits).
public func logitDistillationForwardBackward(
    dStudentLogits: UnsafeMutablePointer<Float>?,  // [rows, vocab]
    studentLogits: UnsafePointer<Float>,  // [rows, vocab]
    teacherLogits: UnsafePointer<Float>,  // [rows, vocab]
    rows: Int, vocab: Int,
    temperature: Float, divergence: Divergence, tauSquared: Bool, teacherTopK: Int?,
    gradientScale: Float
) throws -> Float {
    let settings = LogitDistillation(
        divergence: divergence, temperature: temperature, tauSquared: tauSquared, teacherTopK: teacherTopK)
    return try logitLossesForwardBackward(
        dStudentLogits: dStudentLogits, studentLogits: studentLogits, teacherLogits: teacherLogits,
        targets: nil, rows: rows, vocab: vocab, distillation: settings,
        crossEntropyWeight: 0, distillationWeight: 1, gradientScale: gradientScale
    ).distillation
}

/// Cross-entropy with the next tokens: returns the mean of −log softmax(logits)[target] over rows with a
/// target ≥ 0 and, when `dLogits` is given, ACCUMULATES gradientScale · (softmax − onehot) / countedRows.
public func crossEntropyForwardBackward(
    dLogits: UnsafeMutablePointer<Float>?,  // [rows, vocab]
    logits: UnsafePointer<Float>,  // [rows, vocab]
    targets: UnsafePointer<Int32>,  // [rows], < 0 = ignored
    rows: Int, vocab: Int,
    gradientScale: Float,
    meanOver batchShare: BatchShare? = nil
) throws -> Float {
    try logitLossesForwardBackward(
        dStudentLogits: dLogits, studentLogits: logits, teacherLogits: nil, targets: targets,
        rows: rows, vocab: vocab, distillation: LogitDistillation(),
        crossEntropyWeight: 1, distillationWeight: 0, gradientScale: gradientScale, meanOver: batchShare
    ).crossEntropy
}

/// Zeroes `weights` outside the `k` largest `logits` of the row (ties go to the lower token ids, so
/// exactly k stay) and returns the sum of the kept weights.
private func keepTeacherTopK(
    _ weights: UnsafeMutablePointer<Float>,  // [vocab]
    logits: UnsafePointer<Float>,  // [vocab]
    vocab: Int, k: Int,
    workspace: UnsafeMutablePointer<Float>  // [vocab]
) -> Float {
    let threshold = ck_kth_largest(logits, vocab, k, workspace)
    var above = 0
    for i in 0 ..< vocab where logits[i] > threshold { above += 1 }
    var tiesLeft = k - above
    var kept = 0.0
    for i in 0 ..< vocab {
        let logit = logits[i]
        if logit > threshold {
            kept += Double(weights[i])
        } else if logit == threshold && tiesLeft > 0 {
            tiesLeft -= 1
            kept += Double(weights[i])
        } else {
            weights[i] = 0
        }
    }
    return Float(kept)
}

/// T' = (T̃ + ε) / (1 + V·ε): a truncated teacher with no zero, for the divergences that take log T̃.
private func floorTruncatedTeacher(_ probabilities: UnsafeMutablePointer<Float>, vocab: Int) {
    let floor = LogitDistillation.topKTeacherFloor
    let normaliser = 1 / (1 + Float(vocab) * floor)
    for i in 0 ..< vocab { probabilities[i] = (probabilities[i] + floor) * normaliser }
}
