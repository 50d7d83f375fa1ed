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

    /// Copies the tensors of `file` (a checkpoint `save` wrote) into `model`: the file must hold exactly
    /// the model's tensors, each with its shape, and no NaN or infinite value.
    public static func loadWeights(into model: LlamaModel, from file: SafetensorsFile) throws {
        var unused = Set(file.tensorNames)
        for tensor in model.layout.tensors {
            guard file.contains(tensor.name) else {
                throw ModelError.badCheckpoint("\(file.url.path) has no tensor '\(tensor.name)'")
            }
            let info = try file.info(tensor.name)
            guard info.shape == tensor.shape else {
                throw ModelError.badCheckpoint("tensor '\(tensor.name)' in \(file.url.path) has shape \(info.shape) but the config needs \(tensor.shape)")
            }
            unused.remove(tensor.name)
        }
        if let extra = unused.min() {
            throw ModelError.badCheckpoint("\(file.url.path) holds tensor '\(extra)', which a model of this config does not have (\(unused.count) such tensor\(unused.count == 1 ? "" : "s")): the weights do not belong to this config")
        }
        for tensor in model.layout.tensors {
            try copy(try file.floats(tensor.name), into: model, at: tensor)
        }
        try model.checkFiniteWeights(source: file.url.path)
    }

    /// Loads a model directory written by `save`, or any Hugging Face Llama directory (sharded or not;
    /// float32, float16 or bfloat16 weights are converted on load). Before anything large is allocated,
    /// the config must fit in memory and the checkpoint must hold exactly its tensors with their shapes;
    /// after loading, no weight may be NaN or infinite.
    public static func load(_ directory: URL) throws -> LlamaModel {
        let checkpoint = try HFModelDirectory(directory)
        let source = directory.appendingPathComponent(configFile).path
        do {
            try checkpoint.config.checkMemory(for: .inference)
        } catch ModelError.invalidConfig(let why) {
            throw ModelError.invalidConfig("\(source): \(why)")
        }
        try checkpoint.checkTensors()
        let model = try LlamaModel(zeroedFor: checkpoint.config, use: .inference)
        for tensor in model.layout.tensors {
            try copy(try checkpoint.tensor(named: tensor.name, shape: tensor.shape), into: model, at: tensor)
        }
        try model.checkFiniteWeights(source: directory.path)
        // A tied checkpoint that still stores a head must store the embedding itself, or the config lies.
        if checkpoint.config.tieWordEmbeddings && checkpoint.contains(HFLlamaTensors.outputHead) {
            let head = try checkpoint.tensor(named: HFLlamaTensors.outputHead)
            let embedding = UnsafeBufferPointer(rebasing: model.parameters[model.layout.embedding..<(model.layout.embedding + head.count)])
            guard head.elementsEqual(embedding) else {
                throw ModelError.mismatch("\(directory.path): config.json ties lm_head.weight to model.embed_tokens.weight, but the checkpoint stores a different lm_head.weight: set tie_word_embeddings to false, or remove lm_head.weight")
            }
        }
        return model
    }

    private static func copy(_ values: [Float], into model: LlamaModel, at tensor: ParameterLayout.Tensor) throws {
        guard values.count == tensor.count else {
            throw ModelError.badCheckpoint("tensor '\(tensor.name)' has \(values.count) values but its shape \(tensor.shape) needs \(tensor.count)")
        }
        values.withUnsafeBufferPointer {
            (model.parameters.baseAddress! + tensor.offset).update(from: $0.baseAddress!, count: tensor.count)
        }
    }
}
