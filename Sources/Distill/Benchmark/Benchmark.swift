import CBLAS
import Foundation

/// Speed figures of `distill bench`, each the median over repeated timings in one run.
public struct BenchmarkReport: Codable, Sendable {
    public var preset: String
    public var threads: Int
    public var blasCore: String
    /// The instruction set of our own kernels' bodies ("avx512", "avx2" or "baseline").
    public var ownKernels: String
    public var sgemmGFLOPS: Double
    public var trainTokensPerSecond: Double
    public var trainModelGFLOPS: Double
    public var trainUtilisation: Double
    public var distillTokensPerSecond: Double?
    /// A forward pass keeping nothing for backward (a teacher, `eval`, `cache-teacher`).
    public var inferenceTokensPerSecond: Double
    public var inferenceModelGFLOPS: Double
    public var inferenceUtilisation: Double
    public var generationTokensPerSecond: Double
    /// Greedy generation with one thread (where llama.cpp does best).
    public var generationOneThreadTokensPerSecond: Double
    /// Greedy generation reading a bf16, f16 or Q8_0 copy of the weights (`sample --precision`), with
    /// all threads and with one; keys "bf16", "f16", "q8_0", and each with " 1 thread".
    public var generationTokensPerSecondByReducedWeights: [String: Double]
    public var parameters: Int
    public var studentParameters: Int?
    public var peakResidentMB: Double
    /// Peak resident memory while each workload ran (`training`, `distillation`, `inference`, `generation`,
    /// `generation bf16`, `generation f16`, `generation q8_0`).
    public var peakResidentMBByWorkload: [String: Double]
}

/// The benchmark's workloads, on random tokens (no corpus needed).
public enum Benchmark {
    /// Median seconds of `repeats` runs of `body` after `warmup` untimed runs.
    static func median(repeats: Int, warmup: Int = 2, _ body: () throws -> Void) rethrows -> Double {
        for _ in 0..<warmup { try body() }
        var times: [Double] = []
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return times.sorted()[times.count / 2]
    }

