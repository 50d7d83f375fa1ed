import Foundation

/// A Hugging Face Llama checkpoint directory: `config.json`, `model.safetensors` or shards listed in
/// `model.safetensors.index.json`, and usually `tokenizer.model`. Opening checks that the config describes
/// a plain Llama model distill can run, and that every shard exists and is a valid safetensors file;
/// tensors are read on demand from the memory-mapped shards.
public struct HFModelDirectory: Sendable {
    public static let configFileName = "config.json"
    public static let weightsFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"
    public static let tokenizerFileName = "tokenizer.model"

    /// The directory, as given.
    public let directory: URL
    /// The model's shape, validated.
    public let config: LlamaConfig
    /// Special token ids from `config.json`, when it names them (a list of eos ids yields its first).
    public let bosTokenID: Int?
    public let eosTokenID: Int?
    public let padTokenID: Int?

    /// Which open shard holds each tensor.
    private let shardByTensor: [String: SafetensorsFile]

    /// Opens `directory`, reading its config and opening its weight files.
    public init(_ directory: URL) throws {
        self.directory = directory
        let fields = try Self.readConfigFields(in: directory)
        config = try Self.llamaConfig(from: fields, directory: directory)
        bosTokenID = Self.tokenID(fields["bos_token_id"])
        eosTokenID = Self.tokenID(fields["eos_token_id"])
        padTokenID = Self.tokenID(fields["pad_token_id"])
        shardByTensor = try Self.openWeights(in: directory)
    }

    /// Reads and checks only `config.json` of `directory`, without touching the weights.
    public static func readConfig(in directory: URL) throws -> LlamaConfig {
        try llamaConfig(from: readConfigFields(in: directory), directory: directory)
    }

    /// Every tensor name of the checkpoint, sorted.
    public var tensorNames: [String] { shardByTensor.keys.sorted() }

    /// Whether the checkpoint holds a tensor of that name.
    public func contains(_ name: String) -> Bool { shardByTensor[name] != nil }

    /// The name of the output projection's weights: `lm_head.weight`, or the token embedding when the
    /// config ties them and the checkpoint (as usual) does not store a separate head.
    public var outputHeadName: String {
        config.tieWordEmbeddings && !contains(HFLlamaTensors.outputHead) ? HFLlamaTensors.tokenEmbedding : HFLlamaTensors.outputHead
    }

    /// The row-major shape of a tensor.
    public func shape(ofTensor name: String) throws -> [Int] {
        try shard(holding: name).info(name).shape
    }

    /// A tensor's values as `Float`, row-major.
    public func tensor(named name: String) throws -> [Float] {
        try shard(holding: name).floats(name)
    }

    /// A tensor's values, after checking that its shape is the one the caller (the config) needs.
    public func tensor(named name: String, shape expected: [Int]) throws -> [Float] {
        try checkShape(ofTensor: name, expected: expected)
        return try tensor(named: name)
    }

    /// Checks that every weight the config needs is present with the right shape (without reading values).
    public func checkTensors() throws {
        for (name, shape) in HFLlamaTensors.expectedShapes(for: config) {
            try checkShape(ofTensor: name, expected: shape)
        }
    }

    private func checkShape(ofTensor name: String, expected: [Int]) throws {
        let actual = try shape(ofTensor: name)
        guard actual == expected else {
            throw ModelError.mismatch("\(directory.path): tensor '\(name)' has shape \(actual) but the config needs \(expected): the weights do not belong to this config.json")
        }
    }

    /// The directory's `tokenizer.model`, or a clear error when there is none.
    public func tokenizerModel() throws -> URL {
        let url = directory.appendingPathComponent(Self.tokenizerFileName)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ModelError.notAModel("no \(Self.tokenizerFileName) in \(directory.path): distill needs a SentencePiece tokenizer")
        }
        return url
    }

    private func shard(holding name: String) throws -> SafetensorsFile {
        guard let shard = shardByTensor[name] else {
            let hint = name == HFLlamaTensors.outputHead && config.tieWordEmbeddings
                ? " (the config ties it to \(HFLlamaTensors.tokenEmbedding): use that)" : ""
            throw ModelError.badCheckpoint("\(directory.path) has no tensor '\(name)'\(hint): the checkpoint is incomplete or not a Llama model")
        }
        return shard
    }
}

