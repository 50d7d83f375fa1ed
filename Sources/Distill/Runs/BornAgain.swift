import Foundation

/// Which earlier generations teach generation k of born-again training.
public enum GenerationTeachers: String, Sendable, CaseIterable {
    /// Generation k − 1 alone (Born-Again Networks).
    case previous
    /// The ensemble of generations 1 … k − 1 (the mean of their tempered distributions).
    case all
}

/// `distill generations`: self-distillation over generations of one architecture.
public struct GenerationsRequest: Sendable {
    /// Data, shape, optimisation and resume flag of every generation; `output` is the folder that holds
    /// `gen-1`, `gen-2`, ….
    public var training: TrainingRequest
    /// Generations to train (≥ 1).
    public var count: Int
    /// The KD terms of generations 2 and later (generation 1 learns from the labels alone).
    public var settings: DistillationSettings
    public var teachers: GenerationTeachers

    public init(training: TrainingRequest, count: Int, settings: DistillationSettings, teachers: GenerationTeachers = .previous) {
        self.training = training
        self.count = count
        self.settings = settings
        self.teachers = teachers
    }
}

/// One row of the generations table.
public struct GenerationScore: Codable, Sendable, Equatable {
    /// "gen-k", or "ensemble" for the mean of all generations' probabilities.
    public var name: String
    public var parameters: Int
    public var tokens: Int
    public var perplexity: Double
    public var bitsPerByte: Double

    enum CodingKeys: String, CodingKey { case name, parameters, tokens, perplexity, bitsPerByte = "bits_per_byte" }
}

/// What `BornAgain.run` reports: the table (nil when interrupted) and where it was written.
public struct GenerationsOutcome: Sendable {
    public let generations: [TrainingOutcome]
    /// Each generation on the full validation split, then their ensemble; empty when interrupted.
    public let table: [GenerationScore]
    /// `DIR/generations.json` (nil when interrupted).
    public let tableFile: URL?
    public var interrupted: Bool { table.isEmpty }

    /// The table as aligned text lines.
    public var text: [String] {
        let width = max(10, table.map(\.name.count).max() ?? 10)
        return ["generation".padding(toLength: width, withPad: " ", startingAt: 0) + "   parameters   perplexity   bits/byte"]
            + table.map { row in
                row.name.padding(toLength: width, withPad: " ", startingAt: 0)
                    + String(format: " %12d %12.2f %11.4f", row.parameters, row.perplexity, row.bitsPerByte)
            }
    }
}

/// Born-again training (Furlanello et al., 2018): generation 1 learns from the labels; generation k
/// from the labels and, by KD, from generation k − 1 or from the ensemble of all earlier generations.
/// Every generation has the same architecture and steps, and its own seed (the run's seed + k − 1), in
/// `DIR/gen-k`. With `resume`, finished generations are kept and an unfinished one continues at its step.
public enum BornAgain {
    public static let tableFile = "generations.json"

    /// The model directory of generation `k` (1-based).
    public static func directory(_ root: String, generation k: Int) -> String {
        URL(fileURLWithPath: root).appendingPathComponent("gen-\(k)").path
    }

    /// Trains the generations that are missing or unfinished, then scores each and their ensemble on the
    /// full validation split (as `distill eval` does) and writes `DIR/generations.json`.
    /// `callbacks(k)` receives generation k's events. Under mpirun every generation trains data-parallel
    /// and the ranks share the scoring; the later generations read the earlier ones as teachers, so
    /// every rank must see the output directory (one machine, or a shared file system).
    /// Throws unless `root` is absent, empty, or holds only what `generations` writes (gen-k folders,
    /// generations.json, hidden files such as the lock): resuming into a trained model's directory, or any
    /// other folder, would write the generations among its files.
    public static func checkIsGenerationsDirectory(_ root: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else { throw IOError.notADirectory(root) }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let foreign = names.filter { name in
            !name.hasPrefix(".") && name != tableFile && !(name.hasPrefix("gen-") && Int(name.dropFirst(4)) != nil)
        }
        guard foreign.isEmpty else {
            let what = names.contains(HFModelDirectory.configFileName) ? "a model directory" : "a folder with other files (\(foreign.sorted().prefix(3).joined(separator: ", ")))"
            throw SettingError(.output, "\(root) is \(what), not the output of `distill generations`: choose a new or empty directory")
        }
    }

