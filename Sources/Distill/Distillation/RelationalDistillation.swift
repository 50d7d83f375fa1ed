import CBLAS
import Foundation

// Relational knowledge distillation (Park et al., CVPR 2019) on the batch's sentence embeddings: the
// student should see the same distances and angles among the sequences as the teacher does. Both
// models keep their own widths; only the student's embeddings get a gradient. Batches are small
// (B ≤ 64), so the O(B²·D) and O(B³·D) loops are cheap next to a training step.

/// Smooth L1 with δ = 1: ½x² for |x| < 1, |x| − ½ otherwise.
@inline(__always) private func huber(_ x: Double) -> Double { abs(x) < 1 ? 0.5 * x * x : abs(x) - 0.5 }

/// d huber / dx: x for |x| < 1, sign(x) otherwise.
@inline(__always) private func huberSlope(_ x: Double) -> Double { abs(x) < 1 ? x : (x > 0 ? 1 : -1) }

/// RKD distance loss, forward and backward.
///
/// d_ij = ‖e_i − e_j‖ for ordered pairs i ≠ j, each model's divided by the mean of its own B(B−1)
/// off-diagonal distances (floored at 1e-12 so identical embeddings give 0, not NaN); returns the mean over
/// the B(B−1) ordered pairs of huber(d̂ˢ_ij − d̂ᵗ_ij). When given, ACCUMULATES
/// gradientScale·∂loss/∂Es into `dStudentEmbeddings`. Throws when batch < 2.
public func rkdDistanceForwardBackward(
    dStudentEmbeddings: UnsafeMutablePointer<Float>?,  // [batch, studentWidth]
    studentEmbeddings: UnsafePointer<Float>,  // [batch, studentWidth]
    teacherEmbeddings: UnsafePointer<Float>,  // [batch, teacherWidth]
    batch: Int, studentWidth: Int, teacherWidth: Int,
    gradientScale: Float
) throws -> Float {
    guard batch >= 2 else { throw DistillationError.batchTooSmall(loss: "distance", batch: batch, minimum: 2) }
    let pairCount = Double(batch * (batch - 1))
    let student = pairwiseDistances(studentEmbeddings, batch: batch, width: studentWidth)  // [B, B]
    let teacher = pairwiseDistances(teacherEmbeddings, batch: batch, width: teacherWidth)  // [B, B]
    let studentMean = max(student.reduce(0, +) / pairCount, Double(normalizationFloor))
    let teacherMean = max(teacher.reduce(0, +) / pairCount, Double(normalizationFloor))

    var loss = 0.0
    var slopes = [Double](repeating: 0, count: batch * batch)  // [B, B] huber'(d̂ˢ − d̂ᵗ)
    var slopeDotDistance = 0.0  // Σ huber'·dˢ, for the gradient through the student's mean
    for i in 0 ..< batch {
        for j in 0 ..< batch where j != i {
            let difference = student[i * batch + j] / studentMean - teacher[i * batch + j] / teacherMean
            loss += huber(difference)
            slopes[i * batch + j] = huberSlope(difference)
            slopeDotDistance += slopes[i * batch + j] * student[i * batch + j]
        }
    }

    if let dStudentEmbeddings {
        // ∂loss/∂dˢ_ij = (huber'_ij − Σ huber'·dˢ / (P·mean)) / (P·mean), P = B(B−1); then through
        // d_ij = ‖e_i − e_j‖: ∂/∂e_i += g_ij (e_i − e_j)/d_ij and the opposite for e_j, i.e.
        // dE = diag(rowsum A)·E − A·E with A_ij = (g_ij + g_ji)/d_ij.
        let scale = Double(gradientScale) / (pairCount * studentMean)
        let meanTerm = slopeDotDistance / (pairCount * studentMean)
        var coupling = [Float](repeating: 0, count: batch * batch)  // [B, B] A, negated below
        var rowSums = [Float](repeating: 0, count: batch)  // [B]
        for i in 0 ..< batch {
            for j in 0 ..< batch where j != i {
                let distance = student[i * batch + j]
                // Coinciding embeddings: no direction to move them apart along; the subgradient 0.
                guard distance > Double(normalizationFloor) else { continue }
                let g = scale * (slopes[i * batch + j] - meanTerm + slopes[j * batch + i] - meanTerm)
                let a = Float(g / distance)
                coupling[i * batch + j] = -a
                rowSums[i] += a
            }
        }
        for i in 0 ..< batch { coupling[i * batch + i] = rowSums[i] }
        let b = Int32(batch), d = Int32(studentWidth)
        // dEs += (diag(rowsum A) − A)·Es
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, d, b, 1, coupling, b, studentEmbeddings, d,
                    1, dStudentEmbeddings, d)
    }
    return Float(loss / pairCount)
}

