import CKernels
import Foundation

/// How a student learns from a teacher that reads the text through another tokenizer.
public enum CrossTokenizerLoss: String, Sendable, CaseIterable, Codable {
    /// Universal Logit Distillation (Boizard et al., 2024): at aligned positions, the L1 distance between
    /// the two next-token distributions sorted in decreasing order, the shorter padded with zeros.
    case uld
    /// Approximate likelihood matching (Minixhofer et al., 2025): each aligned chunk's likelihood under the
    /// student is pulled towards its likelihood under the teacher.
    case alm

    /// Parses a name, naming the setting when it is not one of ours.
    public init(name: String) throws {
        guard let loss = CrossTokenizerLoss(rawValue: name.lowercased()) else {
            throw SettingError(.crossTokenizer, "is '\(name)'; use one of \(CrossTokenizerLoss.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = loss
    }
}

/// The teacher's side of one ULD pair, made once per pair: its tempered distribution sorted in
/// decreasing order, cut to the student's vocabulary size (`count` entries), and the probability of
/// the rest, which no student entry meets (the student's vector is padded with zeros there).
///
/// Writes `count = min(teacherVocab, studentVocab)` values into `sorted` and returns the tail's mass.
public func sortedTemperedDistribution(
    sorted: UnsafeMutablePointer<Float>,  // [count]
    logits: UnsafePointer<Float>,  // [teacherVocab]
    teacherVocab: Int, studentVocab: Int, temperature: Float
) -> Double {
    let probabilities = UnsafeMutablePointer<Float>.allocate(capacity: teacherVocab)
    defer { probabilities.deallocate() }
    let invTau = 1 / temperature
    let sum = ck_exp_sum(probabilities, logits, invTau, ck_max(logits, teacherVocab) * invTau, teacherVocab)
    ck_scale(probabilities, 1 / sum, teacherVocab)
    let count = min(teacherVocab, studentVocab)
    // Only the `count` largest are needed in order: select them by the count-th largest logit (the
    // softmax keeps the order), then sort just those; ties at the threshold go to the lower ids.
    var kept: [Float] = []
    kept.reserveCapacity(count)
    var tail = 0.0
    if count < teacherVocab {
        let heap = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { heap.deallocate() }
        let threshold = ck_kth_largest(logits, teacherVocab, count, heap)
        var above = 0
        for index in 0..<teacherVocab where logits[index] > threshold { above += 1 }
        var tiesLeft = count - above
        for index in 0..<teacherVocab {
            if logits[index] > threshold || logits[index] == threshold && tiesLeft > 0 {
                if logits[index] == threshold { tiesLeft -= 1 }
                kept.append(probabilities[index])
            } else {
                tail += Double(probabilities[index])
            }
        }
    } else {
        kept.append(contentsOf: UnsafeBufferPointer(start: probabilities, count: teacherVocab))
    }
    kept.sort(by: >)
    for index in 0..<count { sorted[index] = index < kept.count ? kept[index] : 0 }
    return tail
}

/// ULD on one aligned pair of positions: Σᵢ |S↓ᵢ − T↓ᵢ| over the two tempered distributions sorted in
/// decreasing order (S = softmax(s/τ) over the student's vocabulary, T↓ as `sortedTemperedDistribution`
/// made it), the shorter vector padded with zeros. When `dStudentLogits` is given, ACCUMULATES
/// gradientScale · ∂loss/∂s: the sort is a fixed permutation where no two probabilities tie, so
/// ∂loss/∂S at the token ranked i is sign(S↓ᵢ − T↓ᵢ) (+1 past the teacher's length), taken back through
/// the softmax at τ. Returns the (unscaled) loss.
public func universalLogitDistance(
    dStudentLogits: UnsafeMutablePointer<Float>?,  // [studentVocab], accumulated into
    studentLogits: UnsafePointer<Float>,  // [studentVocab]
    studentVocab: Int,
    sortedTeacher: UnsafePointer<Float>,  // [min(teacherVocab, studentVocab)]
    teacherVocab: Int, teacherTail: Double,
    temperature: Float, gradientScale: Float
) -> Double {
    let invTau = 1 / temperature
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * studentVocab)
    defer { scratch.deallocate() }
    let S = scratch, score = scratch + studentVocab
    let sum = ck_exp_sum(S, studentLogits, invTau, ck_max(studentLogits, studentVocab) * invTau, studentVocab)
    ck_scale(S, 1 / sum, studentVocab)
    // Ranks by decreasing probability; ties go to the lower id so that the order is repeatable.
    var order = Array(0..<Int32(studentVocab))
    order.sort { S[Int($0)] > S[Int($1)] || S[Int($0)] == S[Int($1)] && $0 < $1 }
    let shared = min(teacherVocab, studentVocab)
    var loss = 0.0, sumSG = 0.0
    for rank in 0..<studentVocab {
        let id = Int(order[rank]), student = S[id]
        let difference = rank < shared ? student - sortedTeacher[rank] : student
        loss += Double(abs(difference))
        let sign: Float = difference > 0 ? 1 : difference < 0 ? -1 : 0
        score[id] = sign
        sumSG += Double(student * sign)
    }
    // The teacher's entries beyond the student's length meet the student's zero padding.
    loss += teacherTail
    if let dStudentLogits, gradientScale != 0 {
        ck_softmax_backward(dStudentLogits, S, score, Float(sumSG), gradientScale * invTau, studentVocab)
    }
    return loss
}

/// ALM's distance between one chunk's likelihoods: the binary KL between Bernoulli(p_T) and
/// Bernoulli(p_S) with p = exp(log-likelihood / τ), i.e. p_T·log(p_T/p_S) + (1−p_T)·log((1−p_T)/(1−p_S)).
/// Returns the loss and its derivative with respect to the student's chunk log-likelihood,
/// (p_S − p_T) / (τ·(1 − p_S)).
///
/// Why this distance: it is the binarised f-divergence of Minixhofer et al. (2025) with KL as f. A chunk
/// is an outcome among infinitely many texts, so its likelihood cannot be compared as a distribution; the
/// binarised form compares "this chunk" against "anything else", is zero exactly when the likelihoods
/// agree, and, unlike |log p_S − log p_T|, weighs a chunk by how likely the teacher finds it, so that
/// chunks the teacher considers noise pull little. τ > 1 flattens both likelihoods as KD's τ flattens
/// distributions.
public func binarisedChunkKL(teacherLogLikelihood: Double, studentLogLikelihood: Double, temperature: Double)
    -> (loss: Double, dStudent: Double) {
    // A likelihood of exactly 1 would make log(1 − p) infinite; no chunk of real text is that certain.
    let ceiling = -1e-9
    let x = min(teacherLogLikelihood / temperature, ceiling), y = min(studentLogLikelihood / temperature, ceiling)
    let p = exp(x), q = exp(y)
    let logNotP = log(-expm1(x)), logNotQ = log(-expm1(y))
    let loss = p * (x - y) + (1 - p) * (logNotP - logNotQ)
    let dStudent = studentLogLikelihood / temperature < ceiling ? (q - p) / ((1 - q) * temperature) : 0
    return (loss, dStudent)
}

/// log softmax(logits)[target] of one row.
func logProbability(_ logits: UnsafePointer<Float>, vocab: Int, target: Int, scratch: UnsafeMutablePointer<Float>) -> Double {
    let top = ck_max(logits, vocab)
    let sum = ck_exp_sum(scratch, logits, 1, top, vocab)
    return Double(logits[target]) - Double(top) - log(Double(sum))
}
