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
    /// Every training of the run recomputes gate/up in backward (`TrainingRequest.recomputeActivations`):
    /// a choice of memory against time that gives the same bits, so no stage key holds it.
    let recomputeActivations: Bool
    let store: StageStore
    var ran: [String] = []
    var skipped: [String] = []
    var interrupted = false

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

    private init(recipe: Recipe, run: URL, callbacks: PipelineCallbacks, recomputeActivations: Bool) throws {
        self.recipe = recipe
        self.run = run
        self.callbacks = callbacks
        self.recomputeActivations = recomputeActivations
        store = try StageStore(runDirectory: run)
    }

    /// Runs `recipe` in `output`. Everything that can be checked before work starts is checked first
    /// (the recipe against the files it names, shapes, vocabularies, contexts), so a mistake never costs
    /// a trained teacher. `searchRoots`: where to look for the default corpus (corpora/kjv.txt).
    /// `recomputeActivations`: every training trades time for memory (`distill run --recompute-activations`).
    public static func run(_ recipe: Recipe, output: String, searchRoots: [URL] = [],
                           callbacks: PipelineCallbacks = PipelineCallbacks(),
                           recomputeActivations: Bool = false) throws -> PipelineOutcome {
        let runURL = URL(fileURLWithPath: output).standardizedFileURL
        let plan = try Plan(recipe: recipe, searchRoots: searchRoots, log: callbacks.log)
        try OutputGuard.refuseOverlap(output: OutputGuard.Role("output", runURL.path), inputs: plan.inputs)
        try RunDirectory.prepare(runURL)
        // One run at a time in a run directory: a second one would restart stages under the first.
        let lock = try OutputLock(directory: runURL)
        defer { withExtendedLifetime(lock) {} }
        let pipeline = try Pipeline(recipe: recipe, run: runURL, callbacks: callbacks, recomputeActivations: recomputeActivations)
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
            request.recomputeActivations = recomputeActivations
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

    func stopRequested() -> Bool {
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
    func simpleStage(_ stage: String, label: String, key: String, settings: JSONNode, inputs: [(String, String)],
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
