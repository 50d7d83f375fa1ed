import Foundation

// On-policy distillation (GKD, Agarwal et al., ICLR 2024) and sequence-level KD (Kim & Rush, 2016): a
// share of each micro-batch's rows is replaced by sequences that the current student (or the teacher)
// continues from a prompt taken from that row's training window; teacher and student then run over the
// whole batch as usual, and the divergence is taken at the generated tokens' positions only.
//
// A generated row of the micro-batch [B, T] holds the P prompt tokens, then the N sampled ones
// (P + N ≤ T); positions past P + N repeat the last token and count for nothing (attention is causal, so
// they change nothing before them). The logits at position i predict token i + 1, so the generated
// tokens are predicted at positions P − 1 ..< P + N − 1: those are the row's distilled positions. The
// prompt positions 0 ..< P − 1 count (KD and, having the data's labels, CE) only with `lossOnPrompt`.
// Generated tokens have no label: CE is zero there.

/// A value of an on-policy setting that a run cannot use, or a combination with another setting that
/// it cannot run. The CLI spells both settings as flags.
public struct OnPolicyError: NamesSettings, Equatable, Sendable {
    public let setting: Setting
    /// Reads after the setting's name ("must lie in [0, 1] (got 2)"), or before `other`'s name.
    public let problem: String
    /// The run setting the problem is with, named after `problem` ("cannot be used with --teacher-cache").
    public let other: Setting?
    /// Why, after a colon.
    public let reason: String?

    public init(_ setting: Setting, _ problem: String, with other: Setting? = nil, because reason: String? = nil) {
        self.setting = setting
        self.problem = problem
        self.other = other
        self.reason = reason
    }

    /// The message with each setting spelt by a front end (flags, recipe fields).
    public func message(naming name: (Setting) -> String) -> String {
        "\(name(setting)) \(problem)" + (other.map { " \(name($0))" } ?? "") + (reason.map { ": \($0)" } ?? "")
    }
}

/// How much of each batch is generated, and how.
public struct OnPolicySettings: Sendable, Equatable {
    /// Share of each micro-batch's rows sampled from the current student (GKD's λ), 0...1.
    public var studentShare: Double = 0
    /// Share sampled from the teacher instead (sequence-level KD), 0...1; the two add up to at most 1.
    public var teacherShare: Double = 0
    /// Prompt tokens P taken from the start of the row's window; nil: half the context.
    public var promptTokens: Int?
    /// Tokens N sampled after the prompt; nil: the rest of the context (T − P).
    public var newTokens: Int?
    /// The sampler of the generated tokens: temperature 1 samples the model's own distribution.
    public var temperature: Float = 1
    public var topK: Int?
    public var topP: Float?
    /// Distil (and, with a CE weight, label) the prompt positions of generated rows too.
    public var lossOnPrompt = false

    public init() {}

    /// Whether any row is generated.
    public var isActive: Bool { studentShare > 0 || teacherShare > 0 }

    /// Refuses shares outside [0, 1] or adding up to more than 1, and sampler settings it cannot use.
    public func validate() throws {
        for (share, setting) in [(studentShare, Setting.onPolicy), (teacherShare, .teacherGenerated)]
        where !(share >= 0 && share <= 1) {
            throw OnPolicyError(setting, "must lie in [0, 1] (got \(share))")
        }
        if studentShare + teacherShare > 1 {
            throw OnPolicyError(.teacherGenerated, "is \(teacherShare), and with the on-policy share \(studentShare) more than the whole batch: the two shares add up to at most 1")
        }
        if let promptTokens, promptTokens < 1 {
            throw OnPolicyError(.promptTokens, "must be at least 1 (got \(promptTokens)): generation continues a prompt")
        }
        if let newTokens, newTokens < 1 { throw OnPolicyError(.newTokens, "must be at least 1 (got \(newTokens))") }
        guard temperature.isFinite && temperature >= 0 else {
            throw OnPolicyError(.sampleTemperature, "must be 0 (greedy) or positive (got \(temperature))")
        }
        if let topK, topK < 1 { throw OnPolicyError(.sampleTopK, "must be at least 1 (got \(topK))") }
        if let topP, !(topP > 0 && topP <= 1) { throw OnPolicyError(.sampleTopP, "must be in (0, 1] (got \(topP))") }
    }

    /// P and N for windows of `context` tokens: the given ones, or half the context for the prompt and
    /// the rest for the samples. Refuses a prompt that leaves no room and P + N over the context.
    public func lengths(context: Int) throws -> (prompt: Int, new: Int) {
        try validate()
        let prompt = promptTokens ?? (newTokens.map { context - $0 } ?? max(1, context / 2))
        guard prompt < context else {
            throw OnPolicyError(.promptTokens, "is \(prompt) but the context is \(context) tokens: the prompt must leave room for new tokens")
        }
        guard prompt >= 1 else {
            throw OnPolicyError(.newTokens, "is \(newTokens ?? 0) but the context is \(context) tokens: leave at least one for the prompt")
        }
        let new = newTokens ?? context - prompt
        guard prompt + new <= context else {
            throw OnPolicyError(.newTokens, "is \(new); after a prompt of \(prompt) tokens that makes \(prompt + new), over the context of \(context) tokens")
        }
        return (prompt, new)
    }

