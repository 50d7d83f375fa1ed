import Foundation

/// Where a training run reads and writes, and with which model shape.
public struct TrainingRequest: Sendable {
    /// Token file made by `prepare`.
    public var data: String
    /// Model directory to write (weights, tokenizer, checkpoints, metrics).
    public var output: String
    /// SentencePiece model of the data; nil: the copy `prepare` left beside the token file.
    public var tokenizer: String?
    /// A named preset, or a `config.json` path (Hugging Face names); neither: `defaultPreset`.
    public var preset: String?
    public var config: String?
    public var defaultPreset = "tiny"
    /// Everything about the optimisation. Its `context` is ignored: see `context`.
    public var parameters = TrainingParameters()
    /// Tokens per sequence; nil: the model's context (a config's `max_position_embeddings`, 256 for a
    /// preset, at most the teacher's for a student).
    public var context: Int?
    /// Continue the checkpoint in `output` instead of refusing to touch it.
    public var resume = false

    public init(data: String, output: String) {
        self.data = data
        self.output = output
    }
}

/// The student side of `distill student`.
public struct StudentRequest: Sendable {
    /// Model directories (ours or Hugging Face Llama ones); several form an ensemble.
    public var teachers: [String]
    public var settings: DistillationSettings
    /// "S:T,..." pairs for feature distillation; nil: the uniform map.
    public var layerMap: String?
    /// DistilBERT-style start from every k-th teacher block.
    public var initFromTeacher = false
    /// Weights of the ensemble's members (nil: equal).
    public var teacherWeights: [Float]?
    /// A teacher cache (`cache-teacher`) instead of `teachers`: no teacher runs.
    public var teacherCache: String?
    /// With a cache: KL against the cached target, or the soft cross-entropy.
    public var cachedLoss = CachedTargetLoss.forwardKL
    /// False when the temperature was left out: a cache's own τ is then used.
    public var temperatureGiven = true
    /// The objective for a teacher whose tokenizer differs from the data's (nil: the tokenizers must match).
    public var crossTokenizer: CrossTokenizerLoss?

    public init(teachers: [String], settings: DistillationSettings) {
        self.teachers = teachers
        self.settings = settings
    }
}

/// What a finished or interrupted run reports.
public struct TrainingOutcome: Sendable {
    public let output: URL
    public let parameterCount: Int
    public let step: Int
    public let totalSteps: Int
    /// Stopped by `shouldStop` (saved, resumable) before `totalSteps`.
    public let interrupted: Bool
    /// Training time in seconds, earlier sessions of a resumed run included.
    public let seconds: Double
    /// Training tokens per second over this process's steps.
    public let tokensPerSecond: Double
}

/// How a run talks to whoever started it.
public struct TrainingCallbacks {
    /// Progress, validation, checkpoints.
    public var event: (TrainingEvent) -> Void
    /// One-off lines: the model's summary, "resumed at step ...".
    public var log: (String) -> Void
    /// Asked between steps; true saves a checkpoint and returns an interrupted outcome.
    public var shouldStop: () -> Bool

    public init(event: @escaping (TrainingEvent) -> Void = { _ in }, log: @escaping (String) -> Void = { _ in },
                shouldStop: @escaping () -> Bool = { false }) {
        self.event = event
        self.log = log
        self.shouldStop = shouldStop
    }
}

/// The one path of every training command (`train`, `student`, `mutual`, and the runs of `distill run`):
/// open and check the data and tokenizer, decide the model's shape and context, guard and lock the
/// outputs, build or resume the trainers, run them, and report. A fix here reaches every command.
public enum TrainingRun {
    /// The data of a run, checked once.
    public struct Inputs {
        public let data: TokenFile
        /// The tokenizer copied into the model directory (its hash is the data's).
        public let tokenizerModel: String
    }

    /// Opens the token file (every id checked against its vocabulary) and its tokenizer.
    public static func openInputs(_ request: TrainingRequest) throws -> Inputs {
        let data = try TokenFile(path: request.data)
        try data.checkTokenRange()
        let tokenizerModel = request.tokenizer ?? TokenFile.companionTokenizerPath(for: data.path)
        try data.checkTokenizer(Tokenizer(modelPath: tokenizerModel))
        return Inputs(data: data, tokenizerModel: tokenizerModel)
    }