    /// GFLOP/s of cblas_sgemm: the best of a few large shapes, each run both by OpenBLAS on its own
    /// threads and split over the cores as the model's products are (the machine's attainable matmul
    /// rate, which model FLOPs utilisation is measured against).
    public static func sgemmRate() -> Double {
        [(1024, 1024, 1024), (2048, 2048, 256), (4096, 1024, 512)].map { m, n, k in
            let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
            var c = [Float](repeating: 0, count: m * n)
            openblas_set_num_threads(Int32(Compute.threads))
            let threaded = median(repeats: 7) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k),
                            b, Int32(n), 0, &c, Int32(n))
            }
            openblas_set_num_threads(1)
            let split = median(repeats: 7) {
                sgemm(transposeA: false, transposeB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n,
                      beta: 0, c: &c, ldc: n)
            }
            return 2 * Double(m * n * k) / min(threaded, split) / 1e9
        }.max() ?? 0
    }

    /// Model FLOPs per trained token, the usual convention for utilisation (PaLM's): 6·N for the weights
    /// plus 12·L·T·C for the attention products, counted in full although causal attention needs half.
    public static func trainingFLOPsPerToken(_ config: LlamaConfig, context: Int) -> Double {
        let n = Double(ParameterLayout(config: config).count)
        let attention = 12 * Double(config.numHiddenLayers * context * config.hiddenSize)
        return 6 * n + attention
    }

    static func randomBatch(vocab: Int, batch: Int, length: Int, random: inout SeededRandom) -> Batch {
        let tokens = (0..<(batch * (length + 1))).map { _ in Int32(random.next() % UInt64(vocab)) }
        var inputs = [Int32](), targets = [Int32]()
        for b in 0..<batch {
            let row = tokens[(b * (length + 1))..<((b + 1) * (length + 1))]
            inputs += row.dropLast()
            targets += row.dropFirst()
        }
        return Batch(batchSize: batch, contextLength: length, inputs: inputs, targets: targets)
    }

    /// Median tokens/s of full training steps (forward, backward, clip, AdamW) on random tokens.
    public static func trainingSpeed(config: LlamaConfig, batch: Int, context: Int, repeats: Int) throws -> Double {
        let model = try LlamaModel(config: config, seed: 1)
        var parameters = TrainingParameters()
        parameters.batchSize = batch
        parameters.context = context
        let trainer = try Trainer(model: model, objective: CrossEntropyObjective(), parameters: parameters, tokenizerHash: 0)
        var random = SeededRandom(seed: 2)
        let data = randomBatch(vocab: config.vocabSize, batch: batch, length: context, random: &random)
        let seconds = try median(repeats: repeats) { try trainer.singleStep(data) }
        return Double(batch * context) / seconds
    }

    /// Median tokens/s of distillation steps: teacher forward (nothing kept) plus student forward and
    /// backward with CE + τ²·KL(teacher ‖ student) at τ = 2, clipping and AdamW.
    public static func distillationSpeed(teacher teacherConfig: LlamaConfig, student studentConfig: LlamaConfig,
                                         batch: Int, context: Int, repeats: Int) throws -> Double {
        let teacher = try LlamaModel(config: teacherConfig, seed: 1)
        let student = try LlamaModel(config: studentConfig, seed: 2)
        let objective = try DistillationObjective(teacher: teacher, studentConfig: studentConfig, settings: DistillationSettings(), seed: 3)
        var parameters = TrainingParameters()
        parameters.batchSize = batch
        parameters.context = context
        let trainer = try Trainer(model: student, objective: objective, parameters: parameters, tokenizerHash: 0)
        var random = SeededRandom(seed: 4)
        let data = randomBatch(vocab: studentConfig.vocabSize, batch: batch, length: context, random: &random)
        let seconds = try median(repeats: repeats) { try trainer.singleStep(data) }
        return Double(batch * context) / seconds
    }

    /// Median tokens/s of a forward pass that keeps nothing for backward, over a [batch, context] batch,
    /// its LM head in chunks of rows as `eval` and a live teacher take it (every logit is computed).
    public static func inferenceSpeed(config: LlamaConfig, batch: Int, context: Int, repeats: Int) throws -> Double {
        let model = try LlamaModel(config: config, seed: 1)
        var random = SeededRandom(seed: 7)
        let data = randomBatch(vocab: config.vocabSize, batch: batch, length: context, random: &random)
        let seconds = median(repeats: repeats) {
            data.inputs.withUnsafeBufferPointer { tokens in
                model.forwardHidden(tokens: tokens.baseAddress!, batch: batch, length: context, keepForBackward: false)
                model.headInChunks(dFinalHidden: nil) { _, _, _ in }
            }
        }
        return Double(batch * context) / seconds
    }

    /// Median tokens/s of greedy decoding with the KV cache: batch 1, an 8-token prompt, 120 new tokens,
    /// the weights read as `precision`.
    public static func generationSpeed(config: LlamaConfig, repeats: Int, precision: WeightFormat = .f32) throws -> Double {
        let model = try LlamaModel(config: config, seed: 1)
        let session = try KVCacheSession(model: model, precision: precision)
        var sampler = try Sampler(temperature: 0)
        let prompt: [Int32] = (0..<8).map { Int32($0 * 37 % config.vocabSize) }
        var produced = 0
        let seconds = try median(repeats: repeats) {
            produced = try generate(session: session, prompt: prompt, maxTokens: 120, sampler: &sampler).count
        }
        return Double(produced) / seconds
    }

    /// Resets the peak resident memory to the current one (Linux's clear_refs), so that the next
    /// `peakResidentMB` is the peak of what runs in between.
    public static func resetPeakResident() {
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }

    /// Peak resident memory of this process so far, in MB (VmHWM).
    public static func peakResidentMB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kb = Double(fields[1]) { return kb / 1024 }
        }
        return 0
    }
}

