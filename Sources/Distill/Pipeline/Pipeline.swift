import Foundation

/// How `Pipeline.run` talks to whoever started it.
public struct PipelineCallbacks {
    /// Where the run is: one line per stage ("teacher: training ...", "tokenizer: up to date").
    public var log: (String) -> Void
    /// Training progress of the named model.
    public var training: (_ model: String, TrainingEvent) -> Void
    /// One-off lines of a training run (model summary, "resumed at step ...").
    public var trainingLog: (_ model: String, String) -> Void
    /// Asked between stages and between training steps; true stops cleanly (checkpoints saved).
    public var shouldStop: () -> Bool

    public init(log: @escaping (String) -> Void = { _ in }, training: @escaping (String, TrainingEvent) -> Void = { _, _ in },
                trainingLog: @escaping (String, String) -> Void = { _, _ in }, shouldStop: @escaping () -> Bool = { false }) {
        self.log = log
        self.training = training
        self.trainingLog = trainingLog
        self.shouldStop = shouldStop
    }
}

/// What a run did.
public struct PipelineOutcome {
    public let runDirectory: URL
    /// The report as written (also after an interruption: models without numbers show dashes).
    public let report: RunReport
    /// Files the report wrote (report.md, report.json, plots).
    public let reportFiles: [URL]
    /// Stages that did work, and stages found up to date, in order.
    public let ran: [String]
    public let skipped: [String]
    /// Stopped by `shouldStop` before the end; running the same recipe again continues.
    public let interrupted: Bool
}

/// `distill run`: every stage of an experiment under one run directory, each skipped when its outputs
/// exist and the hash of its settings and inputs is unchanged.
///
/// Stages and their inputs (a stage's key covers its settings and its inputs' keys):
///
///     corpus ─ tokenizer ─ data ─┬─ teacher ─┬─ students that learn from it ─┬─ eval-MODEL, samples-MODEL
///                                │           └─ cache (kd-cached)            │
///                                └─ baseline, mutual, born-again ────────────┘
///
/// So changing one student re-runs that student and its evaluation and samples only; a baseline does not
/// depend on the teacher.
public final class Pipeline {
    let recipe: Recipe
    let run: URL
    let callbacks: PipelineCallbacks
    let store: StageStore
    private(set) var ran: [String] = []
    private(set) var skipped: [String] = []
    private var interrupted = false

    /// One model of the report: where it lives and which stages made and measured it.
    struct ModelEntry {
        let name: String
        let kind: ModelKind
        /// Relative to the run directory, or absolute (existing teachers).
        let directory: String
        let trainingStage: String?
        /// An ensemble's members (directories as `directory`); nil for a single model.
        var members: [String]? = nil
        /// The folder of its own tokenizer and token file (`vocabularyDirectory`); nil: the run's.
        var vocabulary: String? = nil
    }

    /// A tokenizer with its token file: the run's (tokenizer.model, data.tok) or one a student brings
    /// (vocabularies/ID/), each made by its own stages.
    struct Vocabulary {
        let tokenizerPath: String
        let dataPath: String
        let dataKey: String
    }
    /// By folder (`vocabularyDirectory`); "" is the run's own.
    private var vocabularies: [String: Vocabulary] = [:]

    /// The folder of a student's own tokenizer and token file, named by its settings, so that students
    /// with the same tokenizer share them.
    static func vocabularyDirectory(_ tokenizer: RecipeTokenizer) -> String {
        "vocabularies/" + StageStore.key(stage: "tokenizer", settings: Normal.tokenizer(tokenizer), inputs: []).prefix(8)
    }

    func vocabulary(_ directory: String?) throws -> Vocabulary {
        guard let found = vocabularies[directory ?? ""] else { throw PipelineError.damagedRun(run.path, "no token file for \(directory ?? "the run")") }
        return found
    }

    private init(recipe: Recipe, run: URL, callbacks: PipelineCallbacks) throws {
        self.recipe = recipe
        self.run = run
        self.callbacks = callbacks
        store = try StageStore(runDirectory: run)
    }

