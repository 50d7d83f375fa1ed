/// The Hugging Face (`LlamaForCausalLM`) names and row-major shapes of a Llama model's weights; linear
/// layers are stored `[out, in]`, as PyTorch keeps them.
public enum HFLlamaTensors {
    public static let tokenEmbedding = "model.embed_tokens.weight"
    public static let finalNorm = "model.norm.weight"
    public static let outputHead = "lm_head.weight"

    /// The name prefix of decoder layer `index`, e.g. `model.layers.3.`.
    public static func layerPrefix(_ index: Int) -> String { "model.layers.\(index)." }

    /// Every weight a model of this config has, in model order. `lm_head.weight` is listed only when the
    /// config does not tie it to the token embedding (a tied checkpoint does not store it).
    public static func expectedShapes(for config: LlamaConfig) -> [(name: String, shape: [Int])] {
        let width = config.hiddenSize
        let queryWidth = config.numAttentionHeads * config.headDim
        let keyValueWidth = config.numKeyValueHeads * config.headDim
        let hidden = config.intermediateSize
        var shapes: [(name: String, shape: [Int])] = [(tokenEmbedding, [config.vocabSize, width])]
        for layer in 0..<config.numHiddenLayers {
            let prefix = layerPrefix(layer)
            shapes += [
                (prefix + "input_layernorm.weight", [width]),
                (prefix + "self_attn.q_proj.weight", [queryWidth, width]),
                (prefix + "self_attn.k_proj.weight", [keyValueWidth, width]),
                (prefix + "self_attn.v_proj.weight", [keyValueWidth, width]),
                (prefix + "self_attn.o_proj.weight", [width, queryWidth]),
                (prefix + "post_attention_layernorm.weight", [width]),
                (prefix + "mlp.gate_proj.weight", [hidden, width]),
                (prefix + "mlp.up_proj.weight", [hidden, width]),
                (prefix + "mlp.down_proj.weight", [width, hidden]),
            ]
        }
        shapes.append((finalNorm, [width]))
        if !config.tieWordEmbeddings { shapes.append((outputHead, [config.vocabSize, width])) }
        return shapes
    }

    /// The tensors to export: exactly the config's weights with their shapes, in model order; with tied
    /// embeddings a given `lm_head.weight` is dropped.
    static func checked(_ tensors: [SafetensorsTensor], config: LlamaConfig) throws -> [SafetensorsTensor] {
        var byName: [String: SafetensorsTensor] = [:]
        for tensor in tensors {
            guard byName.updateValue(tensor, forKey: tensor.name) == nil else {
                throw ModelError.mismatch("cannot export: tensor '\(tensor.name)' is given twice")
            }
        }
        if config.tieWordEmbeddings { byName[HFLlamaTensors.outputHead] = nil }
        var stored: [SafetensorsTensor] = []
        for (name, shape) in HFLlamaTensors.expectedShapes(for: config) {
            guard let tensor = byName.removeValue(forKey: name) else {
                throw ModelError.mismatch("cannot export: tensor '\(name)' is missing; the config needs it with shape \(shape)")
            }
            guard tensor.shape == shape else {
                throw ModelError.mismatch("cannot export: tensor '\(name)' has shape \(tensor.shape) but the config needs \(shape)")
            }
            stored.append(tensor)
        }
        if let extra = byName.keys.sorted().first {
            throw ModelError.mismatch("cannot export: tensor '\(extra)' is not part of a Llama model with this config (\(byName.count) such tensors)")
        }
        return stored
    }
}
