import ArgumentParser
import Distill
import Foundation

/// `distill student`: train a student from a frozen teacher (logit, feature and relational distillation).
struct StudentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "student",
        abstract: "Distill a student from a teacher: CE + KD on tempered logits, optional hidden-state and relational terms.")

    @Option(help: "Teacher model directory (ours or a Hugging Face Llama); repeat it for an ensemble, whose KD target is the mean of the teachers' tempered distributions (feature and relational terms use the first).")
    var teacher: [String] = []
    @OptionGroup var options: TrainingOptions
    @OptionGroup var logits: LogitOptions
    @Option(help: "Weight of hidden-state (feature) distillation.") var featureWeight: Float = 0
    @Option(help: "Student:teacher block pairs, 0-based, e.g. 0:1,1:3 (default: uniform).") var layerMap: String?
    @Option(help: "l1, l2 or cosine between normalised states.") var featureDistance: String = "l1"
    @Option(help: "Weight of the RKD distance loss on sentence embeddings.") var rkdDistanceWeight: Float = 0
    @Option(help: "Weight of the RKD angle loss on sentence embeddings.") var rkdAngleWeight: Float = 0
    @Flag(help: "Start from every k-th teacher block (student of the teacher's width; depth from --preset/--config, default half).")
    var initFromTeacher = false

    func validate() throws {
        if teacher.isEmpty { throw ValidationError("give a --teacher model directory") }
    }

    func run() throws {
        if let threads = options.threads { Compute.setThreads(threads) }
        let data = try options.openData()
        let tokenizerModel = try options.tokenizerModel(for: data)
        let teacherModels = try teacher.map { path -> LlamaModel in
            let directory = URL(fileURLWithPath: path)
            let model = try ModelDirectory.load(directory)
            let tokenizer = try Tokenizer(modelPath: try HFModelDirectory(directory).tokenizerModel().path)
            guard tokenizer.modelHash == data.tokenizerHash else {
                throw TrainingError.tokenizerMismatch("\(path) uses another tokenizer than \(options.data): logit distillation needs a shared vocabulary, so prepare the data with the teacher's tokenizer.model")
            }
            return model
        }
        let teacherModel = teacherModels[0]

        var settings = try logits.settings()
        settings.weights.feature = featureWeight
        settings.weights.rkdDistance = rkdDistanceWeight
        settings.weights.rkdAngle = rkdAngleWeight
        settings.featureDistance = try FeatureDistance(name: featureDistance)
        try settings.validate()
        // Relations need several sequences per batch: say so before loading and training anything more.
        if rkdAngleWeight > 0 && options.batchSize < 3 || rkdDistanceWeight > 0 && options.batchSize < 2 {
            throw DistillationError.batchTooSmall(loss: rkdAngleWeight > 0 ? "angle" : "distance", batch: options.batchSize,
                                                  minimum: rkdAngleWeight > 0 ? 3 : 2)
        }

        let student: LlamaModel
        if initFromTeacher {
            let layers = try options.preset.map { try LlamaConfig.preset($0, vocabSize: data.vocabSize).numHiddenLayers }
                ?? max(1, teacherModel.config.numHiddenLayers / 2)
            student = try studentFromTeacher(teacherModel, layers: layers)
        } else {
            let defaultPreset = teacherModel.config.hiddenSize >= 256 ? "small-student" : "tiny-student"
            var config = try options.modelConfig(vocabSize: teacherModel.config.vocabSize, defaultPreset: defaultPreset)
            config.maxPositionEmbeddings = max(config.maxPositionEmbeddings, options.context ?? 256)
            student = try LlamaModel(config: config, seed: options.seed)
        }
        let context = options.context ?? min(256, teacherModel.config.maxPositionEmbeddings)
        guard context <= teacherModel.config.maxPositionEmbeddings else {
            throw TrainingError.invalidSetting("--context \(context) is longer than the teacher's context \(teacherModel.config.maxPositionEmbeddings)")
        }
        if featureWeight > 0 {
            let depths = (student.config.numHiddenLayers, teacherModel.config.numHiddenLayers)
            settings.layerMap = try layerMap.map { try LayerMap(parsing: $0, studentLayers: depths.0, teacherLayers: depths.1) }
                ?? LayerMap.uniform(studentLayers: depths.0, teacherLayers: depths.1)
        }
        var parameters = options.parameters
        parameters.context = context
        let objective = try DistillationObjective(teachers: teacherModels, studentConfig: student.config, settings: settings, seed: options.seed)
        let trainer = try Trainer(model: student, objective: objective, parameters: parameters, tokenizerHash: data.tokenizerHash)
        var terms = logits.summary(settings)
        if featureWeight > 0 { terms.append("feature \(featureWeight) (\(featureDistance), \(settings.layerMap!))") }
        if rkdDistanceWeight > 0 { terms.append("rkd distance \(rkdDistanceWeight)") }
        if rkdAngleWeight > 0 { terms.append("rkd angle \(rkdAngleWeight)") }
        let teacherSizes = teacherModels.map { String($0.parameterCount) }.joined(separator: " + ")
        FileHandle.standardError.write(Data(("teacher\(teacherModels.count > 1 ? "s" : ""): \(teacherSizes) parameters; student: \(student.parameterCount) parameters "
            + "(width \(student.config.hiddenSize), \(student.config.numHiddenLayers) layers); objective: \(terms.joined(separator: ", "))\n").utf8))
        try runTraining(trainer, data: data, options: options, tokenizerModel: tokenizerModel)

        // Side by side on the same validation batches.
        let validation = try validationBatches(data: data, parameters: parameters)
        guard !validation.isEmpty, trainer.step == parameters.steps else { return }
        func perplexity(_ model: LlamaModel) throws -> Double {
            exp(try validation.map { Double(try meanCrossEntropy(model: model, batch: $0)) }.reduce(0, +) / Double(validation.count))
        }
        let teachers = try teacherModels.map { String(format: "%.3f", try perplexity($0)) }.joined(separator: ", ")
        print("validation perplexity: teacher\(teacherModels.count > 1 ? "s" : "") \(teachers)  student "
              + String(format: "%.3f", try perplexity(student)))
    }
}

