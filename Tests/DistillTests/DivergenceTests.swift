import Distill
import Foundation
import XCTest

// Gradient checks: the library's Float gradients against central finite differences of a Double
// reimplementation written here from the definitions, so a wrong formula in either place shows up.

/// Deterministic numbers in [-1, 1) for the loss tests (a 64-bit LCG; quality is not the point).
struct LossTestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 6364136223846793005 &+ 1442695040888963407 }
    mutating func next() -> Double {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Double(state >> 11) / Double(1 << 52) - 1
    }
    mutating func values(_ count: Int, scale: Double = 1) -> [Double] { (0 ..< count).map { _ in scale * next() } }
}

/// Central differences of `f` at `x`.
func lossTestNumericGradient(at x: [Double], step: Double = 1e-4, _ f: ([Double]) -> Double) -> [Double] {
    var probe = x
    return (0 ..< x.count).map { i in
        probe[i] = x[i] + step
        let up = f(probe)
        probe[i] = x[i] - step
        let down = f(probe)
        probe[i] = x[i]
        return (up - down) / (2 * step)
    }
}

/// Largest absolute difference relative to the largest numeric entry (the checks pass below 1e-4).
func lossTestMismatch(_ analytic: [Float], _ numeric: [Double]) -> Double {
    let largest = max(numeric.map { abs($0) }.max() ?? 0, 1e-8)
    return zip(analytic, numeric).map { abs(Double($0) - $1) }.max().map { $0 / largest } ?? 0
}

let lossTestTolerance = 1e-4

// MARK: Double reference

private func referenceSoftmax(_ x: ArraySlice<Double>, _ tau: Double) -> [Double] {
    let m = x.max() ?? 0
    let e = x.map { exp(($0 - m) / tau) }
    let sum = e.reduce(0, +)
    return e.map { $0 / sum }
}

private func referenceKL(_ p: [Double], _ q: [Double]) -> Double {
    zip(p, q).reduce(0) { $0 + ($1.0 > 0 ? $1.0 * log($1.0 / $1.1) : 0) }
}

/// (τ² or 1) · mean over rows of the divergence, straight from the definitions.
private func referenceDistillation(
    student: [Double], teacher: [Double], rows: Int, vocab: Int, tau: Double, divergence: Divergence,
    tauSquared: Bool, topK: Int? = nil
) -> Double {
    var total = 0.0
    for row in 0 ..< rows {
        let range = row * vocab ..< (row + 1) * vocab
        let S = referenceSoftmax(student[range], tau)
        var T = referenceSoftmax(teacher[range], tau)
        var reverseFamily = false
        switch divergence {
        case .reverseKL, .jsd(beta: 1), .skewReverseKL(alpha: 0): reverseFamily = true
        default: break
        }
        if let k = topK, k < vocab {
            // The k largest teacher logits, ties to the lower index.
            let kept = Set(Array(teacher[range]).enumerated().sorted { $0.element > $1.element || ($0.element == $1.element && $0.offset < $1.offset) }.prefix(k).map(\.offset))
            T = T.enumerated().map { kept.contains($0.offset) ? $0.element : 0 }
            let sum = T.reduce(0, +)
            T = T.map { $0 / sum }
            if reverseFamily {
                let floor = 1e-8
                T = T.map { ($0 + floor) / (1 + Double(vocab) * floor) }
            }
        }
        switch divergence {
        case .forwardKL: total += referenceKL(T, S)
        case .reverseKL: total += referenceKL(S, T)
        case .jsd(let betaF):
            let beta = Double(betaF)
            if beta == 0 { total += referenceKL(T, S) } else if beta == 1 { total += referenceKL(S, T) } else {
                let M = zip(T, S).map { beta * $0 + (1 - beta) * $1 }
                total += beta * referenceKL(T, M) + (1 - beta) * referenceKL(S, M)
            }
        case .tvd: total += 0.5 * zip(T, S).reduce(0) { $0 + abs($1.0 - $1.1) }
        case .skewKL(let alphaF):
            let alpha = Double(alphaF)
            total += referenceKL(T, zip(T, S).map { alpha * $0 + (1 - alpha) * $1 })
        case .skewReverseKL(let alphaF):
            let alpha = Double(alphaF)
            total += referenceKL(S, zip(S, T).map { alpha * $0 + (1 - alpha) * $1 })
        }
    }
    return (tauSquared ? tau * tau : 1) * total / Double(rows)
}

