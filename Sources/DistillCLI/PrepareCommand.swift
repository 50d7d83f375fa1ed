import ArgumentParser
import Distill
import Foundation

/// `distill prepare`: encode text into a token file with a training and a validation split.
struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Encode text files into a memory-mappable token file with a validation split."
    )

    @Option(name: .long, help: "The tokenizer model (FILE.model).")
    var tokenizer: String

    @Option(name: .long, parsing: .upToNextOption, help: "Text files, folders of .txt files, or - for standard input.")
    var input: [String] = []

    @Option(name: .long, help: "Where to write the token file.")
    var output: String

    @Option(name: .long, help: "Fraction of the text, taken from its end, kept for validation (0 for none).")
    var valFraction: Double = 0.1

    func validate() throws {
        guard !input.isEmpty else { throw ValidationError("give at least one --input file, folder or -") }
        guard valFraction >= 0, valFraction < 1 else {
            throw ValidationError("--val-fraction must be at least 0 and below 1, e.g. 0.1")
        }
    }

    func run() throws {
        RemoveTemporariesOnInterrupt.install()
        let loaded = try Tokenizer(modelPath: tokenizer)
        let showProgress = isatty(STDERR_FILENO) == 1
        let summary = try Flags.translatingSettings {
            try TokenFile.prepare(tokenizer: loaded, inputs: input, output: output, valFraction: valFraction) { progress in
                guard showProgress else { return }
                let line = String(format: "\r%.1f / %.1f MB, %.2f MB/s", Double(progress.bytesDone) / 1e6,
                                  Double(progress.totalBytes) / 1e6, progress.megabytesPerSecond)
                FileHandle.standardError.write(Data(line.utf8))
            }
        }
        if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
        print("wrote \(summary.output): \(summary.tokenCount) tokens from \(summary.sourceByteCount) bytes "
              + String(format: "(%.2f bytes/token) in %.1f s, %.2f MB/s",
                       Double(summary.sourceByteCount) / Double(max(summary.tokenCount, 1)), summary.seconds, summary.megabytesPerSecond))
        print("split: train \(summary.trainTokenCount) tokens (\(summary.trainByteCount) bytes), "
              + "validation \(summary.validationTokenCount) tokens (\(summary.validationByteCount) bytes)")
    }
}
