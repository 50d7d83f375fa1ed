/// Where each weight lives in the model's single parameter buffer. All parameters share one allocation
/// and all gradients another of the same layout (as in llm.c), so the optimiser, zeroing, clipping and
/// checkpointing are single loops. The weights come from the one table of tensors (`LlamaTensors`), in
/// its order: q/k/v are back to back there, and so are gate/up, so that each group is one matrix product.
public struct ParameterLayout: Sendable {
    /// One named tensor (Hugging Face name) inside the flat buffer.
    public struct Tensor: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        /// Whether weight decay applies (not to norm gains).
        public let decays: Bool
        public var count: Int { shape.reduce(1, *) }
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
        var layerOffsets = [[LlamaTensor.Role: Int]](repeating: [:], count: config.numHiddenLayers)
        for spec in LlamaTensors.table(for: config) {
            tensors.append(Tensor(name: spec.name, shape: spec.shape, offset: count, decays: spec.decays))
            switch spec.role {
            case .tokenEmbedding: embedding = count
            case .finalNorm: finalNorm = count
            case .outputHead: lmHead = count
            default: layerOffsets[spec.layer ?? 0][spec.role] = count
            }
            count += spec.count
        }
        if config.tieWordEmbeddings { lmHead = embedding }
        blocks = layerOffsets.map { offsets in
            func offset(_ role: LlamaTensor.Role) -> Int {
                guard let offset = offsets[role] else { preconditionFailure("the tensor table has no \(role) weight") }
                return offset
            }
            // The fused products read q, k, v (and gate, up) as one matrix: the table keeps them adjacent.
            precondition(offset(.key) > offset(.query) && offset(.value) > offset(.key) && offset(.up) > offset(.gate))
            return Block(attentionNorm: offset(.attentionNorm), qkv: offset(.query), output: offset(.attentionOutput),
                         mlpNorm: offset(.mlpNorm), gateUp: offset(.gate), down: offset(.down))
        }
    }

    /// The tensor with a Hugging Face name, if the layout has it.
    public func tensor(named name: String) -> Tensor? { tensors.first { $0.name == name } }
}