/// Mean of −log softmax(logits)[target] over rows with target ≥ 0.
private func referenceCrossEntropy(_ logits: [Double], targets: [Int32], vocab: Int) -> Double {
    var total = 0.0, counted = 0
    for (row, target) in targets.enumerated() where target >= 0 {
        let P = referenceSoftmax(logits[row * vocab ..< (row + 1) * vocab], 1)
        total -= log(P[Int(target)])
        counted += 1
    }
    return counted > 0 ? total / Double(counted) : 0
}

// MARK: calling the library on arrays

private struct KDResult {
    var loss: Float
    var gradient: [Float]
}

private func libraryDistillation(
    student: [Float], teacher: [Float], rows: Int, vocab: Int, tau: Float, divergence: Divergence,
    tauSquared: Bool, topK: Int? = nil, gradientScale: Float = 1, initialGradient: [Float]? = nil
) throws -> KDResult {
    var gradient = initialGradient ?? [Float](repeating: 0, count: rows * vocab)
    let loss = try gradient.withUnsafeMutableBufferPointer { d in
        try logitDistillationForwardBackward(
            dStudentLogits: d.baseAddress, studentLogits: student, teacherLogits: teacher, rows: rows, vocab: vocab,
            temperature: tau, divergence: divergence, tauSquared: tauSquared, teacherTopK: topK,
            gradientScale: gradientScale)
    }
    return KDResult(loss: loss, gradient: gradient)
}

private let allDivergences: [Divergence] = [
    .forwardKL, .reverseKL, .jsd(beta: 0.3), .jsd(beta: 0.5), .tvd, .skewKL(alpha: 0.1), .skewReverseKL(alpha: 0.1),
    .skewKL(alpha: 0.6), .skewReverseKL(alpha: 0.6),
]

final class DivergenceTests: XCTestCase {
    private let rows = 3, vocab = 7

    private func sample(seed: UInt64, scale: Double = 2) -> (student: [Double], teacher: [Double]) {
        var random = LossTestRandom(seed: seed)
        // Float-representable inputs, so both sides see exactly the same numbers.
        let student = random.values(rows * vocab, scale: scale).map { Double(Float($0)) }
        let teacher = random.values(rows * vocab, scale: scale).map { Double(Float($0)) }
        return (student, teacher)
    }

    private func checkGradients(topK: Int?, file: StaticString = #filePath, line: UInt = #line) throws {
        let (student, teacher) = sample(seed: 7)
        for divergence in allDivergences + [.jsd(beta: 1), .skewReverseKL(alpha: 0)] {
            for (tau, squared) in [(Float(2), true), (Float(1.5), false)] {
                let scale: Float = 0.5
                let result = try libraryDistillation(
                    student: student.map(Float.init), teacher: teacher.map(Float.init), rows: rows, vocab: vocab,
                    tau: tau, divergence: divergence, tauSquared: squared, topK: topK, gradientScale: scale)
                let reference = { (s: [Double]) in
                    referenceDistillation(student: s, teacher: teacher, rows: self.rows, vocab: self.vocab,
                                          tau: Double(tau), divergence: divergence, tauSquared: squared, topK: topK)
                }
                let value = reference(student)
                XCTAssertEqual(Double(result.loss), value, accuracy: 1e-5 * max(1, abs(value)),
                               "\(divergence) τ=\(tau) loss", file: file, line: line)
                let numeric = lossTestNumericGradient(at: student, reference).map { $0 * Double(scale) }
                let mismatch = lossTestMismatch(result.gradient, numeric)
                XCTAssertLessThan(mismatch, lossTestTolerance, "\(divergence) τ=\(tau) top-K \(String(describing: topK))",
                                  file: file, line: line)
            }
        }
    }

