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
    init(checking fields: [String: JSONValue]) throws {
        func unsupported(_ why: String) -> ModelError { .invalidConfig(why) }
        func present(_ key: String) -> JSONValue? {
            guard let value = fields[key], value != .null else { return nil }
            return value
        }

        // An absent model_type and architectures is a hand-written config (ours): it describes a Llama.
        let modelType = present("model_type"), architectures = present("architectures")
        if modelType != nil || architectures != nil {
            let isLlama = modelType == .string("llama")
                || (architectures?.arrayValue ?? []).contains(.string("LlamaForCausalLM"))
            guard isLlama else {
                throw unsupported("model_type is \(modelType.map { "'\($0)'" } ?? "missing") and architectures is \(architectures?.description ?? "missing"): distill reads only Llama models (model_type \"llama\" or LlamaForCausalLM)")
            }
        }
        if let scaling = present("rope_scaling") {
            throw unsupported("rope_scaling is \(scaling): distill supports only plain rotary embeddings (rope_scaling null)")
        }
        for flag in ["attention_bias", "mlp_bias"] {
            guard let value = present(flag) else { continue }
            guard case .bool(let on) = value else { throw unsupported("\(flag) is \(value): it must be true or false") }
            if on { throw unsupported("\(flag) is true: distill's Llama has no bias terms") }
        }
        if let activation = present("hidden_act"), activation != .string("silu") {
            throw unsupported("hidden_act is \(activation): distill's Llama uses \"silu\" (SwiGLU)")
        }

        func integer(_ key: String) throws -> Int? {
            guard let value = present(key) else { return nil }
            guard let number = value.integerValue else { throw unsupported("\(key) is \(value): it must be a whole number") }
            return number
        }
        func required(_ key: String) throws -> Int {
            guard let number = try integer(key) else { throw unsupported("the field '\(key)' is missing") }
            return number
        }
        func float(_ key: String, in object: [String: JSONValue]? = nil) throws -> Float? {
            guard let value = (object ?? fields)[key], value != .null else { return nil }
            guard let number = value.doubleValue else { throw unsupported("\(key) is \(value): it must be a number") }
            return Float(number)
        }

        let width = try required("hidden_size"), hidden = try required("intermediate_size")
        let layers = try required("num_hidden_layers"), heads = try required("num_attention_heads")
        var theta = try float("rope_theta")
        // transformers 5 writes the rotary settings as rope_parameters: {rope_theta, rope_type}, with or
        // without the flat rope_theta of 4.x; both must describe plain rotary embeddings and agree.
        if let value = present("rope_parameters") {
            guard case .object(let parameters) = value else {
                throw unsupported("rope_parameters is \(value): expected an object such as {\"rope_type\": \"default\", \"rope_theta\": 10000.0}")
            }
            // Older configs name the kind "type"; a missing kind is transformers' default.
            let kind = parameters["rope_type"] ?? parameters["type"] ?? .string("default")
            guard kind == .string("default") else {
                throw unsupported("rope_parameters has rope_type \(kind): distill supports only plain rotary embeddings (rope_type \"default\", no scaling)")
            }
            if let nested = parameters["rope_theta"], nested != .null {
                guard let nestedTheta = nested.doubleValue else {
                    throw unsupported("rope_parameters.rope_theta is \(nested): it must be a number")
                }
                if let flat = theta, flat != Float(nestedTheta) {
                    throw unsupported("rope_theta is \(fields["rope_theta"]?.description ?? "\(flat)") but rope_parameters.rope_theta is \(nested): make them equal (or remove the flat rope_theta)")
                }
                theta = Float(nestedTheta)
            }
        }
        var tied = false
        if let value = present("tie_word_embeddings") {
            guard case .bool(let flag) = value else { throw unsupported("tie_word_embeddings is \(value): it must be true or false") }
            tied = flag
        }
        self.init(hiddenSize: width, intermediateSize: hidden, numHiddenLayers: layers, numAttentionHeads: heads,
                  numKeyValueHeads: try integer("num_key_value_heads") ?? heads, vocabSize: try required("vocab_size"),
                  maxPositionEmbeddings: try integer("max_position_embeddings") ?? 2048,
                  rmsNormEps: try float("rms_norm_eps") ?? 1e-6, ropeTheta: theta ?? 10000, tieWordEmbeddings: tied)
        try validate()
        if let headDim = present("head_dim"), headDim.integerValue != self.headDim {
            throw unsupported("head_dim is \(headDim) but hidden_size / num_attention_heads is \(self.headDim): distill needs head_dim = hidden_size / num_attention_heads")
        }
    }
}

/// A JSON value as a config file holds it, so that fields can be checked before they are used.
enum JSONValue: Decodable, Equatable, Sendable, CustomStringConvertible {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    /// A whole number (1024 or 1024.0), if it is one that fits an `Int`.
    var integerValue: Int? {
        switch self {
        case .integer(let value): return value
        case .number(let value): return value == value.rounded() && abs(value) < 0x1p62 ? Int(value) : nil
        default: return nil
        }
    }

    var doubleValue: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .number(let value): return value
        default: return nil
        }
    }

    var arrayValue: [JSONValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    /// Strings bare at the top level (`gelu`), quoted inside lists and objects; whole numbers without `.0`.
    var description: String { describe(quoted: false) }

    private func describe(quoted: Bool) -> String {
        switch self {
        case .null: return "null"
        case .bool(let value): return String(value)
        case .integer(let value): return String(value)
        case .number(let value): return integerValue.map(String.init) ?? String(value)
        case .string(let value): return quoted ? "\"\(value)\"" : value
        case .array(let values): return "[" + values.map { $0.describe(quoted: true) }.joined(separator: ", ") + "]"
        case .object(let fields):
            return "{" + fields.keys.sorted().map { "\"\($0)\": \(fields[$0]?.describe(quoted: true) ?? "null")" }.joined(separator: ", ") + "}"
        }
    }
}
