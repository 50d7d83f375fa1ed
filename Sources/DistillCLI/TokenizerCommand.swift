import ArgumentParser
import Distill
import Foundation

extension TokenizerModelType: ExpressibleByArgument {}

/// `distill tokenizer ...`: train a SentencePiece model and use it by hand.
struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Train a lossless SentencePiece tokenizer, and encode or decode with one.",
        subcommands: [Train.self, Encode.self, Decode.self]
    )

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a tokenizer on text files (folders: their .txt files).")

        @Option(name: .long, parsing: .upToNextOption, help: "Text files or folders of .txt files.")
        var input: [String] = []

        @Option(name: .long, help: "Number of pieces in the vocabulary (at least 260: 256 bytes + specials).")
        var vocabSize: Int

        @Option(name: .long, help: "Segmentation algorithm: unigram or bpe.")
        var modelType: TokenizerModelType = .unigram

        @Option(name: .long, help: "Where to write the model (FILE.model).")
        var output: String

        func validate() throws {
            guard !input.isEmpty else { throw ValidationError("give at least one --input file or folder") }
            guard vocabSize >= Tokenizer.minimumVocabularySize else {
                throw ValidationError("--vocab-size must be at least \(Tokenizer.minimumVocabularySize) (256 byte pieces + special pieces)")
            }
        }

        func run() throws {
            let started = Date()
            try Tokenizer.train(inputs: input, vocabSize: vocabSize, modelType: modelType, output: output)
            let tokenizer = try Tokenizer(modelPath: output)
            let seconds = Date().timeIntervalSince(started)
            print("wrote \(output): \(modelType.rawValue), \(tokenizer.vocabSize) pieces, hash \(String(tokenizer.modelHash, radix: 16)), \(String(format: "%.1f", seconds)) s")
        }
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the token ids of a text (from --text, or else standard input), space-separated.")

        @Option(name: .long, help: "The tokenizer model (FILE.model).")
        var tokenizer: String

        @Option(name: .long, help: "The text to encode; standard input is read when it is absent.")
        var text: String?

        func run() throws {
            let loaded = try Tokenizer(modelPath: tokenizer)
            let input: String
            if let text {
                input = text
            } else {
                let data = FileHandle.standardInput.readDataToEndOfFile()
                let name = "(standard input)"
                guard !data.isEmpty else { throw TokenizerError.emptyInput(name) }
                guard let decoded = String(data: data, encoding: .utf8) else {
                    // Names the line and byte that are not UTF-8.
                    try Tokenizer.checkText(data, name: name)
                    throw TokenizerError.invalidUTF8(name, line: 1, byteOffset: 0)
                }
                input = decoded
            }
            print(loaded.encode(input).map(String.init).joined(separator: " "))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the text of token ids.")

        @Option(name: .long, help: "The tokenizer model (FILE.model).")
        var tokenizer: String

        @Argument(help: "Token ids.")
        var ids: [Int32] = []

        func run() throws {
            let loaded = try Tokenizer(modelPath: tokenizer)
            try loaded.checkIDs(ids)
            let text = loaded.decode(ids)
            // Keep the shell prompt on its own line unless the text already ends one.
            print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
        }
    }
}