    /// Runs `recipe` in `output`. Everything that can be checked before work starts is checked first
    /// (the recipe against the files it names, shapes, vocabularies, contexts), so a mistake never costs
    /// a trained teacher. `searchRoots`: where to look for the default corpus (corpora/kjv.txt).
    public static func run(_ recipe: Recipe, output: String, searchRoots: [URL] = [],
                           callbacks: PipelineCallbacks = PipelineCallbacks()) throws -> PipelineOutcome {
        let runURL = URL(fileURLWithPath: output).standardizedFileURL
        let plan = try Plan(recipe: recipe, searchRoots: searchRoots, log: callbacks.log)
        try OutputGuard.refuseOverlap(output: OutputGuard.Role("output", runURL.path), inputs: plan.inputs)
        try RunDirectory.prepare(runURL)
        // One run at a time in a run directory: a second one would restart stages under the first.
        let lock = try OutputLock(directory: runURL)
        defer { withExtendedLifetime(lock) {} }
        let pipeline = try Pipeline(recipe: recipe, run: runURL, callbacks: callbacks)
        return try pipeline.execute(plan)
    }

    // MARK: the stages

    private func execute(_ plan: Plan) throws -> PipelineOutcome {
        let models = modelEntries()
        try writeManifest(models, plan: plan)
        if let copy = recipe.normalized.prettyText.data(using: .utf8) {
            try AtomicFile.write(copy, to: run.appendingPathComponent("recipe.json"))
        }
        callbacks.log("run directory: \(run.path)")

        let corpusKey = try plan.corpusKey()
        callbacks.log("corpus: \(plan.corpusFiles.count) file\(plan.corpusFiles.count == 1 ? "" : "s"), \(SVGChart.grouped(plan.corpusBytes)) bytes")
        let tokenizerKey = try tokenizerStage(plan, recipe.tokenizer, corpusKey: corpusKey, stage: "tokenizer", output: tokenizerPath, field: "tokenizer")
        let dataKey = try dataStage(plan, corpusKey: corpusKey, tokenizerKey: tokenizerKey, stage: "data", tokenizer: tokenizerPath, output: dataPath)
        try plan.checkAgainstData(try TokenFile(path: dataPath))
        vocabularies[""] = Vocabulary(tokenizerPath: tokenizerPath, dataPath: dataPath, dataKey: dataKey)
        // Students' own vocabularies, before any training, so that their checks cannot cost a trained teacher.
        for (index, student) in recipe.students.enumerated() {
            guard let own = student.tokenizer else { continue }
            let directory = Self.vocabularyDirectory(own), id = String(directory.dropFirst("vocabularies/".count))
            if vocabularies[directory] == nil {
                try AtomicFile.ensureDirectory(run.appendingPathComponent(directory))
                let ownTokenizer = run.appendingPathComponent(directory).appendingPathComponent("tokenizer.model").path
                let ownData = run.appendingPathComponent(directory).appendingPathComponent("data.tok").path
                let key = try tokenizerStage(plan, own, corpusKey: corpusKey, stage: "tokenizer-\(id)", output: ownTokenizer,
                                             field: "students[\(index)].tokenizer")
                vocabularies[directory] = Vocabulary(tokenizerPath: ownTokenizer, dataPath: ownData, dataKey: try dataStage(
                    plan, corpusKey: corpusKey, tokenizerKey: key, stage: "data-\(id)", tokenizer: ownTokenizer, output: ownData))
            }
            try plan.checkAgainstData(try TokenFile(path: try vocabulary(directory).dataPath), tokenizer: own)
        }

        var producers: [String: String] = [:]   // model name → key of what made it
        var teacherKey: String?
        switch recipe.teacher.source {
        case .directories(let directories):
            teacherKey = StageStore.key(stage: "teacher", settings: Normal.teacher(recipe.teacher),
                                        inputs: try directories.map { ("directory", try Fingerprint.modelDirectory($0)) })
            for entry in models where entry.kind == .teacher { producers[entry.name] = teacherKey }
            callbacks.log("teacher: \(directories.joined(separator: ", ")) (existing)")
        case let .train(shape, training, context):
            if stopRequested() { return try finish(models) }
            var request = TrainingRequest(data: dataPath, output: modelPath("teacher"))
            request.shape = shape
            request.parameters = training
            request.context = context
            let settings = try Plan.withConfigHash(Normal.teacher(recipe.teacher), shape)
            let key = StageStore.key(stage: "teacher", settings: settings, inputs: [("data", dataKey)])
            try trainingStage("teacher", label: "teacher", key: key, settings: settings, inputs: [("data", dataKey)],
                              models: ["teacher"], field: "teacher") { resume in
                request.resume = resume
                return [try TrainingRun.train(request, callbacks: self.trainingCallbacks("teacher"))]
            }
            teacherKey = key
            producers["teacher"] = key
        }
        if interrupted { return try finish(models) }

        for (index, student) in recipe.students.enumerated() {
            if stopRequested() { break }
            let key = try studentStage(student, index: index, plan: plan, teacherKey: teacherKey)
            if interrupted { break }
            for name in student.reportNames { producers[name] = key }
        }
        if interrupted { return try finish(models) }

        for entry in models {
            if stopRequested() { break }
            guard let producer = producers[entry.name] else { continue }
            try evaluationStage(entry, producer: producer, plan: plan)
        }
        if !recipe.samples.prompts.isEmpty {
            for entry in models {
                if stopRequested() { break }
                guard let producer = producers[entry.name] else { continue }
                try samplesStage(entry, producer: producer)
            }
        }
        if let teacherKey {
            // The judge is loaded once, by the first stage that is not up to date.
            var judge: ModelEnsemble?
            let loadJudge = { () throws -> ModelEnsemble in
                if let judge { return judge }
                let members = try ModelAndTokenizer.members(plan.teacherDirectories(self.modelPath("teacher")).map { URL(fileURLWithPath: $0) },
                                                            fit: .paddedHead)
                let loaded = try ModelEnsemble(members: members.models, weights: self.recipe.teacher.weights)
                judge = loaded
                return loaded
            }
            for entry in models {
                if stopRequested() { break }
                guard let producer = producers[entry.name] else { continue }
                try sampleQualityStage(entry, producer: producer, plan: plan, teacherKey: teacherKey, judge: loadJudge)
            }
        }
        return try finish(models)
    }

