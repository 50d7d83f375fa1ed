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

extension LoadedModel {
    /// Model directories loaded as one ensemble; they must share one tokenizer. `weights` is the
    /// "w1,w2,..." of --teacher-weights.
    static func ensemble(_ paths: [String], weights: String?) throws -> (ensemble: ModelEnsemble, first: LoadedModel) {
        let loaded = try paths.map { try LoadedModel(path: $0) }
        for (path, member) in zip(paths, loaded).dropFirst() where member.tokenizer.modelHash != loaded[0].tokenizer.modelHash {
            throw EnsembleError.tokenizerMismatch(paths[0], path)
        }
        let ensemble = try Flags.translatingSettings {
            try ModelEnsemble(members: loaded.map(\.model), weights: try weights.map { try ModelEnsemble.parseWeights($0) })
        }
        return (ensemble, loaded[0])
    }
}
