import Distill
import Foundation
import XCTest

/// Tiny corpora and tokenizers made once per test run and shared by the tokenizer and data tests.
enum TestText {
    /// A scratch folder, removed when the test bundle finishes.
    static func makeFolder() throws -> URL {
        try ScratchFolders.make("distill-tests-\(UUID().uuidString)")
    }

    static func write(_ text: String, to url: URL) throws {
        try Data(text.utf8).write(to: url)
    }

    /// Pseudo-English lines from a fixed seed: enough repeated substrings for a few hundred pieces.
    static func corpus(lines: Int, seed: UInt64) -> String {
        let words = ["the", "and", "of", "to", "in", "that", "he", "shall", "unto", "for", "his", "lord", "they",
                     "be", "is", "him", "not", "them", "it", "with", "all", "thou", "thy", "was", "god", "which",
                     "my", "me", "said", "but", "ye", "their", "have", "will", "thee", "from", "as", "are", "when",
                     "this", "out", "were", "upon", "man", "by", "you", "israel", "king", "son", "up", "there",
                     "hath", "then", "people", "came", "had", "house", "into", "on", "her", "come", "one", "we",
                     "children", "before", "your", "also", "day", "land", "men", "let", "go", "against", "made"]
        var random = SeededRandom(seed: seed)
        var text = ""
        for lineNumber in 0..<lines {
            let count = 3 + Int(random.next() % 12)
            var line = (0..<count).map { _ in words[Int(random.next() % UInt64(words.count))] }.joined(separator: " ")
            line = line.prefix(1).uppercased() + line.dropFirst()
            if lineNumber % 7 == 0 { line += " \(random.next() % 1000)" }
            if lineNumber % 11 == 0 { line = "\t" + line }
            text += line + (lineNumber % 3 == 0 ? "." : ",") + "\n"
        }
        return text
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var models: [TokenizerModelType: String] = [:]

    /// A tokenizer of 400 pieces trained on `corpus(lines: 1500, seed: 1)`, trained once per type.
    static func tokenizer(_ type: TokenizerModelType = .unigram) throws -> Tokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let path = models[type] { return try Tokenizer(modelPath: path) }
        let folder = try makeFolder()
        let input = folder.appendingPathComponent("corpus.txt")
        try write(corpus(lines: 1500, seed: 1), to: input)
        let output = folder.appendingPathComponent("tiny-\(type.rawValue).model").path
        try Tokenizer.train(inputs: [input.path], vocabSize: 400, modelType: type, output: output)
        models[type] = output
        return try Tokenizer(modelPath: output)
    }
}

/// Runs `body`, expects it to throw `expected`, and checks that the message is one line.
func assertThrows<E: Error & Equatable & CustomStringConvertible>(
    _ expected: E, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void
) {
    do {
        try body()
        XCTFail("expected \(expected), nothing was thrown", file: file, line: line)
    } catch let error as E {
        XCTAssertEqual(error, expected, file: file, line: line)
        XCTAssertFalse(error.description.contains("\n"), "message spans lines: \(error)", file: file, line: line)
    } catch {
        XCTFail("expected \(expected), got \(error)", file: file, line: line)
    }
}

final class TokenizerTests: XCTestCase {
    static let awkwardTexts = [
        "In the beginning",
        "  two leading spaces and two trailing  ",
        " one leading",
        "runs   of     spaces\tand\t\ttabs",
        "line one\nline two\n\n\nafter blank lines\n",
        "\n\nstarts with newlines",
        "digits 0123456789 and 3.14159 and 1,000,000",
        "emoji 😀👍🏽 and flags 🇰🇷",
        "CJK 中文字符 日本語 한국어 텍스트",
        "unseen: Ω ≈ ç ∂ ñ ¿ ß ¥ \u{00A0}nbsp \u{200B}zero-width",
        "carriage\r\nreturn",
        "",
        " ",
        "\t",
        "\n",
    ]

    func testRoundTripIsExactOnAwkwardText() throws {
        for type in TokenizerModelType.allCases {
            let tokenizer = try TestText.tokenizer(type)
            for text in Self.awkwardTexts {
                let ids = tokenizer.encode(text)
                XCTAssertEqual(tokenizer.decode(ids), text, "\(type) round trip of \(text.debugDescription), ids \(ids)")
            }
            let everything = Self.awkwardTexts.joined(separator: "\n")
            XCTAssertEqual(tokenizer.decode(tokenizer.encode(everything)), everything, "\(type)")
        }
    }

    func testIdsAreInRangeAndSpecialIdsAreControlPieces() throws {
        let tokenizer = try TestText.tokenizer()
        XCTAssertEqual(tokenizer.vocabSize, 400)
        let ids = tokenizer.encode(Self.awkwardTexts.joined())
        XCTAssertFalse(ids.isEmpty)
        XCTAssertTrue(ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabSize })
        // Byte fallback: unseen characters become byte pieces, never <unk>.
        XCTAssertFalse(ids.contains(tokenizer.unkId))

