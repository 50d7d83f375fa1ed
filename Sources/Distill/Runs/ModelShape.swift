import Foundation

/// A model's shape as a command or a recipe asks for it: a named preset or a `config.json` file.
public enum ModelShape: Sendable, Equatable {
    case preset(String)
    case config(String)

    public var presetName: String? { if case .preset(let name) = self { return name } else { return nil } }
    public var configPath: String? { if case .config(let path) = self { return path } else { return nil } }

    /// The shape with its config file read (through the model's strict config reader).
    public func read() throws -> ReadShape {
        switch self {
        case .preset(let name): return .preset(name)
        case .config(let path): return .config(try ModelShape.readConfigFile(path), path: path)
        }
    }

    /// A `config.json` given by path, through the model's strict config reader.
    public static func readConfigFile(_ path: String) throws -> LlamaConfig {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw IOError.missing(path) }
        if isDirectory.boolValue { throw SettingError(.config, "\(path) is a folder; give the path of a config.json file") }
        return try LlamaConfig.decode(try RegularFile.read(path), source: path)
    }
}

/// A shape whose config file has been read: what the rules below decide from.
public enum ReadShape: Sendable, Equatable {
    case preset(String)
    case config(LlamaConfig, path: String)
}

/// A model's configuration and the context it trains with.
public struct ResolvedShape: Sendable, Equatable {
    /// Its `maxPositionEmbeddings` is at least `context`.
    public var config: LlamaConfig
    public var context: Int
}

/// The rules that decide a model's shape, context, depth and feature layer map from typed values. They
/// are pure: `Plan` (the dry run of a recipe) and `TrainingRun` (every training command) both call them,
/// so the two decide the same way and refuse the same things.
public enum ShapeRules {
    /// A model trained from scratch (a teacher, a baseline, a mutual peer, a student of a cache or of a
    /// teacher with another tokenizer): a config keeps its `max_position_embeddings` and the context
    /// defaults to it; a preset (`defaultPreset` when no shape is given) takes the context, which defaults
    /// to `defaultContext`.
    public static func scratch(_ shape: ReadShape?, defaultPreset: String, context: Int?, vocabSize: Int,
                               defaultContext: Int = 256) throws -> ResolvedShape {
        switch shape ?? .preset(defaultPreset) {
        case let .config(config, path):
            guard config.vocabSize == vocabSize else {
                throw SettingError(.config, "\(path) has vocab_size \(config.vocabSize) but the tokenizer has \(vocabSize) pieces: set \"vocab_size\": \(vocabSize)")
            }
            let context = context ?? config.maxPositionEmbeddings
            if context < 1 { throw SettingError(.context, "must be positive (got \(context))") }
            guard context <= config.maxPositionEmbeddings else {
                throw SettingError(.context, "is \(context), longer than max_position_embeddings \(config.maxPositionEmbeddings) in \(path)")
            }
            return ResolvedShape(config: config, context: context)
        case .preset(let name):
            let context = context ?? defaultContext
            if context < 1 { throw SettingError(.context, "must be positive (got \(context))") }
            return ResolvedShape(config: try LlamaConfig.preset(name, vocabSize: vocabSize, context: context), context: context)
        }
    }

    /// A student of a teacher whose config is `teacher` and which was trained at `teacherContext`: the
    /// student takes the teacher's vocabulary (a Hugging Face head may be padded) and a context of at most
    /// the teacher's, by default min(256, the teacher's). Started from the teacher's blocks
    /// (`initFromTeacher`), it has the teacher's shape with the depth of its preset or config (a config
    /// must otherwise match the teacher), or half the teacher's; otherwise its shape is its own, by
    /// default the student preset of the teacher's size.
    public static func student(_ shape: ReadShape?, context: Int?, initFromTeacher: Bool, teacher: LlamaConfig,
                               teacherContext: Int) throws -> ResolvedShape {
        let defaultContext = min(256, teacherContext)
        var resolved: ResolvedShape
        if initFromTeacher {
            var config = teacher
            config.numHiddenLayers = try initialDepth(shape, teacher: teacher)
            let chosen = context ?? defaultContext
            if chosen < 1 { throw SettingError(.context, "must be positive (got \(chosen))") }
            config.maxPositionEmbeddings = max(config.maxPositionEmbeddings, chosen)
            resolved = ResolvedShape(config: config, context: chosen)
        } else {
            resolved = try scratch(shape, defaultPreset: teacher.hiddenSize >= 256 ? "small-student" : "tiny-student",
                                   context: context, vocabSize: teacher.vocabSize, defaultContext: defaultContext)
        }
        guard resolved.context <= teacherContext else {
            throw SettingError(.context, "is \(resolved.context), longer than the teacher's context \(teacherContext)")
        }
        return resolved
    }

    /// The depth of a student started from the teacher's blocks: a preset's or a config's depth (a config
    /// must otherwise have the teacher's shape, since the blocks are copied), or half the teacher's.
    static func initialDepth(_ shape: ReadShape?, teacher: LlamaConfig) throws -> Int {
        let depth: Int
        switch shape {
        case let .config(config, path):
            let fields: [(String, Int, Int)] = [
                ("hidden_size", config.hiddenSize, teacher.hiddenSize), ("intermediate_size", config.intermediateSize, teacher.intermediateSize),
                ("num_attention_heads", config.numAttentionHeads, teacher.numAttentionHeads),
                ("num_key_value_heads", config.numKeyValueHeads, teacher.numKeyValueHeads), ("vocab_size", config.vocabSize, teacher.vocabSize),
            ]
            for (name, given, teachers) in fields where given != teachers {
                throw SettingError(.config, "\(path) has \(name) \(given) but the teacher's is \(teachers); starting from the teacher's blocks "
                    + "copies its shape, so only num_hidden_layers may differ")
            }
            depth = config.numHiddenLayers
        case .preset(let name):
            depth = try LlamaConfig.preset(name, vocabSize: teacher.vocabSize).numHiddenLayers
        case nil:
            depth = max(1, teacher.numHiddenLayers / 2)
        }
        guard depth >= 1 && depth <= teacher.numHiddenLayers else {
            throw SettingError(.initFromTeacher, "needs a student of 1 to \(teacher.numHiddenLayers) blocks (the teacher's depth), got \(depth)")
        }
        return depth
    }

    /// The feature-distillation layer map: `pairs` checked against both depths, or the uniform map.
    public static func layerMap(_ pairs: [LayerPair]?, student: LlamaConfig, teacher: LlamaConfig) throws -> LayerMap {
        if let pairs { return try LayerMap(pairs: pairs, studentLayers: student.numHiddenLayers, teacherLayers: teacher.numHiddenLayers) }
        return try LayerMap.uniform(studentLayers: student.numHiddenLayers, teacherLayers: teacher.numHiddenLayers)
    }
}