// MARK: - config.json

extension HFModelDirectory {
    private static func readConfigFields(in directory: URL) throws -> [String: Any] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError.notAModel("\(directory.path) is not a directory: give the folder that holds config.json")
        }
        let url = directory.appendingPathComponent(configFileName)
        guard let contents = FileManager.default.contents(atPath: url.path) else {
            throw ModelError.notAModel("no \(configFileName) in \(directory.path): give a Hugging Face model folder")
        }
        guard let fields = (try? JSONSerialization.jsonObject(with: contents)) as? [String: Any] else {
            throw ModelError.invalidConfig("\(url.path) is not a JSON object")
        }
        return fields
    }

    private static func llamaConfig(from fields: [String: Any], directory: URL) throws -> LlamaConfig {
        let file = directory.appendingPathComponent(configFileName).path
        func unsupported(_ why: String) -> ModelError { .invalidConfig("\(file): \(why)") }

        let modelType = fields["model_type"] as? String
        let architectures = fields["architectures"] as? [String] ?? []
        guard modelType == "llama" || architectures.contains("LlamaForCausalLM") else {
            throw unsupported("model_type is \(modelType.map { "'\($0)'" } ?? "missing") and architectures is \(architectures): distill reads only Llama models (model_type \"llama\" or LlamaForCausalLM)")
        }
        if let scaling = fields["rope_scaling"], !(scaling is NSNull) {
            throw unsupported("rope_scaling is \(scaling): distill supports only plain rotary embeddings (rope_scaling null)")
        }
        let fields = try flattenRopeParameters(fields, unsupported: unsupported)
        for flag in ["attention_bias", "mlp_bias"] where (fields[flag] as? Bool) == true {
            throw unsupported("\(flag) is true: distill's Llama has no bias terms")
        }
        if let activation = fields["hidden_act"], (activation as? String) != "silu" {
            throw unsupported("hidden_act is \(activation): distill's Llama uses \"silu\" (SwiGLU)")
        }

        let config: LlamaConfig
        do {
            config = try JSONDecoder().decode(LlamaConfig.self, from: JSONSerialization.data(withJSONObject: fields))
        } catch let error as DecodingError {
            throw unsupported(describe(error))
        }
        try config.validate()

        if let headDim = fields["head_dim"], !(headDim is NSNull), (headDim as? Int) != config.headDim {
            throw unsupported("head_dim is \(headDim) but hidden_size / num_attention_heads is \(config.headDim): distill needs head_dim = hidden_size / num_attention_heads")
        }
        return config
    }

    /// transformers 5 writes the rotary settings as `rope_parameters: {rope_theta, rope_type}`, with or
    /// without the flat `rope_theta` of 4.x. Returns the fields with a flat `rope_theta`, after checking
    /// that `rope_parameters` (when present) describes plain rotary embeddings and agrees with it.
    private static func flattenRopeParameters(_ fields: [String: Any],
                                              unsupported: (String) -> ModelError) throws -> [String: Any] {
        guard let value = fields["rope_parameters"], !(value is NSNull) else { return fields }
        guard let parameters = value as? [String: Any] else {
            throw unsupported("rope_parameters is \(value): expected an object such as {\"rope_type\": \"default\", \"rope_theta\": 10000.0}")
        }
        // Older configs name the kind "type"; a missing kind is transformers' default.
        let kind = parameters["rope_type"] ?? parameters["type"] ?? "default"
        guard (kind as? String) == "default" else {
            throw unsupported("rope_parameters has rope_type \(kind): distill supports only plain rotary embeddings (rope_type \"default\", no scaling)")
        }
        guard let theta = parameters["rope_theta"], !(theta is NSNull) else { return fields }
        guard let number = theta as? NSNumber, String(cString: number.objCType) != "c" else {
            throw unsupported("rope_parameters.rope_theta is \(theta): it must be a number")
        }
        let nestedTheta = number.doubleValue
        var flattened = fields
        if let flat = fields["rope_theta"], !(flat is NSNull) {
            guard let flatTheta = (flat as? NSNumber)?.doubleValue, Float(flatTheta) == Float(nestedTheta) else {
                throw unsupported("rope_theta is \(flat) but rope_parameters.rope_theta is \(theta): make them equal (or remove the flat rope_theta)")
            }
        }
        flattened["rope_theta"] = nestedTheta
        return flattened
    }

    private static func describe(_ error: DecodingError) -> String {
        func field(_ path: [CodingKey]) -> String { path.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .keyNotFound(let key, _): return "the field '\(key.stringValue)' is missing"
        case .valueNotFound(_, let context): return "the field '\(field(context.codingPath))' is null"
        case .typeMismatch(let type, let context): return "the field '\(field(context.codingPath))' is not a \(type)"
        case .dataCorrupted(let context): return "the field '\(field(context.codingPath))' is invalid: \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// A token id field: an integer, or a list whose first element is used (some configs list several eos ids).
    private static func tokenID(_ value: Any?) -> Int? {
        if let list = value as? [Any] { return tokenID(list.first) }
        guard let number = value as? NSNumber, String(cString: number.objCType) != "c" else { return nil }
        return value as? Int
    }
}

// MARK: - weights

extension HFModelDirectory {
    private static func openWeights(in directory: URL) throws -> [String: SafetensorsFile] {
        let single = directory.appendingPathComponent(weightsFileName)
        let index = directory.appendingPathComponent(indexFileName)
        if FileManager.default.fileExists(atPath: single.path) {
            let file = try SafetensorsFile(url: single)
            return Dictionary(uniqueKeysWithValues: file.tensorNames.map { ($0, file) })
        }
        guard let indexContents = FileManager.default.contents(atPath: index.path) else {
            throw ModelError.badCheckpoint("no \(weightsFileName) or \(indexFileName) in \(directory.path): distill reads safetensors weights only (convert pytorch_model.bin first)")
        }
        guard let indexObject = (try? JSONSerialization.jsonObject(with: indexContents)) as? [String: Any],
              let weightMap = indexObject["weight_map"] as? [String: String] else {
            throw ModelError.badCheckpoint("\(index.path) has no weight_map object mapping tensor names to shard files")
        }
        var shards: [String: SafetensorsFile] = [:]
        var shardByTensor: [String: SafetensorsFile] = [:]
        for (tensor, shardName) in weightMap.sorted(by: { $0.key < $1.key }) {
            if shards[shardName] == nil {
                // Shards are plain file names beside the index; anything leading elsewhere is refused.
                guard !shardName.isEmpty, !shardName.split(separator: "/").contains("..") else {
                    throw ModelError.badCheckpoint("\(index.path) names shard '\(shardName)' for '\(tensor)', which is outside the model directory")
                }
                let shardURL = directory.appendingPathComponent(shardName)
                guard FileManager.default.fileExists(atPath: shardURL.path) else {
                    throw ModelError.badCheckpoint("\(index.path) puts '\(tensor)' in shard '\(shardName)', which does not exist in \(directory.path): the download is incomplete")
                }
                shards[shardName] = try SafetensorsFile(url: shardURL)
            }
            guard let shard = shards[shardName], shard.contains(tensor) else {
                throw ModelError.badCheckpoint("\(index.path) puts '\(tensor)' in shard '\(shardName)', but that shard has no such tensor: the index and shards do not match")
            }
            shardByTensor[tensor] = shard
        }
        return shardByTensor
    }
}
