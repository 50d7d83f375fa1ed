import Foundation

/// What the training loop reports as it goes.
public enum TrainingEvent {
    /// The loop is about to take its first step (`step` 0, or the checkpoint's after a resume): until the
    /// next `.step`, what is on disk is all there is to save.
    case started(step: Int)
    /// A progress report: step (1-based) of total, loss terms, learning rate, gradient norm, speed.
    case step(StepReport)
    /// Validation terms averaged over the validation batches.
    case validation(step: Int, terms: LossTerms)
    case checkpoint(step: Int, directory: URL)
    case interrupted(step: Int)
}

/// The training loop shared by `train`, `student` and `mutual`: micro-batches with gradient accumulation,
/// global-norm clipping, AdamW with warm-up and cosine decay, validation and atomic checkpoints,
/// and an exact resume (the batch sampler's state is part of the checkpoint).
public final class Trainer {
    public let model: LlamaModel
    public let objective: TrainingObjective
    public let parameters: TrainingParameters
    public let optimizer: AdamW
    /// Optimizer steps done.
    public internal(set) var step = 0
    /// Draws the training windows; saved and restored with the checkpoint.
    public var random: SeededRandom
    /// Tokenizer identity of the data, checked on resume.
    public let tokenizerHash: UInt64
    var elapsedBefore: Double = 0
    /// The ranks training this model data-parallel (mpirun; see DataParallel.swift): each draws its share
    /// of every global batch, gradients are summed over them before the step, rank 0 alone writes.
    public let group: ProcessGroup
    /// Whether some rank asked to stop, as of the last step's reduction.
    var stopAgreed = false
    /// Seconds spent summing gradients over the ranks since the last progress report.
    var reduceSeconds = 0.0

    public init(model: LlamaModel, objective: TrainingObjective, parameters: TrainingParameters, tokenizerHash: UInt64,
                group: ProcessGroup = .world) throws {
        try parameters.validate()
        guard parameters.context <= model.config.maxPositionEmbeddings else {
            throw SettingError(.context, "is \(parameters.context), longer than the model's max_position_embeddings \(model.config.maxPositionEmbeddings)")
        }
        try model.config.checkTrainingActivations(batch: parameters.batchSize, context: parameters.context,
                                                  recomputingGateUp: model.recomputesGateUp,
                                                  firstBlocksRecomputingGateUp: model.firstBlocksRecomputingGateUp)
        self.model = model
        self.objective = objective
        self.parameters = parameters
        self.tokenizerHash = tokenizerHash
        self.group = group
        let total = model.parameterCount + objective.extraTensors.reduce(0) { $0 + $1.values.count }
        optimizer = AdamW(totalCount: total, beta1: parameters.beta1, beta2: parameters.beta2, weightDecay: parameters.weightDecay)
        random = SeededRandom(seed: parameters.seed &+ 0x5EED)
        model.zeroGradients()
    }

    /// The model's weights and the extra tensors, in optimizer order.
    var segments: [TrainableSegment] {
        let weights = model.parameters.baseAddress!, grads = model.gradients!.baseAddress!
        return model.layout.tensors.map {
            TrainableSegment(parameters: weights + $0.offset, gradients: grads + $0.offset, count: $0.count, decays: $0.decays)
        } + objective.extraTensors.map(\.segment)
    }

    /// Runs until `parameters.steps`, or until `shouldStop` says so (then saves and returns).
    /// `nextBatch` draws a training micro-batch from the trainer's generator.
    public func run(nextBatch: @escaping (inout SeededRandom) throws -> Batch, validation: [Batch], output: URL,
                    tokenizerModel: String, shouldStop: () -> Bool = { false },
                    report: (TrainingEvent) -> Void) throws {
        try Trainer.runTogether([self], nextBatches: [nextBatch], validation: validation, outputs: [output],
                                tokenizerModel: tokenizerModel, shouldStop: shouldStop) { _, event in report(event) }
    }

    /// Runs over random windows of `tokens` (a token file's training split), drawn from the trainer's
    /// own generator so that the checkpoint's sampler state resumes the same sequence of batches.
    public func run(trainingTokens tokens: TokenView, validation: [Batch], output: URL, tokenizerModel: String,
                    shouldStop: () -> Bool = { false }, report: (TrainingEvent) -> Void) throws {
        try Trainer.runTogether([self], trainingTokens: tokens, validation: validation, outputs: [output],
                                tokenizerModel: tokenizerModel, shouldStop: shouldStop) { _, event in report(event) }
    }

