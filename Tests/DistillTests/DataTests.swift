import Distill
import Foundation
import XCTest

final class DataTests: XCTestCase {
    /// Prepares `text` (written to one file) and opens the result.
    private func prepared(_ text: String, valFraction: Double = 0.1) throws -> (TokenFile, PrepareSummary, Tokenizer) {
        let tokenizer = try TestText.tokenizer()
        let folder = try TestText.makeFolder()
        let input = folder.appendingPathComponent("input.txt")
        try TestText.write(text, to: input)
        let output = folder.appendingPathComponent("data.tok").path
        let summary = try TokenFile.prepare(tokenizer: tokenizer, inputs: [input.path], output: output, valFraction: valFraction)
        return (try TokenFile(path: output), summary, tokenizer)
    }

    func testPreparedFileDecodesBackToTheTextAndSplitsAtALine() throws {
        let text = TestText.corpus(lines: 300, seed: 5) + "  indented 日本 😀\tline\n\nlast line\n"
        let (file, summary, tokenizer) = try prepared(text)
        XCTAssertEqual(file.vocabSize, tokenizer.vocabSize)
        XCTAssertEqual(file.tokenizerHash, tokenizer.modelHash)
        XCTAssertEqual(file.bytesPerToken, 2)
        XCTAssertEqual(file.tokenCount, summary.tokenCount)
        XCTAssertEqual(file.sourceByteCount, text.utf8.count)
        XCTAssertEqual(file.trainTokenCount + file.validationTokenCount, file.tokenCount)
        XCTAssertNoThrow(try file.checkTokenizer(tokenizer))
        XCTAssertNoThrow(try file.checkTokenRange())

        let trainText = tokenizer.decode(Array(file.trainTokens))
        let validationText = tokenizer.decode(Array(file.validationTokens))
        XCTAssertEqual(trainText + validationText, text)
        XCTAssertEqual(Array(file.trainTokens) + Array(file.validationTokens), tokenizer.encode(text))
        XCTAssertTrue(trainText.hasSuffix("\n"), "the split is not at a line boundary")
        XCTAssertEqual(validationText.utf8.count, file.validationByteCount)
        XCTAssertEqual(trainText.utf8.count, file.trainByteCount)
        // The nearest line boundary to 10% of the bytes: off by less than one line.
        let fraction = Double(file.validationByteCount) / Double(file.sourceByteCount)
        XCTAssertEqual(fraction, 0.1, accuracy: 0.02)
        XCTAssertEqual(file.token(at: file.splitIndex), file.validationTokens[0])
    }

    func testSplitIsTheNearestLineBoundaryForManyFractions() throws {
        // Lines of very different lengths, so that the nearest boundary is sometimes before the
        // target and sometimes after it.
        let lines = (0..<12).map { String(repeating: "word ", count: 1 + ($0 * 7) % 10) + "\n" }
        let text = lines.joined()
        let lineStarts = lines.indices.map { lines[..<$0].reduce(0) { $0 + $1.utf8.count } }.dropFirst()
        for fraction in stride(from: 0.05, to: 0.95, by: 0.05) {
            let (file, _, tokenizer) = try prepared(text, valFraction: fraction)
            let trainText = tokenizer.decode(Array(file.trainTokens))
            XCTAssertEqual(trainText + tokenizer.decode(Array(file.validationTokens)), text)
            let target = text.utf8.count - Int((Double(text.utf8.count) * fraction).rounded())
            let nearest = lineStarts.min { abs($0 - target) < abs($1 - target) }
            XCTAssertEqual(file.trainByteCount, nearest, "fraction \(fraction)")
            XCTAssertEqual(trainText.utf8.count, file.trainByteCount)
        }
    }

    func testZeroValidationFractionKeepsEverythingForTraining() throws {
        let (file, _, _) = try prepared(TestText.corpus(lines: 50, seed: 6), valFraction: 0)
        XCTAssertEqual(file.validationTokenCount, 0)
        XCTAssertEqual(file.validationByteCount, 0)
        XCTAssertTrue(file.validationTokens.isEmpty)
        XCTAssertEqual(file.trainTokenCount, file.tokenCount)
    }

