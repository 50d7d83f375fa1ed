/// Errors of token files and batches, each a one-line message a user can act on.
public enum DataError: NamesSettings, Equatable {
    /// The token file does not exist.
    case missingTokenFile(String)
    /// The token file cannot be opened or mapped.
    case unreadableTokenFile(String, reason: String)
    /// A folder was given as the token file.
    case tokenFileIsFolder(String)
    /// The file does not start with the token-file magic.
    case notATokenFile(String)
    /// The file was written by another version of the format.
    case unsupportedVersion(String, found: UInt32, supported: UInt32)
    /// The file is shorter (or longer) than its header says.
    case truncatedTokenFile(String, expectedBytes: Int, actualBytes: Int)
    /// The header's fields contradict each other.
    case corruptHeader(String, reason: String)
    /// A stored id is not below the file's vocabulary size.
    case tokenOutOfRange(String, index: Int, id: Int32, vocabSize: Int)
    /// The token file was made with another tokenizer than the one given.
    case tokenizerMismatch(tokenFile: String, tokenizer: String)
    /// The validation fraction is not in [0, 1).
    case invalidValidationFraction(Double)
    /// A validation split was asked for but the text has a single line, so there is no line to split at.
    case tooFewLinesToSplit
    /// A split is too short to cut one window of `needed` tokens from.
    case splitTooShort(split: String, tokens: Int, needed: Int)
    /// Batch size or context length is not positive.
    case invalidBatchShape(batchSize: Int, contextLength: Int)
    /// The output token file cannot be written.
    case unwritableOutput(String, reason: String)

    public func message(naming name: (Setting) -> String) -> String {
        switch self {
        case .missingTokenFile(let path):
            return "token file \(path) does not exist: make it with `distill prepare` or check the path"
        case .unreadableTokenFile(let path, let reason):
            return "cannot read token file \(path) (\(reason)): check its permissions"
        case .tokenFileIsFolder(let path):
            return "\(path) is a folder, not a token file: give the file written by `distill prepare`"
        case .notATokenFile(let path):
            return "\(path) is not a distill token file (wrong magic): pass a file written by `distill prepare`"
        case .unsupportedVersion(let path, let found, let supported):
            return "token file \(path) has format version \(found) but this build reads version \(supported): run `distill prepare` again"
        case .truncatedTokenFile(let path, let expected, let actual):
            return "token file \(path) is \(actual) bytes but its header needs \(expected) (truncated or damaged): run `distill prepare` again"
        case .corruptHeader(let path, let reason):
            return "token file \(path) has a damaged header (\(reason)): run `distill prepare` again"
        case .tokenOutOfRange(let path, let index, let id, let vocabSize):
            return "token file \(path) holds id \(id) at token \(index), outside its vocabulary of \(vocabSize) (damaged file): run `distill prepare` again"
        case .tokenizerMismatch(let tokenFile, let tokenizer):
            return "token file \(tokenFile) was not made with tokenizer \(tokenizer): prepare the data again with this tokenizer, or pass the one it was made with"
        case .invalidValidationFraction(let fraction):
            return "validation fraction \(fraction) is outside [0, 1): use e.g. \(name(.valFraction)) 0.1, or 0 for no validation split"
        case .tooFewLinesToSplit:
            return "the text has a single line, so it cannot be split into training and validation text at a line boundary: add lines or use \(name(.valFraction)) 0"
        case .splitTooShort(let split, let tokens, let needed):
            return "the \(split) split has \(tokens) tokens but one window needs \(needed): lower \(name(.context)) or add text"
        case .invalidBatchShape(let batchSize, let contextLength):
            return "batch size \(batchSize) and context length \(contextLength) must both be at least 1"
        case .unwritableOutput(let path, let reason):
            return "cannot write \(path) (\(reason)): choose a path you can write to"
        }
    }
}
