import Foundation

/// A model directory (ours or a Hugging Face Llama one) loaded with its `tokenizer.model`, checked to
/// belong together. This is the one loader of a model with its tokenizer: the commands, the training
/// runs and the pipeline all load through it, so every site makes the same checks.
public struct ModelAndTokenizer {
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    /// The path of the directory's tokenizer.model.
    public let tokenizerPath: String

    /// How the model's vocabulary must match its tokenizer's pieces.
    public enum VocabularyFit: Sendable {
        /// Exactly as many embedding rows as pieces: a model that generates text (`sample`, `eval`). With
        /// fewer pieces the model can pick ids the tokenizer cannot spell and its text comes out garbled;
        /// with more, ids would index past the embedding.
        case exact
        /// At least as many rows as pieces: a teacher or a judge that only scores the tokenizer's ids (a
        /// Hugging Face head is often padded to a round size).
        case paddedHead
    }

    /// Loads the weights and the tokenizer of `directory`.
    public init(directory: URL, fit: VocabularyFit = .exact) throws {
        let checkpoint = try HFModelDirectory(directory)
        let path = try checkpoint.tokenizerModel().path
        let tokenizer = try Tokenizer(modelPath: path)
        try Self.check(tokenizer, fits: checkpoint.config, directory: directory, fit: fit)
        model = try ModelDirectory.load(directory)
        self.tokenizer = tokenizer
        tokenizerPath = path
    }

    /// One model or an ensemble's members, each loaded as `init(directory:fit:)` does; they must share
    /// one tokenizer, since mixing their distributions mixes their ids.
    public static func members(_ directories: [URL], fit: VocabularyFit) throws -> (models: [LlamaModel], tokenizer: Tokenizer) {
        guard !directories.isEmpty else { throw EnsembleError.noMembers }
        let loaded = try directories.map { try ModelAndTokenizer(directory: $0, fit: fit) }
        for (directory, member) in zip(directories, loaded).dropFirst() where member.tokenizer.modelHash != loaded[0].tokenizer.modelHash {
            throw EnsembleError.tokenizerMismatch(directories[0].path, directory.path)
        }
        return (loaded.map(\.model), loaded[0].tokenizer)
    }

    /// Throws `ModelError.mismatch` unless `tokenizer` fits `config.vocabSize` as `fit` says.
    public static func check(_ tokenizer: Tokenizer, fits config: LlamaConfig, directory: URL, fit: VocabularyFit = .exact) throws {
        let fits = fit == .exact ? tokenizer.vocabSize == config.vocabSize : tokenizer.vocabSize <= config.vocabSize
        guard fits else {
            throw ModelError.mismatch("\(directory.path): its \(HFModelDirectory.tokenizerFileName) has \(tokenizer.vocabSize) pieces but the model's vocabulary has \(config.vocabSize): the tokenizer does not belong to this model (put back the one it was trained with)")
        }
    }
}
