import Distill
import Foundation

/// A model directory (ours or a Hugging Face Llama one) with its tokenizer.
struct LoadedModel {
    let model: LlamaModel
    let tokenizer: Tokenizer

    init(path: String) throws {
        let directory = URL(fileURLWithPath: path)
        model = try ModelDirectory.load(directory)
        tokenizer = try Tokenizer(modelPath: try HFModelDirectory(directory).tokenizerModel().path)
        guard tokenizer.vocabSize <= model.config.vocabSize else {
            throw ModelError.mismatch("\(path): the tokenizer has \(tokenizer.vocabSize) pieces but the model only \(model.config.vocabSize)")
        }
    }
}
