import Foundation

// The stages of `distill run` that make things: the tokenizers, the token files, the teacher, the
// students and their teacher caches.
extension Pipeline {
    /// Trains `tokenizer` on the corpus (or copies the given file) to `output`; `field`: the recipe's, for errors.
    func tokenizerStage(_ plan: Plan, _ tokenizer: RecipeTokenizer, corpusKey: String, stage: String, output: String,
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
    func dataStage(_ plan: Plan, corpusKey: String, tokenizerKey: String, stage: String, tokenizer: String, output: String) throws -> String {
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
    func trainingStage(_ stage: String, label: String, key: String, settings: JSONNode, inputs: [(String, String)],
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

    func studentStage(_ student: RecipeStudent, index: Int, plan: Plan, teacherKey: String?) throws -> String {
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
            request.recomputeActivations = recomputeActivations
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
    func cacheStage(_ student: RecipeStudent, mode: TeacherCacheMode, plan: Plan, dataKey: String, teacherKey: String) throws -> (path: String, key: String) {
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
}
