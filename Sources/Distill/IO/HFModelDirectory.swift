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
        let (url, contents) = try Self.readConfigFile(in: directory)
        config = try LlamaConfig.decode(contents, source: url.path)
        let fields = (try? JSONSerialization.jsonObject(with: contents)) as? [String: Any] ?? [:]
        bosTokenID = Self.tokenID(fields["bos_token_id"])
        eosTokenID = Self.tokenID(fields["eos_token_id"])
        padTokenID = Self.tokenID(fields["pad_token_id"])
        shardByTensor = try Self.openWeights(in: directory)
    }

    /// Reads and checks only `config.json` of `directory`, without touching the weights.
    public static func readConfig(in directory: URL) throws -> LlamaConfig {
        let (url, contents) = try readConfigFile(in: directory)
        return try LlamaConfig.decode(contents, source: url.path)
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

    /// Checks, from the headers alone, that the checkpoint holds exactly the weights the config needs,
    /// each with its shape: a missing, misshapen or extra tensor is an error naming it (a config of one
    /// layer over a checkpoint of two is refused, not half-loaded). With tied embeddings the checkpoint
    /// may still store `lm_head.weight` (transformers sometimes saves it) with the embedding's shape;
    /// `ModelDirectory.load` checks that its values equal the embedding.
    public func checkTensors() throws {
        var unused = Set(shardByTensor.keys)
        try LlamaTensors.forEach(in: config) { tensor in
            try checkShape(ofTensor: tensor.name, expected: tensor.shape)
            unused.remove(tensor.name)
        }
        if config.tieWordEmbeddings, unused.remove(HFLlamaTensors.outputHead) != nil {
            try checkShape(ofTensor: HFLlamaTensors.outputHead, expected: [config.vocabSize, config.hiddenSize])
        }
        if let extra = unused.min() {
            let layers = Set(unused.compactMap { name -> Int? in
                let parts = name.split(separator: ".")
                return parts.count > 2 && parts[0] == "model" && parts[1] == "layers" ? Int(parts[2]) : nil
            })
            let hint = layers.isEmpty ? "" : " (it holds layers the config's num_hidden_layers \(config.numHiddenLayers) does not have)"
            throw ModelError.mismatch("\(directory.path): tensor '\(extra)' is not part of a Llama model of this config.json (\(unused.count) such tensor\(unused.count == 1 ? "" : "s"))\(hint): the weights do not belong to this config")
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
    /// The path and bytes of `config.json` in `directory`; its fields are checked by `LlamaConfig.decode`.
    private static func readConfigFile(in directory: URL) throws -> (URL, Data) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError.notAModel("\(directory.path) is not a directory: give the folder that holds config.json")
        }
        let url = directory.appendingPathComponent(configFileName)
        do { return (url, try RegularFile.read(url.path)) } catch IOError.missing {
            throw ModelError.notAModel("no \(configFileName) in \(directory.path): give a Hugging Face model folder")
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
        // Every tensor of every shard is the index's: a tensor it does not list would be silently dropped.
        for (shardName, shard) in shards.sorted(by: { $0.key < $1.key }) {
            if let unlisted = shard.tensorNames.first(where: { shardByTensor[$0] == nil }) {
                throw ModelError.badCheckpoint("shard '\(shardName)' holds '\(unlisted)', which \(index.path) does not list: the index and shards do not match")
            }
        }
        return shardByTensor
    }
}
