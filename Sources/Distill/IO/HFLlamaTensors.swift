/// The Hugging Face (`LlamaForCausalLM`) names and row-major shapes of a Llama model's weights, as the
/// checkpoint files store them: a view of the one table of tensors (`LlamaTensors`).
public enum HFLlamaTensors {
    public static let tokenEmbedding = LlamaTensors.tokenEmbedding
    public static let finalNorm = LlamaTensors.finalNorm
    public static let outputHead = LlamaTensors.outputHead

    /// The name prefix of decoder layer `index`, e.g. `model.layers.3.`.
    public static func layerPrefix(_ index: Int) -> String { LlamaTensors.layerPrefix(index) }

    /// Every weight a model of this config has, in model order. `lm_head.weight` is listed only when the
    /// config does not tie it to the token embedding (a tied checkpoint does not store it).
    public static func expectedShapes(for config: LlamaConfig) -> [(name: String, shape: [Int])] {
        LlamaTensors.table(for: config).map { ($0.name, $0.shape) }
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
        for (name, shape) in expectedShapes(for: config) {
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
