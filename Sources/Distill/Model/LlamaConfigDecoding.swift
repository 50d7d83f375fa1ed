import Foundation

// The one decoder of `config.json`, for a `--config` file, our model directories and Hugging Face ones
// alike: a field distill cannot honour (another architecture, biases, another activation, scaled rotary
// embeddings) is refused by name rather than silently dropped, and `rope_theta` is read wherever
// transformers writes it.

extension LlamaConfig {
    /// Decodes and checks a `config.json`; `source` (usually its path) starts every error message.
    public static func decode(_ data: Data, source: String) throws -> LlamaConfig {
        do {
            return try JSONDecoder().decode(LlamaConfig.self, from: data)
        } catch ModelError.invalidConfig(let why) {
            throw ModelError.invalidConfig("\(source): \(why)")
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
            // Not JSON at all (a NaN literal, a trailing comma): say so, and where, as JSONSerialization saw it.
            do { _ = try JSONSerialization.jsonObject(with: data) } catch {
                let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? context.debugDescription
                throw ModelError.invalidConfig("\(source) is not valid JSON (\(detail.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: ".")))): fix the file")
            }
            throw ModelError.invalidConfig("\(source) is not a JSON object of config fields")
        } catch is DecodingError {
            throw ModelError.invalidConfig("\(source) is not a JSON object of config fields")
        }
    }

    /// Reads and checks the `config.json` at `url`.
    public static func read(from url: URL) throws -> LlamaConfig {
        let data: Data
        do { data = try RegularFile.read(url.path) } catch {
            throw ModelError.invalidConfig("cannot read the config: \(error)")
        }
        return try decode(data, source: url.path)
    }

    /// The checks of every decoded config; errors name the field (without the file, which the caller adds).
    init(checking fields: [String: JSONNode]) throws {
        func unsupported(_ why: String) -> ModelError { .invalidConfig(why) }
        func present(_ key: String) -> JSONNode? {
            guard let value = fields[key], value != .null else { return nil }
            return value
        }

        // An absent model_type and architectures is a hand-written config (ours): it describes a Llama.
        let modelType = present("model_type"), architectures = present("architectures")
        if modelType != nil || architectures != nil {
            let isLlama = modelType == .string("llama")
                || (architectures?.arrayValue ?? []).contains(.string("LlamaForCausalLM"))
            guard isLlama else {
                throw unsupported("model_type is \(modelType.map { "'\($0.plainText)'" } ?? "missing") and architectures is \(architectures?.plainText ?? "missing"): distill reads only Llama models (model_type \"llama\" or LlamaForCausalLM)")
            }
        }
        if let scaling = present("rope_scaling") {
            throw unsupported("rope_scaling is \(scaling.plainText): distill supports only plain rotary embeddings (rope_scaling null)")
        }
        for flag in ["attention_bias", "mlp_bias"] {
            guard let value = present(flag) else { continue }
            guard case .bool(let on) = value else { throw unsupported("\(flag) is \(value.plainText): it must be true or false") }
            if on { throw unsupported("\(flag) is true: distill's Llama has no bias terms") }
        }
        if let activation = present("hidden_act"), activation != .string("silu") {
            throw unsupported("hidden_act is \(activation.plainText): distill's Llama uses \"silu\" (SwiGLU)")
        }

        func integer(_ key: String) throws -> Int? {
            guard let value = present(key) else { return nil }
            guard let number = value.intValue else { throw unsupported("\(key) is \(value.plainText): it must be a whole number") }
            return number
        }
        func required(_ key: String) throws -> Int {
            guard let number = try integer(key) else { throw unsupported("the field '\(key)' is missing") }
            return number
        }
        func float(_ key: String, in object: [String: JSONNode]? = nil) throws -> Float? {
            guard let value = (object ?? fields)[key], value != .null else { return nil }
            guard let number = value.doubleValue else { throw unsupported("\(key) is \(value.plainText): it must be a number") }
            return Float(number)
        }

        let width = try required("hidden_size"), hidden = try required("intermediate_size")
        let layers = try required("num_hidden_layers"), heads = try required("num_attention_heads")
        var theta = try float("rope_theta")
        // transformers 5 writes the rotary settings as rope_parameters: {rope_theta, rope_type}, with or
        // without the flat rope_theta of 4.x; both must describe plain rotary embeddings and agree.
        if let value = present("rope_parameters") {
            guard case .object = value else {
                throw unsupported("rope_parameters is \(value.plainText): expected an object such as {\"rope_type\": \"default\", \"rope_theta\": 10000.0}")
            }
            // Older configs name the kind "type"; a missing kind is transformers' default.
            let kind = value["rope_type"] ?? value["type"] ?? .string("default")
            guard kind == .string("default") else {
                throw unsupported("rope_parameters has rope_type \(kind.plainText): distill supports only plain rotary embeddings (rope_type \"default\", no scaling)")
            }
            if let nested = value["rope_theta"], nested != .null {
                guard let nestedTheta = nested.doubleValue else {
                    throw unsupported("rope_parameters.rope_theta is \(nested.plainText): it must be a number")
                }
                if let flat = theta, flat != Float(nestedTheta) {
                    throw unsupported("rope_theta is \(fields["rope_theta"]?.plainText ?? "\(flat)") but rope_parameters.rope_theta is \(nested.plainText): make them equal (or remove the flat rope_theta)")
                }
                theta = Float(nestedTheta)
            }
        }
        var tied = false
        if let value = present("tie_word_embeddings") {
            guard case .bool(let flag) = value else { throw unsupported("tie_word_embeddings is \(value.plainText): it must be true or false") }
            tied = flag
        }
        self.init(hiddenSize: width, intermediateSize: hidden, numHiddenLayers: layers, numAttentionHeads: heads,
                  numKeyValueHeads: try integer("num_key_value_heads") ?? heads, vocabSize: try required("vocab_size"),
                  maxPositionEmbeddings: try integer("max_position_embeddings") ?? 2048,
                  rmsNormEps: try float("rms_norm_eps") ?? 1e-6, ropeTheta: theta ?? 10000, tieWordEmbeddings: tied)
        try validate()
        if let headDim = present("head_dim"), headDim.intValue != self.headDim {
            throw unsupported("head_dim is \(headDim.plainText) but hidden_size / num_attention_heads is \(self.headDim): distill needs head_dim = hidden_size / num_attention_heads")
        }
    }
}
