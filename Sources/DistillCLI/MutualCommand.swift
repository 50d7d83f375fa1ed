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
        if peerPreset != nil && peerConfig != nil { throw CommandError("give --peer-preset or --peer-config, not both") }
        try Flags.translatingSettings { try logits.settings(defaults: DistillationSettings()).validate() }
    }

    func run() throws {
        options.start()
        let first = options.request(defaultPreset: "tiny-student")
        var second = first
        second.output = peerOutput
        second.preset = peerPreset ?? (peerConfig == nil ? options.preset : nil)
        second.config = peerConfig ?? (peerPreset == nil ? options.config : nil)
        // Two models' progress would overwrite each other on one live line.
        let printers = [ProgressPrinter(label: "[1] ", live: false), ProgressPrinter(label: "[2] ", live: false)]
        defer { printers.forEach { $0.finish() } }
        let outcomes = try Flags.translatingSettings {
            try TrainingRun.mutual([first, second], settings: try logits.settings(defaults: DistillationSettings()), callbacks: printers.map(trainingCallbacks))
        }
        try Interrupt.exitIfInterrupted(outcomes)
    }
}