extension Benchmark {
    /// All figures of `distill bench`, printing each line through `say` as it is measured.
    public static func run(preset: String, teacher: LlamaConfig, student: LlamaConfig, batch: Int, context: Int,
                           repeats: Int, say: (String) -> Void) throws -> BenchmarkReport {
        say("preset \(preset): vocab \(teacher.vocabSize), context \(context), batch \(batch), threads \(Compute.threads), "
            + KernelPath.description)
        let gflops = sgemmRate()
        say(String(format: "sgemm (best of 1024³, 2048²×256, 4096×1024×512): %.1f GFLOP/s", gflops))
        let setupPeak = peakResidentMB()  // the sgemm probe's matrices
        var peaks: [String: Double] = [:]
        // Each workload's own peak: the counter is reset before it starts.
        func measured<T>(_ workload: String, _ body: () throws -> T) rethrows -> T {
            resetPeakResident()
            let result = try body()
            peaks[workload] = peakResidentMB()
            return result
        }
        let train = try measured("training") { try trainingSpeed(config: teacher, batch: batch, context: context, repeats: repeats) }
        let modelRate = train * trainingFLOPsPerToken(teacher, context: context) / 1e9
        say(String(format: "training (%@, %d params): %.0f tokens/s, %.1f GFLOP/s, utilisation %.0f%%, peak %.0f MB", preset,
                   ParameterLayout(config: teacher).count, train, modelRate, 100 * modelRate / gflops, peaks["training"] ?? 0))
        let distill = try measured("distillation") {
            try distillationSpeed(teacher: teacher, student: student, batch: batch, context: context, repeats: repeats)
        }
        say(String(format: "distillation (%@ teacher forward + %@-student forward/backward, CE + τ²·KL): %.0f tokens/s, peak %.0f MB",
                   preset, preset, distill, peaks["distillation"] ?? 0))
        let inference = try measured("inference") { try inferenceSpeed(config: teacher, batch: batch, context: context, repeats: repeats) }
        // A forward pass is a third of a training step's FLOPs.
        let inferenceRate = inference * trainingFLOPsPerToken(teacher, context: context) / 3 / 1e9
        say(String(format: "teacher inference (forward, nothing kept for backward): %.0f tokens/s, %.1f GFLOP/s, utilisation %.0f%%, peak %.0f MB",
                   inference, inferenceRate, 100 * inferenceRate / gflops, peaks["inference"] ?? 0))
        let generation = try measured("generation") { try generationSpeed(config: teacher, repeats: repeats) }
        let generationOneThread = try Compute.withThreads(1) { try generationSpeed(config: teacher, repeats: repeats) }
        say(String(format: "greedy generation (batch 1, KV cache, 8-token prompt, 120 new): %.0f tokens/s; on 1 thread %.0f tokens/s; peak %.0f MB",
                   generation, generationOneThread, peaks["generation"] ?? 0))
        var reducedGeneration: [String: Double] = [:]
        for precision in [WeightFormat.bf16, .f16, .q8_0] {
            let name = precision.rawValue
            reducedGeneration[name] = try measured("generation \(name)") {
                try generationSpeed(config: teacher, repeats: repeats, precision: precision)
            }
            reducedGeneration[name + " 1 thread"] = try Compute.withThreads(1) {
                try generationSpeed(config: teacher, repeats: repeats, precision: precision)
            }
            say(String(format: "  with %@ weights: %.0f tokens/s; on 1 thread %.0f tokens/s", name,
                       reducedGeneration[name] ?? 0, reducedGeneration[name + " 1 thread"] ?? 0))
        }
        let peak = max(setupPeak, peaks.values.max() ?? 0)
        say(String(format: "peak resident memory: %.0f MB (%.0f MB by the sgemm probe)", peak, setupPeak))
        return BenchmarkReport(preset: preset, threads: Compute.threads, blasCore: BLASKernels.coreName, ownKernels: OwnKernels.instructionSet, sgemmGFLOPS: gflops, trainTokensPerSecond: train,
                               trainModelGFLOPS: modelRate, trainUtilisation: modelRate / gflops, distillTokensPerSecond: distill,
                               inferenceTokensPerSecond: inference, inferenceModelGFLOPS: inferenceRate,
                               inferenceUtilisation: inferenceRate / gflops, generationTokensPerSecond: generation,
                               generationOneThreadTokensPerSecond: generationOneThread,
                               generationTokensPerSecondByReducedWeights: reducedGeneration, parameters: ParameterLayout(config: teacher).count,
                               studentParameters: ParameterLayout(config: student).count, peakResidentMB: peak,
                               peakResidentMBByWorkload: peaks)
    }
}
