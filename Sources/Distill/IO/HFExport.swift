import Foundation

/// One special token of a tokenizer: its id and its piece (e.g. 1 and "<s>").
public struct HFSpecialToken: Equatable, Sendable {
    public var id: Int
    public var piece: String

    public init(id: Int, piece: String) {
        self.id = id
        self.piece = piece
    }
}

/// The special tokens a Hugging Face export names in its config and tokenizer files.
public struct HFSpecialTokens: Equatable, Sendable {
    public var bos: HFSpecialToken
    public var eos: HFSpecialToken
    public var unk: HFSpecialToken
    /// Absent when the tokenizer has no padding token.
    public var pad: HFSpecialToken?

    public init(bos: HFSpecialToken, eos: HFSpecialToken, unk: HFSpecialToken, pad: HFSpecialToken? = nil) {
        self.bos = bos
        self.eos = eos
        self.unk = unk
        self.pad = pad
    }
}

/// Writes a model as a Hugging Face directory that `LlamaForCausalLM.from_pretrained` and `LlamaTokenizer`
/// load: `config.json`, `generation_config.json`, `model.safetensors`, `tokenizer.model`,
/// `tokenizer_config.json` and `special_tokens_map.json`, each written atomically.
public enum HFExport {
    /// The files `write` puts in the directory.
    public static let fileNames: Set<String> = [
        HFModelDirectory.configFileName, "generation_config.json", HFModelDirectory.weightsFileName,
        HFModelDirectory.tokenizerFileName, "tokenizer_config.json", "special_tokens_map.json",
    ]

    /// Writes `tensors` (Hugging Face names, see `HFLlamaTensors`) with `config` into `directory`.
    ///
    /// Every weight the config needs must be present with its shape, and no other; with tied embeddings a
    /// given `lm_head.weight` is left out, as `save_pretrained` does. `legacy` (default true) makes
    /// `LlamaTokenizer` encode text exactly as SentencePiece itself does. `metadata` joins the weights'
    /// `__metadata__` (beside `"format": "pt"`).
    public static func write(config: LlamaConfig, tensors: [SafetensorsTensor], tokenizerModel: URL,
                             specialTokens: HFSpecialTokens, to directory: URL, dtype: FloatFormat = .f32,
                             addBOSToken: Bool = true, legacy: Bool = true, metadata: [String: String] = [:]) throws {
        try config.validate()
        let stored = try HFLlamaTensors.checked(tensors, config: config)
        guard FileManager.default.fileExists(atPath: tokenizerModel.path) else {
            throw IOError.missing(tokenizerModel.path)
        }
        try AtomicFile.ensureDirectory(directory)

        try writeJSON(configFields(config, specialTokens: specialTokens, dtype: dtype),
                      to: directory.appendingPathComponent(HFModelDirectory.configFileName))
        var generation: [String: Any] = ["_from_model_config": true, "bos_token_id": specialTokens.bos.id,
                                         "eos_token_id": specialTokens.eos.id]
        generation["pad_token_id"] = specialTokens.pad?.id
        try writeJSON(generation, to: directory.appendingPathComponent("generation_config.json"))
        try SafetensorsFile.write(tensors: stored, metadata: metadata.merging(["format": "pt"]) { _, format in format },
                                  to: directory.appendingPathComponent(HFModelDirectory.weightsFileName), dtype: dtype)

        try AtomicFile.write(try RegularFile.read(tokenizerModel.path), to: directory.appendingPathComponent(HFModelDirectory.tokenizerFileName))
        var specialPieces: [String: Any] = ["bos_token": specialTokens.bos.piece, "eos_token": specialTokens.eos.piece,
                                            "unk_token": specialTokens.unk.piece]
        specialPieces["pad_token"] = specialTokens.pad?.piece
        var tokenizerFields = specialPieces
        tokenizerFields.merge([
            "tokenizer_class": "LlamaTokenizer", "add_bos_token": addBOSToken, "add_eos_token": false,
            "legacy": legacy, "model_max_length": config.maxPositionEmbeddings,
            "clean_up_tokenization_spaces": false, "sp_model_kwargs": [String: Any](),
        ]) { current, _ in current }
        try writeJSON(tokenizerFields, to: directory.appendingPathComponent("tokenizer_config.json"))
        try writeJSON(specialPieces, to: directory.appendingPathComponent("special_tokens_map.json"))
    }

    /// The `config.json` fields `transformers` expects of a plain Llama.
    private static func configFields(_ config: LlamaConfig, specialTokens: HFSpecialTokens, dtype: FloatFormat) -> [String: Any] {
        let torchDType: [FloatFormat: String] = [.f32: "float32", .f16: "float16", .bf16: "bfloat16"]
        var fields: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": config.hiddenSize, "intermediate_size": config.intermediateSize,
            "num_hidden_layers": config.numHiddenLayers, "num_attention_heads": config.numAttentionHeads,
            "num_key_value_heads": config.numKeyValueHeads, "head_dim": config.headDim,
            "vocab_size": config.vocabSize, "max_position_embeddings": config.maxPositionEmbeddings,
            "rms_norm_eps": shortestDouble(config.rmsNormEps), "rope_theta": shortestDouble(config.ropeTheta),
            "tie_word_embeddings": config.tieWordEmbeddings, "rope_scaling": NSNull(),
            "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "attention_dropout": 0.0,
            "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": true,
            "torch_dtype": torchDType[dtype] ?? "float32",
            "bos_token_id": specialTokens.bos.id, "eos_token_id": specialTokens.eos.id,
        ]
        fields["pad_token_id"] = specialTokens.pad?.id
        return fields
    }

    /// The Double whose decimal form is the Float's shortest one, so 1e-5 is written "1e-05", not
    /// "9.99999974737875e-06", and reads back as the same Float.
    private static func shortestDouble(_ value: Float) -> Double { Double("\(value)") ?? Double(value) }

    private static func writeJSON(_ object: [String: Any], to url: URL) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        data.append(0x0A)
        try AtomicFile.write(data, to: url)
    }
}
