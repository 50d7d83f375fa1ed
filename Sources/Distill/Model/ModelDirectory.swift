import Foundation

/// A model on disk is a directory: `config.json` (Hugging Face names), `model.safetensors` (Hugging
/// Face tensor names) and `tokenizer.model` (a copy of the SentencePiece model it was trained with).
public enum ModelDirectory {
    public static let configFile = "config.json"
    public static let weightsFile = "model.safetensors"
    public static let tokenizerFile = "tokenizer.model"

    /// The weights as named tensors (a tied head is stored once, as the embedding).
    public static func tensors(of model: LlamaModel) -> [SafetensorsTensor] {
        model.layout.tensors.map { tensor in
            SafetensorsTensor(name: tensor.name, shape: tensor.shape,
                              values: Array(UnsafeBufferPointer(start: model.parameters.baseAddress! + tensor.offset,
                                                                count: tensor.count)))
        }
    }

    /// Writes the model as a Hugging Face Llama directory (config, weights, tokenizer and its
    /// configs, each file atomically), so `transformers` loads every model directory as it is.
    public static func save(_ model: LlamaModel, tokenizerModel: String, to directory: URL,
                            dtype: FloatFormat = .f32) throws {
        let tokenizer = try Tokenizer(modelPath: tokenizerModel)
        try HFExport.write(config: model.config, tensors: tensors(of: model),
                           tokenizerModel: URL(fileURLWithPath: tokenizerModel),
                           specialTokens: specialTokens(of: tokenizer), to: directory, dtype: dtype)
    }

    /// BOS, EOS, UNK and PAD ids with their pieces (a missing BOS or EOS falls back to UNK).
    public static func specialTokens(of tokenizer: Tokenizer) -> HFSpecialTokens {
        func token(_ id: Int32) -> HFSpecialToken? {
            guard id >= 0, let piece = tokenizer.piece(for: id) else { return nil }
            return HFSpecialToken(id: Int(id), piece: piece)
        }
        let unk = token(tokenizer.unkId) ?? HFSpecialToken(id: 0, piece: "<unk>")
        return HFSpecialTokens(bos: token(tokenizer.bosId) ?? unk, eos: token(tokenizer.eosId) ?? unk,
                               unk: unk, pad: token(tokenizer.padId))
    }

    /// Copies the named tensors of `file` into `model`, checking every shape.
    public static func loadWeights(into model: LlamaModel, from file: SafetensorsFile) throws {
        for tensor in model.layout.tensors {
            guard file.contains(tensor.name) else {
                throw ModelError.badCheckpoint("\(file.url.path) has no tensor '\(tensor.name)'")
            }
            let info = try file.info(tensor.name)
            guard info.shape == tensor.shape else {
                throw ModelError.badCheckpoint("tensor '\(tensor.name)' in \(file.url.path) has shape \(info.shape) but the config needs \(tensor.shape)")
            }
            let values = try file.floats(tensor.name)
            values.withUnsafeBufferPointer {
                (model.parameters.baseAddress! + tensor.offset).update(from: $0.baseAddress!, count: tensor.count)
            }
        }
    }

    /// Loads a model directory written by `save`, or any Hugging Face Llama directory (sharded or not;
    /// float32, float16 or bfloat16 weights are converted on load).
    public static func load(_ directory: URL) throws -> LlamaModel {
        let checkpoint = try HFModelDirectory(directory)
        let model = try LlamaModel(config: checkpoint.config, seed: 0)
        for tensor in model.layout.tensors {
            let values = try checkpoint.tensor(named: tensor.name, shape: tensor.shape)
            values.withUnsafeBufferPointer {
                (model.parameters.baseAddress! + tensor.offset).update(from: $0.baseAddress!, count: tensor.count)
            }
        }
        return model
    }
}