    /// Trains several models in lockstep (online distillation: each objective may read the others'
    /// current weights), one optimizer step of each in turn, every one drawing windows of `tokens` from
    /// its own generator. `report` receives the trainer's index with each event.
    public static func runTogether(_ trainers: [Trainer], trainingTokens tokens: TokenView, validation: [Batch],
                                   outputs: [URL], tokenizerModel: String, shouldStop: () -> Bool = { false },
                                   report: (Int, TrainingEvent) -> Void) throws {
        let nextBatches = try trainers.map { trainer -> (inout SeededRandom) throws -> Batch in
            // Every rank draws the whole global batch from the same generator and keeps its own rows, so
            // N ranks see exactly the batches one process with N times the batch size sees.
            let rows = trainer.parameters.batchSize, share = trainer.group.rank * rows ..< (trainer.group.rank + 1) * rows
            var sampler = try BatchSampler(tokens: tokens, batchSize: rows * trainer.group.size,
                                           contextLength: trainer.parameters.context, random: trainer.random)
            return { random in
                sampler.random = random
                let batch = trainer.group.size == 1 ? sampler.next() : sampler.next(rows: share)
                random = sampler.random
                return batch
            }
        }
        try runTogether(trainers, nextBatches: nextBatches, validation: validation, outputs: outputs,
                        tokenizerModel: tokenizerModel, shouldStop: shouldStop, report: report)
    }

    static func runTogether(_ trainers: [Trainer], nextBatches: [(inout SeededRandom) throws -> Batch],
                            validation: [Batch], outputs: [URL], tokenizerModel: String, shouldStop: () -> Bool,
                            report: (Int, TrainingEvent) -> Void) throws {
        var clocks = trainers.map { _ in ReportClock() }
        // Under mpirun only rank 0 reports, and the ranks stop together: a signal reaches each at its own
        // moment, so the decision travels with the gradients (any rank's request stops all after that step).
        let parallel = trainers.contains { $0.group.size > 1 }
        for (index, trainer) in trainers.enumerated() where trainer.group.isRoot { report(index, .started(step: trainer.step)) }
        while trainers.contains(where: { $0.step < $0.parameters.steps }) {
            if parallel ? trainers.contains(where: \.stopAgreed) : shouldStop() {
                for (index, trainer) in trainers.enumerated() {
                    try trainer.saveCheckpoint(to: outputs[index], tokenizerModel: tokenizerModel,
                                               elapsed: Date().timeIntervalSince(clocks[index].start))
                    if trainer.group.isRoot { report(index, .interrupted(step: trainer.step)) }
                }
                return
            }
            for (index, trainer) in trainers.enumerated() where trainer.step < trainer.parameters.steps {
                let result = try trainer.optimizerStep(nextBatch: nextBatches[index], stopRequested: parallel && shouldStop())
                try trainer.afterStep(result, clock: &clocks[index], validation: validation, output: outputs[index],
                                      tokenizerModel: tokenizerModel) { report(index, $0) }
            }
        }
    }

    /// When a run started and how many steps the current speed window holds.
    struct ReportClock {
        let start = Date()
        var windowStart = Date()
        var windowSteps = 0
    }

    /// What one optimizer step measured.
    struct StepResult {
        let terms: LossTerms
        let learningRate: Float
        let gradientNorm: Float
    }

    /// One optimizer step on a given micro-batch, with no checkpoint or report (the benchmark's unit of work).
    public func singleStep(_ batch: Batch) throws {
        _ = try optimizerStep { _ in batch }
    }

    /// One optimizer step: the micro-batches' gradients added up, clipped, and applied by AdamW.
    /// Under mpirun the gradients and terms are summed over the ranks first (`stopRequested`: this rank's
    /// wish to stop, shared with the others in the same reduction).
    func optimizerStep(nextBatch: (inout SeededRandom) throws -> Batch, stopRequested: Bool = false) throws -> StepResult {
        let segments = self.segments
        model.zeroGradients()
        for tensor in objective.extraTensors { tensor.gradients.update(repeating: 0) }
        var terms = LossTerms()
        // The mean over the global batch: each rank's share of it weighs 1/N.
        let scale = 1 / Float(parameters.accumulationSteps * group.size)
        objective.prepare(step: step, totalSteps: parameters.steps)
        for _ in 0..<parameters.accumulationSteps {
            let batch = try nextBatch(&random)
            let micro = try objective.trainStep(model: model, batch: batch, gradientScale: scale)
            terms.add(micro, times: 1 / Double(parameters.accumulationSteps))
        }
        if group.size > 1 { terms = reduceAcrossRanks(terms, stopRequested: stopRequested) }
        // Stop before a non-finite step reaches the weights; the last checkpoint stays as it was.
        guard let loss = terms[.loss], loss.isFinite else { throw TrainingError.diverged(step: step + 1, what: "loss") }
        let norm = gradientNorm(segments)
        guard norm.isFinite else { throw TrainingError.diverged(step: step + 1, what: "gradient norm") }
        let rate = learningRate(step: step, totalSteps: parameters.steps, peak: parameters.learningRate,
                                warmup: parameters.warmupSteps, minimumFraction: parameters.minimumLearningRateFraction)
        // Clipped inside AdamW's pass.
        optimizer.update(segments, learningRate: rate, gradientScale: clipScale(norm: norm, maxNorm: parameters.gradientClip))
        step += 1
        return StepResult(terms: terms, learningRate: rate, gradientNorm: norm)
    }