    /// Rows of a micro-batch of `batchSize` drawn from the teacher and from the student: the shares
    /// rounded so that together they are the rounded sum (never more than the batch).
    public func generatedRows(batchSize: Int) -> (teacher: Int, student: Int) {
        let total = Int(((studentShare + teacherShare) * Double(batchSize)).rounded())
        let student = min(total, Int((studentShare * Double(batchSize)).rounded()))
        return (total - student, student)
    }

    /// Where each row of a micro-batch of `batchSize` comes from: `generatedRows` of them generated,
    /// spread evenly over the batch (row i is generated when ⌊(i+1)·k/B⌋ > ⌊i·k/B⌋), and the teacher's
    /// spread evenly over the generated ones the same way. Under mpirun this is the global micro-batch,
    /// so a rank's contiguous share of it holds its part of each kind (half of each at L = 0.5 when the
    /// rows per rank are even): every rank generates, and the rows do not depend on the number of ranks.
    public func rowSources(batchSize: Int) -> [RowSource] {
        let (teacher, student) = generatedRows(batchSize: batchSize)
        let generated = teacher + student
        var sources = [RowSource](repeating: .data, count: batchSize)
        var index = 0
        for row in 0..<batchSize where (row + 1) * generated / batchSize > row * generated / batchSize {
            sources[row] = (index + 1) * teacher / generated > index * teacher / generated ? .teacher : .student
            index += 1
        }
        return sources
    }
}

/// Where a row of an on-policy micro-batch comes from.
public enum RowSource: Sendable, Equatable {
    case data, teacher, student
}

/// A distillation objective whose micro-batches are partly generated: rows spread over the batch by the
/// current student (on-policy) and by the teacher (sequence-level KD), the rest from the data
/// (`OnPolicySettings.rowSources`). Validation is the inner objective's, on data alone.
public final class OnPolicyObjective: SamplingObjective {
    public let distillation: DistillationObjective
    public let settings: OnPolicySettings
    /// P and N.
    public let promptLength: Int, newTokens: Int
    /// Draws one seed per generated row and micro-batch; saved with the checkpoint.
    public var generationRandom: SeededRandom
    /// This process's rank and the number of ranks: a micro-batch of B rows is rows rank·B ..< (rank+1)·B
    /// of the global one; every rank lays out the global micro-batch and draws the seeds of all its
    /// generated rows (so that their generators stay equal), and keeps its own.
    private let rank: Int, ranks: Int
    private var studentDecoder: BatchedDecoder?
    private var teacherDecoder: BatchedDecoder?
    /// The generated rows of one model, [rows, P + N].
    private var sequences: [Int32] = []
    private var generationSeconds = 0.0
    private var generatedTokens = 0

    /// `context`: the run's window T. Refuses settings it cannot run: the feature and relational terms
    /// (they would need the same masks), teacher samples from an ensemble.
    public init(distillation: DistillationObjective, settings: OnPolicySettings, context: Int, seed: UInt64,
                rank: Int = 0, ranks: Int = 1) throws {
        (promptLength, newTokens) = try settings.lengths(context: context)
        let weights = distillation.settings.weights
        if settings.isActive && (weights.feature > 0 || weights.rkdDistance > 0 || weights.rkdAngle > 0) {
            let other: Setting = weights.feature > 0 ? .featureWeight : weights.rkdDistance > 0 ? .rkdDistanceWeight : .rkdAngleWeight
            throw OnPolicyError(settings.studentShare > 0 ? .onPolicy : .teacherGenerated, "cannot be used with", with: other,
                                because: "generated rows are distilled at their logits only")
        }
        if settings.teacherShare > 0 && distillation.teachers.count > 1 {
            throw OnPolicyError(.teacherGenerated, "samples one teacher; give a single", with: .teacher)
        }
        for teacher in distillation.teachers where teacher.config.maxPositionEmbeddings < promptLength + newTokens {
            throw OnPolicyError(.newTokens, "makes sequences of \(promptLength + newTokens) tokens, longer than a teacher's context of \(teacher.config.maxPositionEmbeddings)")
        }
        self.distillation = distillation
        self.settings = settings
        self.rank = rank
        self.ranks = ranks
        generationRandom = SeededRandom(seed: seed &+ 0x0D15_7111)
    }

    public var extraTensors: [TrainableTensor] { distillation.extraTensors }

    /// The inner objective's identity and, when rows are generated, how they are: all of it under the
    /// one key `on_policy`, so that a resume that changes any of it names on-policy generation.
    public var identity: [String: String] {
        var result = distillation.identity
        guard settings.isActive else { return result }
        var parts = ["student \(settings.studentShare)", "teacher \(settings.teacherShare)", "prompt \(promptLength)",
                     "new \(newTokens)", "temperature \(settings.temperature)"]
        if let topK = settings.topK { parts.append("top-k \(topK)") }
        if let topP = settings.topP { parts.append("top-p \(topP)") }
        if settings.lossOnPrompt { parts.append("loss on prompt") }
        result[Setting.onPolicy.rawValue] = parts.joined(separator: ", ")
        return result
    }

