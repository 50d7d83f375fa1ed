@testable import Distill
import XCTest

/// The one set of shape rules that `Plan` (the recipe's dry run) and `TrainingRun` (the commands) share.
final class ShapeRulesTests: XCTestCase {
    private func teacher(width: Int = 128, layers: Int = 4, context: Int = 128) throws -> LlamaConfig {
        var config = try LlamaConfig.preset(width >= 256 ? "small" : "tiny", vocabSize: 300, context: context)
        config.numHiddenLayers = layers
        return config
    }

    func testAStudentTakesTheTeachersVocabularyAndAtMostItsContext() throws {
        let small = try ShapeRules.student(nil, context: nil, initFromTeacher: false, teacher: try teacher(width: 256, context: 512), teacherContext: 512)
        XCTAssertEqual(small.config, try LlamaConfig.preset("small-student", vocabSize: 300, context: 256))
        XCTAssertEqual(small.context, 256, "min(256, the teacher's)")
        let tiny = try ShapeRules.student(nil, context: nil, initFromTeacher: false, teacher: try teacher(context: 64), teacherContext: 64)
        XCTAssertEqual(tiny.config.hiddenSize, try LlamaConfig.preset("tiny-student", vocabSize: 300).hiddenSize)
        XCTAssertEqual(tiny.context, 64)
        XCTAssertThrowsError(try ShapeRules.student(.preset("tiny-student"), context: 65, initFromTeacher: false, teacher: try teacher(context: 64),
                                                    teacherContext: 64)) { error in
            XCTAssertEqual((error as? SettingError)?.setting, .context)
        }
    }

    func testAStudentStartedFromTheTeacherKeepsItsShapeAndChoosesItsDepth() throws {
        let t = try teacher(layers: 6)
        let half = try ShapeRules.student(nil, context: nil, initFromTeacher: true, teacher: t, teacherContext: 128)
        XCTAssertEqual(half.config.numHiddenLayers, 3)
        XCTAssertEqual(half.config.hiddenSize, t.hiddenSize)
        let preset = try ShapeRules.student(.preset("tiny-student"), context: nil, initFromTeacher: true, teacher: t, teacherContext: 128)
        XCTAssertEqual(preset.config.numHiddenLayers, try LlamaConfig.preset("tiny-student", vocabSize: 300).numHiddenLayers)
        XCTAssertEqual(preset.config.hiddenSize, t.hiddenSize, "the blocks are the teacher's")
        var narrower = t
        narrower.hiddenSize = 64
        XCTAssertThrowsError(try ShapeRules.student(.config(narrower, path: "s.json"), context: nil, initFromTeacher: true, teacher: t,
                                                    teacherContext: 128)) { error in
            XCTAssertTrue("\(error)".contains("hidden_size 64 but the teacher's is \(t.hiddenSize)"), "\(error)")
        }
        var deeper = t
        deeper.numHiddenLayers = 7
        XCTAssertThrowsError(try ShapeRules.student(.config(deeper, path: "s.json"), context: nil, initFromTeacher: true, teacher: t,
                                                    teacherContext: 128))
    }

    func testAConfigKeepsItsContextAndVocabulary() throws {
        var config = try LlamaConfig.preset("tiny", vocabSize: 300, context: 96)
        let resolved = try ShapeRules.scratch(.config(config, path: "c.json"), defaultPreset: "tiny", context: nil, vocabSize: 300)
        XCTAssertEqual(resolved.context, 96)
        XCTAssertThrowsError(try ShapeRules.scratch(.config(config, path: "c.json"), defaultPreset: "tiny", context: 97, vocabSize: 300))
        config.vocabSize = 301
        XCTAssertThrowsError(try ShapeRules.scratch(.config(config, path: "c.json"), defaultPreset: "tiny", context: nil, vocabSize: 300)) { error in
            XCTAssertTrue("\(error)".contains("vocab_size 301 but the tokenizer has 300 pieces"), "\(error)")
        }
        XCTAssertEqual(try ShapeRules.scratch(nil, defaultPreset: "tiny", context: nil, vocabSize: 300, defaultContext: 40).context, 40)
        XCTAssertThrowsError(try ShapeRules.scratch(nil, defaultPreset: "tiny", context: 0, vocabSize: 300))
    }

    func testTheLayerMapIsCheckedAgainstBothDepths() throws {
        let student = try LlamaConfig.preset("tiny-student", vocabSize: 300), t = try teacher(layers: 4)
        XCTAssertEqual(try ShapeRules.layerMap(nil, student: student, teacher: t),
                       try LayerMap.uniform(studentLayers: student.numHiddenLayers, teacherLayers: 4))
        let pairs = try LayerMap.pairs(parsing: "0:1, 1:3")
        XCTAssertEqual(try ShapeRules.layerMap(pairs, student: student, teacher: t).pairs, pairs)
        XCTAssertEqual(LayerMap.text(pairs), "0:1,1:3")
        XCTAssertThrowsError(try ShapeRules.layerMap(try LayerMap.pairs(parsing: "0:4"), student: student, teacher: t))
        XCTAssertThrowsError(try LayerMap.pairs(parsing: "0-1"))
    }
}