    var dataPath: String { run.appendingPathComponent("data.tok").path }
    var tokenizerPath: String { run.appendingPathComponent("tokenizer.model").path }
    func modelPath(_ name: String) -> String { run.appendingPathComponent("models").appendingPathComponent(name).path }

    private func stopRequested() -> Bool {
        if callbacks.shouldStop() { interrupted = true }
        return interrupted
    }

    private func finish(_ models: [ModelEntry]) throws -> PipelineOutcome {
        callbacks.log(interrupted ? "report: (interrupted) writing what is done so far" : "report: writing")
        var report = try RunReport.build(runDirectory: run)
        let files = try report.write()
        return PipelineOutcome(runDirectory: run, report: report, reportFiles: files, ran: ran, skipped: skipped, interrupted: interrupted)
    }

    /// Skips the stage when `outputs` exist and its record finished under `key`; else runs `body`.
    private func simpleStage(_ stage: String, label: String, key: String, settings: JSONNode, inputs: [(String, String)],
                             outputs: [String], body: () throws -> JSONNode) throws {
        if store.status(stage, key: key) == .finished, store.outputsAreWhole(stage, outputs) {
            callbacks.log("\(label): up to date")
            skipped.append(stage)
            return
        }
        try store.begin(stage, key: key, settings: settings, inputs: inputs)
        let result = try body()
        try store.finish(stage, key: key, settings: settings, inputs: inputs, result: result, outputs: outputs)
        ran.append(stage)
    }

    /// Trains `tokenizer` on the corpus (or copies the given file) to `output`; `field`: the recipe's, for errors.
    private func tokenizerStage(_ plan: Plan, _ tokenizer: RecipeTokenizer, corpusKey: String, stage: String, output: String,
                                field: String) throws -> String {
        let settings: JSONNode, inputs: [(String, String)], source: String?
        switch tokenizer {
        case .train:
            settings = Normal.tokenizer(recipe.tokenizer)
            inputs = [("corpus", corpusKey)]
            source = nil
        case .file(let path):
            settings = Normal.tokenizer(recipe.tokenizer)
            inputs = [("model", try Fingerprint.contents(of: path))]
            source = path
        case .teacher:
            settings = Normal.tokenizer(recipe.tokenizer)
            let path = try plan.teacherTokenizer()
            inputs = [("model", try Fingerprint.contents(of: path))]
            source = path
        }
        let key = StageStore.key(stage: "tokenizer", settings: settings, inputs: inputs)
        try simpleStage(stage, label: stage, key: key, settings: settings, inputs: inputs, outputs: [output]) {
            let started = Date()
            if let source {
                callbacks.log("\(stage): copying \(source)")
                try AtomicFile.write(try RegularFile.read(source), to: URL(fileURLWithPath: output))
            } else if case let .train(vocab, type) = tokenizer {
                callbacks.log("\(stage): training \(vocab) pieces (\(type.rawValue)) on the corpus")
                do {
                    try Tokenizer.train(inputs: plan.corpusFiles, vocabSize: vocab, modelType: type, output: output,
                                        threads: Compute.threads)
                } catch TokenizerError.vocabularyTooLarge(let requested, let maximum) {
                    throw RecipeError("\(field).vocab_size", "is \(requested), but this corpus can fill at most \(maximum) pieces: lower it (or give more text)")
                } catch TokenizerError.vocabularyTooSmall(let requested, let minimum) {
                    throw RecipeError("\(field).vocab_size", "is \(requested), but this corpus needs at least \(minimum) pieces: raise it")
                }
            }
            let tokenizer = try Tokenizer(modelPath: output)
            return .object([("vocab_size", .integer(Int64(tokenizer.vocabSize))), ("seconds", .number(Date().timeIntervalSince(started)))])
        }
        return key
    }

