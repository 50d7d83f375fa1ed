import ArgumentParser
import Distill
import Foundation

extension CrossTokenizerLoss: ExpressibleByArgument {}

/// `distill student`: train a student from a frozen teacher (logit, feature and relational distillation).
struct StudentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "student",
        abstract: "Distill a student from a teacher: CE + KD on tempered logits, optional hidden-state and relational terms.")

    @Option(help: "Teacher model directory (ours or a Hugging Face Llama); repeat it for an ensemble, whose KD target is the mean of the teachers' tempered distributions (feature and relational terms use the first).")
    var teacher: [String] = []
    @Option(help: "Weights of the ensemble's teachers, w1,w2,... (default: equal).") var teacherWeights: String?
    @Option(help: "A teacher cache made by `distill cache-teacher`, instead of --teacher: no teacher runs (--temperature must be the cache's or left out).")
    var teacherCache: String?
    @Flag(help: "With --teacher-cache: optimise and report the soft cross-entropy −Σ p̂ log q instead of KL(p̂ ‖ q) (the same gradient).")
    var softCrossEntropy = false
    @OptionGroup var options: TrainingOptions
    @OptionGroup var logits: LogitOptions
    @OptionGroup var generation: OnPolicyOptions
    @Option(help: "Weight of hidden-state (feature) distillation.") var featureWeight: Float = 0
    @Option(help: "Student:teacher block pairs, 0-based, e.g. 0:1,1:3 (default: uniform).") var layerMap: String?
    @Option(help: "Distance between normalised states.") var featureDistance: FeatureDistance = .l1
    @Option(help: "Weight of the RKD distance loss on sentence embeddings.") var rkdDistanceWeight: Float = 0
    @Option(help: "Weight of the RKD angle loss on sentence embeddings.") var rkdAngleWeight: Float = 0
    @Option(help: "For a teacher whose tokenizer differs from the data's: uld (sorted-probability L1 at aligned positions) or alm (likelihoods of aligned text chunks), each beside --ce-weight.")
    var crossTokenizer: CrossTokenizerLoss?
    @Flag(help: "Start from every k-th teacher block (student of the teacher's shape; depth from --preset/--config, default half).")
    var initFromTeacher = false

    func validate() throws {
        if teacher.isEmpty && teacherCache == nil { throw CommandError("give a --teacher model directory or a --teacher-cache") }
        if !teacher.isEmpty && teacherCache != nil { throw CommandError("give --teacher or --teacher-cache, not both") }
        if softCrossEntropy && teacherCache == nil { throw CommandError("--soft-cross-entropy applies to a --teacher-cache") }
        let onPolicy = generation.settings()
        try Flags.translatingSettings { try onPolicy.validate() }
        if onPolicy.isActive && teacherCache != nil {
            throw Flags.userFacing(OnPolicyError(onPolicy.studentShare > 0 ? .onPolicy : .teacherGenerated, "cannot be used with",
                                                 with: .teacherCache, because: "a cached teacher cannot score new sequences"))
        }
        try Flags.requireFinite([(featureWeight, .featureWeight), (rkdDistanceWeight, .rkdDistanceWeight),
                                 (rkdAngleWeight, .rkdAngleWeight)])
        try Flags.translatingSettings { try settings().validate() }
    }

    func settings() throws -> DistillationSettings {
        var settings = try logits.settings(defaults: .student)
        settings.weights.feature = featureWeight
        settings.weights.rkdDistance = rkdDistanceWeight
        settings.weights.rkdAngle = rkdAngleWeight
        settings.featureDistance = featureDistance
        return settings
    }

    func run() throws {
        options.start()
        let printer = ProgressPrinter()
        defer { printer.finish() }
        let request = options.request(defaultPreset: "tiny-student")
        var student = StudentRequest(teachers: teacher, settings: try settings())
        student.layerMap = try layerMap.map { text in try Flags.translatingSettings { try LayerMap.pairs(parsing: text) } }
        student.initFromTeacher = initFromTeacher
        student.teacherWeights = try Flags.translatingSettings { try teacherWeights.map { try ModelEnsemble.parseWeights($0) } }
        student.teacherCache = teacherCache
        student.cachedLoss = softCrossEntropy ? .softCrossEntropy : .forwardKL
        student.temperatureGiven = logits.temperature != nil
        student.onPolicy = generation.settings()
        student.crossTokenizer = crossTokenizer
        let outcome = try Flags.translatingSettings {
            try TrainingRun.student(request, student, callbacks: trainingCallbacks(printer))
        }
        printer.finish()
        try Interrupt.exitIfInterrupted([outcome])

        // The full validation split, as `distill eval` scores it, so the two agree. Under mpirun rank 0
        // alone reads the student back, once it has written it.
        guard ProcessGroup.world.isRoot else { return }
        let data = try TokenFile(path: options.data)
        guard data.validationTokens.count >= 2 else { return }
        // A teacher of another tokenizer cannot score the data's tokens: the student alone is scored.
        let teachers = crossTokenizer != nil ? [] : try teacher.map { try TrainingRun.loadTeacher($0, data: data, dataPath: options.data) }
        let studentModel = try ModelDirectory.load(outcome.output)
        if teachers.isEmpty {
            print("validation perplexity: student " + String(format: "%.3f", try TrainingRun.scoreValidation(model: studentModel, data: data).perplexity))
            return
        }
        let teacherFigures = try teachers.map { String(format: "%.3f", try TrainingRun.scoreValidation(model: $0, data: data).perplexity) }
        print("validation perplexity: teacher\(teachers.count > 1 ? "s" : "") \(teacherFigures.joined(separator: ", "))  student "
              + String(format: "%.3f", try TrainingRun.scoreValidation(model: studentModel, data: data).perplexity))
    }
}

