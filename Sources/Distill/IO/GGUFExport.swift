import Foundation

/// A SentencePiece vocabulary as llama.cpp stores it: pieces, scores, token types (1 normal, 2 unknown,
/// 3 control, 4 user-defined, 5 unused, 6 byte) and the special ids (`pad` −1 when there is none).
public struct GGUFVocabulary: Equatable, Sendable {
    public var tokens: [String]
    public var scores: [Float]
    public var tokenTypes: [Int32]
    public var bos: Int
    public var eos: Int
    public var unk: Int
    public var pad: Int

    public init(tokens: [String], scores: [Float], tokenTypes: [Int32], bos: Int, eos: Int, unk: Int, pad: Int = -1) {
        self.tokens = tokens
        self.scores = scores
        self.tokenTypes = tokenTypes
        self.bos = bos
        self.eos = eos
        self.unk = unk
        self.pad = pad
    }
}

/// Export of a Llama model to a GGUF file llama.cpp runs, following what its `convert_hf_to_gguf.py` writes.
public enum GGUFExport {
    /// The metadata llama.cpp needs to load a Llama model with a SentencePiece ("llama") tokenizer.
    /// `fileType` is the type of the large matrices (norms stay F32).
    public static func llamaMetadata(config: LlamaConfig, name: String, tokens: [String], scores: [Float], tokenTypes: [Int32],
                                     bos: Int, eos: Int, unk: Int, pad: Int = -1, fileType: GGMLType = .f32,
                                     addBOSToken: Bool = true) throws -> [(key: String, value: GGUFValue)] {
        try config.validate()
        guard tokens.count == config.vocabSize, scores.count == tokens.count, tokenTypes.count == tokens.count else {
            throw ModelError.mismatch("cannot export GGUF: the vocabulary has \(tokens.count) tokens, \(scores.count) scores and \(tokenTypes.count) token types but the config's vocab_size is \(config.vocabSize); all must agree")
        }
        for (role, id) in [("bos", bos), ("eos", eos), ("unk", unk)] where !(0..<tokens.count).contains(id) {
            throw ModelError.mismatch("cannot export GGUF: the \(role) id \(id) is outside the vocabulary of \(tokens.count) tokens")
        }
        // llama.cpp's own numbering of whole-file types (LLAMA_FTYPE_*).
        let fileTypeNumber: [GGMLType: UInt32] = [.f32: 0, .f16: 1, .q8_0: 7, .bf16: 32]
        func count(_ value: Int) -> GGUFValue { .uint32(UInt32(clamping: value)) }
        var metadata: [(key: String, value: GGUFValue)] = [
            ("general.architecture", .string("llama")),
            ("general.name", .string(name)),
            ("general.file_type", .uint32(fileTypeNumber[fileType] ?? 0)),
            (ModelExport.ggufExportMarker.key, .string(ModelExport.ggufExportMarker.value)),
            ("llama.vocab_size", count(config.vocabSize)),
            ("llama.context_length", count(config.maxPositionEmbeddings)),
            ("llama.embedding_length", count(config.hiddenSize)),
            ("llama.block_count", count(config.numHiddenLayers)),
            ("llama.feed_forward_length", count(config.intermediateSize)),
            ("llama.rope.dimension_count", count(config.headDim)),
            ("llama.attention.head_count", count(config.numAttentionHeads)),
            ("llama.attention.head_count_kv", count(config.numKeyValueHeads)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(config.rmsNormEps)),
            ("llama.rope.freq_base", .float32(config.ropeTheta)),
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .strings(tokens)),
            ("tokenizer.ggml.scores", .floats(scores)),
            ("tokenizer.ggml.token_type", .int32s(tokenTypes)),
            ("tokenizer.ggml.bos_token_id", count(bos)),
            ("tokenizer.ggml.eos_token_id", count(eos)),
            ("tokenizer.ggml.unknown_token_id", count(unk)),
        ]
        if pad >= 0 {
            guard pad < tokens.count else {
                throw ModelError.mismatch("cannot export GGUF: the pad id \(pad) is outside the vocabulary of \(tokens.count) tokens")
            }
            metadata.append(("tokenizer.ggml.padding_token_id", count(pad)))
        }
        metadata.append(("tokenizer.ggml.add_bos_token", .bool(addBOSToken)))
        metadata.append(("tokenizer.ggml.add_eos_token", .bool(false)))
        return metadata
    }

    /// llama.cpp's name for a Hugging Face Llama tensor name, or nil when it is not one.
    public static func ggufName(forHF name: String) -> String? {
        let globalNames = [HFLlamaTensors.tokenEmbedding: "token_embd.weight", HFLlamaTensors.finalNorm: "output_norm.weight",
                           HFLlamaTensors.outputHead: "output.weight"]
        if let global = globalNames[name] { return global }
        let parts = name.split(separator: ".", maxSplits: 3)
        guard parts.count == 4, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]), layer >= 0,
              let suffix = layerNames[String(parts[3])] else { return nil }
        return "blk.\(layer).\(suffix)"
    }

    /// Per-layer names: Hugging Face suffix after `model.layers.N.` to llama.cpp suffix after `blk.N.`.
    private static let layerNames = [
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    ]

    /// Reorders the rows of a query or key projection (`[heads·headDim, columns]`, row-major) from Hugging
    /// Face's rotate-half rotary layout, where each head's first half pairs with its second half, to the
    /// interleaved (Meta/GPT-J) layout llama.cpp expects, where rows 2i and 2i+1 form a pair. Within each
    /// head, new row 2i+j is old row j·headDim/2 + i (j in 0, 1), as `permute` of `convert_hf_to_gguf.py`.
    public static func permuteToInterleavedRotary(_ weights: [Float], heads: Int, columns: Int) throws -> [Float] {
        guard heads > 0, columns > 0, weights.count % (heads * columns) == 0, (weights.count / (heads * columns)) % 2 == 0 else {
            throw ModelError.mismatch("cannot permute \(weights.count) weights into \(heads) heads of \(columns) columns with an even head width")
        }
        let headDim = weights.count / (heads * columns)
        let half = headDim / 2
        var permuted = [Float](repeating: 0, count: weights.count)
        for head in 0..<heads {
            for pair in 0..<half {
                for member in 0..<2 {
                    let source = (head * headDim + member * half + pair) * columns
                    let destination = (head * headDim + 2 * pair + member) * columns
                    permuted[destination..<(destination + columns)] = weights[source..<(source + columns)]
                }
            }
        }
        return permuted
    }

    /// The model's weights (Hugging Face names and layout) as llama.cpp tensors: renamed, query and key
    /// rows permuted to the interleaved rotary layout, matrices stored as `type`, 1-D norms kept F32.
    /// Under Q8_0, a matrix whose rows are not a multiple of 32 long is stored as F16, as llama.cpp's
    /// quantizer does (and `DecodingWeights`).
    public static func llamaTensors(from hfTensors: [SafetensorsTensor], config: LlamaConfig,
                                    type: GGMLType = .f32) throws -> [GGUFTensor] {
        try HFLlamaTensors.checked(hfTensors, config: config).map { tensor in
            guard let name = ggufName(forHF: tensor.name) else {
                throw ModelError.mismatch("cannot export GGUF: tensor '\(tensor.name)' has no llama.cpp name")
            }
            var values = tensor.values
            if name.hasSuffix(".attn_q.weight") {
                values = try permuteToInterleavedRotary(values, heads: config.numAttentionHeads, columns: config.hiddenSize)
            } else if name.hasSuffix(".attn_k.weight") {
                values = try permuteToInterleavedRotary(values, heads: config.numKeyValueHeads, columns: config.hiddenSize)
            }
            let matrixType = type.fits(innermost: tensor.shape.last ?? 0) ? type : .f16
            return GGUFTensor(name: name, shape: tensor.shape, values: values, type: tensor.shape.count == 1 ? .f32 : matrixType)
        }
    }

    /// Writes a complete llama.cpp model file: metadata, vocabulary and converted weights.
    public static func write(config: LlamaConfig, name: String, hfTensors: [SafetensorsTensor], vocabulary: GGUFVocabulary,
                             to url: URL, type: GGMLType = .f32, addBOSToken: Bool = true) throws {
        let metadata = try llamaMetadata(config: config, name: name, tokens: vocabulary.tokens, scores: vocabulary.scores,
                                         tokenTypes: vocabulary.tokenTypes, bos: vocabulary.bos, eos: vocabulary.eos,
                                         unk: vocabulary.unk, pad: vocabulary.pad, fileType: type, addBOSToken: addBOSToken)
        let tensors = try llamaTensors(from: hfTensors, config: config, type: type)
        try GGUFWriter(metadata: metadata, tensors: tensors).write(to: url)
    }
}
