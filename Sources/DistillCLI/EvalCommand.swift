import ArgumentParser
import Distill
import Foundation

/// `distill eval`: perplexity and bits per byte of one or more models on a text or a token file's
/// validation split; several models give a comparison table.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a text file or a token file's validation split: NLL, perplexity, bits per byte.",
        discussion: "Give --model several times to compare models (e.g. teacher, baseline and student) in one table.")

    @Option(help: "Model directory (repeat to compare several).") var model: [String] = []
    @Option(parsing: .upToNextOption, help: "Model directories scored as one ensemble (the mean of their probabilities), a row beside the models.")
    var ensemble: [String] = []
    @Option(help: "Weights of the --ensemble members, w1,w2,... (default: equal).") var teacherWeights: String?
    @Option(help: "A UTF-8 text file to score.") var text: String?
    @Option(help: "A token file; its validation split is scored.") var data: String?
    @Option(help: "Advance of the scoring window (default: the context; smaller gives more left context).") var stride: Int?
    @Option(parsing: .upToNextOption,
            help: "Score each model with its weights as f32 and/or rounded as `sample --precision` reads them (bf16, f16, q8_0): a row per model and precision, to show what a precision costs.")
    var precision: [WeightFormat] = [.f32]
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        if model.isEmpty && ensemble.isEmpty { throw ValidationError("give a --model directory or an --ensemble of them") }
        if teacherWeights != nil && ensemble.isEmpty { throw ValidationError("--teacher-weights weighs the members of an --ensemble; give one") }
        if (text == nil) == (data == nil) { throw ValidationError("give exactly one of --text FILE or --data DATA") }
        try checkThreads(threads)
    }

    func run() throws {
        if let threads { Compute.setThreads(threads) }
        var results: [(name: String, parameters: Int, report: PerplexityReport, precision: WeightFormat)] = []
        func evaluationTokens(_ loaded: LoadedModel) throws -> EvaluationTokens {
            try text.map { try EvaluationTokens(textFile: $0, tokenizer: loaded.tokenizer) }
                ?? EvaluationTokens(validationSplitOf: data ?? "", tokenizer: loaded.tokenizer)
        }
        func name(_ base: String, _ format: WeightFormat) -> String { format == .f32 ? base : "\(base) (\(format.rawValue))" }
        for path in model {
            let loaded = try LoadedModel(path: path)
            let input = try evaluationTokens(loaded)
            for format in precision {
                // Under mpirun the ranks share the windows.
                let report = try scoreTokens(model: loaded.model.rounded(to: format), tokens: input.tokens, bytes: input.bytes,
                                             stride: stride, group: ProcessGroup.world)
                results.append((name(path, format), loaded.model.parameterCount, report, format))
            }
        }
        if !ensemble.isEmpty {
            let members = try LoadedModel.ensemble(ensemble, weights: teacherWeights)
            let input = try evaluationTokens(members.first)
            for format in precision {
                let rounded = try ModelEnsemble(members: members.ensemble.members.map { try $0.rounded(to: format) },
                                                weights: members.ensemble.weights)
                let report = try scoreTokens(ensemble: rounded, tokens: input.tokens, bytes: input.bytes, stride: stride,
                                             group: ProcessGroup.world)
                results.append((name("ensemble(" + ensemble.joined(separator: "+") + ")", format),
                                members.ensemble.members.reduce(0) { $0 + $1.parameterCount }, report, format))
            }
        }
        guard ProcessGroup.world.isRoot else { return }
        if json {
            let objects = results.map { result -> [String: Any] in
                var object = result.report.json
                object["parameters"] = result.parameters
                object["model"] = result.name
                object["precision"] = result.precision.rawValue
                return object
            }
            let payload: [String: Any] = objects.count == 1 ? objects[0] : ["models": objects as [Any]]
            print(String(decoding: try JSONOutput.data(payload), as: UTF8.self))
        } else if results.count == 1, let result = results.first {
            print(String(format: "parameters %d  tokens %d  mean NLL %.4f nats  perplexity %.3f  bits/byte %.4f",
                         result.parameters, result.report.tokens, result.report.meanNLL, result.report.perplexity,
                         result.report.bitsPerByte))
        } else {
            let width = max(5, results.map(\.name.count).max() ?? 5)
            print("model".padding(toLength: width, withPad: " ", startingAt: 0) + "   parameters   perplexity   bits/byte")
            for result in results {
                print(result.name.padding(toLength: width, withPad: " ", startingAt: 0)
                      + String(format: " %12d %12.2f %11.4f", result.parameters, result.report.perplexity, result.report.bitsPerByte))
            }
        }
    }
}
