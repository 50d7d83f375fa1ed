import ArgumentParser
import Distill
import Foundation

/// The flags every training command shares (`train`, `student`, `mutual`).
struct TrainingOptions: ParsableArguments {
    @Option(help: "Token file made by `distill prepare`.") var data: String
    @Option(help: "Model directory to write (config.json, model.safetensors, tokenizer.model, checkpoints).") var output: String
    @Option(help: "Model preset: tiny, tiny-student, small, small-student.") var preset: String?
    @Option(help: "A config.json with Hugging Face names, instead of a preset.") var config: String?
    @Option(help: "SentencePiece model of the data (default: the copy `prepare` left beside the token file).") var tokenizer: String?
    @Option(help: "Optimizer steps.") var steps: Int = 1000
    @Option(help: "Sequences per micro-batch.") var batchSize: Int = 8
    @Option(help: "Tokens per sequence (default: the model's context: a config's max_position_embeddings, 256 for presets, at most the teacher's).") var context: Int?
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
    @Option(help: "Threads (default: all cores; under mpirun, the cores shared among the ranks on a machine).") var threads: Int?
    @Flag(help: "Continue from the checkpoint in --output.") var resume = false
    @Flag(help: "Recompute each block's gate/up product in backward instead of keeping it: less memory (272 → 218 MB at the small preset), about 9% more work, the same results.")
    var recomputeActivations = false

    func validate() throws {
        if preset != nil && config != nil { throw CommandError("give --preset or --config, not both") }
        try Flags.requireFinite([(lr, .learningRate), (weightDecay, .weightDecay), (gradClip, .gradientClip)])
        try checkThreads(threads)
        if let context, context < 1 { throw CommandError("--context must be positive (got \(context))") }
        try Flags.translatingSettings { try request(defaultPreset: "tiny").parameters.validateIgnoringContext() }
    }

    /// The library's description of the run these flags ask for.
    func request(defaultPreset: String) -> TrainingRequest {
        var request = TrainingRequest(data: data, output: output)
        request.tokenizer = tokenizer
        request.shape = preset.map(ModelShape.preset) ?? config.map(ModelShape.config)
        request.defaultPreset = defaultPreset
        request.context = context
        request.resume = resume
        request.recomputeActivations = recomputeActivations
        var p = TrainingParameters()
        p.steps = steps
        p.batchSize = batchSize
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
        request.parameters = p
        return request
    }

    /// Threads, signal handling: what every training command does first.
    func start() {
        Interrupt.install()
        if let threads { Compute.setThreads(threads) }
    }
}

/// Prints a run's progress and one-off lines on standard error.
/// Under mpirun only rank 0 prints.
func trainingCallbacks(_ printer: ProgressPrinter) -> TrainingCallbacks {
    guard ProcessGroup.world.isRoot else { return TrainingCallbacks(shouldStop: { Interrupt.isRequested }) }
    return TrainingCallbacks(event: printer.handle, log: { line in
        printer.finish()
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }, shouldStop: { Interrupt.isRequested })
}
