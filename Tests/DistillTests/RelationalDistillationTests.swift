import Distill
import Foundation
import XCTest

private func referenceHuber(_ x: Double) -> Double { abs(x) < 1 ? 0.5 * x * x : abs(x) - 0.5 }

private func referenceRow(_ x: [Double], _ i: Int, _ width: Int) -> [Double] { Array(x[i * width ..< (i + 1) * width]) }

/// Mean over ordered pairs i ≠ j of huber(dˢ_ij/mean dˢ − dᵗ_ij/mean dᵗ), in Double.
private func referenceDistanceLoss(student: [Double], teacher: [Double], batch: Int, studentWidth: Int,
                                   teacherWidth: Int) -> Double {
    func distances(_ x: [Double], _ width: Int) -> [Double] {
        var d: [Double] = []
        for i in 0 ..< batch {
            for j in 0 ..< batch where j != i {
                d.append(zip(referenceRow(x, i, width), referenceRow(x, j, width))
                    .reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot())
            }
        }
        return d
    }
    let s = distances(student, studentWidth), t = distances(teacher, teacherWidth)
    let sMean = s.reduce(0, +) / Double(s.count), tMean = t.reduce(0, +) / Double(t.count)
    return zip(s, t).reduce(0) { $0 + referenceHuber($1.0 / sMean - $1.1 / tMean) } / Double(s.count)
}

/// Mean over ordered triplets of distinct (a, b, c) of huber(cosˢ∠bac − cosᵗ∠bac), in Double.
private func referenceAngleLoss(student: [Double], teacher: [Double], batch: Int, studentWidth: Int,
                                teacherWidth: Int) -> Double {
    func cosine(_ x: [Double], _ width: Int, _ a: Int, _ b: Int, _ c: Int) -> Double {
        let xa = referenceRow(x, a, width)
        let u = zip(referenceRow(x, b, width), xa).map { $0 - $1 }
        let v = zip(referenceRow(x, c, width), xa).map { $0 - $1 }
        let dot = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }
        return dot / (u.reduce(0) { $0 + $1 * $1 }.squareRoot() * v.reduce(0) { $0 + $1 * $1 }.squareRoot())
    }
    var total = 0.0, count = 0
    for a in 0 ..< batch {
        for b in 0 ..< batch where b != a {
            for c in 0 ..< batch where c != a && c != b {
                total += referenceHuber(cosine(student, studentWidth, a, b, c) - cosine(teacher, teacherWidth, a, b, c))
                count += 1
            }
        }
    }
    return total / Double(count)
}

final class RelationalDistillationTests: XCTestCase {
    private let batch = 5, studentWidth = 3, teacherWidth = 4

    private func sample(seed: UInt64) -> (student: [Double], teacher: [Double]) {
        var random = LossTestRandom(seed: seed)
        return (random.values(batch * studentWidth, scale: 2).map { Double(Float($0)) },
                random.values(batch * teacherWidth, scale: 2).map { Double(Float($0)) })
    }

    private typealias RelationalLoss = (
        UnsafeMutablePointer<Float>?, UnsafePointer<Float>, UnsafePointer<Float>, Int, Int, Int, Float
    ) throws -> Float

    private let distanceLoss: RelationalLoss = {
        try rkdDistanceForwardBackward(dStudentEmbeddings: $0, studentEmbeddings: $1, teacherEmbeddings: $2,
                                       batch: $3, studentWidth: $4, teacherWidth: $5, gradientScale: $6)
    }
    private let angleLoss: RelationalLoss = {
        try rkdAngleForwardBackward(dStudentEmbeddings: $0, studentEmbeddings: $1, teacherEmbeddings: $2,
                                    batch: $3, studentWidth: $4, teacherWidth: $5, gradientScale: $6)
    }

    private func run(_ loss: RelationalLoss, student: [Float], teacher: [Float], batch: Int? = nil,
                     studentWidth: Int? = nil, teacherWidth: Int? = nil,
                     gradientScale: Float = 1) throws -> (loss: Float, gradient: [Float]) {
        var gradient = [Float](repeating: 0, count: student.count)
        let value = try gradient.withUnsafeMutableBufferPointer { d in
            try loss(d.baseAddress, student, teacher, batch ?? self.batch, studentWidth ?? self.studentWidth,
                     teacherWidth ?? self.teacherWidth, gradientScale)
        }
        return (value, gradient)
    }

    private typealias ReferenceLoss = ([Double], [Double], Int, Int, Int) -> Double

