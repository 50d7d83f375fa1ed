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
    let order = descendingOrder(of: probabilities, count: teacherVocab)
    for rank in 0..<count { sorted[rank] = probabilities[Int(order[rank])] }
    var tail = 0.0
    for rank in count..<teacherVocab { tail += Double(probabilities[Int(order[rank])]) }
    return tail
}

/// The indices of `values` (probabilities: non-negative, not NaN) in decreasing order of value, ties in
/// increasing index. A least-significant-digit radix sort over the values' bit patterns, which order
/// non-negative floats as integers: four passes of a byte each, linear in `count`, where a comparison sort
/// of a vocabulary for every aligned position cost more than the models' products.
func descendingOrder(of values: UnsafePointer<Float>, count: Int) -> [Int32] {
    var keys = [UInt32](repeating: 0, count: count), order = [Int32](repeating: 0, count: count)
    for index in 0..<count {
        // Complemented, so that an increasing sort puts the largest value first.
        keys[index] = ~values[index].bitPattern
        order[index] = Int32(index)
    }
    var nextKeys = keys, nextOrder = order
    var counts = [Int](repeating: 0, count: 257)
    for shift in stride(from: 0, to: 32, by: 8) {
        for slot in 0..<257 { counts[slot] = 0 }
        for key in keys { counts[Int((key >> UInt32(shift)) & 0xFF) + 1] += 1 }
        for slot in 1..<257 { counts[slot] += counts[slot - 1] }
        // Stable: equal digits keep their order, so ties stay in increasing index.
        for position in 0..<count {
            let digit = Int((keys[position] >> UInt32(shift)) & 0xFF)
            let target = counts[digit]
            counts[digit] += 1
            nextKeys[target] = keys[position]
            nextOrder[target] = order[position]
        }
        swap(&keys, &nextKeys)
        swap(&order, &nextOrder)
    }
    return order
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
    let order = descendingOrder(of: S, count: studentVocab)
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
