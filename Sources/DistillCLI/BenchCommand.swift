import ArgumentParser
import Distill
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure training, distillation (off- and on-policy) and generation speed on random tokens.")

    @Option(help: "Teacher preset (the student is PRESET-student).") var preset: String = "small"
    @Option(help: "Timed repetitions per figure (the median is reported).") var repeats: Int = 5
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Vocabulary size of both models (default: 2048 for tiny, 4096 for small).") var vocabSize: Int?
    @Option(help: "Sequences per step (default: 8).") var batchSize: Int = 8
    @Flag(help: "Print one JSON object.") var json = false

    /// More repetitions only narrow the median; a bound keeps a typo from running for days.
    static let maximumRepeats = 1000
    /// Teacher presets, each with a PRESET-student.
    static let presets = ["small", "tiny"]

    func validate() throws {
        guard repeats >= 1, repeats <= Self.maximumRepeats else {
            throw ValidationError("--repeats must be between 1 and \(Self.maximumRepeats), got \(repeats)")
        }
        guard Self.presets.contains(preset) else {
            throw ValidationError("--preset takes a teacher preset, \(Self.presets.joined(separator: " or ")) (its student is PRESET-student), got '\(preset)'")
        }
        if let vocabSize, !(2...1_048_576).contains(vocabSize) {
            throw ValidationError("--vocab-size must be between 2 and 1048576, got \(vocabSize)")
        }
        guard (1...4096).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 4096, got \(batchSize)") }
        try checkThreads(threads)
    }

    func run() throws {
        if let threads { Compute.setThreads(threads) }
        // On stderr, so that it is seen with --json too.
        if let note = BLASKernels.weakerKernelsNote { FileHandle.standardError.write(Data((note + "\n").utf8)) }
        let vocab = vocabSize ?? (preset.hasPrefix("tiny") ? 2048 : 4096), context = preset.hasPrefix("tiny") ? 128 : 256
        let batch = batchSize
        let teacher = try LlamaConfig.preset(preset, vocabSize: vocab, context: context)
        let student = try LlamaConfig.preset(preset + "-student", vocabSize: vocab, context: context)
        let report = try Benchmark.run(preset: preset, teacher: teacher, student: student, batch: batch, context: context,
                                       repeats: repeats) { line in if !json { print(line) } }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            // A figure can be infinite (a timing of zero); JSON has no such number.
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
    }
}