/// ‖x_i − x_j‖ for all i, j of a [batch, width] matrix, in Double, as a row-major [batch, batch] array.
private func pairwiseDistances(_ x: UnsafePointer<Float>, batch: Int, width: Int) -> [Double] {
    var distances = [Double](repeating: 0, count: batch * batch)
    for i in 0 ..< batch {
        for j in (i + 1) ..< max(batch, i + 1) {
            var sum = 0.0
            for d in 0 ..< width {
                let diff = Double(x[i * width + d]) - Double(x[j * width + d])
                sum += diff * diff
            }
            distances[i * batch + j] = sum.squareRoot()
            distances[j * batch + i] = distances[i * batch + j]
        }
    }
    return distances
}

/// RKD angle loss, forward and backward.
///
/// For every ordered triplet (a, b, c) of distinct sequences, cos∠ = ⟨u_ab, u_ac⟩ with
/// u_ab = (x_b − x_a)/max(‖x_b − x_a‖, 1e-12); returns the mean over the B(B−1)(B−2) triplets of
/// huber(cosˢ − cosᵗ). When given, ACCUMULATES gradientScale·∂loss/∂Es into `dStudentEmbeddings`.
/// Throws when batch < 3.
public func rkdAngleForwardBackward(
    dStudentEmbeddings: UnsafeMutablePointer<Float>?,  // [batch, studentWidth]
    studentEmbeddings: UnsafePointer<Float>,  // [batch, studentWidth]
    teacherEmbeddings: UnsafePointer<Float>,  // [batch, teacherWidth]
    batch: Int, studentWidth: Int, teacherWidth: Int,
    gradientScale: Float
) throws -> Float {
    guard batch >= 3 else { throw DistillationError.batchTooSmall(loss: "angle", batch: batch, minimum: 3) }
    let tripletCount = Double(batch * (batch - 1) * (batch - 2))
    let b = Int32(batch)
    var studentUnits = [Float](repeating: 0, count: batch * studentWidth)  // [B, Ds] u_a· for one anchor
    var studentNorms = [Float](repeating: 0, count: batch)  // [B] ‖x_b − x_a‖
    var teacherUnits = [Float](repeating: 0, count: batch * teacherWidth)  // [B, Dt]
    var teacherNorms = [Float](repeating: 0, count: batch)  // [B]
    var studentCosines = [Float](repeating: 0, count: batch * batch)  // [B, B]
    var teacherCosines = [Float](repeating: 0, count: batch * batch)  // [B, B]
    var cosineGrad = [Float](repeating: 0, count: batch * batch)  // [B, B] symmetrised ∂loss/∂cos
    var unitGrad = [Float](repeating: 0, count: batch * studentWidth)  // [B, Ds] ∂loss/∂u
    let scale = Double(gradientScale) / tripletCount

    var loss = 0.0
    for anchor in 0 ..< batch {
        unitDifferences(&studentUnits, norms: &studentNorms, studentEmbeddings, anchor: anchor, batch: batch,
                        width: studentWidth)
        unitDifferences(&teacherUnits, norms: &teacherNorms, teacherEmbeddings, anchor: anchor, batch: batch,
                        width: teacherWidth)
        // cos = U·Uᵀ for each model
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, b, Int32(studentWidth), 1, studentUnits,
                    Int32(studentWidth), studentUnits, Int32(studentWidth), 0, &studentCosines, b)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, b, Int32(teacherWidth), 1, teacherUnits,
                    Int32(teacherWidth), teacherUnits, Int32(teacherWidth), 0, &teacherCosines, b)
        for i in 0 ..< batch * batch { cosineGrad[i] = 0 }
        for first in 0 ..< batch where first != anchor {
            for second in 0 ..< batch where second != anchor && second != first {
                let difference = Double(studentCosines[first * batch + second])
                    - Double(teacherCosines[first * batch + second])
                loss += huber(difference)
                // cos_bc is a function of u_b and u_c; the pair (b, c) and (c, b) both land in the
                // symmetric matrix, so dU = G·U with G = ∂/∂cos + its transpose.
                let g = Float(scale * huberSlope(difference))
                cosineGrad[first * batch + second] += g
                cosineGrad[second * batch + first] += g
            }
        }
        guard let dStudentEmbeddings else { continue }
        // dU = G·U
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, Int32(studentWidth), b, 1, cosineGrad, b,
                    studentUnits, Int32(studentWidth), 0, &unitGrad, Int32(studentWidth))
        // Through u = v / max(‖v‖, ε), v = x_other − x_anchor.
        let anchorRow = dStudentEmbeddings + anchor * studentWidth
        for other in 0 ..< batch where other != anchor {
            let unit = other * studentWidth
            var dot: Float = 0
            for d in 0 ..< studentWidth { dot += studentUnits[unit + d] * unitGrad[unit + d] }
            let norm = studentNorms[other]
            let keepsNorm = norm > normalizationFloor
            let inverse = 1 / max(norm, normalizationFloor)
            let otherRow = dStudentEmbeddings + other * studentWidth
            for d in 0 ..< studentWidth {
                let grad = (keepsNorm ? unitGrad[unit + d] - studentUnits[unit + d] * dot : unitGrad[unit + d]) * inverse
                otherRow[d] += grad
                anchorRow[d] -= grad
            }
        }
    }
    return Float(loss / tripletCount)
}

