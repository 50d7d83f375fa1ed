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
        if let threads = options.threads { Compute.setThreads(threads) }
        let data = try options.openData()
        let tokenizerModel = try options.tokenizerModel(for: data)
        let config = try options.modelConfig(vocabSize: data.vocabSize, defaultPreset: "tiny")
        let model = try LlamaModel(config: config, seed: options.seed)
        let trainer = try Trainer(model: model, objective: CrossEntropyObjective(), parameters: options.parameters,
                                  tokenizerHash: data.tokenizerHash)
        FileHandle.standardError.write(Data(("model: \(model.parameterCount) parameters (width \(config.hiddenSize), \(config.numHiddenLayers) layers, "
              + "\(config.numAttentionHeads) heads, vocab \(config.vocabSize), context \(config.maxPositionEmbeddings))\n").utf8))
        try runTraining(trainer, data: data, options: options, tokenizerModel: tokenizerModel)
    }
}

/// The part of `train` and `student` after the objective is built: resume, sample batches, report.
func runTraining(_ trainer: Trainer, data: TokenFile, options: TrainingOptions, tokenizerModel: String) throws {
    let output = URL(fileURLWithPath: options.output)
    try prepareOutput(output, for: trainer, resume: options.resume)
    let validation = try validationBatches(data: data, parameters: trainer.parameters)
    Interrupt.install()
    let printer = ProgressPrinter()
    defer { printer.finish() }
    try trainer.run(trainingTokens: data.trainTokens, validation: validation, output: output, tokenizerModel: tokenizerModel,
                    shouldStop: { Interrupt.isRequested }, report: printer.handle)
}

/// Creates the output directory, or resumes the trainer from it; refuses to overwrite a run silently.
func prepareOutput(_ output: URL, for trainer: Trainer, resume: Bool) throws {
    try AtomicFile.ensureDirectory(output)
    if resume {
        try trainer.resume(from: output)
        FileHandle.standardError.write(Data("resumed \(output.path) at step \(trainer.step) of \(trainer.parameters.steps)\n".utf8))
    } else if FileManager.default.fileExists(atPath: output.appendingPathComponent("training/state.json").path) {
        throw TrainingError.invalidSetting("\(output.path) already holds a training run: pass --resume to continue it, or choose another --output")
    }
}

/// Fixed validation batches: windows spread evenly over the validation split (the same every time).
func validationBatches(data: TokenFile, parameters: TrainingParameters) throws -> [Batch] {
    let tokens = data.validationTokens, window = parameters.context + 1
    guard tokens.count >= window else {
        FileHandle.standardError.write(Data("warning: the validation split has \(tokens.count) tokens, fewer than one window of \(window); no validation\n".utf8))
        return []
    }
    var batches: [Batch] = []
    let total = parameters.evalBatches * parameters.batchSize
    let spacing = max(1, (tokens.count - window) / max(total - 1, 1))
    var ids = [Int32](repeating: 0, count: window)
    for b in 0..<parameters.evalBatches {
        var inputs: [Int32] = [], targets: [Int32] = []
        for row in 0..<parameters.batchSize {
            let start = min(((b * parameters.batchSize + row) * spacing), tokens.count - window)
            ids.withUnsafeMutableBufferPointer { tokens.copy(from: start, into: $0) }
            inputs += ids.dropLast()
            targets += ids.dropFirst()
        }
        batches.append(Batch(batchSize: parameters.batchSize, contextLength: parameters.context, inputs: inputs, targets: targets))
    }
    return batches
}
