import Foundation

/// Tokens to score, and the UTF-8 bytes of text they stand for (the denominator of bits per byte).
public struct EvaluationTokens: Sendable {
    public let tokens: [Int32]
    public let bytes: Int
}

extension EvaluationTokens {
    /// The tokens of a UTF-8 text file, encoded as `Tokenizer.encode` does. Throws `TokenizerError` for a
    /// missing file, a folder, or a file that is empty, binary or not UTF-8.
    public init(textFile path: String, tokenizer: Tokenizer) throws {
        let source = try TextInput.open(path)
        var ids: [Int32] = []
        TextBlock(bytes: source.bytes, addsNewline: false).forEachLine { tokenizer.appendIDs(of: $0, to: &ids) }
        self.init(tokens: ids, bytes: source.bytes.count)
    }

    /// The validation split of a token file made with `tokenizer`. Throws when the file was made with
    /// another tokenizer, holds ids outside the vocabulary, or has fewer than two validation tokens.
    public init(validationSplitOf path: String, tokenizer: Tokenizer) throws {
        let file = try TokenFile(path: path)
        try file.checkTokenizer(tokenizer)
        try file.checkTokenRange()
        guard file.validationTokenCount >= 2 else {
            throw EvaluationError.noValidationSplit(path, tokens: file.validationTokenCount)
        }
        self.init(tokens: Array(file.validationTokens), bytes: file.validationByteCount)
    }
}
