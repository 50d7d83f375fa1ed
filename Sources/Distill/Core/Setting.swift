/// A setting a user chooses for a run. Library errors name the setting, never a command-line flag: the
/// CLI maps each setting to its flag in one place (and a recipe to its JSON field), so a message always
/// names what the user actually typed. The raw value is the recipe/JSON name.
public enum Setting: String, Sendable, CaseIterable, Codable {
    // Data, model and outputs.
    case data, output, tokenizer, preset, config, context, threads, resume
    // The optimisation (TrainingParameters).
    case steps, batchSize = "batch_size", accumulation, learningRate = "lr", warmup, weightDecay = "weight_decay"
    case gradientClip = "grad_clip", seed, evalEvery = "eval_every", evalBatches = "eval_batches"
    case saveEvery = "save_every", logEvery = "log_every"
    // The distillation objective.
    case teacher, teacherWeights = "teacher_weights", ceWeight = "ce_weight", kdWeight = "kd_weight", temperature
    case divergence, beta, skewAlpha = "skew_alpha", tauSquared = "tau_squared", teacherTopK = "teacher_top_k"
    case featureWeight = "feature_weight", layerMap = "layer_map", featureDistance = "feature_distance"
    case rkdDistanceWeight = "rkd_distance_weight", rkdAngleWeight = "rkd_angle_weight"
    case initFromTeacher = "init_from_teacher"
    case kdSchedule = "kd_schedule", temperatureSchedule = "temperature_schedule"
    // Distillation across tokenizers (the teacher reads the text through its own tokenizer).
    case crossTokenizer = "cross_tokenizer"
    // Mutual learning.
    case peerOutput = "peer_output", peerPreset = "peer_preset", peerConfig = "peer_config"
    case peer
    // On-policy and sequence-level distillation: generated rows and their sampler.
    case onPolicy = "on_policy", teacherGenerated = "teacher_generated", promptTokens = "prompt_tokens"
    case newTokens = "new_tokens", sampleTemperature = "sample_temperature", sampleTopK = "sample_top_k"
    case sampleTopP = "sample_top_p", lossOnPrompt = "loss_on_prompt"
    // Cached teachers and born-again generations.
    case teacherCache = "teacher_cache", samples, topK = "top_k", count, teachWith = "teach_with"
    // Tokenizer, token files, evaluation and sampling.
    case input, vocabSize = "vocab_size", modelType = "model_type", valFraction = "val_fraction"
    case text, stride, prompt, topP = "top_p"
}

/// An error whose message names settings. Each front end spells a setting the way its user gave it: the
/// CLI as its flag (`--vocab-size`), a recipe as its field (`tokenizer.vocab_size`); `description`
/// uses the setting's own name.
public protocol NamesSettings: Error, CustomStringConvertible {
    func message(naming name: (Setting) -> String) -> String
}

extension NamesSettings {
    public var description: String { message(naming: \.rawValue) }
}

/// A value of one setting that a run cannot use. `problem` reads after the setting's name, e.g.
/// "must be positive (got 0)"; the CLI prints it after the flag (`--steps must be positive (got 0)`).
public struct SettingError: NamesSettings, Equatable, Sendable {
    public let setting: Setting
    public let problem: String

    public init(_ setting: Setting, _ problem: String) {
        self.setting = setting
        self.problem = problem
    }

    /// The message with the setting called `name` (a flag, a recipe field).
    public func message(naming name: String) -> String { "\(name) \(problem)" }

    public func message(naming name: (Setting) -> String) -> String { message(naming: name(setting)) }

    /// Refuses a value that is not a finite number (NaN or ±infinity).
    public static func requireFinite(_ value: Float, _ setting: Setting) throws {
        guard value.isFinite else { throw SettingError(setting, "must be a finite number (got \(value))") }
    }
}
