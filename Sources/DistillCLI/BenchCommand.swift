import ArgumentParser
import Distill
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure training, distillation and generation speed on random tokens.")

    @Option(help: "Teacher preset (the student is PRESET-student).") var preset: String = "small"
    @Option(help: "Timed repetitions per figure (the median is reported).") var repeats: Int = 5
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
    }

    func run() throws {
        if let threads { Compute.setThreads(threads) }
        let vocab = preset.hasPrefix("tiny") ? 2048 : 4096, context = preset.hasPrefix("tiny") ? 128 : 256, batch = 8
        let teacher = try LlamaConfig.preset(preset, vocabSize: vocab, context: context)
        let student = try LlamaConfig.preset(preset + "-student", vocabSize: vocab, context: context)
        let report = try Benchmark.run(preset: preset, teacher: teacher, student: student, batch: batch, context: context,
                                       repeats: repeats) { line in if !json { print(line) } }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
    }
}
