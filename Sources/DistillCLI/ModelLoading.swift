import Distill
import Foundation

/// A model directory (ours or a Hugging Face Llama one) with its tokenizer, checked to belong together.
struct LoadedModel {
    let model: LlamaModel
    let tokenizer: Tokenizer

    init(path: String) throws {
        let loaded = try ModelAndTokenizer(directory: URL(fileURLWithPath: path))
        model = loaded.model
        tokenizer = loaded.tokenizer
    }
}
