import Distill
import Foundation
import XCTest

/// The library names settings, never command-line flags: the CLI spells a setting as its flag, a recipe
/// as its field, and a message must read right in both.
final class SettingNamesTests: XCTestCase {
    /// Every error that names a setting, one value of each case that does.
    let errors: [NamesSettings] = [
        SettingError(.steps, "must be positive (got 0)"),
        EvaluationError.badStride(0, context: 128),
        EvaluationError.noValidationSplit("data.tok", tokens: 0),
        PipelineError.notARunDirectory("runs/x"),
        PipelineError.otherSchema(path: "runs/x", found: 0, expected: 1),
        PipelineError.otherLayout(path: "runs/x", found: 2, expected: 1),
        PipelineError.damagedRun("runs/x", "no run.json"),
        TokenizerError.noInput,
        TokenizerError.vocabularyTooLarge(requested: 9000, maximum: 500),
        TokenizerError.vocabularyTooSmall(requested: 261, minimum: 300),
        TokenizerError.invalidVocabularySize(3),
        TokenizerError.nothingToMerge,
        GenerationError.emptyPrompt,
        DataError.invalidValidationFraction(2),
        DataError.tooFewLinesToSplit,
        DataError.splitTooShort(split: "training", tokens: 3, needed: 129),
        TeacherCacheError.outputExists("cache.bin"),
        CrossTokenizerError.needsCrossTokenizer(teacher: "teacher", data: "data.tok"),
        CrossTokenizerError.sameTokenizer(teacher: "teacher"),
        CrossTokenizerError.unsupported(.teacherTopK, why: "both objectives read the teacher's whole distribution"),
        CrossTokenizerError.emptyAlignment(windows: 8, teacherTokenizer: "teacher/tokenizer.model"),
    ]

    func testMessagesNameSettingsTheWayTheCallerSpellsThem() {
        for error in errors {
            XCTAssertFalse(error.description.contains("--"), "\(error)")
            let marked = error.message(naming: { "<\($0.rawValue)>" })
            XCTAssertTrue(marked.contains("<"), "names no setting: \(marked)")
            XCTAssertFalse(marked.contains("--"), marked)
        }
        XCTAssertEqual(TokenizerError.vocabularyTooLarge(requested: 9000, maximum: 500).message(naming: { "--" + $0.rawValue }),
                       "vocabulary size 9000 is too large for this corpus (at most 500): lower --vocab_size or add text")
    }

    func testSamplerSettingsAreRefusedBySetting() {
        XCTAssertThrowsError(try Sampler(temperature: -1)) { XCTAssertEqual(($0 as? SettingError)?.setting, .temperature) }
        XCTAssertThrowsError(try Sampler(topK: 0)) { XCTAssertEqual(($0 as? SettingError)?.setting, .topK) }
        XCTAssertThrowsError(try Sampler(topP: 1.5)) { XCTAssertEqual(($0 as? SettingError)?.setting, .topP) }
    }

    /// No string literal of the library spells a flag (`"--name"`), apart from the arguments the
    /// library hands to SentencePiece's own trainer.
    func testNoLibrarySourceSpellsAFlag() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Distill")
        let files = try XCTUnwrap(FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil))
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" && $0.lastPathComponent != "TokenizerTraining.swift" }
        XCTAssertGreaterThan(files.count, 50)
        let flag = try NSRegularExpression(pattern: #""[^"\n]*(?<![-\w])--[a-z][^"\n]*""#)
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.components(separatedBy: "//").first ?? ""
                let range = NSRange(code.startIndex..., in: code)
                if flag.firstMatch(in: code, range: range) != nil {
                    XCTFail("\(file.lastPathComponent):\(number + 1) spells a flag: \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
    }
}
