import Foundation

/// What a recipe means on this machine, checked before any stage runs: the corpus's files, the
/// vocabulary, the teacher's and each student's shape and context. Every refusal names the recipe field.
struct Plan {
    let recipe: Recipe
    let corpusFiles: [String]
    let corpusBytes: Int
    /// Paths the run reads, which its directory must not overlap.
    let inputs: [OutputGuard.Role]
    /// The data's vocabulary (the tokenizer's pieces).
    let vocabSize: Int
    /// The (first) teacher's shape, its context for the run.
    let teacherConfig: LlamaConfig
    let teacherContext: Int
    /// The context each student trains with (students[i]); the same default for all, so that students
    /// compared with each other see the same windows.
    let studentContexts: [Int]

    init(recipe: Recipe, searchRoots: [URL], log: (String) -> Void) throws {
        self.recipe = recipe
        corpusFiles = try Plan.corpusFiles(recipe, searchRoots: searchRoots, log: log)
        var bytes = 0
        for file in corpusFiles {
            do { bytes += try TextInput.open(file).bytes.count } catch { throw RecipeError("corpus", "\(error)") }
        }
        corpusBytes = bytes
        var inputs = corpusFiles.map { OutputGuard.Role("the corpus file", $0) }
        // A corpus folder is an input as a whole: a run directory inside it would add its files to the corpus.
        if case .paths(let paths) = recipe.corpus {
            inputs += paths.filter { path in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
            }.map { OutputGuard.Role("the corpus folder", $0) }
        }

        // The vocabulary.
        switch recipe.tokenizer {
        case .train(let vocab, _):
            vocabSize = vocab
        case .file(let path):
            inputs.append(OutputGuard.Role("tokenizer.model", path))
            do { vocabSize = try Tokenizer(modelPath: path).vocabSize } catch { throw RecipeError("tokenizer.model", "\(error)") }
        case .teacher:
            guard case .directories(let directories) = recipe.teacher.source else { throw RecipeError("tokenizer", "missing") }
            var first: Tokenizer?
            for (index, directory) in directories.enumerated() {
                let field = "teacher.directories[\(index)]"
                let tokenizer: Tokenizer
                do { tokenizer = try Tokenizer(modelPath: try HFModelDirectory(URL(fileURLWithPath: directory)).tokenizerModel().path) }
                catch { throw RecipeError(field, "\(error)") }
                if let first, first.modelHash != tokenizer.modelHash {
                    throw RecipeError(field, "its tokenizer.model differs from the first teacher's: an ensemble needs one shared vocabulary")
                }
                first = first ?? tokenizer
            }
            vocabSize = first?.vocabSize ?? 0
        }

        // The teacher.
        switch recipe.teacher.source {
        case let .train(shape, training, context):
            if let path = shape.configPath { inputs.append(OutputGuard.Role("teacher.config", path)) }
            let vocab = vocabSize
            let resolved = try Plan.shaped("teacher", shapeField: shape.configPath != nil ? "teacher.config" : "teacher.preset") {
                try ShapeRules.scratch(try shape.read(), defaultPreset: "tiny", context: context, vocabSize: vocab)
            }
            teacherConfig = resolved.config
            teacherContext = resolved.context
            do {
                try training.validateIgnoringContext()
                try teacherConfig.checkTrainingActivations(batch: training.batchSize, context: teacherContext)
            } catch let error as SettingError {
                throw RecipeError("teacher.\(Plan.field(error.setting))", error.problem)
            }
        case .directories(let directories):
            var configs: [LlamaConfig] = []
            for (index, directory) in directories.enumerated() {
                inputs.append(OutputGuard.Role("teacher.directories[\(index)]", directory))
                do { configs.append(try HFModelDirectory.readConfig(in: URL(fileURLWithPath: directory))) }
                catch { throw RecipeError("teacher.directories[\(index)]", "\(error)") }
                if configs[index].vocabSize != configs[0].vocabSize {
                    throw RecipeError("teacher.directories[\(index)]", "has vocab_size \(configs[index].vocabSize) but the first teacher \(configs[0].vocabSize): an ensemble needs one vocabulary")
                }
            }
            teacherConfig = configs[0]
            teacherContext = configs[0].maxPositionEmbeddings
            if teacherConfig.vocabSize < vocabSize {
                throw RecipeError("teacher.directories[0]", "has vocab_size \(teacherConfig.vocabSize) but its tokenizer has \(vocabSize) pieces")
            }
        }

        // The students: the rules `distill student` and `distill train` follow (`ShapeRules`).
        var contexts: [Int] = []
        let (teacher, trainedContext, vocab) = (teacherConfig, teacherContext, vocabSize)
        for (index, student) in recipe.students.enumerated() {
            let field = "students[\(index)]"
            if let path = student.shape.configPath { inputs.append(OutputGuard.Role(student.shapeField, path)) }
            let resolved = try Plan.shaped(field, shapeField: student.shapeField) {
                let shape = try student.shape.read()
                return student.kind.usesTeacher
                    ? try ShapeRules.student(shape, context: student.context, initFromTeacher: student.method.initFromTeacher,
                                             teacher: teacher, teacherContext: trainedContext)
                    : try ShapeRules.scratch(shape, defaultPreset: "tiny-student", context: student.context, vocabSize: vocab,
                                             defaultContext: min(256, trainedContext))
            }
            contexts.append(resolved.context)
            do {
                try student.training.validateIgnoringContext()
                try student.settings.validate()
                try resolved.config.checkTrainingActivations(batch: student.training.batchSize, context: resolved.context)
            } catch let error as SettingError {
                throw RecipeError("\(field).\(Plan.field(error.setting))", error.problem)
            } catch {
                throw RecipeError(field, "\(error)")
            }
            if case let .generated(kind, options, _) = student.method {
                do { _ = try options.lengths(context: resolved.context) } catch let error as OnPolicyError {
                    let name = "\(field).generation.\(StudentMethod.generationField(error.setting))"
                    throw RecipeError(name, error.message(naming: { "\"\(StudentMethod.generationField($0))\"" }))
                }
                if kind == .seqKD, case .directories(let directories) = recipe.teacher.source, directories.count > 1 {
                    throw RecipeError("\(field).kind", "seq-kd samples from one teacher, and this recipe has an ensemble of \(directories.count)")
                }
            }
            if case let .kd(.kdFeature, _, layerMap) = student.method {
                do { _ = try ShapeRules.layerMap(layerMap, student: resolved.config, teacher: teacherConfig) }
                catch { throw RecipeError("\(field).feature.layer_map", "\(error)") }
            }
        }
        studentContexts = contexts
        // Every model is scored in windows of its context: a stride longer than the shortest would only be
        // refused after all the training.
        if let stride = recipe.evaluation.stride, let shortest = ([teacherContext] + contexts).min(), stride > shortest {
            throw RecipeError("evaluation.stride", "is \(stride), longer than the shortest model context (\(shortest)): give at most \(shortest)")
        }

        if let text = recipe.evaluation.text { inputs.append(OutputGuard.Role("evaluation.text", text)) }
        self.inputs = inputs
    }