    /// Reports progress, validates and saves after a step, as the run's cadence says.
    func afterStep(_ result: StepResult, clock: inout ReportClock, validation: [Batch], output: URL,
                   tokenizerModel: String, report: (TrainingEvent) -> Void) throws {
        let tokensPerStep = parameters.batchSize * parameters.context * parameters.accumulationSteps * group.size
        clock.windowSteps += 1
        let last = step == parameters.steps
        if step % max(1, parameters.logEvery) == 0 || last {
            let seconds = Date().timeIntervalSince(clock.windowStart)
            let speed = Double(clock.windowSteps * tokensPerStep) / max(seconds, 1e-9)
            clock.windowStart = Date()
            clock.windowSteps = 0
            let left = Double((parameters.steps - step) * tokensPerStep) / max(speed, 1e-9)
            var statistics = StepStatistics()
            if let sampling = objective as? SamplingObjective {
                // Generation inside the step: its speed and its share of the step time.
                let generation = sampling.takeGenerationTiming()
                statistics.generationTokensPerSecond = Double(generation.tokens) / max(generation.seconds, 1e-9)
                statistics.generationShare = generation.seconds / max(seconds, 1e-9)
            }
            if group.size > 1 {
                // Sequences per optimizer step over all ranks, and the share of the time spent summing gradients.
                statistics.globalBatch = parameters.batchSize * parameters.accumulationSteps * group.size
                statistics.allreduceShare = reduceSeconds / max(seconds, 1e-9)
                reduceSeconds = 0
                if ProcessGroup.separatesWaiting {
                    statistics.allreduceWaitShare = group.waitingSeconds / max(seconds, 1e-9)
                    group.waitingSeconds = 0
                }
            }
            if group.isRoot {
                report(.step(StepReport(step: step, total: parameters.steps, terms: result.terms, statistics: statistics,
                                        learningRate: result.learningRate, gradientNorm: result.gradientNorm,
                                        tokensPerSecond: speed, secondsLeft: left)))
                MetricsLog.append(["kind": "train", "step": step, "lr": Double(result.learningRate),
                               "grad_norm": Double(result.gradientNorm), "tokens_per_second": speed]
                    .merging(result.terms.byName.merging(statistics.byName) { a, _ in a }) { a, _ in a }, to: output)
            }
        }
        if (parameters.evalEvery > 0 && step % parameters.evalEvery == 0) || last, !validation.isEmpty {
            let terms = try evaluate(validation)
            if group.isRoot {
                report(.validation(step: step, terms: terms))
                MetricsLog.append(["kind": "validation", "step": step].merging(terms.byName) { a, _ in a }, to: output)
            }
        }
        if (parameters.saveEvery > 0 && step % parameters.saveEvery == 0) || last {
            try saveCheckpoint(to: output, tokenizerModel: tokenizerModel, elapsed: Date().timeIntervalSince(clock.start))
            report(.checkpoint(step: step, directory: output))
        }
    }

    /// Validation terms averaged over `batches`, plus perplexity from the mean cross-entropy.
    /// Under mpirun each rank scores its rows of every batch and the terms are averaged over the ranks.
    public func evaluate(_ batches: [Batch]) throws -> LossTerms {
        let split = group.size > 1 && batches.allSatisfy { $0.batchSize % group.size == 0 }
        var totals = LossTerms()
        for batch in batches {
            let share = split ? batch.rows(group.rank * batch.batchSize / group.size, count: batch.batchSize / group.size) : batch
            totals.add(try objective.evaluate(model: model, batch: share))
        }
        if split { totals = meanOverRanks(totals) }
        var terms = totals.mapValues { $0 / Double(max(batches.count, 1)) }
        if let ce = terms[.ce] { terms[.perplexity] = exp(ce) }
        return terms
    }

    // MARK: checkpoints