    func testGradientsMatchFiniteDifferences() throws {
        try checkGradients(topK: nil)
    }

    func testTopKGradientsMatchFiniteDifferences() throws {
        try checkGradients(topK: 3)
    }

    func testWrongGradientsAreCaught() throws {
        // The check must be able to fail: a 1% error, a missing 1/τ and the wrong direction of KL.
        let (student, teacher) = sample(seed: 11)
        let forward = try libraryDistillation(
            student: student.map(Float.init), teacher: teacher.map(Float.init), rows: rows, vocab: vocab, tau: 2,
            divergence: .forwardKL, tauSquared: true)
        let numeric = lossTestNumericGradient(at: student) {
            referenceDistillation(student: $0, teacher: teacher, rows: self.rows, vocab: self.vocab, tau: 2,
                                  divergence: .forwardKL, tauSquared: true)
        }
        XCTAssertLessThan(lossTestMismatch(forward.gradient, numeric), lossTestTolerance)
        XCTAssertGreaterThan(lossTestMismatch(forward.gradient.map { $0 * 1.01 }, numeric), lossTestTolerance)
        XCTAssertGreaterThan(lossTestMismatch(forward.gradient.map { $0 * 2 }, numeric), lossTestTolerance)
        let reverseNumeric = lossTestNumericGradient(at: student) {
            referenceDistillation(student: $0, teacher: teacher, rows: self.rows, vocab: self.vocab, tau: 2,
                                  divergence: .reverseKL, tauSquared: true)
        }
        XCTAssertGreaterThan(lossTestMismatch(forward.gradient, reverseNumeric), lossTestTolerance)
    }

    func testIdenticalDistributionsGiveZero() throws {
        let (student, _) = sample(seed: 3, scale: 5)
        let logits = student.map(Float.init)
        for divergence in allDivergences + [.jsd(beta: 0), .jsd(beta: 1)] {
            let result = try libraryDistillation(
                student: logits, teacher: logits, rows: rows, vocab: vocab, tau: 2, divergence: divergence,
                tauSquared: true)
            XCTAssertEqual(result.loss, 0, accuracy: 1e-6, "\(divergence)")
            XCTAssertLessThan(result.gradient.map(abs).max() ?? 0, 1e-6, "\(divergence)")
        }
        // Shifting all of a row's logits leaves its softmax unchanged.
        let shifted = try libraryDistillation(
            student: logits, teacher: logits.map { $0 + 3 }, rows: rows, vocab: vocab, tau: 2, divergence: .forwardKL,
            tauSquared: true)
        XCTAssertEqual(shifted.loss, 0, accuracy: 1e-5)
    }

