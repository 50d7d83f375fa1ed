import Foundation

/// A model on disk is a directory: `config.json` (Hugging Face names), `model.safetensors` (Hugging
/// Face tensor names) and `tokenizer.model` (a copy of the SentencePiece model it was trained with).
public enum ModelDirectory {
    public static let configFile = "config.json"
    public static let weightsFile = "model.safetensors"
    public static let tokenizerFile = "tokenizer.model"

    /// The weights as named tensors (a tied head is stored once, as the embedding).
    public static func tensors(of model: LlamaModel) -> [SafetensorsTensor] {
        model.layout.tensors.map { tensor in
            SafetensorsTensor(name: tensor.name, shape: tensor.shape,
                              values: Array(UnsafeBufferPointer(start: model.parameters.baseAddress! + tensor.offset,
                                                                count: tensor.count)))
        }
    }

    /// Writes config, weights and (when given) a copy of the tokenizer; each file atomically.
    public static func save(_ model: LlamaModel, tokenizerModel: String?, to directory: URL,
                            metadata: [String: String] = [:]) throws {
        try AtomicFile.ensureDirectory(directory)
        try writeConfig(model.config, to: directory.appendingPathComponent(configFile))
        try SafetensorsFile.write(tensors: tensors(of: model), metadata: metadata.merging(["format": "pt"]) { a, _ in a },
                                  to: directory.appendingPathComponent(weightsFile))
        if let tokenizerModel {
            let destination = directory.appendingPathComponent(tokenizerFile)
            if URL(fileURLWithPath: tokenizerModel).standardizedFileURL != destination.standardizedFileURL {
                guard let bytes = FileManager.default.contents(atPath: tokenizerModel) else {
                    throw IOError.missing(tokenizerModel)
                }
                try AtomicFile.write(bytes, to: destination)
            }
        }
    }

    /// config.json with the fields `transformers` needs to recognise a Llama model.
    public static func writeConfig(_ config: LlamaConfig, to url: URL, extra: [String: Any] = [:]) throws {
        var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) as? [String: Any] ?? [:]
        object["architectures"] = ["LlamaForCausalLM"]
        object["model_type"] = "llama"
        object["hidden_act"] = "silu"
        object["head_dim"] = config.headDim
        for (key, value) in extra { object[key] = value }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data, to: url)
    }

    /// Reads a config.json, with a clear error when it is missing or malformed.
    public static func readConfig(_ url: URL) throws -> LlamaConfig {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError.notAModel("\(url.path) is missing: a model directory has config.json, model.safetensors and tokenizer.model")
        }
        do {
            let config = try JSONDecoder().decode(LlamaConfig.self, from: data)
            try config.validate()
            return config
        } catch let error as ModelError {
            throw error
        } catch {
            throw ModelError.invalidConfig("\(url.path) is not a valid Llama config.json (\(error.localizedDescription))")
        }
    }

    /// Copies the named tensors of `file` into `model`, checking every shape.
    public static func loadWeights(into model: LlamaModel, from file: SafetensorsFile) throws {
        for tensor in model.layout.tensors {
            guard file.contains(tensor.name) else {
                throw ModelError.badCheckpoint("\(file.url.path) has no tensor '\(tensor.name)'")
            }
            let info = try file.info(tensor.name)
            guard info.shape == tensor.shape else {
                throw ModelError.badCheckpoint("tensor '\(tensor.name)' in \(file.url.path) has shape \(info.shape) but the config needs \(tensor.shape)")
            }
            let values = try file.floats(tensor.name)
            values.withUnsafeBufferPointer {
                (model.parameters.baseAddress! + tensor.offset).update(from: $0.baseAddress!, count: tensor.count)
            }
        }
    }

    /// Loads a model directory written by `save`.
    public static func load(_ directory: URL) throws -> LlamaModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError.notAModel("\(directory.path) is not a directory: pass a model directory made by `distill train`")
        }
        let config = try readConfig(directory.appendingPathComponent(configFile))
        let model = try LlamaModel(config: config, seed: 0)
        let weights = directory.appendingPathComponent(weightsFile)
        guard FileManager.default.fileExists(atPath: weights.path) else {
            throw ModelError.notAModel("\(directory.path) has no \(weightsFile)")
        }
        try loadWeights(into: model, from: try SafetensorsFile(url: weights))
        return model
    }
}