    /// Writes the resume state (under `training/`, swapped in atomically) and then the model (top level,
    /// for `sample`/`eval`).
    /// Under mpirun every rank calls it: the ranks check that they hold the same weights, rank 0 writes.
    public func saveCheckpoint(to directory: URL, tokenizerModel: String, elapsed: Double = 0) throws {
        try checkRanksAgreeOnWeights()
        guard group.isRoot else { return }
        let weights = model.parameters
        var optimizerTensors = [
            SafetensorsTensor(name: "adamw.first_moment", shape: [optimizer.firstMoment.count], values: optimizer.firstMoment),
            SafetensorsTensor(name: "adamw.second_moment", shape: [optimizer.secondMoment.count], values: optimizer.secondMoment),
        ]
        for tensor in objective.extraTensors {
            optimizerTensors.append(SafetensorsTensor(name: "extra." + tensor.name, shape: tensor.shape, values: Array(tensor.values)))
        }
        let state = Checkpoint.State(step: step, optimizerStep: optimizer.step, random: random, parameters: parameters,
                                     tokenizerHash: String(tokenizerHash, radix: 16), elapsedSeconds: elapsedBefore + elapsed,
                                     extraTensors: objective.extraTensors.map(\.name), objective: objective.identity,
                                     weightsHash: String(weightsHash(UnsafeBufferPointer(weights)), radix: 16),
                                     processes: group.size > 1 ? group.size : nil,
                                     generationRandom: (objective as? SamplingObjective)?.generationRandom)
        try Checkpoint.write(state: state, weights: ModelDirectory.tensors(of: model), optimizer: optimizerTensors, to: directory)
        try ModelDirectory.save(model, tokenizerModel: tokenizerModel, to: directory)
    }

    /// Restores weights, optimizer moments, extra tensors, step and sampler state from `directory`,
    /// after checking that the run's settings and objective are the checkpoint's (only the length and
    /// the reporting cadence may change) and that the state belongs to the weights beside it.
    public func resume(from directory: URL) throws {
        let (state, stateFolder) = try Checkpoint.read(from: directory)
        let saved = state.processes ?? 1
        guard saved == group.size else {
            throw TrainingError.cannotResume("the checkpoint was trained by \(saved) process\(saved == 1 ? "" : "es") and this run has "
                + "\(group.size): each step's batches depend on the number, so resume with \(saved == 1 ? "one process (no mpirun)" : "mpirun -np \(saved)")")
        }
        try Checkpoint.checkCompatible(saved: state, parameters: parameters, objective: objective.identity,
                                       tokenizerHash: tokenizerHash)
        guard state.extraTensors == objective.extraTensors.map(\.name) else {
            throw TrainingError.cannotResume("the checkpoint's distillation terms differ from this run's")
        }
        // A resume with another preset or config would otherwise fail on the first tensor's shape.
        if let saved = try? LlamaConfig.read(from: directory.appendingPathComponent("config.json")), !saved.sameShape(as: model.config) {
            throw TrainingError.cannotResume("the checkpoint's model is \(saved.shapeSummary) and this run's is \(model.config.shapeSummary): "
                                             + "resume with the preset or config it was trained with")
        }
        try ModelDirectory.loadWeights(into: model, from: try SafetensorsFile(url: stateFolder.appendingPathComponent("model.safetensors")))
        guard String(weightsHash(UnsafeBufferPointer(model.parameters)), radix: 16) == state.weightsHash else {
            throw TrainingError.cannotResume("\(stateFolder.path)/state.json does not belong to the weights beside it (copied from another run?): start a new run")
        }
        let optimizerFile = try SafetensorsFile(url: stateFolder.appendingPathComponent("optimizer.safetensors"))
        let first = try optimizerFile.floats("adamw.first_moment"), second = try optimizerFile.floats("adamw.second_moment")
        guard first.count == optimizer.firstMoment.count, second.count == optimizer.secondMoment.count else {
            throw TrainingError.cannotResume("the optimizer state does not match the model's size")
        }
        optimizer.firstMoment = first
        optimizer.secondMoment = second
        optimizer.step = state.optimizerStep
        for tensor in objective.extraTensors {
            let values = try optimizerFile.floats("extra." + tensor.name)
            guard values.count == tensor.values.count else { throw TrainingError.cannotResume("tensor \(tensor.name) has the wrong size") }
            _ = tensor.values.update(fromContentsOf: values)
        }
        if let sampling = objective as? SamplingObjective {
            guard let generationRandom = state.generationRandom else {
                throw TrainingError.cannotResume("the checkpoint holds no state of a sample generator: it was not an on-policy run")
            }
            sampling.generationRandom = generationRandom
        }
        step = state.step
        random = state.random
        elapsedBefore = state.elapsedSeconds
        MetricsLog.truncate(after: step, in: directory)
    }

    /// Training time before this process, from the checkpoint (resumed runs).
    public var secondsBeforeResume: Double { elapsedBefore }
}
