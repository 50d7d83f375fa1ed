import Foundation
import XCTest
import Distill

/// The distillation losses checked against PyTorch autograd on the fixed tensors of
/// `Fixtures/{divergences,features,rkd}.safetensors` (conventions in `Fixtures/README.txt`):
/// every value and every gradient, with the largest relative difference printed.
final class LossFixtureTests: XCTestCase {
    func fixture(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(url: try ReferenceFixtureTests.fixtures().appendingPathComponent(name))
    }

    func testDivergencesMatchPyTorch() throws {
        let reference = try fixture("divergences.safetensors")
        let teacher = try reference.floats("teacher_logits"), student = try reference.floats("student_logits")
        let shape = try reference.info("student_logits").shape
        let rows = shape[0], vocab = shape[1], tau = try reference.floats("temperature")[0]
        let cases: [(String, Divergence, Int?)] = [
            ("forward_kl", .forwardKL, nil), ("reverse_kl", .reverseKL, nil),
            ("jsd_0.1", .jsd(beta: 0.1), nil), ("jsd_0.5", .jsd(beta: 0.5), nil), ("jsd_0.9", .jsd(beta: 0.9), nil),
            ("tvd", .tvd, nil), ("skew_kl_0.1", .skewKL(alpha: 0.1), nil),
            ("skew_reverse_kl_0.1", .skewReverseKL(alpha: 0.1), nil), ("forward_kl_top5", .forwardKL, 5),
        ]
        for (name, divergence, topK) in cases {
            var gradient = [Float](repeating: 0, count: rows * vocab)
            let loss = try logitDistillationForwardBackward(
                dStudentLogits: &gradient, studentLogits: student, teacherLogits: teacher, rows: rows, vocab: vocab,
                temperature: tau, divergence: divergence, tauSquared: true, teacherTopK: topK, gradientScale: 1)
            ReferenceFixtureTests.compare("\(name) loss", [loss], try reference.floats("\(name).loss"), tolerance: 1e-5)
            ReferenceFixtureTests.compare("\(name) grad", gradient, try reference.floats("\(name).grad"), tolerance: 1e-4)
        }
        let targets = try reference.int64s("targets").map(Int32.init)
        var gradient = [Float](repeating: 0, count: rows * vocab)
        let ce = try crossEntropyForwardBackward(dLogits: &gradient, logits: student, targets: targets, rows: rows,
                                                 vocab: vocab, gradientScale: 1)
        ReferenceFixtureTests.compare("ce loss", [ce], try reference.floats("ce.loss"), tolerance: 1e-5)
        ReferenceFixtureTests.compare("ce grad", gradient, try reference.floats("ce.grad"), tolerance: 1e-4)
    }

    func testFeatureDistancesMatchPyTorch() throws {
        let reference = try fixture("features.safetensors")
        let student = try reference.floats("student_hidden"), teacher = try reference.floats("teacher_hidden")
        let projection = try reference.floats("projection")
        let tokens = try reference.info("student_hidden").shape[0]
        let studentWidth = try reference.info("student_hidden").shape[1], teacherWidth = try reference.info("teacher_hidden").shape[1]
        for distance in FeatureDistance.allCases {
            var dStudent = [Float](repeating: 0, count: student.count), dProjection = [Float](repeating: 0, count: projection.count)
            let loss = featureDistillationForwardBackward(
                dStudentHidden: &dStudent, dProjection: &dProjection, studentHidden: student, teacherHidden: teacher,
                projection: projection, tokens: tokens, studentWidth: studentWidth, teacherWidth: teacherWidth,
                distance: distance, gradientScale: 1)
            let name = distance.rawValue
            ReferenceFixtureTests.compare("feature \(name) loss", [loss], try reference.floats("\(name).loss"), tolerance: 1e-5)
            ReferenceFixtureTests.compare("feature \(name) grad_student", dStudent, try reference.floats("\(name).grad_student"), tolerance: 1e-4)
            ReferenceFixtureTests.compare("feature \(name) grad_projection", dProjection,
                                          try reference.floats("\(name).grad_projection"), tolerance: 1e-4)
        }
    }

    func testRelationalLossesMatchPyTorch() throws {
        let reference = try fixture("rkd.safetensors")
        let student = try reference.floats("student"), teacher = try reference.floats("teacher")
        let batch = try reference.info("student").shape[0]
        let studentWidth = try reference.info("student").shape[1], teacherWidth = try reference.info("teacher").shape[1]
        let losses = [("distance", rkdDistanceForwardBackward), ("angle", rkdAngleForwardBackward)]
        for (name, relation) in losses {
            var gradient = [Float](repeating: 0, count: student.count)
            let loss = try relation(&gradient, student, teacher, batch, studentWidth, teacherWidth, 1)
            ReferenceFixtureTests.compare("rkd \(name) loss", [loss], try reference.floats("\(name).loss"), tolerance: 1e-5)
            ReferenceFixtureTests.compare("rkd \(name) grad", gradient, try reference.floats("\(name).grad"), tolerance: 1e-4)
        }
    }
}
