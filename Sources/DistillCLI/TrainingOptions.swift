import ArgumentParser
import Distill
import Foundation

/// The flags every training command shares (`train`, `student`).
struct TrainingOptions: ParsableArguments {
    @Option(help: "Token file made by `distill prepare`.") var data: String
    @Option(help: "Model directory to write (config.json, model.safetensors, tokenizer.model, checkpoints).") var output: String
    @Option(help: "Model preset: tiny, tiny-student, small, small-student.") var preset: String?
    @Option(help: "A config.json with Hugging Face names, instead of a preset.") var config: String?
    @Option(help: "SentencePiece model of the data (default: the copy `prepare` left beside the token file).") var tokenizer: String?
    @Option(help: "Optimizer steps.") var steps: Int = 1000
    @Option(help: "Sequences per micro-batch.") var batchSize: Int = 8
    @Option(help: "Tokens per sequence (default: the model's context, 256 for presets).") var context: Int?
    @Option(help: "Micro-batches per optimizer step (gradient accumulation).") var accumulation: Int = 1
    @Option(help: "Peak learning rate.") var lr: Float = 1e-3
    @Option(help: "Warm-up steps.") var warmup: Int = 100
    @Option(help: "Weight decay (not on norm gains).") var weightDecay: Float = 0.1
    @Option(help: "Clip the global gradient norm to this (0: off).") var gradClip: Float = 1.0
    @Option(help: "Seed of the weights and the batch sampler.") var seed: UInt64 = 1
    @Option(help: "Validate every N steps (0: only at the end).") var evalEvery: Int = 100
    @Option(help: "Validation batches.") var evalBatches: Int = 8
    @Option(help: "Save a checkpoint every N steps (0: only at the end).") var saveEvery: Int = 500
    @Option(help: "Progress line every N steps.") var logEvery: Int = 10
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Continue from the checkpoint in --output.") var resume = false

    func validate() throws {
        if preset != nil && config != nil { throw ValidationError("give --preset or --config, not both") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    var parameters: TrainingParameters {
        var p = TrainingParameters()
        p.steps = steps
        p.batchSize = batchSize
        p.context = context ?? 256
        p.accumulationSteps = accumulation
        p.learningRate = lr
        p.warmupSteps = warmup
        p.weightDecay = weightDecay
        p.gradientClip = gradClip
        p.seed = seed
        p.evalEvery = evalEvery
        p.evalBatches = evalBatches
        p.saveEvery = saveEvery
        p.logEvery = logEvery
        return p
    }

    /// The model shape: from --config, else the preset (default `tiny`), with the data's vocabulary.
    func modelConfig(vocabSize: Int, defaultPreset: String) throws -> LlamaConfig {
        if let config {
            let url = URL(fileURLWithPath: config)
            guard let bytes = FileManager.default.contents(atPath: url.path) else { throw IOError.missing(config) }
            var decoded: LlamaConfig
            do { decoded = try JSONDecoder().decode(LlamaConfig.self, from: bytes) }
            catch { throw ModelError.invalidConfig("\(config) is not a valid config.json: \(error)") }
            try decoded.validate()
            guard decoded.vocabSize == vocabSize else {
                throw ModelError.mismatch("\(config) has vocab_size \(decoded.vocabSize) but the data's tokenizer has \(vocabSize)")
            }
            if let context, context > decoded.maxPositionEmbeddings { decoded.maxPositionEmbeddings = context }
            return decoded
        }
        return try LlamaConfig.preset(preset ?? defaultPreset, vocabSize: vocabSize, context: context ?? 256)
    }

    /// The token file, with every id checked against its vocabulary (a damaged file is refused here,
    /// not in the middle of a run).
    func openData() throws -> TokenFile {
        let file = try TokenFile(path: data)
        try file.checkTokenRange()
        return file
    }

    /// The tokenizer to copy into the model directory, checked against the data's tokenizer hash.
    func tokenizerModel(for data: TokenFile) throws -> String {
        let path = tokenizer ?? TokenFile.companionTokenizerPath(for: data.path)
        try data.checkTokenizer(Tokenizer(modelPath: path))
        return path
    }
}