    /// The corpus's text files: the default corpus (written by corpora/kjv.sh when missing) or the
    /// recipe's paths expanded (folders to their .txt files).
    static func corpusFiles(_ recipe: Recipe, searchRoots: [URL], log: (String) -> Void) throws -> [String] {
        switch recipe.corpus {
        case .standard:
            return [try DefaultCorpus.locate(searchRoots: searchRoots, log: log)]
        case .paths(let paths):
            do {
                let files = try TextInput.expand(paths, allowStandardInput: false, purpose: "distill run")
                try TextInput.refuseDuplicates(files)
                return files
            } catch { throw RecipeError("corpus", "\(error)") }
        }
    }

    /// A shape rule's refusal, named by the recipe field it comes from: the shape's own field for the
    /// config or preset, `FIELD.training.context` for the context.
    static func shaped(_ field: String, shapeField: String, _ decide: () throws -> ResolvedShape) throws -> ResolvedShape {
        do { return try decide() } catch let error as SettingError {
            switch error.setting {
            case .config, .preset: throw RecipeError(shapeField, error.problem)
            default: throw RecipeError("\(field).\(Plan.field(error.setting))", error.problem)
            }
        } catch let error as RecipeError {
            throw error
        } catch {
            throw RecipeError(shapeField, "\(error)")
        }
    }

    /// The key of the corpus: the contents of its files, in order.
    func corpusKey() throws -> String {
        let hashes = try corpusFiles.map { JSONNode.string(try Fingerprint.contents(of: $0)) }
        return StageStore.key(stage: "corpus", settings: .array(hashes), inputs: [])
    }

    /// The existing teachers' tokenizer (they share it).
    func teacherTokenizer() throws -> String {
        guard case .directories(let directories) = recipe.teacher.source, let first = directories.first else {
            throw RecipeError("tokenizer", "missing")
        }
        return try HFModelDirectory(URL(fileURLWithPath: first)).tokenizerModel().path
    }

    /// The teachers students learn from: the trained one, or the existing directories.
    func teacherDirectories(_ trained: String) -> [String] {
        if case .directories(let directories) = recipe.teacher.source { return directories }
        return [trained]
    }

    /// Checks that need the token file: every training run has a window of training text and the
    /// validation batches it asks for.
    func checkAgainstData(_ data: TokenFile) throws {
        var runs: [(String, TrainingParameters, Int)] = []
        if case let .train(_, training, _) = recipe.teacher.source { runs.append(("teacher", training, teacherContext)) }
        for (index, student) in recipe.students.enumerated() { runs.append(("students[\(index)]", student.training, studentContexts[index])) }
        for (field, training, context) in runs {
            guard data.trainTokenCount > context + 1 else {
                throw RecipeError("\(field).training.context", "is \(context) but the training split has only \(data.trainTokenCount) tokens: give more text or a shorter context")
            }
            var parameters = training
            parameters.context = context
            do { _ = try TrainingRun.validationBatches(data: data, parameters: parameters) } catch let error as SettingError {
                throw RecipeError("\(field).\(Plan.field(error.setting))", error.problem)
            }
        }
    }

    /// `settings` with the content hash of a config file, so that editing the file re-runs the stage.
    static func withConfigHash(_ settings: JSONNode, _ shape: ModelShape) throws -> JSONNode {
        guard case .config(let path) = shape else { return settings }
        return .object([("settings", settings), ("config_hash", .string(try Fingerprint.contents(of: path)))])
    }

    /// Where a library setting lives in a recipe's teacher or student object.
    static func field(_ setting: Setting) -> String {
        switch setting {
        case .preset, .config, .teacher, .initFromTeacher: return setting.rawValue
        case .teacherWeights: return "weights"
        case .ceWeight, .kdWeight, .temperature, .divergence, .beta, .skewAlpha, .tauSquared, .teacherTopK: return "logits.\(setting.rawValue)"
        case .featureWeight: return "feature.weight"
        case .layerMap: return "feature.layer_map"
        case .featureDistance: return "feature.distance"
        case .rkdDistanceWeight: return "relational.distance_weight"
        case .rkdAngleWeight: return "relational.angle_weight"
        case .peerOutput, .peerPreset, .peerConfig: return "peers"
        default: return "training.\(setting.rawValue)"
        }
    }
}
