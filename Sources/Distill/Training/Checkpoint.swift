import Foundation

/// The resume state of a run: `DIR/training/` holds `model.safetensors` (the weights), `optimizer.safetensors`
/// (AdamW moments and the objective's extra tensors) and `state.json` (step, sampler, settings). A new
/// state is written into a fresh folder and swapped in with renames, so that one complete state is on
/// disk at every moment, whatever kills the process.
public enum Checkpoint {
    static let folder = "training"
    static let staging = ".training.tmp"
    static let previous = ".training.old"
    /// Version 2 added the objective's settings and the weights' hash.
    static let formatVersion = 2

    /// `state.json`.
    struct State: Codable {
        var formatVersion: Int
        var step: Int
        var optimizerStep: Int
        var random: SeededRandom
        var parameters: TrainingParameters
        var tokenizerHash: String
        var elapsedSeconds: Double
        var extraTensors: [String]
        /// What the objective optimises, by setting name (teachers by the hash of their weights).
        var objective: [String: String]
        /// FNV-1a 64 of the saved weights' floats: binds this state to the weights beside it.
        var weightsHash: String
        /// Ranks of a data-parallel run (mpirun -np N); absent for one process.
        var processes: Int?
        /// The generator of an objective's own samples (on-policy distillation); absent otherwise.
        var generationRandom: SeededRandom?

        init(formatVersion: Int = Checkpoint.formatVersion, step: Int, optimizerStep: Int, random: SeededRandom,
             parameters: TrainingParameters, tokenizerHash: String, elapsedSeconds: Double, extraTensors: [String],
             objective: [String: String], weightsHash: String, processes: Int? = nil, generationRandom: SeededRandom? = nil) {
            self.formatVersion = formatVersion
            self.step = step
            self.optimizerStep = optimizerStep
            self.random = random
            self.parameters = parameters
            self.tokenizerHash = tokenizerHash
            self.elapsedSeconds = elapsedSeconds
            self.extraTensors = extraTensors
            self.objective = objective
            self.weightsHash = weightsHash
            self.processes = processes
            self.generationRandom = generationRandom
        }
    }

    /// Checks a `state.json`'s bytes as a resume would read them (for the fuzz tests and for tools).
    public static func validateState(_ data: Data) throws { _ = try decodeState(data, path: "state.json") }

    /// Decodes a `state.json`, refusing anything but a complete, current-format state.
    static func decodeState(_ data: Data, path: String) throws -> State {
        let state: State
        do { state = try JSONDecoder().decode(State.self, from: data) }
        catch { throw TrainingError.cannotResume("\(path) is damaged or from an older version of distill: start a new run") }
        guard state.formatVersion == formatVersion else {
            throw TrainingError.cannotResume("\(path) has format \(state.formatVersion), this distill reads \(formatVersion): start a new run")
        }
        guard state.step >= 0, state.optimizerStep >= 0, state.random.state.count == 4, state.elapsedSeconds.isFinite,
              (state.processes ?? 1) >= 1, (state.generationRandom?.state.count ?? 4) == 4 else {
            throw TrainingError.cannotResume("\(path) is damaged: start a new run")
        }
        return state
    }