    public static func run(_ request: GenerationsRequest, callbacks: (Int) -> TrainingCallbacks) throws -> GenerationsOutcome {
        guard request.count >= 1 else { throw SettingError(.count, "must be at least 1 (got \(request.count))") }
        try request.settings.validate()
        let root = request.training.output
        try OutputGuard.refuseOverlap(output: OutputGuard.Role(Setting.output.rawValue, root),
                                      inputs: [OutputGuard.Role(Setting.data.rawValue, request.training.data)])
        // Refuse before training anything when the table could not be made.
        let inputs = try TrainingRun.openInputs(request.training)
        guard inputs.data.validationTokens.count >= 2 else {
            throw SettingError(.data, "has no validation split to score the generations on: prepare it with a validation fraction above 0")
        }
        try checkIsGenerationsDirectory(root)
        if !request.training.resume, let existing = (1...request.count).first(where: {
            Checkpoint.exists(in: URL(fileURLWithPath: directory(root, generation: $0)))
        }) {
            throw SettingError(.output, "\(root) already holds generation \(existing): resume it, or choose another output")
        }
        let ranks = ProcessGroup.world
        if ranks.isRoot { try AtomicFile.ensureDirectory(URL(fileURLWithPath: root)) }
        var shape = request.training
        // One architecture for all: the preset is fixed here, not chosen from the teacher's width.
        if shape.shape == nil { shape.shape = .preset(shape.defaultPreset) }

        var outcomes: [TrainingOutcome] = []
        for k in 1...request.count {
            var generation = shape
            generation.output = directory(root, generation: k)
            generation.parameters.seed = shape.parameters.seed &+ UInt64(k - 1)
            generation.resume = request.training.resume && Checkpoint.exists(in: URL(fileURLWithPath: generation.output))
            let outcome: TrainingOutcome
            do {
                if k == 1 {
                    outcome = try TrainingRun.train(generation, callbacks: callbacks(k))
                } else {
                    let teachers = request.teachers == .previous ? [k - 1] : Array(1..<k)
                    outcome = try TrainingRun.student(generation, StudentRequest(teachers: teachers.map { directory(root, generation: $0) },
                                                                                 settings: request.settings), callbacks: callbacks(k))
                }
            } catch let error as SettingError where error.setting == .teacher && generation.resume {
                // The generations' teachers are not given by the user but follow from how they teach.
                throw SettingError(.teachWith, "is not what generation \(k) was trained with, or an earlier generation changed since (trained "
                                   + "for more steps): its teachers differ; resume with the same settings, or choose another output")
            }
            outcomes.append(outcome)
            // Rank 0 has written generation k before any rank loads it as a teacher.
            ranks.barrier()
            if outcome.interrupted { return GenerationsOutcome(generations: outcomes, table: [], tableFile: nil) }
        }

        let tokens = Array(inputs.data.validationTokens), bytes = inputs.data.validationByteCount
        let models = try (1...request.count).map { try ModelDirectory.load(URL(fileURLWithPath: directory(root, generation: $0))) }
        var table = try models.enumerated().map { index, model -> GenerationScore in
            let report = try scoreTokens(model: model, tokens: tokens, bytes: bytes, group: ranks)
            return GenerationScore(name: "gen-\(index + 1)", parameters: model.parameterCount, tokens: report.tokens,
                                   perplexity: report.perplexity, bitsPerByte: report.bitsPerByte)
        }
        let ensemble = try scoreTokens(ensemble: ModelEnsemble(members: models), tokens: tokens, bytes: bytes, group: ranks)
        table.append(GenerationScore(name: "ensemble", parameters: models.reduce(0) { $0 + $1.parameterCount }, tokens: ensemble.tokens,
                                     perplexity: ensemble.perplexity, bitsPerByte: ensemble.bitsPerByte))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let file = URL(fileURLWithPath: root).appendingPathComponent(tableFile)
        if ranks.isRoot { try AtomicFile.write(try encoder.encode(["generations": table]), to: file) }
        return GenerationsOutcome(generations: outcomes, table: table, tableFile: file)
    }
}
