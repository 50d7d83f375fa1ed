import Foundation

/// The shape of a Llama-style decoder. The JSON keys are Hugging Face's `config.json` names, so a
/// config written here loads in `transformers` and one from the Hub loads here.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var rmsNormEps: Float
    public var ropeTheta: Float
    public var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    public init(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int? = nil, vocabSize: Int, maxPositionEmbeddings: Int = 256,
                rmsNormEps: Float = 1e-5, ropeTheta: Float = 10000, tieWordEmbeddings: Bool = true) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.vocabSize = vocabSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.tieWordEmbeddings = tieWordEmbeddings
    }

    /// Decodes a `config.json` strictly (see `LlamaConfig.decode(_:source:)`): whatever route a config
    /// takes into distill, it goes through the same checks.
    public init(from decoder: Decoder) throws {
        let fields = try decoder.singleValueContainer().decode([String: JSONNode].self)
        self = try LlamaConfig(checking: fields)
    }

    /// Width of one attention head.
    public var headDim: Int { hiddenSize / max(numAttentionHeads, 1) }

    /// Named presets of the README and the benchmarks; `vocabSize` comes from the tokenizer.
    public static func preset(_ name: String, vocabSize: Int, context: Int = 256) throws -> LlamaConfig {
        let shapes: [String: (Int, Int, Int, Int)] = [
            "tiny": (128, 4, 4, 344), "tiny-student": (64, 2, 2, 172),
            "small": (256, 6, 8, 688), "small-student": (128, 4, 4, 344),
        ]
        guard let (width, layers, heads, hidden) = shapes[name] else {
            throw ModelError.unknownPreset(name, known: shapes.keys.sorted())
        }
        let config = LlamaConfig(hiddenSize: width, intermediateSize: hidden, numHiddenLayers: layers,
                                 numAttentionHeads: heads, vocabSize: vocabSize, maxPositionEmbeddings: context)
        try config.validate()
        return config
    }

    /// Rejects shapes the model cannot be built with, naming the field.
    public func validate() throws {
        for (name, value) in [("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                              ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                              ("num_key_value_heads", numKeyValueHeads), ("vocab_size", vocabSize),
                              ("max_position_embeddings", maxPositionEmbeddings)] where value <= 0 {
            throw ModelError.invalidConfig("\(name) is \(value); it must be positive")
        }
        if hiddenSize % numAttentionHeads != 0 {
            throw ModelError.invalidConfig("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw ModelError.invalidConfig("num_attention_heads \(numAttentionHeads) is not divisible by num_key_value_heads \(numKeyValueHeads)")
        }
        if headDim % 2 != 0 {
            throw ModelError.invalidConfig("head width \(headDim) is odd; rotary embeddings need an even head width")
        }
        if !(rmsNormEps > 0 && rmsNormEps.isFinite) { throw ModelError.invalidConfig("rms_norm_eps is \(rmsNormEps); it must be a positive number") }
        if !(ropeTheta > 0 && ropeTheta.isFinite) { throw ModelError.invalidConfig("rope_theta is \(ropeTheta); it must be a positive number") }
    }
}

/// Errors about models, configs and checkpoints that a user can act on.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case unknownPreset(String, known: [String])
    case invalidConfig(String)
    case badCheckpoint(String)
    case notAModel(String)
    case mismatch(String)
    /// A tensor of a checkpoint holds NaN or infinite values.
    case nonFinite(tensor: String, nan: Int, infinite: Int, source: String)
    /// Something cannot fit in this machine's memory.
    case insufficientMemory(String)

    public var description: String {
        switch self {
        case .unknownPreset(let name, let known): return "unknown preset '\(name)': use one of \(known.joined(separator: ", "))"
        case .invalidConfig(let why): return "invalid model config: \(why)"
        case .badCheckpoint(let why): return "bad checkpoint: \(why)"
        case .notAModel(let why): return "not a model directory: \(why)"
        case .mismatch(let why): return why
        case .nonFinite(let tensor, let nan, let infinite, let source):
            let counts = [nan > 0 ? "\(nan) NaN" : nil, infinite > 0 ? "\(infinite) infinite" : nil].compactMap { $0 }
            return "\(source): \(tensor) has \(counts.joined(separator: " and ")) values: the model is damaged; retrain or resume from an earlier checkpoint"
        case .insufficientMemory(let why): return why
        }
    }
}

extension LlamaConfig {
    /// Whether the two configs have the same tensors (the context aside).
    public func sameShape(as other: LlamaConfig) -> Bool {
        hiddenSize == other.hiddenSize && intermediateSize == other.intermediateSize && numHiddenLayers == other.numHiddenLayers
            && numAttentionHeads == other.numAttentionHeads && numKeyValueHeads == other.numKeyValueHeads
            && vocabSize == other.vocabSize && tieWordEmbeddings == other.tieWordEmbeddings
    }

    /// "width 64, 2 layers, 2 heads, hidden 172, vocab 300", for messages.
    public var shapeSummary: String {
        "width \(hiddenSize), \(numHiddenLayers) layers, \(numAttentionHeads) heads, hidden \(intermediateSize), vocab \(vocabSize)"
            + (tieWordEmbeddings ? ", tied" : "")
    }
}