    func testFilesAndFoldersAreJoinedInOrderWithNewlinesBetween() throws {
        let tokenizer = try TestText.tokenizer()
        let folder = try TestText.makeFolder()
        let texts = try TestText.makeFolder()
        // Sorted by name, b.txt lacks its final newline, notes.md is not a .txt file.
        try TestText.write("second file\nno final newline", to: texts.appendingPathComponent("b.txt"))
        try TestText.write("first file\n", to: texts.appendingPathComponent("a.txt"))
        try TestText.write("ignored\n", to: texts.appendingPathComponent("notes.md"))
        let extra = folder.appendingPathComponent("extra.txt")
        try TestText.write("third\n", to: extra)
        let output = folder.appendingPathComponent("joined.tok").path
        let summary = try TokenFile.prepare(tokenizer: tokenizer, inputs: [texts.path, extra.path], output: output, valFraction: 0.2)
        let file = try TokenFile(path: output)
        let expected = "first file\nsecond file\nno final newline\nthird\n"
        XCTAssertEqual(tokenizer.decode(Array(file.trainTokens) + Array(file.validationTokens)), expected)
        XCTAssertEqual(summary.sourceByteCount, expected.utf8.count)
        XCTAssertEqual(tokenizer.decode(Array(file.validationTokens)), "third\n")
    }

    func testSingleLineCannotBeSplit() throws {
        XCTAssertThrowsError(try prepared("just one line without a break")) { error in
            XCTAssertEqual(error as? DataError, .tooFewLinesToSplit)
        }
        XCTAssertNoThrow(try prepared("just one line without a break", valFraction: 0))
    }