    /// Encodes the corpus with the tokenizer at `tokenizer` into the token file `output`.
    private func dataStage(_ plan: Plan, corpusKey: String, tokenizerKey: String, stage: String, tokenizer: String, output: String) throws -> String {
        let settings = JSONNode.object([("validation_fraction", .number(recipe.validationFraction))])
        let inputs = [("corpus", corpusKey), ("tokenizer", tokenizerKey)]
        let key = StageStore.key(stage: "data", settings: settings, inputs: inputs)
        let label = stage == "data" ? "token file" : "token file \(stage)"
        try simpleStage(stage, label: label, key: key, settings: settings, inputs: inputs,
                        outputs: [output, TokenFile.companionTokenizerPath(for: output)]) {
            callbacks.log("\(label): encoding the corpus")
            let summary = try TokenFile.prepare(tokenizer: Tokenizer(modelPath: tokenizer), inputs: plan.corpusFiles,
                                                output: output, valFraction: recipe.validationFraction)
            callbacks.log("\(label): \(SVGChart.grouped(summary.trainTokenCount)) training and \(SVGChart.grouped(summary.validationTokenCount)) validation tokens")
            return .object([("train_tokens", .integer(Int64(summary.trainTokenCount))),
                            ("validation_tokens", .integer(Int64(summary.validationTokenCount))),
                            ("validation_bytes", .integer(Int64(summary.validationByteCount)))])
        }
        return key
    }

    /// A training stage: skipped when finished under `key` with its models on disk, resumed when it
    /// started under `key` and left checkpoints, started afresh (old outputs removed) otherwise.
    /// `models`: the names of the models `train` returns outcomes for, with their directories; `owned`:
    /// what to delete before starting afresh (default: those directories); `canResume`: whether the
    /// outputs hold checkpoints to continue (default: every directory has one).
    private func trainingStage(_ stage: String, label: String, key: String, settings: JSONNode, inputs: [(String, String)],
                               models names: [String], directories paths: [String]? = nil, owned: [String]? = nil,
                               canResume: (([URL]) -> Bool)? = nil, field: String,
                               train: (_ resume: Bool) throws -> [TrainingOutcome]) throws {
        let models = names
        let directories = (paths ?? names.map(modelPath)).map { URL(fileURLWithPath: $0) }
        let status = store.status(stage, key: key)
        let outputFiles = directories.flatMap { directory in
            [HFModelDirectory.weightsFileName, HFModelDirectory.configFileName].map { directory.appendingPathComponent($0).path }
        }
        if status == .finished, store.outputsAreWhole(stage, outputFiles) {
            callbacks.log("\(label): up to date")
            skipped.append(stage)
            return
        }
        let resume = status == .started && (canResume ?? { $0.allSatisfy { Checkpoint.exists(in: $0) } })(directories)
        if !resume {
            // Outputs of other settings (or a run that never saved) are this run's own: start over.
            for directory in (owned.map { $0.map { URL(fileURLWithPath: $0) } } ?? directories)
            where FileManager.default.fileExists(atPath: directory.path) {
                try AtomicFile.remove(directory)
            }
        }
        callbacks.log("\(label): \(resume ? "resuming" : "training") → \(directories.map(\.path).joined(separator: ", "))")
        try store.begin(stage, key: key, settings: settings, inputs: inputs)
        let outcomes: [TrainingOutcome]
        do { outcomes = try train(resume) } catch let error as SettingError {
            throw RecipeError("\(field).\(Plan.field(error.setting))", error.problem)
        } catch let error as NamesSettings {
            throw RecipeError(field, error.message(naming: { "`\(field).\(Plan.field($0))`" }))
        }
        if outcomes.contains(where: \.interrupted) {
            interrupted = true
            callbacks.log("\(label): interrupted and saved; run the same command again to continue")
            return
        }
        let result = JSONNode.object([("models", .object(zip(models, outcomes).map { name, outcome in
            (name, .object([("parameters", .integer(Int64(outcome.parameterCount))), ("steps", .integer(Int64(outcome.step))),
                            ("seconds", .number(outcome.seconds)), ("tokens_per_second", .number(outcome.tokensPerSecond))]))
        }))])
        try store.finish(stage, key: key, settings: settings, inputs: inputs, result: result, outputs: outputFiles)
        ran.append(stage)
    }

