import ArgumentParser
import Distill
import Foundation

/// `distill train`: train a model from scratch on a token file with cross-entropy.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a Llama-style model on a token file (next-token cross-entropy).")

    @OptionGroup var options: TrainingOptions

    func run() throws {
        options.start()
        let printer = ProgressPrinter()
        defer { printer.finish() }
        let outcome = try Flags.translatingSettings {
            try TrainingRun.train(options.request(defaultPreset: "tiny"), callbacks: trainingCallbacks(printer))
        }
        try Interrupt.exitIfInterrupted([outcome])
    }
}