    func testJSDEndpointsAreForwardAndReverseKL() throws {
        let (student, teacher) = sample(seed: 5)
        let s = student.map(Float.init), t = teacher.map(Float.init)
        func run(_ divergence: Divergence) throws -> KDResult {
            try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2, divergence: divergence,
                                    tauSquared: true)
        }
        let forward = try run(.forwardKL), reverse = try run(.reverseKL)
        XCTAssertEqual(try run(.jsd(beta: 0)).loss, forward.loss)
        XCTAssertEqual(try run(.jsd(beta: 0)).gradient, forward.gradient)
        XCTAssertEqual(try run(.jsd(beta: 1)).loss, reverse.loss)
        XCTAssertEqual(try run(.jsd(beta: 1)).gradient, reverse.gradient)
        XCTAssertNotEqual(forward.loss, reverse.loss)
        // Interior β uses the formula as it stands, which vanishes at both ends (no 1/(β(1−β))).
        let nearZero = try run(.jsd(beta: 1e-3)).loss
        XCTAssertLessThan(nearZero, forward.loss * 1e-2)
        XCTAssertGreaterThan(nearZero, 0)
    }

    func testSkewWithZeroAlphaIsPlainKL() throws {
        let (student, teacher) = sample(seed: 9)
        let s = student.map(Float.init), t = teacher.map(Float.init)
        func run(_ divergence: Divergence) throws -> KDResult {
            try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2, divergence: divergence,
                                    tauSquared: true)
        }
        XCTAssertEqual(try run(.skewKL(alpha: 0)).loss, try run(.forwardKL).loss)
        XCTAssertEqual(try run(.skewReverseKL(alpha: 0)).loss, try run(.reverseKL).loss)
        // The general skew kernels approach the plain KLs as α → 0 and vanish at α = 1.
        XCTAssertEqual(try run(.skewKL(alpha: 1e-5)).loss, try run(.forwardKL).loss, accuracy: 1e-4)
        XCTAssertEqual(try run(.skewReverseKL(alpha: 1e-5)).loss, try run(.reverseKL).loss, accuracy: 1e-4)
        XCTAssertEqual(try run(.skewKL(alpha: 1)).loss, 0, accuracy: 1e-7)
        XCTAssertEqual(try run(.skewReverseKL(alpha: 1)).loss, 0, accuracy: 1e-7)
    }

    func testTVDOnTwoPointDistributions() throws {
        // T = (¼, ¾) from logits (0, ln 3); S = (½, ½): TVD = ½(¼ + ¼) = ¼.
        let result = try libraryDistillation(
            student: [0, 0], teacher: [0, Float(log(3.0))], rows: 1, vocab: 2, tau: 1, divergence: .tvd,
            tauSquared: false)
        XCTAssertEqual(result.loss, 0.25, accuracy: 1e-6)
        // ∂/∂s = S ⊙ (g − Σ S g) with g = ½ sign(S − T) = (½, −½): (¼, −¼).
        XCTAssertEqual(result.gradient[0], 0.25, accuracy: 1e-6)
        XCTAssertEqual(result.gradient[1], -0.25, accuracy: 1e-6)
    }

    func testTopKCoveringVocabularyIsFullDistillation() throws {
        let (student, teacher) = sample(seed: 13)
        let s = student.map(Float.init), t = teacher.map(Float.init)
        for divergence in allDivergences {
            let full = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2,
                                               divergence: divergence, tauSquared: true)
            for k in [vocab, vocab + 5] {
                let truncated = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2,
                                                        divergence: divergence, tauSquared: true, topK: k)
                XCTAssertEqual(truncated.loss, full.loss, "\(divergence) K=\(k)")
                XCTAssertEqual(truncated.gradient, full.gradient, "\(divergence) K=\(k)")
            }
            let smaller = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2,
                                                  divergence: divergence, tauSquared: true, topK: vocab - 1)
            XCTAssertNotEqual(smaller.loss, full.loss, "\(divergence)")
        }
    }

    func testTopKKeepsExactlyKOnTies() throws {
        // Teacher logits all equal: the first K tokens are kept, so T̃ is uniform over K tokens and
        // KL(T̃‖S) with a uniform student is log(V/K).
        let result = try libraryDistillation(
            student: [Float](repeating: 0, count: 8), teacher: [Float](repeating: 1, count: 8), rows: 1, vocab: 8,
            tau: 1, divergence: .forwardKL, tauSquared: false, topK: 2)
        XCTAssertEqual(Double(result.loss), log(4.0), accuracy: 1e-6)
        XCTAssertEqual(result.gradient[0], 0.125 - 0.5, accuracy: 1e-6)
        XCTAssertEqual(result.gradient[2], 0.125, accuracy: 1e-6)
    }

    func testTauSquaredScaling() throws {
        let (student, teacher) = sample(seed: 17)
        let s = student.map(Float.init), t = teacher.map(Float.init)
        for divergence in allDivergences {
            let plain = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 3,
                                                divergence: divergence, tauSquared: false)
            let scaled = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 3,
                                                 divergence: divergence, tauSquared: true)
            XCTAssertEqual(scaled.loss, 9 * plain.loss, accuracy: 1e-5 * max(1, scaled.loss), "\(divergence)")
            for (a, b) in zip(scaled.gradient, plain.gradient) { XCTAssertEqual(a, 9 * b, accuracy: 1e-6) }
        }
    }

    func testExtremeLogitsStayFinite() throws {
        // Nearly one-hot distributions: most exponentials underflow to 0.
        let (student, teacher) = sample(seed: 19, scale: 200)
        for divergence in allDivergences {
            for topK in [nil, 2] as [Int?] {
                let result = try libraryDistillation(
                    student: student.map(Float.init), teacher: teacher.map(Float.init), rows: rows, vocab: vocab,
                    tau: 1, divergence: divergence, tauSquared: false, topK: topK)
                XCTAssertTrue(result.loss.isFinite, "\(divergence) top-K \(String(describing: topK))")
                XCTAssertTrue(result.gradient.allSatisfy(\.isFinite), "\(divergence)")
            }
        }
    }

    func testGradientAccumulatesWithScale() throws {
        let (student, teacher) = sample(seed: 23)
        let s = student.map(Float.init), t = teacher.map(Float.init)
        var startRandom = LossTestRandom(seed: 1)
        let start = startRandom.values(rows * vocab).map(Float.init)
        for divergence in [Divergence.forwardKL, .jsd(beta: 0.5)] {
            let fresh = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2,
                                                divergence: divergence, tauSquared: true, gradientScale: 0.25)
            let accumulated = try libraryDistillation(
                student: s, teacher: t, rows: rows, vocab: vocab, tau: 2, divergence: divergence, tauSquared: true,
                gradientScale: 0.25, initialGradient: start)
            for i in 0 ..< rows * vocab { XCTAssertEqual(accumulated.gradient[i], start[i] + fresh.gradient[i], accuracy: 1e-6) }
            let unit = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2,
                                               divergence: divergence, tauSquared: true, gradientScale: 1)
            for i in 0 ..< rows * vocab { XCTAssertEqual(fresh.gradient[i], 0.25 * unit.gradient[i], accuracy: 1e-7) }
        }
    }

    func testCrossEntropyIsNegativeLogSoftmax() throws {
        let logits: [Float] = [1, 2, 3, 0, 0, 0, 5, -1, 2]
        let targets: [Int32] = [2, -1, 0]
        var gradient = [Float](repeating: 0, count: 9)
        let loss = try crossEntropyForwardBackward(
            dLogits: &gradient, logits: logits, targets: targets, rows: 3, vocab: 3, gradientScale: 1)
        let first = -log(exp(3.0) / (exp(1.0) + exp(2.0) + exp(3.0)))
        let third = -log(exp(5.0) / (exp(5.0) + exp(-1.0) + exp(2.0)))
        XCTAssertEqual(Double(loss), (first + third) / 2, accuracy: 1e-6)
        // The ignored row gets no gradient; the others (softmax − onehot)/2.
        XCTAssertEqual(Array(gradient[3 ..< 6]), [0, 0, 0])
        XCTAssertEqual(Double(gradient[2]), (exp(3.0) / (exp(1.0) + exp(2.0) + exp(3.0)) - 1) / 2, accuracy: 1e-6)
        let numeric = lossTestNumericGradient(at: logits.map(Double.init)) {
            referenceCrossEntropy($0, targets: targets, vocab: 3)
        }
        XCTAssertLessThan(lossTestMismatch(gradient, numeric), lossTestTolerance)

        XCTAssertEqual(try crossEntropyForwardBackward(dLogits: nil, logits: logits, targets: [-1, -1, -1], rows: 3,
                                                       vocab: 3, gradientScale: 1), 0)
        XCTAssertThrowsError(try crossEntropyForwardBackward(dLogits: nil, logits: logits, targets: [0, 3, 0],
                                                             rows: 3, vocab: 3, gradientScale: 1)) { error in
            XCTAssertEqual(error as? DistillationError, .targetOutOfRange(row: 1, target: 3, vocab: 3))
        }
    }

    func testFusedLossesMatchSeparateCalls() throws {
        let (student, teacher) = sample(seed: 29)
        let s = student.map(Float.init), t = teacher.map(Float.init)
        let targets: [Int32] = [4, -1, 6]
        for divergence in [Divergence.forwardKL, .reverseKL, .tvd] {
            for topK in [nil, 3] as [Int?] {
                let settings = LogitDistillation(divergence: divergence, temperature: 2, tauSquared: true, teacherTopK: topK)
                var fusedGradient = [Float](repeating: 0, count: rows * vocab)
                let fused = try logitLossesForwardBackward(
                    dStudentLogits: &fusedGradient, studentLogits: s, teacherLogits: t, targets: targets, rows: rows,
                    vocab: vocab, distillation: settings, crossEntropyWeight: 0.3, distillationWeight: 0.7,
                    gradientScale: 0.5)
                var ceGradient = [Float](repeating: 0, count: rows * vocab)
                let ce = try crossEntropyForwardBackward(dLogits: &ceGradient, logits: s, targets: targets, rows: rows,
                                                         vocab: vocab, gradientScale: 0.5 * 0.3)
                let kd = try libraryDistillation(student: s, teacher: t, rows: rows, vocab: vocab, tau: 2,
                                                 divergence: divergence, tauSquared: true, topK: topK,
                                                 gradientScale: 0.5 * 0.7)
                XCTAssertEqual(fused.crossEntropy, ce, accuracy: 1e-6)
                XCTAssertEqual(fused.distillation, kd.loss, accuracy: 1e-6)
                XCTAssertEqual(fused.countedRows, 2)
                for i in 0 ..< rows * vocab {
                    XCTAssertEqual(fusedGradient[i], ceGradient[i] + kd.gradient[i], accuracy: 1e-6)
                }
            }
        }
    }

    func testDeterministicAcrossCalls() throws {
        // Many chunks, so the work really is spread over threads.
        let rows = 300, vocab = 1000
        var random = LossTestRandom(seed: 31)
        let s = random.values(rows * vocab, scale: 4).map(Float.init)
        let t = random.values(rows * vocab, scale: 4).map(Float.init)
        let targets = (0 ..< rows).map { Int32(($0 * 37) % vocab) }
        for divergence in [Divergence.forwardKL, .jsd(beta: 0.5)] {
            func run() throws -> (LogitLosses, [Float]) {
                var gradient = [Float](repeating: 0, count: rows * vocab)
                let losses = try logitLossesForwardBackward(
                    dStudentLogits: &gradient, studentLogits: s, teacherLogits: t, targets: targets, rows: rows,
                    vocab: vocab, distillation: LogitDistillation(divergence: divergence, teacherTopK: 50),
                    crossEntropyWeight: 1, distillationWeight: 1, gradientScale: 1)
                return (losses, gradient)
            }
            let (first, firstGradient) = try run()
            let (second, secondGradient) = try run()
            XCTAssertEqual(first.crossEntropy.bitPattern, second.crossEntropy.bitPattern)
            XCTAssertEqual(first.distillation.bitPattern, second.distillation.bitPattern)
            XCTAssertEqual(firstGradient, secondGradient)
        }
    }

    func testSettingsParseAndValidate() throws {
        XCTAssertEqual(try Divergence(name: "forward-kl"), .forwardKL)
        XCTAssertEqual(try Divergence(name: "reverse-kl"), .reverseKL)
        XCTAssertEqual(try Divergence(name: "jsd", beta: 0.2), .jsd(beta: 0.2))
        XCTAssertEqual(try Divergence(name: "jsd"), .jsd(beta: 0.5))
        XCTAssertEqual(try Divergence(name: "TVD"), .tvd)
        XCTAssertEqual(try Divergence(name: "skew-kl"), .skewKL(alpha: 0.1))
        XCTAssertEqual(try Divergence(name: "skew-reverse-kl", alpha: 0.3), .skewReverseKL(alpha: 0.3))
        for name in Divergence.names { XCTAssertEqual(try Divergence(name: name).name, name) }
        XCTAssertThrowsError(try Divergence(name: "kl")) { error in
            XCTAssertEqual((error as? SettingError)?.setting, .divergence)
            XCTAssertTrue("\(error)".contains("forward-kl"))
        }
        XCTAssertThrowsError(try Divergence(name: "jsd", beta: 1.5))
        XCTAssertThrowsError(try Divergence(name: "skew-kl", alpha: -0.1))
        XCTAssertThrowsError(try Divergence.skewReverseKL(alpha: .nan).validate())

        XCTAssertThrowsError(try LogitDistillation(temperature: 0).validate()) { error in
            XCTAssertEqual((error as? SettingError)?.setting, .temperature)
        }
        XCTAssertThrowsError(try LogitDistillation(temperature: -1).validate())
        XCTAssertThrowsError(try LogitDistillation(temperature: 1e-30).validate())
        XCTAssertThrowsError(try Divergence(name: "skew-kl", alpha: 2)) { error in
            // The library names the setting; the CLI turns it into --skew-alpha.
            XCTAssertEqual((error as? SettingError)?.setting, .skewAlpha)
        }
        XCTAssertThrowsError(try LogitDistillation(teacherTopK: 0).validate())
        XCTAssertNoThrow(try LogitDistillation().validate())
        XCTAssertThrowsError(try logitDistillationForwardBackward(
            dStudentLogits: nil, studentLogits: [0, 0], teacherLogits: [0, 0], rows: 1, vocab: 2, temperature: 0,
            divergence: .forwardKL, tauSquared: true, teacherTopK: nil, gradientScale: 1))

        XCTAssertNoThrow(try DistillationWeights().validate())
        XCTAssertNoThrow(try DistillationWeights(ce: 0, kd: 0, rkdAngle: 2).validate())
        XCTAssertThrowsError(try DistillationWeights(ce: 0, kd: 0).validate()) { error in
            XCTAssertEqual(error as? DistillationError, .allWeightsZero)
        }
        XCTAssertThrowsError(try DistillationWeights(kd: -1).validate()) { error in
            XCTAssertEqual(error as? DistillationError, .negativeWeight(.kdWeight, value: -1))
        }
        XCTAssertThrowsError(try DistillationWeights(feature: .infinity).validate())
    }

    func testFusedSpeedReport() throws {
        // Not a timed assertion: prints the cost of CE + forward KL at the "small" preset's step size.
        let rows = 2048, vocab = 4096
        var random = LossTestRandom(seed: 37)
        let s = random.values(rows * vocab, scale: 4).map(Float.init)
        let t = random.values(rows * vocab, scale: 4).map(Float.init)
        let targets = (0 ..< rows).map { Int32(($0 * 101) % vocab) }
        var gradient = [Float](repeating: 0, count: rows * vocab)
        var best = Double.infinity
        #if DEBUG
        let repeats = 2
        #else
        let repeats = 10
        #endif
        for _ in 0 ..< repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try logitLossesForwardBackward(
                dStudentLogits: &gradient, studentLogits: s, teacherLogits: t, targets: targets, rows: rows,
                vocab: vocab, distillation: LogitDistillation(), crossEntropyWeight: 1, distillationWeight: 1,
                gradientScale: 1)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        print("fused CE + forward KL, \(rows) × \(vocab), forward + backward: best \(String(format: "%.2f", best)) ms")
        XCTAssertTrue(gradient.allSatisfy(\.isFinite))
    }
}