/// The logit terms' flags, shared by `student` and `mutual`.
struct LogitOptions: ParsableArguments {
    @Option(help: "Weight of the cross-entropy with the true next tokens (default: 0 for student, 1 for mutual).") var ceWeight: Float?
    @Option(help: "Weight of the logit distillation term (default 1).") var kdWeight: Float?
    @Option(help: "Softmax temperature of both models for KD (default: 1 for student, 2 for mutual; with a teacher cache, the cache's).") var temperature: Float?
    @Option(help: "Divergence between the teacher's and the student's distributions.") var divergence: Divergence = .forwardKL
    @Option(help: "β of the generalised JSD (0: forward KL, 1: reverse KL).") var beta: Float = Divergence.defaultBeta
    @Option(help: "α of skew KL and skew reverse KL.") var skewAlpha: Float = Divergence.defaultAlpha
    @Flag(help: "Do not multiply the KD term by τ².") var noTauSquared = false
    @Option(help: "Keep the teacher's K most likely tokens per position (renormalised).") var teacherTopK: Int?
    @Option(help: "CE/KD weights over the run: constant, kd-to-ce (CE weight 0 → --ce-weight: pure KD first), ce-to-kd (KD weight 0 → --kd-weight: pure CE first); linear in the step.")
    var kdSchedule: KDSchedule = .constant
    @Option(help: "Anneal τ from START at the first step to END at the last: START:END[:linear|cosine] (linear unless said), e.g. 4:1; replaces --temperature.")
    var temperatureSchedule: String?

    func validate() throws {
        try Flags.requireFinite([(ceWeight, .ceWeight), (kdWeight, .kdWeight), (temperature, .temperature), (beta, .beta),
                                 (skewAlpha, .skewAlpha)])
    }

    /// CE and KD weights, the divergence and the schedules, each flag not given taken from `defaults`
    /// (`DistillationSettings.student` for `student`, `DistillationSettings()` for `mutual`); the other terms off.
    func settings(defaults: DistillationSettings) throws -> DistillationSettings {
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: ceWeight ?? defaults.weights.ce, kd: kdWeight ?? defaults.weights.kd)
        let temperatureSchedule = try temperatureSchedule.map { text in try Flags.translatingSettings { try TemperatureSchedule(parsing: text) } }
        settings.logits = LogitDistillation(divergence: try Flags.translatingSettings { try Divergence(name: divergence.name, beta: beta, alpha: skewAlpha) },
                                            temperature: temperature ?? temperatureSchedule?.end ?? defaults.logits.temperature, tauSquared: !noTauSquared,
                                            teacherTopK: teacherTopK)
        settings.schedule = DistillationSchedule(kd: kdSchedule, temperature: temperatureSchedule)
        return settings
    }
}

/// On-policy distillation (GKD) and sequence-level KD: `student` only. `mutual` has no such flags: its
/// peers are both students, and which one's samples the other should score is not defined.
struct OnPolicyOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Share of each batch's sequences generated by the current student and distilled at the generated tokens (on-policy distillation, GKD), 0 to 1. TRL's GKDTrainer uses 0.5 with --divergence jsd --beta 0.5; reverse KL is --divergence reverse-kl.", valueName: "share"))
    var onPolicy: Double = 0
    @Option(help: ArgumentHelp("Share of each batch's sequences generated by the teacher instead (sequence-level KD); with --on-policy at most 1 in all.", valueName: "share"))
    var teacherGenerated: Double = 0
    @Option(help: "Prompt tokens of a generated sequence, taken from the start of its row's window (default: half the context, or what --new-tokens leaves of it).")
    var promptTokens: Int?
    @Option(help: "Tokens sampled after the prompt (default: the rest of the context; prompt + new tokens at most the context).")
    var newTokens: Int?
    @Option(help: "Temperature of the generated tokens' sampler (0: greedy).") var sampleTemperature: Float = 1
    @Option(help: "Sample among the K most likely tokens only.") var sampleTopK: Int?
    @Option(help: "Sample from the smallest most-likely set whose probability reaches P.") var sampleTopP: Float?
    @Flag(help: "Also distil the prompt positions of generated sequences (default: the generated positions only).")
    var lossOnPrompt = false

    func validate() throws {
        for (value, setting) in [(onPolicy, Setting.onPolicy), (teacherGenerated, .teacherGenerated)] where !value.isFinite {
            throw CommandError("\(Flags.name(setting)) must be a finite number (got \(value))")
        }
        try Flags.translatingSettings { try settings().validate() }
    }

    func settings() -> OnPolicySettings {
        var settings = OnPolicySettings()
        settings.studentShare = onPolicy
        settings.teacherShare = teacherGenerated
        settings.promptTokens = promptTokens
        settings.newTokens = newTokens
        settings.temperature = sampleTemperature
        settings.topK = sampleTopK
        settings.topP = sampleTopP
        settings.lossOnPrompt = lossOnPrompt
        return settings
    }
}
