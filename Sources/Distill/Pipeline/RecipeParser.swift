import Foundation

/// Turns a recipe's JSON into a `Recipe`, checking every field and building the normal form.
struct RecipeParser {
    let base: URL

    func absolute(_ path: String) -> String {
        (path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)).standardizedFileURL.path
    }

    /// An existing path, made absolute; `directory` says which kind it must be.
    func existing(_ path: String, at field: String, directory: Bool?, what: String) throws -> String {
        let resolved = absolute(path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory) else {
            throw RecipeError(field, "\(what) \(resolved) does not exist\(path.hasPrefix("/") ? "" : " (paths are relative to the recipe's folder)")")
        }
        if let directory, isDirectory.boolValue != directory {
            throw RecipeError(field, "\(resolved) is \(isDirectory.boolValue ? "a directory" : "a file"); give \(what)")
        }
        if !isDirectory.boolValue {
            do { try RegularFile.check(resolved) } catch { throw RecipeError(field, "\(error)") }
        }
        return resolved
    }

    func recipe(_ value: JSONNode) throws -> Recipe {
        var top = try FieldReader(value, path: "")
        guard let version = try top.integer("schema_version") else {
            throw RecipeError("schema_version", "missing: this distill reads recipes with \"schema_version\": \(Recipe.schemaVersion)")
        }
        guard version == Recipe.schemaVersion else {
            throw RecipeError("schema_version", "this distill reads recipe schema \(Recipe.schemaVersion), the recipe says \(version): "
                              + (version > Int64(Recipe.schemaVersion) ? "update distill" : "update the recipe (docs/recipes.md lists the changes)"))
        }
        let name: String
        if let given = try top.string("name") {
            name = try Self.directoryName(given, field: "name")
        } else {
            name = try Self.directoryName(base.lastPathComponent, field: "name",
                                          advice: " (the recipe's folder name, used when the recipe gives none): add a \"name\"")
        }
        let about = try top.string("description")

        // Corpus.
        let corpusIsList: Bool = { if case .array = top.value("corpus") { return true } else { return false } }()
        guard let corpusValue = try top.strings("corpus"), !corpusValue.isEmpty else {
            throw RecipeError("corpus", "missing: give \"default\" (the King James Bible) or the paths of text files or folders")
        }
        let corpus: RecipeCorpus
        if corpusValue == ["default"] {
            corpus = .standard
        } else {
            corpus = .paths(try corpusValue.enumerated().map { index, path in
                try existing(path, at: corpusIsList ? "corpus[\(index)]" : "corpus", directory: nil, what: "the corpus path")
            })
        }
        let validationFraction = try top.number("validation_fraction") ?? 0.1
        guard validationFraction > 0 && validationFraction < 0.5 else {
            throw RecipeError("validation_fraction", "must be above 0 and below 0.5, got \(validationFraction)")
        }

        // Teacher (before the tokenizer: existing teachers bring their own).
        var teacherReader = try top.object("teacher")
            ?? { throw RecipeError("teacher", "missing: give {\"preset\": \"tiny\", \"training\": {...}} or {\"directories\": [...]}") }()
        let teacher = try self.teacher(&teacherReader)
        try teacherReader.finish()

        // Tokenizer.
        let tokenizer: RecipeTokenizer
        if var reader = try top.object("tokenizer") {
            if !teacher.isTrained {
                throw RecipeError("tokenizer", "leave it out when the teacher is existing directories: the data must be encoded with the teacher's tokenizer.model")
            }
            tokenizer = try self.tokenizer(&reader)
            try reader.finish()
        } else if teacher.isTrained {
            throw RecipeError("tokenizer", "missing: give {\"vocab_size\": N} to train one, or {\"model\": \"path.model\"}")
        } else {
            tokenizer = .teacher
        }

        // The shared student block, then each student.
        var shared = try top.object("student") ?? FieldReader(.object([]), path: "student")
        let sharedShapeField = shared.path(shared.has("config") ? "config" : "preset")
        let sharedShape = try shape(&shared)
        var sharedTraining = try shared.object("training")
        var sharedContext: Int?
        let baseTraining = try training(&sharedTraining, defaults: TrainingParameters(), context: &sharedContext)
        try sharedTraining?.finish()
        try shared.finish()

        guard let studentValues = try top.array("students") else {
            throw RecipeError("students", "missing: give at least one student, e.g. [{\"name\": \"baseline\", \"kind\": \"baseline\"}]")
        }
        guard !studentValues.isEmpty else { throw RecipeError("students", "empty: give at least one student") }
        var students: [RecipeStudent] = []
        var taken: [String: String] = ["teacher": "teacher"]
        for (index, studentValue) in studentValues.enumerated() {
            var reader = try FieldReader(studentValue, path: "students[\(index)]")
            let student = try self.student(&reader, sharedShape: sharedShape ?? .preset("tiny-student"), sharedShapeField: sharedShapeField,
                                           sharedTraining: baseTraining, sharedContext: sharedContext, teacher: teacher,
                                           runTokenizer: tokenizer)
            try reader.finish()
            for model in student.reportNames {
                if let owner = taken[model] {
                    throw RecipeError(reader.path("name"), "the model name \"\(model)\" is already used by \(owner): give each student its own name")
                }
                taken[model] = reader.path("name")
            }
            if case .directories(let directories) = teacher.source, directories.count > 1 {
                for number in 1...directories.count where student.reportNames.contains("teacher-\(number)") {
                    throw RecipeError(reader.path("name"), "\"teacher-\(number)\" names a teacher: choose another name")
                }
            }
            students.append(student)
        }

        // Evaluation and samples.
        var evaluationReader = try top.object("evaluation") ?? FieldReader(.object([]), path: "evaluation")
        let evaluationText = try evaluationReader.string("text").map {
            try existing($0, at: evaluationReader.path("text"), directory: false, what: "the evaluation text")
        }
        let evaluation = RecipeEvaluation(text: evaluationText, stride: try evaluationReader.int("stride", in: 1...Int64(Int32.max)))
        try evaluationReader.finish()

        var samplesReader = try top.object("samples") ?? FieldReader(.object([]), path: "samples")
        let samples = RecipeSamples(
            prompts: try samplesReader.strings("prompts") ?? [""],
            maxTokens: try samplesReader.int("max_tokens", in: 0...100_000) ?? 60,
            temperature: (try samplesReader.float("temperature") ?? 0.8),
            topK: try samplesReader.int("top_k", in: 1...Int64(Int32.max)),
            topP: try samplesReader.number("top_p").map(Float.init),
            seed: UInt64(try samplesReader.integer("seed", in: 0...Int64.max) ?? 1))
        if !(samples.temperature >= 0 && samples.temperature.isFinite) {
            throw RecipeError(samplesReader.path("temperature"), "must be 0 (greedy) or positive, got \(samples.temperature)")
        }
        if let topP = samples.topP, !(topP > 0 && topP <= 1) {
            throw RecipeError(samplesReader.path("top_p"), "must be above 0 and at most 1, got \(topP)")
        }
        try samplesReader.finish()
        try top.finish()

        let normalized = JSONNode.object([
            ("schema_version", .integer(Int64(Recipe.schemaVersion))),
            ("name", .string(name)),
            ("corpus", { if case .paths(let paths) = corpus { return .array(paths.map(JSONNode.string)) } else { return .string("default") } }()),
            ("validation_fraction", .number(validationFraction)),
            ("tokenizer", Normal.tokenizer(tokenizer)),
            ("teacher", Normal.teacher(teacher)),
            ("students", .array(students.map(\.normalized))),
            ("evaluation", .object([("text", evaluation.text.map(JSONNode.string) ?? .null),
                                    ("stride", evaluation.stride.map { .integer(Int64($0)) } ?? .null)])),
            ("samples", Normal.samples(samples)),
        ])
        return Recipe(name: name, about: about, corpus: corpus, validationFraction: validationFraction, tokenizer: tokenizer,
                      teacher: teacher, students: students, evaluation: evaluation, samples: samples, normalized: normalized)
    }

    /// A tokenizer object: `{"model": path}` (an existing one) or `{"vocab_size": N, "model_type": ...}` (train one).
    func tokenizer(_ reader: inout FieldReader) throws -> RecipeTokenizer {
        if let model = try reader.string("model") {
            if reader.has("vocab_size") || reader.has("model_type") {
                throw RecipeError(reader.path("model"), "give either \"model\" (an existing tokenizer) or \"vocab_size\"/\"model_type\" (train one), not both")
            }
            return .file(try existing(model, at: reader.path("model"), directory: false, what: "the tokenizer model"))
        } else {
            let vocab = try reader.int("vocab_size", in: Int64(Tokenizer.minimumVocabularySize)...Int64(Int32.max))
                ?? { throw RecipeError(reader.path("vocab_size"), "missing: give the vocabulary size to train, e.g. 4096") }()
            let typeName = try reader.string("model_type") ?? TokenizerModelType.unigram.rawValue
            guard let type = TokenizerModelType(rawValue: typeName) else {
                throw RecipeError(reader.path("model_type"), "unknown model type \"\(typeName)\"; use unigram or bpe")
            }
            return .train(vocabSize: vocab, modelType: type)
        }
    }

    /// `preset` or `config`, or nil when neither is given.
    func shape(_ reader: inout FieldReader) throws -> ModelShape? {
        let preset = try reader.string("preset"), config = try reader.string("config")
        switch (preset, config) {
        case (.some, .some): throw RecipeError(reader.path("config"), "give \"preset\" or \"config\", not both")
        case (.some(let preset), nil):
            do { _ = try LlamaConfig.preset(preset, vocabSize: Tokenizer.minimumVocabularySize) } catch ModelError.unknownPreset(_, let known) {
                throw RecipeError(reader.path("preset"), "unknown preset \"\(preset)\"; use one of \(known.joined(separator: ", ")) or a \"config\" file")
            }
            return .preset(preset)
        case (nil, .some(let config)):
            return .config(try existing(config, at: reader.path("config"), directory: false, what: "the config file"))
        case (nil, nil): return nil
        }
    }

    /// A `training` object over `defaults`; every field optional. `context` is kept apart (given or
    /// nil), as the model's shape decides it when the recipe does not.
    func training(_ reader: inout FieldReader?, defaults: TrainingParameters, context: inout Int?) throws -> TrainingParameters {
        var p = defaults
        guard var r = reader else { return p }
        let positive: ClosedRange<Int64> = 1...Int64(Int32.max), natural: ClosedRange<Int64> = 0...Int64(Int32.max)
        if let v = try r.int("steps", in: positive) { p.steps = v }
        if let v = try r.int("batch_size", in: positive) { p.batchSize = v }
        if let v = try r.int("context", in: 2...Int64(Int32.max)) { context = v }
        if let v = try r.int("accumulation", in: positive) { p.accumulationSteps = v }
        if let v = try r.float("lr") {
            guard v > 0 && v.isFinite else { throw RecipeError(r.path("lr"), "must be positive, got \(v)") }
            p.learningRate = v
        }
        if let v = try r.int("warmup", in: natural) { p.warmupSteps = v }
        if let v = try r.float("weight_decay") {
            guard v >= 0 else { throw RecipeError(r.path("weight_decay"), "must be 0 or more, got \(v)") }
            p.weightDecay = v
        }
        if let v = try r.float("grad_clip") {
            guard v >= 0 else { throw RecipeError(r.path("grad_clip"), "must be 0 or more (0: off), got \(v)") }
            p.gradientClip = v
        }
        if let v = try r.integer("seed", in: 0...Int64.max) { p.seed = UInt64(v) }
        if let v = try r.int("eval_every", in: natural) { p.evalEvery = v }
        if let v = try r.int("eval_batches", in: positive) { p.evalBatches = v }
        if let v = try r.int("save_every", in: natural) { p.saveEvery = v }
        if let v = try r.int("log_every", in: positive) { p.logEvery = v }
        try r.finish()
        reader = r
        return p
    }

    func teacher(_ reader: inout FieldReader) throws -> RecipeTeacher {
        let directories = try reader.strings("directories")
        let shape = try self.shape(&reader)
        var trainingReader = try reader.object("training")
        let weights = try reader.array("weights")
        if let directories {
            if shape != nil || trainingReader != nil {
                throw RecipeError(reader.path("directories"), "existing teachers are not trained: leave out \"preset\", \"config\" and \"training\"")
            }
            guard !directories.isEmpty else { throw RecipeError(reader.path("directories"), "empty: give at least one model directory") }
            let resolved = try directories.enumerated().map { index, path in
                let field = "\(reader.path("directories"))[\(index)]"
                let directory = try existing(path, at: field, directory: true, what: "the teacher directory")
                for file in ["config.json"] where !FileManager.default.fileExists(atPath: directory + "/" + file) {
                    throw RecipeError(field, "\(directory) has no \(file): it is not a model directory")
                }
                return directory
            }
            var parsedWeights: [Float]?
            if let weights {
                guard weights.count == resolved.count else {
                    throw RecipeError(reader.path("weights"), "has \(weights.count) value(s) for \(resolved.count) teacher(s)")
                }
                parsedWeights = try weights.enumerated().map { index, value in
                    let number: Double
                    switch value {
                    case .integer(let v): number = Double(v)
                    case .number(let v): number = v
                    default: throw RecipeError("\(reader.path("weights"))[\(index)]", "expected a number, found \(value.kind)")
                    }
                    guard number >= 0 && number <= Double(Float.greatestFiniteMagnitude) else {
                        throw RecipeError("\(reader.path("weights"))[\(index)]", "must be 0 or more (and at most \(Float.greatestFiniteMagnitude))")
                    }
                    return Float(number)
                }
                if parsedWeights!.allSatisfy({ $0 == 0 }) { throw RecipeError(reader.path("weights"), "at least one weight must be positive") }
            }
            return RecipeTeacher(source: .directories(resolved), weights: parsedWeights)
        }
        if weights != nil { throw RecipeError(reader.path("weights"), "only an ensemble of existing \"directories\" takes weights") }
        guard let shape else {
            throw RecipeError(reader.path("preset"), "missing: give a \"preset\" (tiny, small), a \"config\" file, or existing \"directories\"")
        }
        var context: Int?
        let training = try self.training(&trainingReader, defaults: TrainingParameters(), context: &context)
        return RecipeTeacher(source: .train(shape: shape, training: training, context: context), weights: nil)
    }

    /// A recipe's names become directories (the run's under runs/, each student's under models/), so they
    /// are one path component of letters, digits, '-', '_' and '.', starting with a letter or digit: no
    /// "..", no "/", nothing that steers a write outside the run directory.
    @discardableResult
    static func directoryName(_ name: String, field: String, advice: String = "") throws -> String {
        let limit = 64
        guard name.count <= limit else {
            throw RecipeError(field, "\"\(name.prefix(20))…\" is too long to name a directory (\(name.count) characters, at most \(limit))\(advice)")
        }
        guard let first = name.unicodeScalars.first, CharacterSet.alphanumerics.contains(first),
              name.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)) }) else {
            throw RecipeError(field, "\"\(name)\" cannot name a directory: use letters, digits, '-', '_' and '.', starting with a letter or digit\(advice)")
        }
        return name
    }

    func student(_ reader: inout FieldReader, sharedShape: ModelShape, sharedShapeField: String, sharedTraining: TrainingParameters,
                 sharedContext: Int?, teacher: RecipeTeacher, runTokenizer: RecipeTokenizer) throws -> RecipeStudent {
        guard let name = try reader.string("name") else { throw RecipeError(reader.path("name"), "missing: give the student a name (its directory under models/)") }
        try Self.directoryName(name, field: reader.path("name"))
        guard let kindName = try reader.string("kind") else {
            throw RecipeError(reader.path("kind"), "missing: use one of \(StudentKind.names.joined(separator: ", "))")
        }
        guard let kind = StudentKind(rawValue: kindName) else {
            throw RecipeError(reader.path("kind"), "unknown student kind \"\(kindName)\"; use one of \(StudentKind.names.joined(separator: ", "))")
        }
        let shapeField = reader.has("config") ? reader.path("config") : reader.has("preset") ? reader.path("preset") : sharedShapeField
        let shape = try self.shape(&reader) ?? sharedShape
        var trainingReader = try reader.object("training")
        var context = sharedContext
        let training = try self.training(&trainingReader, defaults: sharedTraining, context: &context)

        // Fields a kind does not take are refused by name, not silently ignored.
        for (key, kinds) in StudentKind.ownFields where reader.has(key) && !kinds.contains(kind) {
            throw RecipeError(reader.path(key), "a \(kind.rawValue) student does not take \"\(key)\" (only \(kinds.map(\.rawValue).joined(separator: ", ")))")
        }

        // A student that learns from a teacher starts from `distill student`'s defaults (KD alone at τ = 1,
        // chosen by the sweep); mutual peers from `distill mutual`'s (CE + τ²·KD at τ = 2).
        var settings = kind == .mutual || kind == .baseline ? DistillationSettings() : .student
        if kind == .baseline { settings.weights = DistillationWeights(ce: 1, kd: 0) }
        // Across tokenizers the teacher's signal covers aligned chunks only: the student's own CE stays on.
        if kind == .crossTokenizer { settings.weights.ce = 1 }
        if var logits = try reader.object("logits") {
            if let v = try logits.float("ce_weight") { settings.weights.ce = v }
            if let v = try logits.float("kd_weight") { settings.weights.kd = v }
            if let v = try logits.float("temperature") {
                guard v > 0 && v.isFinite else { throw RecipeError(logits.path("temperature"), "must be positive, got \(v)") }
                settings.logits.temperature = v
            }
            let divergenceText = try logits.string("divergence") ?? Divergence.forwardKL.name
            let beta = try logits.number("beta").map(Float.init) ?? Divergence.defaultBeta
            let alpha = try logits.number("skew_alpha").map(Float.init) ?? Divergence.defaultAlpha
            guard let named = Divergence.all.first(where: { $0.name == divergenceText }) else {
                throw RecipeError(logits.path("divergence"), "unknown divergence \"\(divergenceText)\"; use one of \(Divergence.names.joined(separator: ", "))")
            }
            if logits.has("beta") && !named.takesBeta { throw RecipeError(logits.path("beta"), "only the jsd divergence takes beta") }
            if logits.has("skew_alpha") && !named.takesAlpha {
                throw RecipeError(logits.path("skew_alpha"), "only skew-kl and skew-reverse-kl take skew_alpha")
            }
            guard beta >= 0 && beta <= 1 else { throw RecipeError(logits.path("beta"), "must be between 0 and 1, got \(beta)") }
            guard alpha >= 0 && alpha <= 1 else { throw RecipeError(logits.path("skew_alpha"), "must be between 0 and 1, got \(alpha)") }
            settings.logits.divergence = try Divergence(name: divergenceText, beta: beta, alpha: alpha)
            if let v = try logits.bool("tau_squared") { settings.logits.tauSquared = v }
            settings.logits.teacherTopK = try logits.int("teacher_top_k", in: 1...Int64(Int32.max))
            for (key, value) in [("ce_weight", settings.weights.ce), ("kd_weight", settings.weights.kd)] where !(value >= 0 && value.isFinite) {
                throw RecipeError(logits.path(key), "must be 0 or more, got \(value)")
            }
            try logits.finish()
        }
        var layerMap: [LayerPair]?
        if kind == .kdFeature {
            var feature = try reader.object("feature") ?? FieldReader(.object([]), path: reader.path("feature"))
            settings.weights.feature = (try feature.float("weight") ?? 1)
            guard settings.weights.feature > 0 && settings.weights.feature.isFinite else {
                throw RecipeError(feature.path("weight"), "must be positive for a kd-feature student")
            }
            if let text = try feature.string("layer_map") {
                do { layerMap = try LayerMap.pairs(parsing: text) } catch { throw RecipeError(feature.path("layer_map"), "\(error)") }
            }
            let distance = try feature.string("distance") ?? FeatureDistance.l1.rawValue
            guard let parsed = FeatureDistance(rawValue: distance) else {
                throw RecipeError(feature.path("distance"), "unknown distance \"\(distance)\"; use one of \(FeatureDistance.names.joined(separator: ", "))")
            }
            settings.featureDistance = parsed
            try feature.finish()
        }
        if kind == .kdRelational {
            var relational = try reader.object("relational") ?? FieldReader(.object([]), path: reader.path("relational"))
            settings.weights.rkdDistance = (try relational.float("distance_weight") ?? 1)
            settings.weights.rkdAngle = (try relational.float("angle_weight") ?? 2)
            for (key, value) in [("distance_weight", settings.weights.rkdDistance), ("angle_weight", settings.weights.rkdAngle)]
            where !(value >= 0 && value.isFinite) {
                throw RecipeError(relational.path(key), "must be 0 or more, got \(value)")
            }
            if settings.weights.rkdDistance == 0 && settings.weights.rkdAngle == 0 {
                throw RecipeError(relational.path, "a kd-relational student needs a positive distance_weight or angle_weight")
            }
            do { try TrainingRun.checkRelationalBatch(settings.weights, batchSize: training.batchSize) } catch let error as SettingError {
                throw RecipeError(reader.path("training.batch_size"), error.problem)
            }
            try relational.finish()
        }
        if kind.distills && kind != .baseline {
            if settings.weights.ce == 0 && settings.weights.kd == 0 && settings.weights.feature == 0
                && settings.weights.rkdDistance == 0 && settings.weights.rkdAngle == 0 {
                throw RecipeError(reader.path("logits"), "every weight is 0: nothing would be learned")
            }
        }
        let method = try StudentMethod.parse(kind, &reader, settings: settings, layerMap: layerMap)
        // Its own vocabulary (baseline, cross-tokenizer): a second tokenizer and token file for the run.
        var tokenizer: RecipeTokenizer?
        if var own = try reader.object("tokenizer") {
            tokenizer = try self.tokenizer(&own)
            try own.finish()
        } else if kind == .crossTokenizer {
            tokenizer = .train(vocabSize: RecipeStudent.defaultCrossTokenizerVocabulary, modelType: .unigram)
        }
        if kind == .crossTokenizer, tokenizer == runTokenizer {
            throw RecipeError(reader.path("tokenizer"), "is the run's own tokenizer: a cross-tokenizer student needs another (give its \"vocab_size\")")
        }
        if kind == .crossTokenizer, case .directories(let directories) = teacher.source, directories.count > 1 {
            throw RecipeError(reader.path("kind"), "a cross-tokenizer student learns from one teacher, and this recipe has an ensemble of \(directories.count)")
        }

        var fields: [(String, JSONNode)] = [
            ("name", .string(name)), ("kind", .string(kind.rawValue)),
            ("model", Normal.shape(shape)), ("training", Normal.training(training, context: context)),
        ]
        if kind.distills { fields.append(("logits", Normal.logits(settings))) }
        fields += method.normalFields(settings)
        if let tokenizer { fields.append(("tokenizer", Normal.tokenizer(tokenizer))) }
        return RecipeStudent(name: name, method: method, shape: shape, shapeField: shapeField, training: training, context: context,
                             settings: settings, tokenizer: tokenizer, normalized: .object(fields))
    }
}
