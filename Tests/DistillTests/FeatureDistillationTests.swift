import Distill
import Foundation
import XCTest

/// Mean over tokens of distance(Zt/‖Zt‖, y/‖y‖), y = Zs·Wᵀ, in Double from the definitions
/// (F.normalize's floor 1e-12 on the norms).
private func referenceFeatureLoss(
    student: [Double], teacher: [Double], projection: [Double], tokens: Int, studentWidth: Int, teacherWidth: Int,
    distance: FeatureDistance
) -> Double {
    var total = 0.0
    for n in 0 ..< tokens {
        let y = (0 ..< teacherWidth).map { o in
            (0 ..< studentWidth).reduce(0.0) { $0 + student[n * studentWidth + $1] * projection[o * studentWidth + $1] }
        }
        let z = Array(teacher[n * teacherWidth ..< (n + 1) * teacherWidth])
        let yNorm = max(y.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
        let zNorm = max(z.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
        let a = z.map { $0 / zNorm }, b = y.map { $0 / yNorm }
        switch distance {
        case .l1: total += zip(a, b).reduce(0) { $0 + abs($1.0 - $1.1) }
        case .l2: total += zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        case .cosine: total += 1 - zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
        }
    }
    return total / Double(tokens)
}

final class FeatureDistillationTests: XCTestCase {
    private let tokens = 5, studentWidth = 4, teacherWidth = 6

    private func sample(seed: UInt64) -> (student: [Double], teacher: [Double], projection: [Double]) {
        var random = LossTestRandom(seed: seed)
        let round = { (x: [Double]) in x.map { Double(Float($0)) } }
        return (round(random.values(tokens * studentWidth)), round(random.values(tokens * teacherWidth)),
                round(random.values(teacherWidth * studentWidth)))
    }

    private func run(
        student: [Float], teacher: [Float], projection: [Float], distance: FeatureDistance, gradientScale: Float = 1,
        initialStudentGradient: [Float]? = nil
    ) -> (loss: Float, dStudent: [Float], dProjection: [Float]) {
        var dStudent = initialStudentGradient ?? [Float](repeating: 0, count: tokens * studentWidth)
        var dProjection = [Float](repeating: 0, count: teacherWidth * studentWidth)
        let loss = featureDistillationForwardBackward(
            dStudentHidden: &dStudent, dProjection: &dProjection, studentHidden: student, teacherHidden: teacher,
            projection: projection, tokens: tokens, studentWidth: studentWidth, teacherWidth: teacherWidth,
            distance: distance, gradientScale: gradientScale)
        return (loss, dStudent, dProjection)
    }

    func testGradientsMatchFiniteDifferences() {
        let (student, teacher, projection) = sample(seed: 41)
        for distance in FeatureDistance.allCases {
            let result = run(student: student.map(Float.init), teacher: teacher.map(Float.init),
                             projection: projection.map(Float.init), distance: distance, gradientScale: 0.5)
            let loss = { (s: [Double], w: [Double]) in
                referenceFeatureLoss(student: s, teacher: teacher, projection: w, tokens: self.tokens,
                                     studentWidth: self.studentWidth, teacherWidth: self.teacherWidth, distance: distance)
            }
            XCTAssertEqual(Double(result.loss), loss(student, projection), accuracy: 1e-5, "\(distance)")
            let numericStudent = lossTestNumericGradient(at: student) { loss($0, projection) }.map { $0 * 0.5 }
            let numericProjection = lossTestNumericGradient(at: projection) { loss(student, $0) }.map { $0 * 0.5 }
            XCTAssertLessThan(lossTestMismatch(result.dStudent, numericStudent), lossTestTolerance, "\(distance) dZs")
            XCTAssertLessThan(lossTestMismatch(result.dProjection, numericProjection), lossTestTolerance, "\(distance) dW")
            // Would a gradient that skipped the normalisation be caught?
            XCTAssertGreaterThan(lossTestMismatch(result.dStudent.map { $0 * 1.01 }, numericStudent), lossTestTolerance)
        }
    }

    func testZeroWhenProjectedStudentMatchesTeacherUpToScale() {
        let (student, _, projection) = sample(seed: 43)
        // Zt = 3.5 · Zs·Wᵀ, computed in Double then rounded.
        var teacher = [Double](repeating: 0, count: tokens * teacherWidth)
        for n in 0 ..< tokens {
            for o in 0 ..< teacherWidth {
                teacher[n * teacherWidth + o] = 3.5 * (0 ..< studentWidth).reduce(0.0) {
                    $0 + student[n * studentWidth + $1] * projection[o * studentWidth + $1]
                }
            }
        }
        for distance in FeatureDistance.allCases {
            let result = run(student: student.map(Float.init), teacher: teacher.map(Float.init),
                             projection: projection.map(Float.init), distance: distance)
            XCTAssertEqual(result.loss, 0, accuracy: 1e-5, "\(distance)")
            if distance != .l1 {  // l1's subgradient at 0 need not vanish
                XCTAssertLessThan(result.dStudent.map(abs).max() ?? 0, 1e-4, "\(distance)")
            }
        }
        // A negative scale is the opposite direction: cosine distance 2 per token.
        let flipped = run(student: student.map(Float.init), teacher: teacher.map { Float(-$0) },
                          projection: projection.map(Float.init), distance: .cosine)
        XCTAssertEqual(flipped.loss, 2, accuracy: 1e-5)
    }

    func testGradientAccumulatesAndZeroInputsStayFinite() {
        let (student, teacher, projection) = sample(seed: 47)
        let s = student.map(Float.init), t = teacher.map(Float.init), w = projection.map(Float.init)
        let fresh = run(student: s, teacher: t, projection: w, distance: .l2)
        let start = [Float](repeating: 1, count: tokens * studentWidth)
        let accumulated = run(student: s, teacher: t, projection: w, distance: .l2, initialStudentGradient: start)
        for i in 0 ..< start.count { XCTAssertEqual(accumulated.dStudent[i], 1 + fresh.dStudent[i], accuracy: 1e-6) }
        // An all-zero student row projects to 0: normalised to 0 by the floor, no NaN.
        var zeroed = s
        for d in 0 ..< studentWidth { zeroed[d] = 0 }
        let result = run(student: zeroed, teacher: t, projection: w, distance: .l1)
        XCTAssertTrue(result.loss.isFinite)
        XCTAssertTrue(result.dStudent.allSatisfy(\.isFinite) && result.dProjection.allSatisfy(\.isFinite))
    }

    func testDeterministicAcrossCalls() {
        let (student, teacher, projection) = sample(seed: 53)
        let s = student.map(Float.init), t = teacher.map(Float.init), w = projection.map(Float.init)
        let first = run(student: s, teacher: t, projection: w, distance: .cosine)
        let second = run(student: s, teacher: t, projection: w, distance: .cosine)
        XCTAssertEqual(first.loss.bitPattern, second.loss.bitPattern)
        XCTAssertEqual(first.dStudent, second.dStudent)
        XCTAssertEqual(first.dProjection, second.dProjection)
    }

    func testDistanceNames() throws {
        XCTAssertEqual(try FeatureDistance(name: "l1"), .l1)
        XCTAssertEqual(try FeatureDistance(name: "L2"), .l2)
        XCTAssertEqual(try FeatureDistance(name: "cosine"), .cosine)
        XCTAssertEqual(FeatureDistance.names, ["l1", "l2", "cosine"])
        XCTAssertThrowsError(try FeatureDistance(name: "l3")) { error in
            XCTAssertEqual((error as? SettingError)?.setting, .featureDistance)
            XCTAssertTrue("\(error)".contains("cosine"))
        }
    }

    func testLayerMapParsing() throws {
        let map = try LayerMap(parsing: "0:1, 1 : 3,3:5", studentLayers: 4, teacherLayers: 6)
        XCTAssertEqual(map.pairs, [LayerPair(student: 0, teacher: 1), LayerPair(student: 1, teacher: 3),
                                   LayerPair(student: 3, teacher: 5)])
        XCTAssertEqual(map.description, "0:1,1:3,3:5")
        XCTAssertEqual(try LayerMap(parsing: map.description, studentLayers: 4, teacherLayers: 6), map)

        XCTAssertThrowsError(try LayerMap(parsing: "4:0", studentLayers: 4, teacherLayers: 6)) { error in
            XCTAssertEqual(error as? DistillationError, .layerOutOfDepth(model: "student", layer: 4, depth: 4))
            XCTAssertTrue("\(error)".contains("0...3"))
        }
        XCTAssertThrowsError(try LayerMap(parsing: "0:6", studentLayers: 4, teacherLayers: 6)) { error in
            XCTAssertEqual(error as? DistillationError, .layerOutOfDepth(model: "teacher", layer: 6, depth: 6))
        }
        XCTAssertThrowsError(try LayerMap(parsing: "-1:0", studentLayers: 4, teacherLayers: 6))
        for bad in ["", "0:1,", "0-1", "a:b", "0:1:2", "0:1,0:1"] {
            XCTAssertThrowsError(try LayerMap(parsing: bad, studentLayers: 4, teacherLayers: 6), "'\(bad)'") { error in
                guard case .invalidLayerMap = error as? DistillationError else {
                    return XCTFail("'\(bad)': \(error)")
                }
            }
        }
    }

    func testUniformLayerMap() throws {
        func teachers(_ student: Int, _ teacher: Int) throws -> [Int] {
            try LayerMap.uniform(studentLayers: student, teacherLayers: teacher).pairs.map(\.teacher)
        }
        // round((i+1)·L_T/L_S) − 1, halves up: 1.5, 3, 4.5, 6 → 2, 3, 5, 6.
        XCTAssertEqual(try teachers(4, 6), [1, 2, 4, 5])
        XCTAssertEqual(try teachers(4, 8), [1, 3, 5, 7])
        XCTAssertEqual(try teachers(2, 4), [1, 3])
        XCTAssertEqual(try teachers(3, 3), [0, 1, 2])
        XCTAssertEqual(try teachers(2, 6), [2, 5])
        XCTAssertEqual(try LayerMap.uniform(studentLayers: 4, teacherLayers: 6).pairs.map(\.student), [0, 1, 2, 3])
        XCTAssertThrowsError(try LayerMap.uniform(studentLayers: 0, teacherLayers: 6))
    }
}
