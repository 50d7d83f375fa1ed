import ArgumentParser
import Distill
import Foundation

/// `distill mutual`: online distillation (Deep Mutual Learning): two models trained together on the
/// same batches, each learning from the labels and from the other's current predictions.
struct MutualCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mutual",
        abstract: "Train two models at once, each the other's teacher (online / mutual distillation).",
        discussion: """
            Each step updates the first model with CE + KD towards the second's current distribution, then the \
            second towards the first's (Zhang et al., Deep Mutual Learning). Both see the same batches; their \
            weights start from different seeds. --output and --peer-output are ordinary model directories.
            """)

    @OptionGroup var options: TrainingOptions
    @Option(help: "Model directory of the second model.") var peerOutput: String
    @Option(help: "Preset of the second model (default: the first's).") var peerPreset: String?
    @Option(help: "config.json of the second model.") var peerConfig: String?
    @OptionGroup var logits: LogitOptions

    func validate() throws {
        if peerPreset != nil && peerConfig != nil { throw ValidationError("give --peer-preset or --peer-config, not both") }
        if URL(fileURLWithPath: peerOutput).standardizedFileURL == URL(fileURLWithPath: options.output).standardizedFileURL {
            throw ValidationError("--output and --peer-output must be different directories")
        }
    }

    func run() throws {
        if let threads = options.threads { Compute.setThreads(threads) }
        let data = try options.openData()
        let tokenizerModel = try options.tokenizerModel(for: data)
        let settings = try logits.settings()
        try settings.validate()
        let firstConfig = try options.modelConfig(vocabSize: data.vocabSize, defaultPreset: "tiny-student")
        var peerOptions = options
        peerOptions.preset = peerPreset ?? (peerConfig == nil ? options.preset : nil)
        peerOptions.config = peerConfig ?? (peerPreset == nil ? options.config : nil)
        let secondConfig = try peerOptions.modelConfig(vocabSize: data.vocabSize, defaultPreset: "tiny-student")
        // Different initial weights, the same batches (the sampler's seed is the run's).
        let first = try LlamaModel(config: firstConfig, seed: options.seed)
        let second = try LlamaModel(config: secondConfig, seed: options.seed &+ 1)
        let parameters = options.parameters
        let trainers = [
            try Trainer(model: first, objective: DistillationObjective(teacher: second, studentConfig: firstConfig, settings: settings,
                                                                       seed: options.seed),
                        parameters: parameters, tokenizerHash: data.tokenizerHash),
            try Trainer(model: second, objective: DistillationObjective(teacher: first, studentConfig: secondConfig, settings: settings,
                                                                        seed: options.seed),
                        parameters: parameters, tokenizerHash: data.tokenizerHash),
        ]
        let outputs = [URL(fileURLWithPath: options.output), URL(fileURLWithPath: peerOutput)]
        for (trainer, output) in zip(trainers, outputs) {
            try prepareOutput(output, for: trainer, resume: options.resume)
        }
        FileHandle.standardError.write(Data(("models: \(first.parameterCount) and \(second.parameterCount) parameters; objective of each: "
            + logits.summary(settings).joined(separator: ", ") + " towards the other\n").utf8))
        let validation = try validationBatches(data: data, parameters: parameters)
        Interrupt.install()
        let printers = [ProgressPrinter(label: "[1] ", live: false), ProgressPrinter(label: "[2] ", live: false)]
        defer { printers.forEach { $0.finish() } }
        try Trainer.runTogether(trainers, trainingTokens: data.trainTokens, validation: validation, outputs: outputs,
                                tokenizerModel: tokenizerModel, shouldStop: { Interrupt.isRequested }) { index, event in
            printers[index].handle(event)
        }
    }
}