    private func checkGradient(_ loss: RelationalLoss, reference: @escaping ReferenceLoss, seed: UInt64) throws {
        let (student, teacher) = sample(seed: seed)
        let result = try run(loss, student: student.map(Float.init), teacher: teacher.map(Float.init),
                             gradientScale: 0.5)
        let value = { (s: [Double]) in reference(s, teacher, self.batch, self.studentWidth, self.teacherWidth) }
        XCTAssertEqual(Double(result.loss), value(student), accuracy: 1e-6)
        XCTAssertGreaterThan(result.loss, 0)
        let numeric = lossTestNumericGradient(at: student, value).map { $0 * 0.5 }
        XCTAssertLessThan(lossTestMismatch(result.gradient, numeric), lossTestTolerance)
        XCTAssertGreaterThan(lossTestMismatch(result.gradient.map { $0 * 1.01 }, numeric), lossTestTolerance)
    }

    func testDistanceGradientMatchesFiniteDifferences() throws {
        try checkGradient(distanceLoss, reference: {
            referenceDistanceLoss(student: $0, teacher: $1, batch: $2, studentWidth: $3, teacherWidth: $4)
        }, seed: 61)
    }

    func testAngleGradientMatchesFiniteDifferences() throws {
        try checkGradient(angleLoss, reference: {
            referenceAngleLoss(student: $0, teacher: $1, batch: $2, studentWidth: $3, teacherWidth: $4)
        }, seed: 67)
    }

    func testIdenticalUpToScaleGivesZero() throws {
        let (student, _) = sample(seed: 71)
        // The teacher: the student scaled by 2.5 and padded with a zero column (another width, same geometry).
        var teacher: [Float] = []
        for b in 0 ..< batch {
            teacher += referenceRow(student, b, studentWidth).map { Float(2.5 * $0) } + [0]
        }
        for loss in [distanceLoss, angleLoss] {
            let result = try run(loss, student: student.map(Float.init), teacher: teacher)
            XCTAssertEqual(result.loss, 0, accuracy: 1e-7)
            XCTAssertLessThan(result.gradient.map(abs).max() ?? 0, 1e-5)
        }
        // Coinciding embeddings: finite, no NaN.
        let same = [Float](repeating: 1, count: batch * studentWidth)
        for loss in [distanceLoss, angleLoss] {
            let result = try run(loss, student: same, teacher: teacher)
            XCTAssertTrue(result.loss.isFinite && result.gradient.allSatisfy(\.isFinite))
        }
    }

    func testSmallBatchesThrowActionableErrors() throws {
        let student: [Float] = [1, 2, 3, 4, 5, 6], teacher: [Float] = [1, 2, 3, 4, 5, 6, 7, 8]
        XCTAssertThrowsError(try run(distanceLoss, student: student, teacher: teacher, batch: 1)) { error in
            XCTAssertEqual(error as? DistillationError, .batchTooSmall(loss: "distance", batch: 1, minimum: 2))
            XCTAssertTrue("\(error)".contains("relational distance distillation needs a batch of at least 2 sequences"))
            XCTAssertTrue("\(error)".contains("raise the batch size"))
        }
        XCTAssertNoThrow(try run(distanceLoss, student: student, teacher: teacher, batch: 2))
        XCTAssertThrowsError(try run(angleLoss, student: student, teacher: teacher, batch: 2)) { error in
            XCTAssertEqual(error as? DistillationError, .batchTooSmall(loss: "angle", batch: 2, minimum: 3))
        }
    }

    func testDeterministicAcrossCalls() throws {
        let (student, teacher) = sample(seed: 73)
        for loss in [distanceLoss, angleLoss] {
            let first = try run(loss, student: student.map(Float.init), teacher: teacher.map(Float.init))
            let second = try run(loss, student: student.map(Float.init), teacher: teacher.map(Float.init))
            XCTAssertEqual(first.loss.bitPattern, second.loss.bitPattern)
            XCTAssertEqual(first.gradient, second.gradient)
        }
    }

    func testMeanPooling() {
        // [2, 3, 2] hidden states → [2, 2] embeddings.
        let hidden: [Float] = [1, 2, 3, 4, 5, 6, -1, 0, 1, 0, 2, 3]
        var pooled = [Float](repeating: 9, count: 4)
        meanPoolForward(out: &pooled, hidden: hidden, batch: 2, tokens: 3, width: 2)
        XCTAssertEqual(pooled, [3, 4, 2.0 / 3, 1])
        var dHidden = [Float](repeating: 1, count: 12)
        meanPoolBackward(dHidden: &dHidden, dOut: [3, 6, -3, 0], batch: 2, tokens: 3, width: 2)
        XCTAssertEqual(dHidden, [2, 3, 2, 3, 2, 3, 0, 1, 0, 1, 0, 1])
    }
}