    func trainingCallbacks(_ model: String) -> TrainingCallbacks {
        TrainingCallbacks(event: { [callbacks] in callbacks.training(model, $0) }, log: { [callbacks] in callbacks.trainingLog(model, $0) },
                          shouldStop: callbacks.shouldStop)
    }

    private func studentStage(_ student: RecipeStudent, index: Int, plan: Plan, teacherKey: String?) throws -> String {
        let data = try vocabulary(student.tokenizer.map(Self.vocabularyDirectory))
        let dataKey = data.dataKey
        var inputs = [("data", dataKey)]
        if student.kind.usesTeacher, let teacherKey { inputs.append(("teacher", teacherKey)) }
        var cache: (path: String, key: String)?
        if case .kdCached(let mode) = student.method, let teacherKey {
            cache = try cacheStage(student, mode: mode, plan: plan, dataKey: dataKey, teacherKey: teacherKey)
            guard let cache, !interrupted else { return "" }
            inputs = [("data", dataKey), ("cache", cache.key)]
        }
        let settings = try Plan.withConfigHash(student.normalized, student.shape)
        let stage = "student-\(student.name)"
        let key = StageStore.key(stage: stage, settings: settings, inputs: inputs)
        let field = "students[\(index)]"
        let context = plan.studentContexts[index]
        func request(_ name: String) -> TrainingRequest {
            var request = TrainingRequest(data: data.dataPath, output: modelPath(name))
            request.shape = student.shape
            request.parameters = student.training
            request.context = context
            return request
        }
        let label = "student \(student.name) (\(student.kind.rawValue))"
        switch student.method {
        case .baseline:
            try trainingStage(stage, label: label, key: key, settings: settings, inputs: inputs, models: student.modelNames, field: field) { resume in
                var request = request(student.name)
                request.resume = resume
                return [try TrainingRun.train(request, callbacks: trainingCallbacks(student.name))]
            }
        case .kd, .generated, .crossTokenizer:
            try trainingStage(stage, label: label, key: key, settings: settings, inputs: inputs, models: student.modelNames, field: field) { resume in
                var request = request(student.name)
                request.resume = resume
                var teacher = StudentRequest(teachers: plan.teacherDirectories(modelPath("teacher")), settings: student.settings)
                if case let .kd(_, _, layerMap) = student.method { teacher.layerMap = layerMap }
                if case let .generated(_, options, _) = student.method { teacher.onPolicy = options }
                if case let .crossTokenizer(loss) = student.method { teacher.crossTokenizer = loss }
                teacher.initFromTeacher = student.method.initFromTeacher
                teacher.teacherWeights = recipe.teacher.weights
                return [try TrainingRun.student(request, teacher, callbacks: trainingCallbacks(student.name))]
            }
        case .mutual:
            try trainingStage(stage, label: label, key: key, settings: settings, inputs: inputs, models: student.modelNames, field: field) { resume in
                let requests = student.modelNames.map { name -> TrainingRequest in
                    var peer = request(name)
                    peer.resume = resume
                    return peer
                }
                return try TrainingRun.mutual(requests, settings: student.settings, callbacks: student.modelNames.map(trainingCallbacks))
            }
        case .kdCached:
            try trainingStage(stage, label: label, key: key, settings: settings, inputs: inputs, models: student.modelNames, field: field) { resume in
                var request = request(student.name)
                request.resume = resume
                var cached = StudentRequest(teachers: [], settings: student.settings)
                cached.teacherCache = cache?.path
                return [try TrainingRun.student(request, cached, callbacks: trainingCallbacks(student.name))]
            }
        case let .bornAgain(count, teachers):
            let root = modelPath(student.name)
            let generations = (1...count).map { BornAgain.directory(root, generation: $0) }
            try trainingStage(stage, label: label, key: key, settings: settings, inputs: inputs, models: student.modelNames,
                              directories: generations, owned: [root],
                              canResume: { $0.contains { Checkpoint.exists(in: $0) } }, field: field) { resume in
                var training = request(student.name)
                training.resume = resume
                let request = GenerationsRequest(training: training, count: count, settings: student.settings, teachers: teachers)
                return try BornAgain.run(request) { self.trainingCallbacks("\(student.name)-g\($0)") }.generations
            }
        }
        return key
    }

