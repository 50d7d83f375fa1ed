import ArgumentParser
import Distill
import Foundation

/// `distill eval`: perplexity and bits per byte of a model on a text or a token file's validation split.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval", abstract: "Score a text file or a token file's validation split: NLL, perplexity, bits per byte.")

    @Option(help: "Model directory.") var model: String
    @Option(help: "A UTF-8 text file to score.") var text: String?
    @Option(help: "A token file; its validation split is scored.") var data: String?
    @Option(help: "Advance of the scoring window (default: the context; smaller gives more left context).") var stride: Int?
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        if (text == nil) == (data == nil) { throw ValidationError("give exactly one of --text FILE or --data DATA") }
    }

    func run() throws {
        if let threads { Compute.setThreads(threads) }
        let loaded = try LoadedModel(path: model)
        let tokens: [Int32], bytes: Int
        if let text {
            guard let raw = FileManager.default.contents(atPath: text) else { throw IOError.missing(text) }
            guard let string = String(data: raw, encoding: .utf8) else {
                throw EvaluationError.notText(text)
            }
            tokens = loaded.tokenizer.encode(string)
            bytes = raw.count
        } else {
            let file = try TokenFile(path: data!)
            try file.checkTokenizer(loaded.tokenizer)
            tokens = Array(file.validationTokens)
            bytes = file.validationByteCount
        }
        let report = try scoreTokens(model: loaded.model, tokens: tokens, bytes: bytes, stride: stride)
        if json {
            let data = try JSONSerialization.data(withJSONObject: report.json, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "tokens %d  mean NLL %.4f nats  perplexity %.3f  bits/byte %.4f",
                         report.tokens, report.meanNLL, report.perplexity, report.bitsPerByte))
        }
    }
}
