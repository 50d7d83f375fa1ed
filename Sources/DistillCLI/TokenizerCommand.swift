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
            RemoveTemporariesOnInterrupt.install()
            let started = Date()
            let report = try Flags.translatingSettings {
                try Tokenizer.train(inputs: input, vocabSize: vocabSize, modelType: modelType, output: output)
            }
            if report.splitLines > 0 {
                FileHandle.standardError.write(Data(("note: \(report.splitLines) line(s) longer than \(Tokenizer.maximumSentenceBytes) bytes "
                    + "were cut into pieces for training (SentencePiece's limit)\n").utf8))
            }
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
        static let configuration = CommandConfiguration(
            abstract: "Print the text of token ids (arguments, or else standard input), separated by spaces.")

        @Option(name: .long, help: "The tokenizer model (FILE.model).")
        var tokenizer: String

        // Strings, each holding one or more ids: the argument parser takes time quadratic in the number
        // of values of a repeated argument, so `main` hands a long run of ids over as one string.
        @Argument(help: "Token ids; standard input is read when there are none.")
        var ids: [String] = []

        /// Joins the id arguments of `tokenizer decode` into one, so that decoding 100,000 ids takes as
        /// long as reading them. Other command lines come back unchanged.
        static func joiningIDs(_ arguments: [String]) -> [String] {
            guard arguments.count > 2, arguments[0] == "tokenizer", arguments[1] == "decode" else { return arguments }
            var kept = Array(arguments[..<2]), ids: [String] = []
            var index = 2
            while index < arguments.count {
                let argument = arguments[index]
                if argument == "--tokenizer" && index + 1 < arguments.count {
                    kept += [argument, arguments[index + 1]]
                    index += 2
                    continue
                }
                if argument == "--" {
                    ids += arguments[(index + 1)...]
                    break
                }
                if argument.hasPrefix("-") && Int(argument) == nil { kept.append(argument) } else { ids.append(argument) }
                index += 1
            }
            // After "--", a string that starts with a minus sign is not taken for an option.
            return ids.isEmpty ? kept : kept + ["--", ids.joined(separator: " ")]
        }

        func run() throws {
            let loaded = try Tokenizer(modelPath: tokenizer)
            var words = ids.flatMap { $0.split(whereSeparator: \.isWhitespace) }
            if ids.isEmpty {
                let input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                words = input.split(whereSeparator: \.isWhitespace)
            }
            let ids = try words.map { word -> Int32 in
                guard let id = Int32(word) else { throw ValidationError("'\(word)' is not a token id: give integers such as 17 42") }
                return id
            }
            try loaded.checkIDs(ids)
            let text = loaded.decode(ids)
            // Keep the shell prompt on its own line unless the text already ends one.
            print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
        }
    }
}