/// The logit terms' flags, shared by `student` and `mutual`.
struct LogitOptions: ParsableArguments {
    @Option(help: "Weight of the cross-entropy with the true next tokens.") var ceWeight: Float = 1
    @Option(help: "Weight of the logit distillation term.") var kdWeight: Float = 1
    @Option(help: "Softmax temperature of both models for KD.") var temperature: Float = 2
    @Option(help: "forward-kl, reverse-kl, jsd, tvd, skew-kl or skew-reverse-kl.") var divergence: String = "forward-kl"
    @Option(help: "β of the generalised JSD (0: forward KL, 1: reverse KL).") var beta: Float = Divergence.defaultBeta
    @Option(help: "α of skew KL and skew reverse KL.") var skewAlpha: Float = Divergence.defaultAlpha
    @Flag(help: "Do not multiply the KD term by τ².") var noTauSquared = false
    @Option(help: "Keep the teacher's K most likely tokens per position (renormalised).") var teacherTopK: Int?

    /// CE and KD weights and the divergence; the other terms off.
    func settings() throws -> DistillationSettings {
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: ceWeight, kd: kdWeight)
        settings.logits = LogitDistillation(divergence: try Divergence(name: divergence, beta: beta, alpha: skewAlpha),
                                            temperature: temperature, tauSquared: !noTauSquared, teacherTopK: teacherTopK)
        return settings
    }

    func summary(_ settings: DistillationSettings) -> [String] {
        ["ce \(ceWeight)", "kd \(kdWeight) (\(settings.logits.divergence), τ \(temperature))"]
    }
}
