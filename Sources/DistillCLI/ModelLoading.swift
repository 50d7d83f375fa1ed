import Distill
import Foundation

/// A model directory (ours or a Hugging Face Llama one) with its tokenizer, checked to belong together.
struct LoadedModel {
    let model: LlamaModel
    let tokenizer: Tokenizer

    init(model: LlamaModel, tokenizer: Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    init(path: String) throws {
        let loaded = try ModelAndTokenizer(directory: URL(fileURLWithPath: path))
        model = loaded.model
        tokenizer = loaded.tokenizer
    }
}

extension LoadedModel {
    /// Model directories loaded as one ensemble; they must share one tokenizer. `weights` is the
    /// "w1,w2,..." of --teacher-weights.
    static func ensemble(_ paths: [String], weights: String?) throws -> (ensemble: ModelEnsemble, first: LoadedModel) {
        let loaded = try ModelAndTokenizer.members(paths.map { URL(fileURLWithPath: $0) }, fit: .exact)
        let ensemble = try Flags.translatingSettings {
            try ModelEnsemble(members: loaded.models, weights: try weights.map { try ModelEnsemble.parseWeights($0) })
        }
        return (ensemble, LoadedModel(model: loaded.models[0], tokenizer: loaded.tokenizer))
    }
}
