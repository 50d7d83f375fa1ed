import Foundation

/// A model directory (ours or a Hugging Face Llama one) loaded with its `tokenizer.model`, checked to
/// belong together: the tokenizer must have exactly as many pieces as the model has embedding rows.
/// With fewer pieces the model can pick ids the tokenizer cannot spell and its text comes out garbled;
/// with more, ids would index past the embedding.
public struct ModelAndTokenizer {
    public let model: LlamaModel
    public let tokenizer: Tokenizer

    /// Loads the weights and the tokenizer of `directory`.
    public init(directory: URL) throws {
        let checkpoint = try HFModelDirectory(directory)
        let tokenizer = try Tokenizer(modelPath: try checkpoint.tokenizerModel().path)
        try Self.check(tokenizer, fits: checkpoint.config, directory: directory)
        model = try ModelDirectory.load(directory)
        self.tokenizer = tokenizer
    }

    /// Throws `ModelError.mismatch` unless `tokenizer` has exactly `config.vocabSize` pieces.
    public static func check(_ tokenizer: Tokenizer, fits config: LlamaConfig, directory: URL) throws {
        guard tokenizer.vocabSize == config.vocabSize else {
            throw ModelError.mismatch("\(directory.path): its \(HFModelDirectory.tokenizerFileName) has \(tokenizer.vocabSize) pieces but the model's vocabulary has \(config.vocabSize): the tokenizer does not belong to this model (put back the one it was trained with)")
        }
    }
}