    /// The teacher's targets for `kd-cached` students, built once per distinct setting (sampled or
    /// top-K, temperature) under RUN/caches/; an interrupted build continues where it stopped.
    private func cacheStage(_ student: RecipeStudent, mode: TeacherCacheMode, plan: Plan, dataKey: String, teacherKey: String) throws -> (path: String, key: String) {
        let settings = JSONNode.object([
            ("mode", .string({ if case .topK = mode { return "top_k" } else { return "samples" } }())),
            ("size", .integer(Int64({ switch mode { case .topK(let k): return k; case .samples(let s): return s } }()))),
            ("temperature", Normal.float(student.settings.logits.temperature)),
            ("weights", recipe.teacher.weights.map { .array($0.map { Normal.float($0) }) } ?? .null),
        ])
        let inputs = [("data", dataKey), ("teacher", teacherKey)]
        let key = StageStore.key(stage: "cache", settings: settings, inputs: inputs)
        let stage = "cache-\(key.prefix(8))"
        let path = run.appendingPathComponent("caches").appendingPathComponent(stage + ".cache").path
        let label = "cache (\(mode), τ \(student.settings.logits.temperature))"
        if store.status(stage, key: key) == .finished, store.outputsAreWhole(stage, [path]) {
            if !skipped.contains(stage) && !ran.contains(stage) {
                callbacks.log("\(label): up to date")
                skipped.append(stage)
            }
            return (path, key)
        }
        try AtomicFile.ensureDirectory(run.appendingPathComponent("caches"))
        callbacks.log("\(label): building → \(path)")
        try store.begin(stage, key: key, settings: settings, inputs: inputs)
        var lastReport = Date.distantPast
        let summary = try TeacherCacheBuilder.build(
            teachers: plan.teacherDirectories(modelPath("teacher")), data: dataPath, output: path,
            settings: TeacherCacheSettings(mode: mode, temperature: student.settings.logits.temperature,
                                           teacherWeights: recipe.teacher.weights),
            progress: { progress in
                // A line every few seconds, not one per window.
                guard Date().timeIntervalSince(lastReport) >= 5 || progress.positionsDone >= progress.totalPositions else { return }
                lastReport = Date()
                callbacks.trainingLog("cache", String(format: "%d of %d positions, %.0f tokens/s", progress.positionsDone,
                                                      progress.totalPositions, progress.tokensPerSecond))
            },
            shouldStop: callbacks.shouldStop)
        guard summary.complete else {
            interrupted = true
            callbacks.log("\(label): interrupted; run the same command again to continue the build")
            return (path, key)
        }
        try store.finish(stage, key: key, settings: settings, inputs: inputs, result: .object([
            ("positions", .integer(Int64(summary.positions))), ("bytes", .integer(Int64(summary.bytes))),
            ("bytes_per_token", .number(summary.bytesPerToken)), ("seconds", .number(summary.seconds)),
        ]), outputs: [path])
        ran.append(stage)
        return (path, key)
    }

    /// A model entry's weights (one model, or an ensemble's members) with their tokenizer, through the
    /// one loader. Teachers may come from Hugging Face with a padded head.
    private func loadModels(_ entry: ModelEntry) throws -> (models: [LlamaModel], tokenizer: Tokenizer) {
        try ModelAndTokenizer.members((entry.members ?? [entry.directory]).map(resolve), fit: .paddedHead)
    }

    private func evaluationStage(_ entry: ModelEntry, producer: String, plan: Plan) throws {
        let vocabulary = try self.vocabulary(entry.vocabulary)
        var settings = JSONNode.object([("text", recipe.evaluation.text.map(JSONNode.string) ?? .null),
                                         ("stride", recipe.evaluation.stride.map { .integer(Int64($0)) } ?? .null)])
        if let text = recipe.evaluation.text {
            settings = .object([("evaluation", settings), ("text_hash", .string(try Fingerprint.contents(of: text)))])
        }
        let inputs = [("model", producer), ("data", vocabulary.dataKey)]
        let stage = "eval-\(entry.name)"
        let key = StageStore.key(stage: stage, settings: settings, inputs: inputs)
        try simpleStage(stage, label: "evaluation \(entry.name)", key: key, settings: settings, inputs: inputs, outputs: []) {
            let (models, tokenizer) = try loadModels(entry)
            let tokens: [Int32], bytes: Int
            if let text = recipe.evaluation.text {
                let raw = try RegularFile.read(text)
                guard let string = String(data: raw, encoding: .utf8) else { throw EvaluationError.notText(text) }
                tokens = tokenizer.encode(string)
                bytes = raw.count
            } else {
                let data = try TokenFile(path: vocabulary.dataPath)
                try data.checkTokenizer(tokenizer)
                tokens = Array(data.validationTokens)
                bytes = data.validationByteCount
            }
            // Exactly `distill eval`'s computation, so the report and `eval` agree to the last digit.
            let report = entry.members == nil
                ? try scoreTokens(model: models[0], tokens: tokens, bytes: bytes, stride: recipe.evaluation.stride)
                : try scoreTokens(ensemble: ModelEnsemble(members: models), tokens: tokens, bytes: bytes, stride: recipe.evaluation.stride)
            callbacks.log(String(format: "evaluation %@: perplexity %.2f, %.4f bits/byte", entry.name, report.perplexity, report.bitsPerByte))
            let parameters = models.reduce(0) { $0 + $1.parameterCount }
            return .object([("parameters", .integer(Int64(parameters))), ("tokens", .integer(Int64(report.tokens))),
                            ("nll_sum", .number(report.nllSum)), ("bytes", .integer(Int64(report.bytes))),
                            ("perplexity", .number(report.perplexity)), ("bits_per_byte", .number(report.bitsPerByte))])
        }
    }