    /// The model's shape and the run's context, decided here and nowhere else: a `config` keeps its
    /// `max_position_embeddings` and the context defaults to it; a preset takes the context, which
    /// defaults to `defaultContext`.
    public static func modelConfig(_ request: TrainingRequest, vocabSize: Int, defaultContext: Int = 256) throws -> (LlamaConfig, context: Int) {
        if let path = request.config {
            let config = try readConfigFile(path)
            guard config.vocabSize == vocabSize else {
                throw SettingError(.config, "\(path) has vocab_size \(config.vocabSize) but the data's tokenizer has \(vocabSize) pieces")
            }
            let context = request.context ?? config.maxPositionEmbeddings
            guard context <= config.maxPositionEmbeddings else {
                throw SettingError(.context, "is \(context), longer than max_position_embeddings \(config.maxPositionEmbeddings) in \(path)")
            }
            return (config, context)
        }
        let context = request.context ?? defaultContext
        if context < 1 { throw SettingError(.context, "must be positive (got \(context))") }
        return (try LlamaConfig.preset(request.preset ?? request.defaultPreset, vocabSize: vocabSize, context: context), context)
    }

    /// A `config.json` given by path, through the model's strict config reader.
    static func readConfigFile(_ path: String) throws -> LlamaConfig {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw IOError.missing(path) }
        if isDirectory.boolValue { throw SettingError(.config, "\(path) is a folder; give the path of a config.json file") }
        return try LlamaConfig.decode(try RegularFile.read(path), source: path)
    }

    // MARK: the commands

    /// `distill train`: next-token cross-entropy from scratch.
    public static func train(_ request: TrainingRequest, callbacks: TrainingCallbacks) throws -> TrainingOutcome {
        let inputs = try openInputs(request)
        let (config, context) = try modelConfig(request, vocabSize: inputs.data.vocabSize)
        var parameters = request.parameters
        parameters.context = context
        try parameters.validate()
        let output = try claimOutput(request, reads: [])
        let model = try LlamaModel(config: config, seed: parameters.seed)
        let trainer = try Trainer(model: model, objective: CrossEntropyObjective(), parameters: parameters,
                                  tokenizerHash: inputs.data.tokenizerHash)
        callbacks.log("model: \(model.parameterCount) parameters (width \(config.hiddenSize), \(config.numHiddenLayers) layers, "
            + "\(config.numAttentionHeads) heads, vocab \(config.vocabSize), context \(context))")
        return try execute([trainer], outputs: [output], inputs: inputs, callbacks: [callbacks])[0]
    }

    /// `distill student`: a student trained from frozen teacher(s).
    public static func student(_ request: TrainingRequest, _ student: StudentRequest,
                               callbacks: TrainingCallbacks) throws -> TrainingOutcome {
        if student.crossTokenizer != nil && student.teacherCache != nil {
            throw CrossTokenizerError.unsupported(.teacherCache, why: "a cache holds a teacher's targets in the data's own vocabulary")
        }
        if let cache = student.teacherCache { return try cachedStudent(request, student, cache: cache, callbacks: callbacks) }
        guard !student.teachers.isEmpty else { throw SettingError(.teacher, "is missing: give at least one teacher model directory") }
        let inputs = try openInputs(request)
        try checkTeacherTokenizers(student, data: inputs.data, dataPath: request.data)
        if let loss = student.crossTokenizer { return try crossTokenizerStudent(request, student, inputs: inputs, loss: loss, callbacks: callbacks) }
        var settings = student.settings
        try settings.validate()
        try checkRelationalBatch(settings.weights, batchSize: request.parameters.batchSize)
        let output = try claimOutput(request, reads: student.teachers.map { OutputGuard.Role(Setting.teacher.rawValue, $0) })
        let teachers = try student.teachers.map { try loadTeacher($0, data: inputs.data, dataPath: request.data) }
        let first = teachers[0]

        let model: LlamaModel, context: Int
        if student.initFromTeacher {
            context = try teacherContext(request, teacher: first)
            model = try studentFromTeacher(first, layers: try initialDepth(request, teacher: first))
        } else {
            var shape = request
            shape.defaultPreset = first.config.hiddenSize >= 256 ? "small-student" : "tiny-student"
            let (config, chosen) = try modelConfig(shape, vocabSize: first.config.vocabSize,
                                                   defaultContext: min(256, first.config.maxPositionEmbeddings))
            context = chosen
            guard context <= first.config.maxPositionEmbeddings else {
                throw SettingError(.context, "is \(context), longer than the teacher's context \(first.config.maxPositionEmbeddings)")
            }
            model = try LlamaModel(config: config, seed: request.parameters.seed)
        }
        if settings.weights.feature > 0 {
            let depths = (model.config.numHiddenLayers, first.config.numHiddenLayers)
            settings.layerMap = try student.layerMap.map { try LayerMap(parsing: $0, studentLayers: depths.0, teacherLayers: depths.1) }
                ?? LayerMap.uniform(studentLayers: depths.0, teacherLayers: depths.1)
        }
        var parameters = request.parameters
        parameters.context = context
        try parameters.validate()
        let objective = try DistillationObjective(teachers: teachers, studentConfig: model.config, settings: settings,
                                                  seed: parameters.seed, teacherWeights: student.teacherWeights)
        let trainer = try Trainer(model: model, objective: objective, parameters: parameters, tokenizerHash: inputs.data.tokenizerHash)
        let sizes = teachers.map { String($0.parameterCount) }.joined(separator: " + ")
        callbacks.log("teacher\(teachers.count > 1 ? "s" : ""): \(sizes) parameters; student: \(model.parameterCount) parameters "
            + "(width \(model.config.hiddenSize), \(model.config.numHiddenLayers) layers, context \(context)); objective: "
            + describe(settings).joined(separator: ", "))
        return try execute([trainer], outputs: [output], inputs: inputs, callbacks: [callbacks])[0]
    }

    /// `distill student --teacher-cache`: a student trained from a teacher cache, no teacher loaded.
    /// The KD target is the cached distribution at the cache's temperature (forward KL or the soft
    /// cross-entropy); the cache must be the one of this token file, and a resume must use the same cache.
    static func cachedStudent(_ request: TrainingRequest, _ student: StudentRequest, cache path: String,
                              callbacks: TrainingCallbacks) throws -> TrainingOutcome {
        guard student.teachers.isEmpty else {
            throw SettingError(.teacherCache, "replaces the teacher: give a teacher cache or teachers, not both")
        }
        if student.initFromTeacher {
            throw SettingError(.initFromTeacher, "copies a teacher's blocks, which a teacher cache does not hold: use a live teacher")
        }
        if student.teacherWeights != nil {
            throw SettingError(.teacherWeights, "weigh the members of a live ensemble; a cache's ensemble was weighed when it was built")
        }
        let inputs = try openInputs(request)
        let output = try claimOutput(request, reads: [OutputGuard.Role(Setting.teacherCache.rawValue, path)])
        let cache = try TeacherCache(path: path)
        try cache.check(against: inputs.data)
        var settings = student.settings
        if !student.temperatureGiven { settings.logits.temperature = cache.temperature }
        try settings.validate()
        let (config, context) = try modelConfig(request, vocabSize: cache.vocabSize, defaultContext: min(256, cache.window))
        var parameters = request.parameters
        parameters.context = context
        try parameters.validate()
        let model = try LlamaModel(config: config, seed: parameters.seed)
        let objective = try CachedTeacherObjective(cache: cache, studentConfig: config, settings: settings, loss: student.cachedLoss)
        let trainer = try Trainer(model: model, objective: objective, parameters: parameters, tokenizerHash: inputs.data.tokenizerHash)
        var terms = ["ce \(settings.weights.ce)"]
        if settings.weights.kd > 0 {
            terms.append("kd \(settings.weights.kd) (\(student.cachedLoss.rawValue) on the cached \(cache.mode), τ \(cache.temperature))")
        }
        callbacks.log("teacher cache: \(path) (\(cache.mode), \(cache.tokenCount) positions); student: \(model.parameterCount) parameters "
            + "(width \(config.hiddenSize), \(config.numHiddenLayers) layers, context \(context)); objective: " + terms.joined(separator: ", "))
        return try execute([trainer], outputs: [output], inputs: inputs, callbacks: [callbacks])[0]
    }

    /// `distill mutual`: N ≥ 2 peers trained in lockstep on the same batches, each towards the labels
    /// and the mean of its divergences to the others' current distributions (Deep Mutual Learning).
    /// Each request names a peer's output and shape; the data and the optimisation are the first
    /// request's. Two peers train exactly as the two-peer `mutual` always has.
    public static func mutual(_ peers: [TrainingRequest], settings: DistillationSettings,
                              callbacks: [TrainingCallbacks]) throws -> [TrainingOutcome] {
        guard peers.count >= 2, callbacks.count == peers.count else {
            throw SettingError(.peerOutput, "names \(peers.count - 1) peer(s); mutual learning trains at least two models")
        }
        try settings.validate()
        try OutputGuard.refuseSharedOutputs(peers.enumerated().map {
            OutputGuard.Role($0.offset == 0 ? Setting.output.rawValue : Setting.peerOutput.rawValue, $0.element.output)
        })
        let inputs = try openInputs(peers[0])
        let shapes = try peers.map { try modelConfig($0, vocabSize: inputs.data.vocabSize) }
        let configs = shapes.map(\.0)
        var parameters = peers[0].parameters
        // The same windows for every peer: the longest context all of their shapes allow.
        parameters.context = shapes.map(\.context).min() ?? 256
        try parameters.validate()
        let outputs = try peers.map { try claimOutput($0, reads: []) }
        // Different initial weights, the same batches (the sampler's seed is the run's).
        let models = try configs.enumerated().map { try LlamaModel(config: $0.element, seed: parameters.seed &+ UInt64($0.offset)) }
        let objectives = try MutualObjective.objectives(peers: models, settings: settings)
        let trainers = try models.indices.map { index -> Trainer in
            try Trainer(model: models[index], objective: objectives[index], parameters: parameters, tokenizerHash: inputs.data.tokenizerHash)
        }
        callbacks[0].log("models: " + models.map { String($0.parameterCount) }.joined(separator: ", ")
            + " parameters; objective of each: " + describe(settings).joined(separator: ", ")
            + (models.count == 2 ? " towards the other" : " towards the mean over the others"))
        return try execute(trainers, outputs: outputs, inputs: inputs, callbacks: callbacks)
    }

    // MARK: the shared steps

    /// A locked output directory that may be written: not an input, not someone else's model, not a
    /// run that would be overwritten without `resume`.
    public struct ClaimedOutput {
        public let url: URL
        public let resume: Bool
        /// nil on the ranks of a data-parallel run other than 0, which never write.
        let lock: OutputLock?
    }

    /// Checks and locks `request.output`: it must not be or hold one of the run's inputs (data,
    /// tokenizer, config, `reads`), must not hold a model that is not a run of ours, and must not hold a
    /// run unless `resume` continues it.
    /// Under mpirun only rank 0 claims the output: the other ranks never write.
    public static func claimOutput(_ request: TrainingRequest, reads: [OutputGuard.Role]) throws -> ClaimedOutput {
        guard ProcessGroup.world.isRoot else {
            return ClaimedOutput(url: URL(fileURLWithPath: request.output), resume: request.resume, lock: nil)
        }
        var inputs = [OutputGuard.Role(Setting.data.rawValue, request.data)] + reads
        if let tokenizer = request.tokenizer { inputs.append(OutputGuard.Role(Setting.tokenizer.rawValue, tokenizer)) }
        if let config = request.config { inputs.append(OutputGuard.Role(Setting.config.rawValue, config)) }
        try OutputGuard.refuseOverlap(output: OutputGuard.Role(Setting.output.rawValue, request.output), inputs: inputs)
        let url = URL(fileURLWithPath: request.output)
        try AtomicFile.ensureDirectory(url)
        let lock = try OutputLock(directory: url)
        let hasRun = Checkpoint.exists(in: url)
        if request.resume {
            guard hasRun else {
                throw TrainingError.cannotResume("no checkpoint in \(url.path): run without resume to start a new run")
            }
        } else if hasRun {
            throw SettingError(.resume, "is needed: \(url.path) already holds a training run (or choose another output)")
        } else if ["config.json", "model.safetensors", "model.safetensors.index.json"].contains(where: {
            FileManager.default.fileExists(atPath: url.appendingPathComponent($0).path)
        }) {
            throw SettingError(.output, "\(url.path) holds a model that is not a training run to resume: choose another output")
        }
        return ClaimedOutput(url: url, resume: request.resume, lock: lock)
    }

    /// Resumes or starts `trainers` in their outputs, runs them in lockstep, and reports.
    /// Under mpirun (`trainers[0].group`): the ranks first check that they run the same thing, rank 0
    /// alone reads a checkpoint and sends it to the others, and only rank 0 reports.
    public static func execute(_ trainers: [Trainer], outputs: [ClaimedOutput], inputs: Inputs,
                               callbacks: [TrainingCallbacks]) throws -> [TrainingOutcome] {
        let group = trainers[0].group
        let callbacks = group.isRoot ? callbacks : callbacks.map { TrainingCallbacks(shouldStop: $0.shouldStop) }
        if group.size > 1 {
            try group.agree(fingerprint(trainers, outputs: outputs, data: inputs.data), describe: describeDifference)
        }
        for (index, trainer) in trainers.enumerated() where outputs[index].resume {
            try group.together { if group.isRoot { try trainer.resume(from: outputs[index].url) } }
            trainer.shareState()
            callbacks[index].log("resumed \(outputs[index].url.path) at step \(trainer.step) of \(trainer.parameters.steps)")
        }
        // Validation batches of the global batch size: each rank scores its rows of them.
        var global = trainers[0].parameters
        global.batchSize *= group.size
        let validation = try group.together { try validationBatches(data: inputs.data, parameters: global) }
        if group.size > 1 {
            let p = trainers[0].parameters
            callbacks[0].log("data-parallel over \(group.size) processes: global batch \(p.batchSize) × \(p.accumulationSteps) × \(group.size) "
                + "= \(p.batchSize * p.accumulationSteps * group.size) sequences of \(p.context) tokens per step")
        }
        if validation.isEmpty {
            callbacks[0].log("warning: the validation split has \(inputs.data.validationTokens.count) tokens, fewer than one window of "
                + "\(trainers[0].parameters.context + 1); no validation")
        }
        // A run killed after its last checkpoint but while writing the model beside it resumes with
        // nothing left to train: write the model again so the directory matches its checkpoint.
        for (index, trainer) in trainers.enumerated() where group.isRoot && outputs[index].resume && trainer.step >= trainer.parameters.steps {
            try ModelDirectory.save(trainer.model, tokenizerModel: inputs.tokenizerModel, to: outputs[index].url)
        }
        let startSteps = trainers.map(\.step)
        let started = Date()
        let shouldStop = callbacks[0].shouldStop
        try Trainer.runTogether(trainers, trainingTokens: inputs.data.trainTokens, validation: validation,
                                outputs: outputs.map(\.url), tokenizerModel: inputs.tokenizerModel,
                                shouldStop: shouldStop) { index, event in callbacks[index].event(event) }
        let seconds = Date().timeIntervalSince(started)
        return trainers.enumerated().map { index, trainer in
            let p = trainer.parameters
            let tokens = Double((trainer.step - startSteps[index]) * p.batchSize * p.context * p.accumulationSteps * group.size)
            return TrainingOutcome(output: outputs[index].url, parameterCount: trainer.model.parameterCount, step: trainer.step,
                                   totalSteps: p.steps, interrupted: trainer.step < p.steps,
                                   seconds: trainer.secondsBeforeResume + seconds, tokensPerSecond: tokens / max(seconds, 1e-9))
        }
    }

    /// Fixed validation batches: windows spread evenly over the validation split (the same every time).
    /// Refuses more windows than the split has tokens: they could only repeat.
    public static func validationBatches(data: TokenFile, parameters: TrainingParameters) throws -> [Batch] {
        let tokens = data.validationTokens, window = parameters.context + 1
        guard tokens.count >= window else { return [] }
        let distinct = tokens.count - window + 1
        // Divided, not multiplied: a huge count must not overflow before it is refused.
        guard parameters.evalBatches <= max(1, distinct / parameters.batchSize) else {
            throw SettingError(.evalBatches, "is \(parameters.evalBatches), but the validation split (\(tokens.count) tokens) holds at most "
                + "\(max(1, distinct / parameters.batchSize)) batches of \(parameters.batchSize) distinct windows")
        }
        let total = parameters.evalBatches * parameters.batchSize
        var batches: [Batch] = []
        let spacing = max(1, (tokens.count - window) / max(total - 1, 1))
        var ids = [Int32](repeating: 0, count: window)
        for b in 0..<parameters.evalBatches {
            var inputs: [Int32] = [], targets: [Int32] = [], starts: [Int] = []
            for row in 0..<parameters.batchSize {
                let start = min((b * parameters.batchSize + row) * spacing, tokens.count - window)
                ids.withUnsafeMutableBufferPointer { tokens.copy(from: start, into: $0) }
                inputs += ids.dropLast()
                targets += ids.dropFirst()
                starts.append(tokens.tokenRange.lowerBound + start)
            }
            batches.append(Batch(batchSize: parameters.batchSize, contextLength: parameters.context, inputs: inputs, targets: targets,
                                 starts: starts))
        }
        return batches
    }

    /// The full validation split scored as `distill eval` scores it (every token once).
    public static func scoreValidation(model: LlamaModel, data: TokenFile) throws -> PerplexityReport {
        guard data.validationTokens.count >= 2 else { throw EvaluationError.tooShort(data.validationTokens.count) }
        return try scoreTokens(model: model, tokens: Array(data.validationTokens), bytes: data.validationByteCount)
    }

    /// A teacher model directory whose tokenizer is the data's.
    public static func loadTeacher(_ path: String, data: TokenFile, dataPath: String) throws -> LlamaModel {
        let directory = URL(fileURLWithPath: path)
        let model = try ModelDirectory.load(directory)
        let tokenizer = try Tokenizer(modelPath: try HFModelDirectory(directory).tokenizerModel().path)
        guard tokenizer.modelHash == data.tokenizerHash else {
            throw TrainingError.tokenizerMismatch("\(path) uses another tokenizer than \(dataPath): logit distillation needs a shared vocabulary, so prepare the data with the teacher's tokenizer.model")
        }
        return model
    }

    /// One line per active term, for the run's summary.
    public static func describe(_ settings: DistillationSettings) -> [String] {
        let w = settings.weights
        var terms = ["ce \(w.ce)"]
        let tau = settings.schedule.temperature.map { "τ \($0.start) → \($0.end)" } ?? "τ \(settings.logits.temperature)"
        if w.kd > 0 { terms.append("kd \(w.kd) (\(settings.logits.divergence), \(tau))") }
        if settings.schedule.kd != .constant { terms.append("schedule \(settings.schedule.kd.rawValue)") }
        if w.feature > 0 { terms.append("feature \(w.feature) (\(settings.featureDistance), \(settings.layerMap.map { "\($0)" } ?? "uniform"))") }
        if w.rkdDistance > 0 { terms.append("rkd distance \(w.rkdDistance)") }
        if w.rkdAngle > 0 { terms.append("rkd angle \(w.rkdAngle)") }
        return terms
    }

    /// Relations need several sequences per batch: say so before loading and training anything.
    static func checkRelationalBatch(_ weights: DistillationWeights, batchSize: Int) throws {
        if weights.rkdAngle > 0 && batchSize < 3 || weights.rkdDistance > 0 && batchSize < 2 {
            let (loss, minimum) = weights.rkdAngle > 0 ? ("angle", 3) : ("distance", 2)
            throw SettingError(.batchSize, "is \(batchSize), but relational \(loss) distillation needs at least \(minimum) sequences per batch")
        }
    }

    /// The context of a student that copies the teacher's shape.
    static func teacherContext(_ request: TrainingRequest, teacher: LlamaModel) throws -> Int {
        let context = request.context ?? min(256, teacher.config.maxPositionEmbeddings)
        guard context <= teacher.config.maxPositionEmbeddings else {
            throw SettingError(.context, "is \(context), longer than the teacher's context \(teacher.config.maxPositionEmbeddings)")
        }
        return context
    }

    /// The depth of a student started from the teacher's blocks: a preset's or a config's depth (a config
    /// must otherwise have the teacher's shape, since the blocks are copied), or half the teacher's.
    static func initialDepth(_ request: TrainingRequest, teacher: LlamaModel) throws -> Int {
        if let path = request.config {
            let config = try readConfigFile(path)
            let t = teacher.config
            let fields: [(String, Int, Int)] = [
                ("hidden_size", config.hiddenSize, t.hiddenSize), ("intermediate_size", config.intermediateSize, t.intermediateSize),
                ("num_attention_heads", config.numAttentionHeads, t.numAttentionHeads),
                ("num_key_value_heads", config.numKeyValueHeads, t.numKeyValueHeads), ("vocab_size", config.vocabSize, t.vocabSize),
            ]
            for (name, given, teachers) in fields where given != teachers {
                throw SettingError(.config, "\(path) has \(name) \(given) but the teacher's is \(teachers); starting from the teacher's blocks "
                    + "copies its shape, so only num_hidden_layers may differ")
            }
            return config.numHiddenLayers
        }
        if let preset = request.preset { return try LlamaConfig.preset(preset, vocabSize: teacher.config.vocabSize).numHiddenLayers }
        return max(1, teacher.config.numHiddenLayers / 2)
    }
}
