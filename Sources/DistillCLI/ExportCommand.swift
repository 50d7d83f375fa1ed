import ArgumentParser
import Distill
import Foundation

extension ExportFormat: ExpressibleByArgument {}
extension WeightFormat: ExpressibleByArgument {}

/// `distill export`: a model directory as a Hugging Face directory or a llama.cpp GGUF file.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model as a Hugging Face directory (transformers) or a GGUF file (llama.cpp).")

    @Option(help: "Model directory (ours or a Hugging Face Llama one with tokenizer.model).") var model: String
    @Option(help: "hf: a Hugging Face directory; gguf: one llama.cpp file.") var format: ExportFormat
    @Option(help: "Output directory (hf) or file (gguf).") var output: String
    @Option(help: "How weight matrices are stored (q8_0: llama.cpp's 8-bit blocks, GGUF only; matrices whose rows are not a multiple of 32 long stay f16).")
    var dtype: WeightFormat = .f32

    func run() throws {
        RemoveTemporariesOnInterrupt.install()
        try Flags.translatingSettings {
            try ModelExport.export(modelAt: URL(fileURLWithPath: model), format: format,
                                   to: URL(fileURLWithPath: output), dtype: dtype)
        }
        print("wrote \(output) (\(format.rawValue), \(dtype.rawValue))")
    }
}
