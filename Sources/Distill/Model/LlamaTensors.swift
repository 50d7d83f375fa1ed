/// One weight of a Llama model as the one table of tensors lists it.
public struct LlamaTensor: Sendable, Equatable {
    /// What the weight does in the model, whatever its layer.
    public enum Role: Sendable, Equatable {
        case tokenEmbedding, attentionNorm, query, key, value, attentionOutput, mlpNorm, gate, up, down, finalNorm, outputHead
    }

    /// Hugging Face (`LlamaForCausalLM`) name, e.g. `model.layers.3.mlp.up_proj.weight`.
    public let name: String
    /// Row-major shape; linear layers are `[out, in]`, as PyTorch keeps them.
    public let shape: [Int]
    /// Whether AdamW applies weight decay to it (matrices yes, norm gains no).
    public let decays: Bool
    public let role: Role
    /// The decoder layer, for per-layer weights.
    public let layer: Int?

    /// Number of values.
    public var count: Int { shape.reduce(1, *) }
}

/// The one table of a Llama model's weights, in model order: the parameter layout, the checkpoint reader
/// and writer and the GGUF export all read it, so a tensor is added or renamed in one place.
public enum LlamaTensors {
    public static let tokenEmbedding = "model.embed_tokens.weight"
    public static let finalNorm = "model.norm.weight"
    public static let outputHead = "lm_head.weight"

    /// The name prefix of decoder layer `index`, e.g. `model.layers.3.`.
    public static func layerPrefix(_ index: Int) -> String { "model.layers.\(index)." }

    /// Every weight of a model of `config`, in model order. `lm_head.weight` is listed only when the config
    /// does not tie it to the token embedding. The caller checks first (`LlamaConfig.checkMemory`) that the
    /// config's sizes are sane: shapes are multiplied out without overflow checks.
    public static func table(for config: LlamaConfig) -> [LlamaTensor] {
        var table: [LlamaTensor] = []
        table.reserveCapacity(3 + 9 * config.numHiddenLayers)
        forEach(in: config) { table.append($0) }
        return table
    }

    /// Visits the table's entries in order without building it, so that a check can stop at the first
    /// bad tensor of a config with very many layers.
    public static func forEach(in config: LlamaConfig, _ body: (LlamaTensor) throws -> Void) rethrows {
        let width = config.hiddenSize, hidden = config.intermediateSize, vocab = config.vocabSize
        let queryWidth = config.numAttentionHeads * config.headDim
        let keyValueWidth = config.numKeyValueHeads * config.headDim
        func tensor(_ name: String, _ shape: [Int], _ role: LlamaTensor.Role, layer: Int? = nil) -> LlamaTensor {
            // Norm gains (the only 1-D weights) are not decayed.
            LlamaTensor(name: name, shape: shape, decays: shape.count > 1, role: role, layer: layer)
        }
        try body(tensor(tokenEmbedding, [vocab, width], .tokenEmbedding))
        for layer in 0..<config.numHiddenLayers {
            let prefix = layerPrefix(layer)
            for entry in [
                tensor(prefix + "input_layernorm.weight", [width], .attentionNorm, layer: layer),
                tensor(prefix + "self_attn.q_proj.weight", [queryWidth, width], .query, layer: layer),
                tensor(prefix + "self_attn.k_proj.weight", [keyValueWidth, width], .key, layer: layer),
                tensor(prefix + "self_attn.v_proj.weight", [keyValueWidth, width], .value, layer: layer),
                tensor(prefix + "self_attn.o_proj.weight", [width, queryWidth], .attentionOutput, layer: layer),
                tensor(prefix + "post_attention_layernorm.weight", [width], .mlpNorm, layer: layer),
                tensor(prefix + "mlp.gate_proj.weight", [hidden, width], .gate, layer: layer),
                tensor(prefix + "mlp.up_proj.weight", [hidden, width], .up, layer: layer),
                tensor(prefix + "mlp.down_proj.weight", [width, hidden], .down, layer: layer),
            ] {
                try body(entry)
            }
        }
        try body(tensor(finalNorm, [width], .finalNorm))
        if !config.tieWordEmbeddings { try body(tensor(outputHead, [vocab, width], .outputHead)) }
    }
}