/// Row b of `units` = (x_b − x_anchor)/max(‖x_b − x_anchor‖, 1e-12) and norms[b] its norm; row anchor is 0.
private func unitDifferences(
    _ units: inout [Float],  // [batch, width]
    norms: inout [Float],  // [batch]
    _ x: UnsafePointer<Float>,  // [batch, width]
    anchor: Int, batch: Int, width: Int
) {
    for other in 0 ..< batch {
        var sum = 0.0
        for d in 0 ..< width {
            let diff = Double(x[other * width + d]) - Double(x[anchor * width + d])
            sum += diff * diff
        }
        let norm = Float(sum.squareRoot())
        norms[other] = norm
        let inverse = 1 / max(norm, normalizationFloor)
        for d in 0 ..< width { units[other * width + d] = (x[other * width + d] - x[anchor * width + d]) * inverse }
    }
}

/// Sentence embeddings as the mean of the hidden states over each sequence's tokens:
/// out[b] = (1/T) Σ_t hidden[b, t].
public func meanPoolForward(
    out: UnsafeMutablePointer<Float>,  // [batch, width]
    hidden: UnsafePointer<Float>,  // [batch, tokens, width]
    batch: Int, tokens: Int, width: Int
) {
    let inverse = tokens > 0 ? 1 / Float(tokens) : 0
    for b in 0 ..< batch {
        let row = out + b * width
        for d in 0 ..< width { row[d] = 0 }
        for t in 0 ..< tokens {
            let source = hidden + (b * tokens + t) * width
            for d in 0 ..< width { row[d] += source[d] }
        }
        for d in 0 ..< width { row[d] *= inverse }
    }
}

/// Backward of `meanPoolForward`: ACCUMULATES dOut[b]/T into every token of sequence b.
public func meanPoolBackward(
    dHidden: UnsafeMutablePointer<Float>,  // [batch, tokens, width]
    dOut: UnsafePointer<Float>,  // [batch, width]
    batch: Int, tokens: Int, width: Int
) {
    guard tokens > 0 else { return }
    let inverse = 1 / Float(tokens)
    for b in 0 ..< batch {
        let source = dOut + b * width
        for t in 0 ..< tokens {
            let row = dHidden + (b * tokens + t) * width
            for d in 0 ..< width { row[d] += source[d] * inverse }
        }
    }
}
