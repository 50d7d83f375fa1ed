/// Errors of the text → tokens stage: reading input text, loading and training tokenizers. Each
/// message is one line that says what went wrong and what to do about it.
public enum TokenizerError: NamesSettings, Equatable {
    /// No input path was given.
    case noInput
    /// An input path does not exist.
    case missingInput(String)
    /// An input file or standard input holds no text (nothing but whitespace, or nothing at all).
    case emptyInput(String)
    /// An input file contains NUL bytes, so it is not text.
    case binaryInput(String)
    /// An input file is not valid UTF-8; `line` is 1-based, `byteOffset` 0-based.
    case invalidUTF8(String, line: Int, byteOffset: Int)
    /// A folder was given where one text file is read.
    case folderInput(String)
    /// A folder given as input has no .txt files.
    case noTextFiles(String)
    /// An input path cannot be opened or read.
    case unreadableInput(String, reason: String)
    /// Standard input ("-") was given where it cannot be used.
    case standardInputNotSupported(String)
    /// The same file reached twice (listed twice, or through a folder or link): its text would count twice
    /// and its validation bytes would also lie in the training text.
    case duplicateInput(String, sameAs: String)
    /// The tokenizer model file does not exist.
    case missingModel(String)
    /// SentencePiece could not load the model file.
    case invalidModel(String, reason: String)
    /// The corpus cannot support so many pieces.
    case vocabularyTooLarge(requested: Int, maximum: Int)
    /// The corpus has more distinct characters (plus the 256 byte pieces) than the vocabulary holds.
    case vocabularyTooSmall(requested: Int, minimum: Int)
    /// A vocabulary size outside what training accepts at all.
    case invalidVocabularySize(Int)
    /// SentencePiece kept no line of the input (none it could use).
    case noUsableLines
    /// A BPE model was asked for, but no two characters of the text stand side by side.
    case nothingToMerge
    /// SentencePiece's trainer failed for another reason.
    case trainingFailed(String)
    /// A token id that is not in the vocabulary.
    case idOutOfRange(id: Int32, vocabSize: Int)

    public func message(naming name: (Setting) -> String) -> String {
        switch self {
        case .noInput:
            return "no input text given: pass \(name(.input)) with a file, a folder of .txt files or -"
        case .missingInput(let path):
            return "input \(path) does not exist: check the path"
        case .emptyInput(let path):
            return "input \(path) has no text: give a file that contains text"
        case let .duplicateInput(path, first):
            return "input \(path) is the same file as \(first): give each file once"
        case .binaryInput(let path):
            return "input \(path) contains NUL bytes and looks binary: give plain UTF-8 text"
        case .invalidUTF8(let path, let line, let byteOffset):
            return "input \(path) is not valid UTF-8 (line \(line), byte \(byteOffset)): convert it, e.g. with iconv -t UTF-8"
        case .folderInput(let path):
            return "input \(path) is a folder: give the path of a text file"
        case .noTextFiles(let path):
            return "folder \(path) has no .txt files: add some or name the files directly"
        case .unreadableInput(let path, let reason):
            return "cannot read input \(path) (\(reason)): check its permissions"
        case .standardInputNotSupported(let what):
            return "standard input (-) cannot be used to \(what): save the text to a file and pass its path"
        case .missingModel(let path):
            return "tokenizer model \(path) does not exist: train one with `distill tokenizer train` or check the path"
        case .invalidModel(let path, let reason):
            return "\(path) is not a SentencePiece model (\(reason)): pass the .model file written by `distill tokenizer train`"
        case .vocabularyTooLarge(let requested, let maximum):
            return "vocabulary size \(requested) is too large for this corpus (at most \(maximum)): lower \(name(.vocabSize)) or add text"
        case .vocabularyTooSmall(let requested, let minimum):
            return "vocabulary size \(requested) is too small for this corpus's characters plus 256 byte pieces (at least \(minimum)): raise \(name(.vocabSize))"
        case .invalidVocabularySize(let size):
            return "vocabulary size \(size) is not usable: choose a \(name(.vocabSize)) of at least 260"
        case .noUsableLines:
            return "SentencePiece found no usable line in the input: give text with several ordinary lines"
        case .nothingToMerge:
            return "the text has no two characters side by side, so BPE has nothing to merge: add text or use \(name(.modelType)) unigram"
        case .trainingFailed(let message):
            return "tokenizer training failed: \(message)"
        case .idOutOfRange(let id, let vocabSize):
            return "token id \(id) is outside the vocabulary (0..<\(vocabSize)): use ids printed by `distill tokenizer encode` with the same model"
        }
    }
}