    private func samplesStage(_ entry: ModelEntry, producer: String) throws {
        let settings = Normal.samples(recipe.samples)
        let inputs = [("model", producer)]
        let stage = "samples-\(entry.name)"
        let key = StageStore.key(stage: stage, settings: settings, inputs: inputs)
        try simpleStage(stage, label: "samples \(entry.name)", key: key, settings: settings, inputs: inputs, outputs: []) {
            let (models, tokenizer) = try loadModels(entry)
            // One model, or the ensemble's mixture (an ensemble of one generates exactly what its member does).
            let session = try EnsembleSession(ensemble: try ModelEnsemble(members: models))
            // A short untimed generation first: the first one pays for thread start-up and page faults.
            var warmUp = try Sampler(temperature: 0)
            _ = try generate(ensemble: session, prompt: [max(tokenizer.bosId, 0)], maxTokens: 4, sampler: &warmUp)
            var texts: [JSONNode] = [], produced = 0, seconds = 0.0
            for prompt in recipe.samples.prompts {
                // The same sampler and seed for every model and prompt.
                var sampler = try Sampler(temperature: recipe.samples.temperature, topK: recipe.samples.topK,
                                          topP: recipe.samples.topP, seed: recipe.samples.seed)
                var ids = tokenizer.encode(prompt)
                if ids.isEmpty && tokenizer.bosId >= 0 { ids = [tokenizer.bosId] }
                let started = Date()
                let continuation = try generate(ensemble: session, prompt: ids, maxTokens: recipe.samples.maxTokens, sampler: &sampler,
                                                stopToken: tokenizer.eosId >= 0 ? tokenizer.eosId : nil)
                seconds += Date().timeIntervalSince(started)
                produced += continuation.count
                texts.append(.string(prompt + tokenizer.decode(continuation)))
            }
            let speed = Double(produced) / max(seconds, 1e-9)
            callbacks.log("samples \(entry.name): \(produced) tokens at \(SVGChart.grouped(Int(speed.rounded()))) tokens/s")
            return .object([("texts", .array(texts)), ("tokens", .integer(Int64(produced))), ("seconds", .number(seconds)),
                            ("tokens_per_second", .number(speed))])
        }
    }

    /// The teacher's NLL of each model's own samples (`SampleQuality`): 16 prompts of a quarter of the
    /// shortest context from the validation split, continued for half of it at temperature 1, the same
    /// prompts and seeds for every model.
    private func sampleQualityStage(_ entry: ModelEntry, producer: String, plan: Plan, teacherKey: String,
                                    judge: () throws -> ModelEnsemble) throws {
        let vocabulary = try self.vocabulary(entry.vocabulary)
        let shortest = ([plan.teacherContext] + plan.studentContexts).min() ?? plan.teacherContext
        let promptLength = max(1, shortest / 4), newTokens = max(1, shortest / 2), count = 16
        let settings = JSONNode.object([("prompts", .integer(Int64(count))), ("prompt_tokens", .integer(Int64(promptLength))),
                                        ("new_tokens", .integer(Int64(newTokens))), ("temperature", .integer(1)),
                                        ("seed", .integer(Int64(bitPattern: recipe.samples.seed)))])
        let inputs = [("model", producer), ("teacher", teacherKey), ("data", vocabulary.dataKey)]
        let stage = "quality-\(entry.name)"
        let key = StageStore.key(stage: stage, settings: settings, inputs: inputs)
        try simpleStage(stage, label: "sample quality \(entry.name)", key: key, settings: settings, inputs: inputs, outputs: []) {
            let (members, tokenizer) = try loadModels(entry)
            let model = try ModelEnsemble(members: members)
            let data = try TokenFile(path: vocabulary.dataPath)
            let prompts = SampleQuality.prompts(from: Array(data.validationTokens), count: count, promptLength: promptLength)
            // A model with its own tokenizer: the teacher scores its samples' text through the run's.
            let quality = try SampleQuality.measure(model: model, judge: try judge(), tokenizer: tokenizer, prompts: prompts,
                                                    newTokens: newTokens, seed: recipe.samples.seed,
                                                    judgeTokenizer: entry.vocabulary == nil ? nil : try Tokenizer(modelPath: tokenizerPath))
            callbacks.log(String(format: "sample quality %@: teacher NLL %.3f, own NLL %.3f nats/token, %.1f%% repeated 4-grams",
                                 entry.name, quality.judgeMeanNLL, quality.ownMeanNLL, 100 * quality.repeatedFourGrams))
            return .object([("tokens", .integer(Int64(quality.tokens))), ("judge_nll_sum", .number(quality.judgeNLLSum)),
                            ("own_nll_sum", .number(quality.ownNLLSum)), ("bytes", .integer(Int64(quality.bytes))),
                            ("repeated_4grams", .number(quality.repeatedFourGrams))])
        }
    }