    func testBadInputsToPrepareAreReported() throws {
        let tokenizer = try TestText.tokenizer()
        let folder = try TestText.makeFolder()
        let output = folder.appendingPathComponent("x.tok").path
        let binary = folder.appendingPathComponent("binary.txt")
        try Data([0x41, 0x00, 0x42, 0x0A]).write(to: binary)
        assertThrows(TokenizerError.binaryInput(binary.path)) {
            try TokenFile.prepare(tokenizer: tokenizer, inputs: [binary.path], output: output)
        }
        assertThrows(DataError.invalidValidationFraction(1.5)) {
            try TokenFile.prepare(tokenizer: tokenizer, inputs: [binary.path], output: output, valFraction: 1.5)
        }
        let missing = folder.appendingPathComponent("missing.txt").path
        assertThrows(TokenizerError.missingInput(missing)) {
            try TokenFile.prepare(tokenizer: tokenizer, inputs: [missing], output: output)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    // MARK: token file checks

    /// Writes a token file by hand, following the layout documented in TokenFile.swift.
    private func handWrittenTokenFile(
        magic: String = "DSTLTOK\0", version: UInt32 = 1, bytesPerToken: UInt32 = 4, vocabSize: UInt32 = 70_000,
        tokens: [UInt32] = [5, 69_999, 0, 65_536], split: UInt64 = 3, dropLastBytes: Int = 0
    ) throws -> String {
        var bytes = Array(magic.utf8)
        func append<Integer: FixedWidthInteger>(_ value: Integer) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        append(version); append(bytesPerToken); append(vocabSize); append(UInt32(0))
        append(UInt64(0xABCD)); append(UInt64(tokens.count)); append(UInt64(100)); append(split); append(UInt64(20))
        for token in tokens {
            if bytesPerToken == 2 { append(UInt16(truncatingIfNeeded: token)) } else { append(token) }
        }
        let path = try TestText.makeFolder().appendingPathComponent("hand.tok").path
        try Data(bytes.dropLast(dropLastBytes)).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testHandWrittenFileWithUInt32IdsIsReadAsDocumented() throws {
        let file = try TokenFile(path: handWrittenTokenFile())
        XCTAssertEqual(file.bytesPerToken, 4)
        XCTAssertEqual(file.vocabSize, 70_000)
        XCTAssertEqual(file.tokenizerHash, 0xABCD)
        XCTAssertEqual(file.sourceByteCount, 100)
        XCTAssertEqual(file.validationByteCount, 20)
        XCTAssertEqual(Array(file.trainTokens), [5, 69_999, 0])
        XCTAssertEqual(Array(file.validationTokens), [65_536])
        XCTAssertNoThrow(try file.checkTokenRange())
    }

    func testDamagedTokenFilesAreRejected() throws {
        let truncated = try handWrittenTokenFile(dropLastBytes: 2)
        assertThrows(DataError.truncatedTokenFile(truncated, expectedBytes: 64 + 16, actualBytes: 64 + 14)) {
            _ = try TokenFile(path: truncated)
        }
        let wrongMagic = try handWrittenTokenFile(magic: "GGUF\0\0\0\0")
        assertThrows(DataError.notATokenFile(wrongMagic)) { _ = try TokenFile(path: wrongMagic) }
        let future = try handWrittenTokenFile(version: 9)
        assertThrows(DataError.unsupportedVersion(future, found: 9, supported: 1)) { _ = try TokenFile(path: future) }
        let headerOnly = try handWrittenTokenFile(tokens: [], split: 0, dropLastBytes: 30)
        assertThrows(DataError.truncatedTokenFile(headerOnly, expectedBytes: 64, actualBytes: 34)) {
            _ = try TokenFile(path: headerOnly)
        }
        let wrongWidth = try handWrittenTokenFile(bytesPerToken: 2)
        XCTAssertThrowsError(try TokenFile(path: wrongWidth)) { error in
            guard case DataError.corruptHeader = error else { return XCTFail("got \(error)") }
        }
        let badSplit = try handWrittenTokenFile(split: 5)
        XCTAssertThrowsError(try TokenFile(path: badSplit)) { error in
            guard case DataError.corruptHeader = error else { return XCTFail("got \(error)") }
        }
        let outOfVocabulary = try TokenFile(path: handWrittenTokenFile(tokens: [3, 70_000], split: 1))
        assertThrows(DataError.tokenOutOfRange(outOfVocabulary.path, index: 1, id: 70_000, vocabSize: 70_000)) {
            try outOfVocabulary.checkTokenRange()
        }
        let missing = try TestText.makeFolder().appendingPathComponent("none.tok").path
        assertThrows(DataError.missingTokenFile(missing)) { _ = try TokenFile(path: missing) }
    }

    func testTokenFileRemembersItsTokenizer() throws {
        let (file, _, _) = try prepared(TestText.corpus(lines: 30, seed: 7))
        let other = try TestText.tokenizer(.bpe)
        assertThrows(DataError.tokenizerMismatch(tokenFile: file.path, tokenizer: other.modelPath)) {
            try file.checkTokenizer(other)
        }
    }

    // MARK: batches

    func testBatchesAreDeterministicForASeedAndTargetsAreShifted() throws {
        let (file, _, _) = try prepared(TestText.corpus(lines: 200, seed: 8))
        let train = file.trainTokens
        var first = try BatchSampler(tokens: train, batchSize: 4, contextLength: 16, seed: 42)
        var second = try BatchSampler(tokens: train, batchSize: 4, contextLength: 16, seed: 42)
        var other = try BatchSampler(tokens: train, batchSize: 4, contextLength: 16, seed: 43)
        let batch = first.next()
        XCTAssertEqual(batch, second.next())
        XCTAssertNotEqual(batch.inputs, other.next().inputs)
        XCTAssertEqual(batch.inputs.count, 4 * 16)
        XCTAssertEqual(batch.targets.count, 4 * 16)

        let trainIds = Array(train)
        for row in 0..<4 {
            let inputs = Array(batch.inputs[row * 16..<(row + 1) * 16])
            let targets = Array(batch.targets[row * 16..<(row + 1) * 16])
            XCTAssertEqual(Array(inputs.dropFirst()), Array(targets.dropLast()))
            // The window really is a stretch of the split.
            let window = inputs + [targets[15]]
            let found = (0...(trainIds.count - 17)).contains { Array(trainIds[$0..<$0 + 17]) == window }
            XCTAssertTrue(found, "row \(row) is not a window of the training tokens")
        }
    }

    func testSavedRandomStateResumesTheSameBatches() throws {
        let (file, _, _) = try prepared(TestText.corpus(lines: 200, seed: 8))
        var sampler = try BatchSampler(tokens: file.trainTokens, batchSize: 2, contextLength: 8, seed: 7)
        _ = sampler.next()
        let saved = try JSONEncoder().encode(sampler.random)
        let expected = (0..<3).map { _ in sampler.next() }
        var resumed = try BatchSampler(tokens: file.trainTokens, batchSize: 2, contextLength: 8,
                                       random: JSONDecoder().decode(SeededRandom.self, from: saved))
        XCTAssertEqual((0..<3).map { _ in resumed.next() }, expected)
    }

    func testShortSplitSaysHowManyTokensThereAre() throws {
        let (file, _, _) = try prepared(TestText.corpus(lines: 40, seed: 3))
        let validation = file.validationTokens
        assertThrows(DataError.splitTooShort(split: "validation", tokens: validation.count, needed: validation.count + 1)) {
            _ = try BatchSampler(tokens: validation, batchSize: 1, contextLength: validation.count, seed: 1)
        }
        XCTAssertNoThrow(try BatchSampler(tokens: validation, batchSize: 1, contextLength: validation.count - 1, seed: 1))
        assertThrows(DataError.invalidBatchShape(batchSize: 0, contextLength: 8)) {
            _ = try BatchSampler(tokens: validation, batchSize: 0, contextLength: 8, seed: 1)
        }
    }
}
