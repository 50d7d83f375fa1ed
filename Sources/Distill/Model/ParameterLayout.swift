/// Where each weight lives in the model's single parameter buffer. All parameters share one allocation
/// and all gradients another of the same layout (as in llm.c), so the optimiser, zeroing, clipping and
/// checkpointing are single loops. q/k/v are stored back to back, and so are gate/up, so that each
/// group is one matrix product.
public struct ParameterLayout: Sendable {
    /// One named tensor (Hugging Face name) inside the flat buffer.
    public struct Tensor: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Norm gains get no weight decay.
        public var decays: Bool { shape.count > 1 }
    }

    /// Offsets of one decoder block's weights.
    public struct Block: Sendable {
        public let attentionNorm: Int  // [C]
        public let qkv: Int            // [C + 2·KVd, C]: q_proj, k_proj, v_proj stacked
        public let output: Int         // [C, C]  o_proj
        public let mlpNorm: Int        // [C]
        public let gateUp: Int         // [2F, C]: gate_proj, up_proj stacked
        public let down: Int           // [C, F]
    }

    public private(set) var tensors: [Tensor] = []
    public private(set) var blocks: [Block] = []
    public private(set) var embedding = 0     // [V, C]
    public private(set) var finalNorm = 0     // [C]
    public private(set) var lmHead = 0        // [V, C]; equals `embedding` when tied
    public private(set) var count = 0

    public init(config: LlamaConfig) {
        let width = config.hiddenSize, vocab = config.vocabSize, hidden = config.intermediateSize
        let kvWidth = config.numKeyValueHeads * config.headDim
        embedding = add("model.embed_tokens.weight", [vocab, width])
        for layer in 0..<config.numHiddenLayers {
            let prefix = "model.layers.\(layer)."
            let attentionNorm = add(prefix + "input_layernorm.weight", [width])
            let qkv = add(prefix + "self_attn.q_proj.weight", [width, width])
            add(prefix + "self_attn.k_proj.weight", [kvWidth, width])
            add(prefix + "self_attn.v_proj.weight", [kvWidth, width])
            let output = add(prefix + "self_attn.o_proj.weight", [width, width])
            let mlpNorm = add(prefix + "post_attention_layernorm.weight", [width])
            let gateUp = add(prefix + "mlp.gate_proj.weight", [hidden, width])
            add(prefix + "mlp.up_proj.weight", [hidden, width])
            let down = add(prefix + "mlp.down_proj.weight", [width, hidden])
            blocks.append(Block(attentionNorm: attentionNorm, qkv: qkv, output: output,
                                mlpNorm: mlpNorm, gateUp: gateUp, down: down))
        }
        finalNorm = add("model.norm.weight", [width])
        lmHead = config.tieWordEmbeddings ? embedding : add("lm_head.weight", [vocab, width])
    }

    @discardableResult
    private mutating func add(_ name: String, _ shape: [Int]) -> Int {
        let offset = count
        tensors.append(Tensor(name: name, shape: shape, offset: offset))
        count += shape.reduce(1, *)
        return offset
    }

    /// The tensor with a Hugging Face name, if the layout has it.
    public func tensor(named name: String) -> Tensor? { tensors.first { $0.name == name } }
}