    func resolve(_ directory: String) -> URL {
        directory.hasPrefix("/") ? URL(fileURLWithPath: directory) : run.appendingPathComponent(directory)
    }

    // MARK: the manifest

    /// Every model the report lists, in order: teacher(s), then each student's models.
    func modelEntries() -> [ModelEntry] {
        var entries: [ModelEntry] = []
        switch recipe.teacher.source {
        case .train:
            entries.append(ModelEntry(name: "teacher", kind: .teacher, directory: "models/teacher", trainingStage: "teacher"))
        case .directories(let directories):
            for (index, directory) in directories.enumerated() {
                entries.append(ModelEntry(name: directories.count == 1 ? "teacher" : "teacher-\(index + 1)", kind: .teacher,
                                          directory: directory, trainingStage: nil))
            }
        }
        for student in recipe.students {
            let stage = "student-\(student.name)", kind = ModelKind.student(student.kind)
            if case .bornAgain(let count, _) = student.method {
                // BornAgain keeps its generations in one folder: models/NAME/gen-k.
                let directories = (1...count).map { "models/\(student.name)/gen-\($0)" }
                for (name, directory) in zip(student.modelNames, directories) {
                    entries.append(ModelEntry(name: name, kind: kind, directory: directory, trainingStage: stage))
                }
                entries.append(ModelEntry(name: "\(student.name)-ensemble", kind: kind, directory: "models/\(student.name)",
                                          trainingStage: stage, members: directories))
                continue
            }
            for name in student.modelNames {
                entries.append(ModelEntry(name: name, kind: kind, directory: "models/\(name)", trainingStage: stage,
                                          vocabulary: student.tokenizer.map(Self.vocabularyDirectory)))
            }
        }
        return entries
    }

    private func writeManifest(_ models: [ModelEntry], plan: Plan) throws {
        let evaluation = recipe.evaluation.text.map { "the text \($0)" } ?? "the full validation split of data.tok (the last \(Int((recipe.validationFraction * 100).rounded()))% of the corpus)"
        let manifest = JSONNode.object([
            ("format", .integer(Int64(RunDirectory.format))), ("schema_version", .integer(Int64(Recipe.schemaVersion))),
            ("distill_version", .string(DistillVersion.string)), ("machine", .string(RunDirectory.machineDescription)),
            ("description", recipe.about.map(JSONNode.string) ?? .null), ("evaluation", .string(evaluation)),
            ("models", .array(models.map { entry in
                .object([("name", .string(entry.name)), ("role", .string(entry.kind.role)), ("kind", .string(entry.kind.description)),
                         ("directory", .string(entry.directory)), ("training_stage", entry.trainingStage.map(JSONNode.string) ?? .null),
                         ("members", entry.members.map { .array($0.map(JSONNode.string)) } ?? .null),
                         ("vocabulary", entry.vocabulary.map(JSONNode.string) ?? .null),
                         ("eval_stage", .string("eval-\(entry.name)")),
                         ("samples_stage", recipe.samples.prompts.isEmpty ? .null : .string("samples-\(entry.name)")),
                         ("quality_stage", .string("quality-\(entry.name)"))])
            })),
            ("recipe", recipe.normalized),
        ])
        try RunDirectory.writeManifest(run, manifest)
    }
}