    /// Writes `state` and its tensors into a fresh folder and swaps it in for the current one.
    static func write(state: State, weights: [SafetensorsTensor], optimizer: [SafetensorsTensor], to directory: URL) throws {
        try AtomicFile.ensureDirectory(directory)
        let fileManager = FileManager.default
        let staging = directory.appendingPathComponent(Self.staging)
        let current = directory.appendingPathComponent(folder)
        let previous = directory.appendingPathComponent(Self.previous)
        try? fileManager.removeItem(at: staging)
        do { try fileManager.createDirectory(at: staging, withIntermediateDirectories: true) }
        catch { throw IOError.unwritable(staging.path) }
        do {
            try SafetensorsFile.write(tensors: weights, to: staging.appendingPathComponent("model.safetensors"))
            try SafetensorsFile.write(tensors: optimizer, to: staging.appendingPathComponent("optimizer.safetensors"))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try encoder.encode(state), to: staging.appendingPathComponent("state.json"))
        } catch {
            // A full disk: drop the half-written folder, keep the last complete state.
            try? fileManager.removeItem(at: staging)
            throw error
        }
        // Keep one complete state on disk at every moment: the current one is moved aside (replacing a
        // stale leftover) before the new one takes its name, and dropped only after. When there is no
        // current state, a save that died between the renames left the last complete one aside: keep it.
        if fileManager.fileExists(atPath: current.path) {
            try? fileManager.removeItem(at: previous)
            try fileManager.moveItem(at: current, to: previous)
        }
        try fileManager.moveItem(at: staging, to: current)
        try? fileManager.removeItem(at: previous)
    }

    /// The folder holding the last complete state, if any.
    static func latestFolder(in directory: URL) -> URL? {
        for name in [folder, previous] {
            let candidate = directory.appendingPathComponent(name)
            // A save that died between its two renames leaves the previous state aside.
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("state.json").path) { return candidate }
        }
        return nil
    }

    /// Whether `directory` holds a resumable run.
    public static func exists(in directory: URL) -> Bool { latestFolder(in: directory) != nil }

    /// Reads the last complete state in `directory`.
    static func read(from directory: URL) throws -> (state: State, folder: URL) {
        guard let stateFolder = latestFolder(in: directory),
              let data = FileManager.default.contents(atPath: stateFolder.appendingPathComponent("state.json").path) else {
            throw TrainingError.cannotResume("no checkpoint in \(directory.path): run without resume to start a new run")
        }
        return (try decodeState(data, path: stateFolder.appendingPathComponent("state.json").path), stateFolder)
    }

    /// Refuses a resume whose settings differ from the checkpoint's, naming the first setting that differs.
    /// Only the length and the reporting cadence may change.
    static func checkCompatible(saved: State, parameters: TrainingParameters, objective: [String: String],
                                tokenizerHash: UInt64) throws {
        guard saved.tokenizerHash == String(tokenizerHash, radix: 16) else {
            throw TrainingError.tokenizerMismatch("cannot resume: the checkpoint was trained on data from another tokenizer")
        }
        let given = parameters, old = saved.parameters
        let arithmetic: [(Setting, String, String)] = [
            (.batchSize, "\(old.batchSize)", "\(given.batchSize)"), (.context, "\(old.context)", "\(given.context)"),
            (.accumulation, "\(old.accumulationSteps)", "\(given.accumulationSteps)"),
            (.learningRate, "\(old.learningRate)", "\(given.learningRate)"), (.warmup, "\(old.warmupSteps)", "\(given.warmupSteps)"),
            (.weightDecay, "\(old.weightDecay)", "\(given.weightDecay)"), (.gradientClip, "\(old.gradientClip)", "\(given.gradientClip)"),
            (.seed, "\(old.seed)", "\(given.seed)"),
        ]
        for (setting, before, now) in arithmetic where before != now {
            throw SettingError(setting, "is \(now) but the checkpoint was trained with \(before): resume with the same value, or start a new run")
        }
        if old.beta1 != given.beta1 || old.beta2 != given.beta2 || old.minimumLearningRateFraction != given.minimumLearningRateFraction {
            throw TrainingError.cannotResume("the optimizer's settings differ from the checkpoint's")
        }
        guard given.steps >= saved.step else {
            throw SettingError(.steps, "is \(given.steps) but the checkpoint is already at step \(saved.step): give at least \(saved.step)")
        }
        // Another kind of run altogether (a student's checkpoint given to `train`): name the command that resumes it.
        let savedKind = saved.objective["objective"] ?? "cross-entropy", kind = objective["objective"] ?? "cross-entropy"
        if savedKind != kind {
            let resumedBy = ["cross-entropy": "a training checkpoint: resume it with `distill train`",
                             "distillation": "a distillation checkpoint: resume it with `distill student` (or `distill mutual`, for peers)",
                             "cached-teacher": "a distillation checkpoint from a teacher cache: resume it with `distill student` and that cache"]
            throw TrainingError.cannotResume("the checkpoint is \(resumedBy[savedKind] ?? "of another kind (\(savedKind))"), with its own settings")
        }
        // Weights first: a term switched on or off is named by its weight, not by one of its details.
        let keys = Set(saved.objective.keys).union(objective.keys).sorted { ($0.hasSuffix("_weight") ? 0 : 1, $0) < ($1.hasSuffix("_weight") ? 0 : 1, $1) }
        for key in keys where saved.objective[key] != objective[key] {
            let before = saved.objective[key] ?? "off", now = objective[key] ?? "off"
            let problem = "is \(now) but the checkpoint was trained with \(before): resume with the same value, or start a new run"
            if let setting = Setting(rawValue: key) { throw SettingError(setting, problem) }
            throw TrainingError.cannotResume("the objective's \(key) \(problem)")
        }
    }
}

/// `metrics.jsonl` in a model directory: one JSON object per line (`kind` "train" or "validation", the
/// step and the terms), appended as the run goes. A failed append loses a log line, never the run.
enum MetricsLog {
    static let file = "metrics.jsonl"

    static func append(_ record: [String: Any], to directory: URL) {
        // Non-finite numbers have no JSON spelling; they are written as null.
        let clean = record.mapValues { value -> Any in
            if let number = value as? Double, !number.isFinite { return NSNull() }
            return value
        }
        guard let data = try? JSONSerialization.data(withJSONObject: clean, options: [.sortedKeys]) else { return }
        let url = directory.appendingPathComponent(file)
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        guard let handle = try? FileHandle(forWritingTo: url) else { return }
        defer { try? handle.close() }
        _ = try? handle.seekToEnd()
        try? handle.write(contentsOf: data + Data("\n".utf8))
    }

    /// Drops the records after `step` (a resumed run repeats the steps after its checkpoint).
    static func truncate(after step: Int, in directory: URL) {
        let url = directory.appendingPathComponent(file)
        guard let data = FileManager.default.contents(atPath: url.path) else { return }
        let kept = data.split(separator: UInt8(ascii: "\n")).filter { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                  let recorded = object["step"] as? Int else { return false }
            return recorded <= step
        }
        let text = kept.map { Data($0) + Data("\n".utf8) }.reduce(Data(), +)
        try? AtomicFile.write(text, to: url)
    }
}

/// FNV-1a 64 of a float buffer's bytes: the identity of a set of weights (a checkpoint's, a teacher's).
public func weightsHash(_ values: UnsafeBufferPointer<Float>) -> UInt64 {
    fnv1a64(UnsafeRawBufferPointer(values))
}
