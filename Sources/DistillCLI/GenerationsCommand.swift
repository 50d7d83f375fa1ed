import ArgumentParser
import Distill
import Foundation

extension GenerationTeachers: ExpressibleByArgument {}

/// `distill generations`: born-again self-distillation, generation after generation of one architecture.
struct GenerationsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generations",
        abstract: "Born-again training: generation 1 from the labels, generation k distilled from k − 1 (or from all before it).",
        discussion: """
            Every generation has the same architecture and steps and is a model directory OUTPUT/gen-k (its seed is \
            --seed + k − 1). The end prints, and writes to OUTPUT/generations.json, each generation's validation \
            perplexity and bits per byte and those of the ensemble of all generations. --resume continues at the \
            generation and step reached.
            """)

    @OptionGroup var options: TrainingOptions
    @Option(help: "Number of generations (at least 1).") var count: Int
    @Option(help: "The teacher of generation k: previous (k − 1) or all (the ensemble of 1 … k − 1).")
    var teachWith: GenerationTeachers = .previous
    @OptionGroup var logits: LogitOptions

    func validate() throws {
        if count < 1 { throw CommandError("--count must be at least 1 (got \(count))") }
    }

    func run() throws {
        options.start()
        let printer = ProgressPrinter()
        defer { printer.finish() }
        let request = GenerationsRequest(training: options.request(defaultPreset: "tiny-student"), count: count,
                                         settings: try logits.settings(defaults: .student), teachers: teachWith)
        let outcome = try Flags.translatingSettings {
            try BornAgain.run(request) { generation in
                var callbacks = trainingCallbacks(printer)
                let log = callbacks.log
                callbacks.log = { log("[gen-\(generation)] " + $0) }
                return callbacks
            }
        }
        printer.finish()
        try Interrupt.exitIfInterrupted(outcome.generations)
        guard ProcessGroup.world.isRoot else { return }
        for line in outcome.text { print(line) }
        if let file = outcome.tableFile { print("wrote \(file.path)") }
    }
}