        XCTAssertEqual(tokenizer.unkId, 0)
        XCTAssertEqual(tokenizer.bosId, 1)
        XCTAssertEqual(tokenizer.eosId, 2)
        XCTAssertEqual(tokenizer.padId, -1)
        XCTAssertEqual(tokenizer.pieceType(for: tokenizer.unkId), .unknown)
        XCTAssertEqual(tokenizer.pieceType(for: tokenizer.bosId), .control)
        XCTAssertEqual(tokenizer.pieceType(for: tokenizer.eosId), .control)
        XCTAssertEqual(tokenizer.piece(for: tokenizer.bosId), "<s>")

        let byteIds = (0..<Int32(tokenizer.vocabSize)).filter { tokenizer.pieceType(for: $0) == .byte }
        XCTAssertEqual(byteIds.count, 256)
        XCTAssertEqual(tokenizer.piece(for: byteIds[0x41]), "<0x41>")
        let normalIds = (0..<Int32(tokenizer.vocabSize)).filter { tokenizer.pieceType(for: $0) == .normal }
        XCTAssertEqual(normalIds.count, tokenizer.vocabSize - 256 - 3)
        XCTAssertTrue(normalIds.allSatisfy { (tokenizer.score(for: $0) ?? 1) <= 0 })

        XCTAssertNil(tokenizer.piece(for: Int32(tokenizer.vocabSize)))
        XCTAssertNil(tokenizer.pieceType(for: -1))
        XCTAssertNil(tokenizer.score(for: 100_000))
    }

    func testDigitsAreSplitAndWordsMerge() throws {
        let tokenizer = try TestText.tokenizer()
        // split_digits: every digit is its own piece.
        XCTAssertEqual(tokenizer.encode("1234").count, 4)
        // A frequent word of the corpus is one piece: the model learned something.
        XCTAssertEqual(tokenizer.encode(" children").count, 1)
    }

    func testDecodeReplacesOutOfRangeIdsAndCheckRejectsThem() throws {
        let tokenizer = try TestText.tokenizer()
        let ids = tokenizer.encode("the lord")
        XCTAssertEqual(tokenizer.decode(ids + [9999] + ids), "the lord\u{FFFD}the lord")
        XCTAssertNoThrow(try tokenizer.checkIDs(ids))
        assertThrows(TokenizerError.idOutOfRange(id: -3, vocabSize: 400)) { try tokenizer.checkIDs(ids + [-3]) }
    }

    func testEncodingFromSeveralThreadsMatchesOneThread() throws {
        let tokenizer = try TestText.tokenizer()
        let lines = TestText.corpus(lines: 400, seed: 9).split(separator: "\n").map { String($0) + "\n" }
        let expected = lines.map(tokenizer.encode)
        var results = [[Int32]](repeating: [], count: lines.count)
        results.withUnsafeMutableBufferPointer { slots in
            DispatchQueue.concurrentPerform(iterations: lines.count) { slots[$0] = tokenizer.encode(lines[$0]) }
        }
        XCTAssertEqual(results, expected)
    }

    func testModelHashIsStableAndTellsModelsApart() throws {
        let unigram = try TestText.tokenizer(.unigram)
        let again = try Tokenizer(modelPath: unigram.modelPath)
        let bpe = try TestText.tokenizer(.bpe)
        XCTAssertEqual(unigram.modelHash, again.modelHash)
        XCTAssertNotEqual(unigram.modelHash, bpe.modelHash)
    }

    func testTrainingReadsTheTextFilesOfAFolder() throws {
        let folder = try TestText.makeFolder()
        try TestText.write(TestText.corpus(lines: 600, seed: 2), to: folder.appendingPathComponent("a.txt"))
        try TestText.write(TestText.corpus(lines: 600, seed: 3), to: folder.appendingPathComponent("b.txt"))
        // Not text: would fail the binary check if it were read.
        try Data([0, 1, 2]).write(to: folder.appendingPathComponent("image.bin"))
        let output = folder.appendingPathComponent("out/folder.model").path
        try Tokenizer.train(inputs: [folder.path], vocabSize: 320, modelType: .bpe, output: output)
        XCTAssertEqual(try Tokenizer(modelPath: output).vocabSize, 320)
    }

    // MARK: errors a user can cause

    func testMissingInputIsReported() throws {
        let missing = try TestText.makeFolder().appendingPathComponent("nope.txt").path
        assertThrows(TokenizerError.missingInput(missing)) {
            try Tokenizer.train(inputs: [missing], vocabSize: 400, output: missing + ".model")
        }
    }

    func testEmptyAndWhitespaceOnlyInputsAreReported() throws {
        let folder = try TestText.makeFolder()
        for (name, text) in [("empty.txt", ""), ("blank.txt", " \n\t\n")] {
            let path = folder.appendingPathComponent(name).path
            try TestText.write(text, to: URL(fileURLWithPath: path))
            assertThrows(TokenizerError.emptyInput(path)) {
                try Tokenizer.train(inputs: [path], vocabSize: 400, output: path + ".model")
            }
        }
    }

    func testBinaryInputIsReported() throws {
        let path = try TestText.makeFolder().appendingPathComponent("binary.txt").path
        try Data("some text\0more".utf8).write(to: URL(fileURLWithPath: path))
        assertThrows(TokenizerError.binaryInput(path)) {
            try Tokenizer.train(inputs: [path], vocabSize: 400, output: path + ".model")
        }
    }

    func testInvalidUTF8IsReportedWithItsLine() throws {
        let path = try TestText.makeFolder().appendingPathComponent("latin1.txt").path
        // "café" in Latin-1 on the second line: 0xE9 followed by a newline is not UTF-8.
        try Data("first line\ncaf".utf8 + [0xE9] + Data("\n".utf8)).write(to: URL(fileURLWithPath: path))
        assertThrows(TokenizerError.invalidUTF8(path, line: 2, byteOffset: 14)) {
            try Tokenizer.train(inputs: [path], vocabSize: 400, output: path + ".model")
        }
    }

    func testCheckTextGivesTheSameErrorsForInMemoryText() throws {
        assertThrows(TokenizerError.invalidUTF8("stdin", line: 1, byteOffset: 3)) {
            try Tokenizer.checkText(Data([0x61, 0x62, 0x63, 0xC3, 0x28]), name: "stdin")
        }
        // An overlong encoding of "/" and a UTF-16 surrogate are not UTF-8 either.
        assertThrows(TokenizerError.invalidUTF8("x", line: 1, byteOffset: 0)) { try Tokenizer.checkText(Data([0xC0, 0xAF]), name: "x") }
        assertThrows(TokenizerError.invalidUTF8("x", line: 1, byteOffset: 1)) { try Tokenizer.checkText(Data([0x41, 0xED, 0xA0, 0x80]), name: "x") }
        assertThrows(TokenizerError.emptyInput("x")) { try Tokenizer.checkText(Data("\n \t".utf8), name: "x") }
        XCTAssertNoThrow(try Tokenizer.checkText(Data("ascii, 한국어, 😀 and a long ASCII run to pass eight at a time".utf8), name: "x"))
    }

    func testFolderWithoutTextFilesIsReported() throws {
        let folder = try TestText.makeFolder()
        assertThrows(TokenizerError.noTextFiles(folder.path)) {
            try Tokenizer.train(inputs: [folder.path], vocabSize: 400, output: folder.path + "/x.model")
        }
    }

    func testVocabularyTooLargeForTheCorpusSaysTheLimit() throws {
        let folder = try TestText.makeFolder()
        let input = folder.appendingPathComponent("small.txt")
        try TestText.write(TestText.corpus(lines: 40, seed: 4), to: input)
        let output = folder.appendingPathComponent("big.model").path
        do {
            try Tokenizer.train(inputs: [input.path], vocabSize: 5000, output: output)
            XCTFail("training 5000 pieces on 40 lines succeeded")
        } catch TokenizerError.vocabularyTooLarge(let requested, let maximum) {
            XCTAssertEqual(requested, 5000)
            XCTAssertGreaterThan(maximum, 259)
            XCTAssertLessThan(maximum, 5000)
            XCTAssertTrue(TokenizerError.vocabularyTooLarge(requested: requested, maximum: maximum)
                .description.contains("lower vocab_size"))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    func testVocabularyTooSmallForTheCharactersSaysTheMinimum() throws {
        let folder = try TestText.makeFolder()
        let input = folder.appendingPathComponent("many-characters.txt")
        // 80 distinct letters: more than a 300-piece vocabulary has room for next to 256 bytes.
        let letters = (0..<80).compactMap { UnicodeScalar(0x3041 + $0).map { String(Character($0)) } }
        try TestText.write(String(repeating: letters.joined() + "\n", count: 20), to: input)
        do {
            try Tokenizer.train(inputs: [input.path], vocabSize: 300, output: folder.appendingPathComponent("m.model").path)
            XCTFail("training succeeded")
        } catch TokenizerError.vocabularyTooSmall(let requested, let minimum) {
            XCTAssertEqual(requested, 300)
            XCTAssertGreaterThan(minimum, 300)
        }
    }

    func testVocabularyBelowTheBytePiecesIsRejected() throws {
        assertThrows(TokenizerError.invalidVocabularySize(100)) {
            try Tokenizer.train(inputs: ["unused.txt"], vocabSize: 100, output: "unused.model")
        }
    }

    func testMissingAndBrokenModelsAreReported() throws {
        let folder = try TestText.makeFolder()
        let missing = folder.appendingPathComponent("missing.model").path
        assertThrows(TokenizerError.missingModel(missing)) { _ = try Tokenizer(modelPath: missing) }

        let notAModel = folder.appendingPathComponent("text.model")
        try TestText.write("this is not a protobuf", to: notAModel)
        XCTAssertThrowsError(try Tokenizer(modelPath: notAModel.path)) { error in
            guard case TokenizerError.invalidModel(let path, let reason) = error else { return XCTFail("got \(error)") }
            XCTAssertEqual(path, notAModel.path)
            // SentencePiece's source location and failed condition are noise to a user.
            XCTAssertFalse(reason.contains(".cc("), reason)
        }
    }
}
