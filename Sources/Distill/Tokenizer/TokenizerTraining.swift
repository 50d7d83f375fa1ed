import CSentencePiece
import Foundation

/// SentencePiece's two segmentation algorithms.
public enum TokenizerModelType: String, Sendable, CaseIterable {
    /// Unigram language model (SentencePiece's default; usually slightly better for LMs).
    case unigram
    /// Byte-pair encoding.
    case bpe
}

/// What `Tokenizer.train` did besides writing the model.
public struct TokenizerTrainingReport: Sendable {
    /// SentencePiece's log.
    public let log: String
    /// Lines longer than `Tokenizer.maximumSentenceBytes` that were cut into pieces for training
    /// (SentencePiece would otherwise skip them without a word).
    public let splitLines: Int
}

extension Tokenizer {
    /// The smallest vocabulary that can hold the 256 byte pieces and the three special pieces.
    public static let minimumVocabularySize = 260
    /// The longest sentence SentencePiece's trainer takes, in bytes; longer lines are cut into pieces.
    public static let maximumSentenceBytes = 16384

    /// Trains a lossless SentencePiece model on the lines of `inputs` (files, or folders whose .txt
    /// files are used) and writes it atomically to `output`. Lossless means `decode(encode(text))`
    /// gives back any UTF-8 text exactly: no normalisation, whitespace kept as is, no dummy prefix
    /// space, and characters outside the vocabulary spelled as byte pieces. Digits are split so that
    /// numbers are not memorised as pieces. Lines longer than `maximumSentenceBytes` are cut into
    /// pieces, and counted in the report. `output` may not be, or lie inside, one of the inputs.
    @discardableResult
    public static func train(
        inputs: [String], vocabSize: Int, modelType: TokenizerModelType = .unigram, output: String,
        maximumSentences: Int = 2_000_000, threads: Int = 2
    ) throws -> TokenizerTrainingReport {
        guard vocabSize >= minimumVocabularySize, vocabSize <= Int(Int32.max) else {
            throw TokenizerError.invalidVocabularySize(vocabSize)
        }
        let files = try TextInput.expand(inputs, allowStandardInput: false, purpose: "train a tokenizer")
        guard !files.isEmpty else { throw TokenizerError.noInput }
        let sources = try files.map(TextInput.open)
        // SentencePiece's BPE trainer crashes when no two characters ever stand side by side.
        if modelType == .bpe, !sources.contains(where: { hasAdjacentCharacters($0.bytes) }) { throw TokenizerError.nothingToMerge }
        try OutputGuard.refuseOverlap(output: .init(Setting.output.rawValue, output), inputs: files.map { .init("input", $0) })
        try TextInput.refuseDuplicates(files)
        let outputURL = URL(fileURLWithPath: output)
        try AtomicFile.ensureDirectory(outputURL.deletingLastPathComponent())

        let arguments = [
            // No --model_prefix: the model comes back in memory and is written atomically below.
            "--vocab_size=\(vocabSize)",
            "--model_type=\(modelType.rawValue)",
            "--normalization_rule_name=identity",
            "--remove_extra_whitespaces=false",
            "--add_dummy_prefix=false",
            "--byte_fallback=true",
            "--split_digits=true",
            // Lets runs of spaces (indentation) become single pieces.
            "--allow_whitespace_only_pieces=true",
            // Training time and memory grow with the sentences sampled, not with the corpus.
            "--input_sentence_size=\(maximumSentences)",
            "--shuffle_input_sentence=true",
            "--max_sentence_length=\(maximumSentenceBytes)",
            "--num_threads=\(min(max(1, threads), 128))",  // SentencePiece's trainer takes at most 128
        ].joined(separator: " ")

        var model: UnsafeMutablePointer<CChar>?
        var modelLength = 0
        var log: UnsafeMutablePointer<CChar>?
        var error: UnsafeMutablePointer<CChar>?
        var splitLines = 0
        let status = withArrayOfCStrings(files) { paths in
            spm_train(arguments, paths, files.count, maximumSentenceBytes, &model, &modelLength, &splitLines, &log, &error)
        }
        let trainerLog = takeMessage(log) ?? ""
        guard status == 0, let model else {
            throw trainingError(readableReason(takeMessage(error), fallback: "no reason given"), requested: vocabSize)
        }
        defer { spm_free_string(model) }
        try AtomicFile.write(Data(bytes: model, count: modelLength), to: outputURL)
        return TokenizerTrainingReport(log: trainerLog, splitLines: splitLines)
    }

    /// Turns SentencePiece's status text into an error a user can act on.
    static func trainingError(_ message: String, requested: Int) -> TokenizerError {
        // The trainer kept no sentence at all: "SentencePiece's check !sentences_.empty() failed".
        if message.contains("sentences_.empty()") { return .noUsableLines }
        // "Vocabulary size too high (5000). Please set it to a value <= 1163."
        if message.contains("Vocabulary size too high"), let maximum = lastInteger(after: "<=", in: message) {
            return .vocabularyTooLarge(requested: requested, maximum: maximum)
        }
        // "Vocabulary size is smaller than required_chars. 300 vs 311."
        if message.contains("smaller than required_chars"), let minimum = lastInteger(after: " vs ", in: message) {
            return .vocabularyTooSmall(requested: requested, minimum: minimum)
        }
        return .trainingFailed(message)
    }

    /// Whether some line holds a character followed by another that is not whitespace (a pair BPE can
    /// merge).
    static func hasAdjacentCharacters(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var previousIsCharacter = false
        for byte in bytes {
            if byte == 0x0A { previousIsCharacter = false; continue }
            // UTF-8 continuation bytes belong to the character before them.
            if byte & 0xC0 == 0x80 { continue }
            let isWhitespace = TextInput.isASCIIWhitespace(byte)
            if previousIsCharacter && !isWhitespace { return true }
            previousIsCharacter = true
        }
        return false
    }

    private static func lastInteger(after marker: String, in text: String) -> Int? {
        guard let range = text.range(of: marker, options: .backwards) else { return nil }
        let digits = text[range.upperBound...].drop(while: { $0 == " " }).prefix(while: \.isNumber)
        return Int(digits)
    }
}

/// Calls `body` with a C array of C strings that lives for the duration of the call.
private func withArrayOfCStrings<Result>(
    _ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> Result
) -> Result {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { $0.map { UnsafePointer($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
