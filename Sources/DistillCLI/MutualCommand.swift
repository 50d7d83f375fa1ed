import ArgumentParser
import Distill
import Foundation

/// `distill mutual`: online distillation (Deep Mutual Learning): two or more models trained together on
/// the same batches, each learning from the labels and from the others' current predictions.
struct MutualCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mutual",
        abstract: "Train two or more models at once, each the others' teacher (online / mutual distillation).",
        discussion: """
            Each step updates the first model with CE + KD towards the second's current distribution, then the \
            second towards the first's (Zhang et al., Deep Mutual Learning). Both see the same batches; their \
            weights start from different seeds. --output and --peer-output are ordinary model directories. \
            Repeat --peer-output for more peers: each then learns from the mean of its KDs towards the others. \
            --peer-preset or --peer-config, given once, shapes every peer; given once per --peer-output, each peer.
            """)

    @OptionGroup var options: TrainingOptions
    @Option(help: "Model directory of the second model; repeat it for more peers.") var peerOutput: [String] = []
    @Option(help: "Preset of the peers (default: the first's), once or once per --peer-output.") var peerPreset: [String] = []
    @Option(help: "config.json of the peers, once or once per --peer-output.") var peerConfig: [String] = []
    @OptionGroup var logits: LogitOptions

    func validate() throws {
        if peerOutput.isEmpty { throw CommandError("give a --peer-output directory for the second model") }
        if !peerPreset.isEmpty && !peerConfig.isEmpty { throw CommandError("give --peer-preset or --peer-config, not both") }
        for (flag, values) in [("--peer-preset", peerPreset), ("--peer-config", peerConfig)]
        where values.count > 1 && values.count != peerOutput.count {
            throw CommandError("\(flag) is given \(values.count) times for \(peerOutput.count) --peer-output: give it once, or once per peer")
        }
        try Flags.translatingSettings { try logits.settings(defaults: DistillationSettings()).validate() }
    }

    /// The value of a per-peer flag for peer `index` (0-based among the --peer-output ones).
    private func value(_ values: [String], _ index: Int) -> String? { values.isEmpty ? nil : values[values.count == 1 ? 0 : index] }

    func run() throws {
        options.start()
        let first = options.request(defaultPreset: "tiny-student")
        let peers = [first] + peerOutput.indices.map { index -> TrainingRequest in
            var peer = first
            peer.output = peerOutput[index]
            // A peer's own --peer-preset or --peer-config, else the first model's shape.
            if let preset = value(peerPreset, index) { peer.shape = .preset(preset) }
            if let config = value(peerConfig, index) { peer.shape = .config(config) }
            return peer
        }
        // Several models' progress would overwrite each other on one live line.
        let printers = peers.indices.map { ProgressPrinter(label: "[\($0 + 1)] ", live: false) }
        defer { printers.forEach { $0.finish() } }
        let outcomes = try Flags.translatingSettings {
            try TrainingRun.mutual(peers, settings: try logits.settings(defaults: DistillationSettings()), callbacks: printers.map(trainingCallbacks))
        }
        try Interrupt.exitIfInterrupted(outcomes)
    }
}