    public func prepare(step: Int, totalSteps: Int) { distillation.prepare(step: step, totalSteps: totalSteps) }

    public func trainStep(model: LlamaModel, batch: Batch, gradientScale: Float) throws -> LossTerms {
        let (mixed, mask) = try onPolicyBatch(student: model, batch: batch)
        return try distillation.terms(student: model, batch: mixed, distillationMask: mask, gradientScale: gradientScale,
                                      backward: true)
    }

    public func evaluate(model: LlamaModel, batch: Batch) throws -> LossTerms {
        try distillation.evaluate(model: model, batch: batch)
    }

    public func takeGenerationTiming() -> (seconds: Double, tokens: Int) {
        defer { generationSeconds = 0; generatedTokens = 0 }
        return (generationSeconds, generatedTokens)
    }

    /// `batch` with its rows of `OnPolicySettings.rowSources` generated by `student` (its current weights)
    /// and by the teacher, and the distillation mask [B·T] (nil when no row is generated: the batch as it
    /// came). Draws one sampler seed per generated row of the global micro-batch, in row order, from
    /// `generationRandom`: a row's seed is the same whatever the number of ranks.
    public func onPolicyBatch(student: LlamaModel, batch: Batch) throws -> (Batch, [UInt8]?) {
        let b = batch.batchSize, t = batch.contextLength
        let sources = settings.rowSources(batchSize: b * ranks)
        guard sources.contains(where: { $0 != .data }) else { return (batch, nil) }
        guard promptLength + newTokens <= t else {
            throw OnPolicyError(.newTokens, "makes sequences of \(promptLength + newTokens) tokens, longer than the batch's \(t)")
        }
        var teacherRows: [Int] = [], teacherSeeds: [UInt64] = [], studentRows: [Int] = [], studentSeeds: [UInt64] = []
        for (globalRow, source) in sources.enumerated() where source != .data {
            let seed = generationRandom.next(), row = globalRow - rank * b
            guard row >= 0 && row < b else { continue }
            if source == .teacher {
                teacherRows.append(row)
                teacherSeeds.append(seed)
            } else {
                studentRows.append(row)
                studentSeeds.append(seed)
            }
        }

        var mixed = batch
        var mask = [UInt8](repeating: 1, count: b * t)
        let started = Date()
        if !teacherRows.isEmpty {
            let teacherDecoder = try decoder(self.teacherDecoder, model: distillation.teacher, rows: teacherRows.count)
            self.teacherDecoder = teacherDecoder
            try fill(&mixed, mask: &mask, rows: teacherRows, decoder: teacherDecoder, seeds: teacherSeeds)
        }
        if !studentRows.isEmpty {
            let studentDecoder = try decoder(self.studentDecoder, model: student, rows: studentRows.count)
            self.studentDecoder = studentDecoder
            try fill(&mixed, mask: &mask, rows: studentRows, decoder: studentDecoder, seeds: studentSeeds)
        }
        generationSeconds += Date().timeIntervalSince(started)
        generatedTokens += (teacherRows.count + studentRows.count) * newTokens
        return (mixed, mask)
    }

    /// The decoder of `model` for `rows` rows: `existing` when it fits, else a new one.
    private func decoder(_ existing: BatchedDecoder?, model: LlamaModel, rows: Int) throws -> BatchedDecoder {
        if let existing, existing.model === model, existing.rows == rows { return existing }
        return try BatchedDecoder(model: model, rows: rows, promptLength: promptLength, newTokens: newTokens)
    }

    /// Generates `rows` of `batch` from their own prompts (each row's sampler seeded by `seeds`) and
    /// writes the sequences, their targets and their mask.
    private func fill(_ batch: inout Batch, mask: inout [UInt8], rows: [Int], decoder: BatchedDecoder,
                      seeds: [UInt64]) throws {
        let t = batch.contextLength, length = promptLength + newTokens
        if sequences.count != rows.count * length { sequences = [Int32](repeating: 0, count: rows.count * length) }
        var samplers = try seeds.map {
            try Sampler(temperature: settings.temperature, topK: settings.topK, topP: settings.topP, seed: $0)
        }
        for (index, row) in rows.enumerated() {
            for position in 0..<promptLength { sequences[index * length + position] = batch.inputs[row * t + position] }
        }
        try sequences.withUnsafeMutableBufferPointer { try decoder.generate(sequences: $0.baseAddress!, samplers: &samplers) }
        for (index, row) in rows.enumerated() {
            let base = row * t, sequence = index * length
            for position in 0..<t {
                // Past the sequence, the last token again: causal attention keeps it from the counted positions.
                batch.inputs[base + position] = sequences[sequence + min(position, length - 1)]
                let generated = position >= promptLength - 1 && position < length - 1
                // Prompt positions keep the data's next token (it is the prompt's own next token).
                let promptCounted = settings.lossOnPrompt && position < promptLength - 1
                if !promptCounted { batch.targets[base + position] = -1 }
                mask[base + position] = generated || promptCounted ? 1 : 0
            }
        }
    }
}
