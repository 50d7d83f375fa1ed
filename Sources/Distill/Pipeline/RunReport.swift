import Foundation

/// What a model of a run is: the teacher (or a member of the teachers' ensemble), or a student of a kind.
public enum ModelKind: Sendable, Equatable, CustomStringConvertible {
    case teacher
    case student(StudentKind)

    /// "teacher" or the student kind's recipe name, as `run.json` and `report.json` spell it.
    public init?(name: String) {
        if name == "teacher" { self = .teacher } else if let kind = StudentKind(rawValue: name) { self = .student(kind) } else { return nil }
    }

    public var description: String {
        switch self {
        case .teacher: return "teacher"
        case .student(let kind): return kind.rawValue
        }
    }

    /// "teacher" or "student", the `role` field of `run.json` and `report.json`.
    public var role: String { self == .teacher ? "teacher" : "student" }

    public var isBaseline: Bool { self == .student(.baseline) }
}

/// One row of a run's report.
public struct ReportModel: Sendable, Equatable {
    public var name: String
    public var kind: ModelKind
    /// The model directory (relative paths are inside the run directory).
    public var directory: String
    public var parameters: Int?
    /// The full evaluation text (by default the validation split), as `distill eval` scores it.
    public var evaluation: PerplexityReport?
    public var trainingSeconds: Double?
    public var trainingTokensPerSecond: Double?
    public var generationTokensPerSecond: Double?
    /// (baseline − this) / (baseline − teacher) in bits per byte: the share of the way from the
    /// baseline to the teacher that distillation took this student.
    public var gapClosed: Double?
    /// The teacher's view of the model's own samples (temperature 1, fixed prompts of the validation split).
    public var sampleQuality: SampleQuality?
    /// Validation CE during training: the lowest and the last (nil for a model the run did not train).
    public var validationCurve: ValidationCurve?
    /// The gap closed measured on the validation sample against the baseline at its *best* step:
    /// (baseline's best − this final) / (baseline's best − teacher's final), so a win that is only the
    /// baseline overfitting shows as a smaller share.
    public var gapClosedAgainstBestBaseline: Double?
    /// The folder of the model's own tokenizer and token file (nil: the run's, the teacher's).
    public var vocabulary: String?
    /// A cross-tokenizer student's share of its training windows' bytes covered by aligned chunks (the
    /// mean over its logged steps).
    public var alignedBytes: Double?

    public init(name: String, kind: ModelKind, directory: String, parameters: Int? = nil,
                evaluation: PerplexityReport? = nil, trainingSeconds: Double? = nil, trainingTokensPerSecond: Double? = nil,
                generationTokensPerSecond: Double? = nil, gapClosed: Double? = nil) {
        self.name = name
        self.kind = kind
        self.directory = directory
        self.parameters = parameters
        self.evaluation = evaluation
        self.trainingSeconds = trainingSeconds
        self.trainingTokensPerSecond = trainingTokensPerSecond
        self.generationTokensPerSecond = generationTokensPerSecond
        self.gapClosed = gapClosed
    }
}

/// What every model wrote for one prompt.
public struct ReportSample: Sendable, Equatable {
    public var prompt: String
    /// (model, prompt plus continuation), in model order.
    public var texts: [(model: String, text: String)]

    public static func == (lhs: ReportSample, rhs: ReportSample) -> Bool {
        lhs.prompt == rhs.prompt && lhs.texts.map(\.model) == rhs.texts.map(\.model) && lhs.texts.map(\.text) == rhs.texts.map(\.text)
    }
}

/// The report of a run directory: a table of the models, samples and plots, written as report.md,
/// report.json and plots/*.svg. Built only from what the run directory holds (run.json, the stage
/// records and each model's metrics.jsonl), so `distill report` can redraw it at any time.
public struct RunReport: Sendable {
    public var name: String
    public var about: String?
    public var runDirectory: URL
    /// The machine the run's stages ran on.
    public var machine: String
    /// What the models were scored on, in words.
    public var evaluationText: String
    public var models: [ReportModel]
    public var sampleSettings: JSONNode
    public var samples: [ReportSample]
    /// Plot files, relative to the run directory: (id, path, title).
    public var plots: [(id: String, path: String, title: String)] = []

    /// Reads the run directory. Models whose stages have not finished appear without numbers.
    public static func build(runDirectory: URL) throws -> RunReport {
        let run = try RunDirectory.readManifest(runDirectory)
        let store = try StageStore(runDirectory: runDirectory)
        var models: [ReportModel] = []
        guard case .array(let entries)? = run["models"] else { throw PipelineError.damagedRun(runDirectory.path, "run.json lists no models") }
        for entry in entries {
            guard case .string(let name)? = entry["name"], case .string(let directory)? = entry["directory"] else { continue }
            guard let kindName = entry["kind"]?.stringValue, let kind = ModelKind(name: kindName) else {
                throw PipelineError.damagedRun(runDirectory.path, "run.json's model \(name) has no kind this version knows")
            }
            var model = ReportModel(name: name, kind: kind, directory: directory)
            let trainingStage = entry["training_stage"]?.stringValue
            model.vocabulary = entry["vocabulary"]?.stringValue
            if let stage = entry["eval_stage"]?.stringValue, let result = store.currentResult(stage, after: trainingStage) {
                model.parameters = result["parameters"]?.intValue
                if let tokens = result["tokens"]?.intValue, let nll = result["nll_sum"]?.doubleValue, let bytes = result["bytes"]?.intValue {
                    model.evaluation = PerplexityReport(tokens: tokens, nllSum: nll, bytes: bytes)
                }
            }
            if let stage = trainingStage, let result = store.finishedResult(stage), let own = result["models"]?[name] {
                model.trainingSeconds = own["seconds"]?.doubleValue
                model.trainingTokensPerSecond = own["tokens_per_second"]?.doubleValue
                if model.parameters == nil { model.parameters = own["parameters"]?.intValue }
            }
            if let stage = entry["samples_stage"]?.stringValue, let result = store.currentResult(stage, after: trainingStage) {
                model.generationTokensPerSecond = result["tokens_per_second"]?.doubleValue
            }
            if let stage = entry["quality_stage"]?.stringValue, let result = store.currentResult(stage, after: trainingStage),
               let tokens = result["tokens"]?.intValue, let judge = result["judge_nll_sum"]?.doubleValue,
               let own = result["own_nll_sum"]?.doubleValue, let bytes = result["bytes"]?.intValue,
               let repeated = result["repeated_4grams"]?.doubleValue {
                model.sampleQuality = SampleQuality(tokens: tokens, judgeNLLSum: judge, ownNLLSum: own, bytes: bytes, repeatedFourGrams: repeated)
            }
            if !directory.isEmpty, entry["members"]?.arrayValue == nil {
                let path = directory.hasPrefix("/") ? URL(fileURLWithPath: directory) : runDirectory.appendingPathComponent(directory)
                let metrics = TrainingMetrics.read(directory: path)
                model.validationCurve = metrics?.validationCE
                let aligned = metrics?.train.compactMap { $0.terms[LossTerm.alignedBytes.rawValue] } ?? []
                if !aligned.isEmpty { model.alignedBytes = aligned.reduce(0, +) / Double(aligned.count) }
            }
            models.append(model)
        }
        fillGaps(&models)

        var samples: [ReportSample] = []
        let prompts = run["recipe"]?["samples"]?["prompts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        for (index, prompt) in prompts.enumerated() {
            var texts: [(String, String)] = []
            for entry in entries {
                guard let name = entry["name"]?.stringValue, let stage = entry["samples_stage"]?.stringValue,
                      let result = store.currentResult(stage, after: entry["training_stage"]?.stringValue), let list = result["texts"]?.arrayValue, index < list.count,
                      let text = list[index].stringValue else { continue }
                texts.append((name, text))
            }
            samples.append(ReportSample(prompt: prompt, texts: texts))
        }
        return RunReport(name: run["recipe"]?["name"]?.stringValue ?? runDirectory.lastPathComponent,
                         about: run["description"]?.stringValue, runDirectory: runDirectory,
                         machine: run["machine"]?.stringValue ?? "unknown machine",
                         evaluationText: run["evaluation"]?.stringValue ?? "the validation split",
                         models: models, sampleSettings: run["recipe"]?["samples"] ?? .null, samples: samples)
    }

    /// The gap each student closed, from the first teacher and the first baseline of the student's own
    /// vocabulary (or the first baseline when none has it): in bits per byte of the full evaluation, and
    /// on the validation sample against the baseline's best. Validation CE is per token, so that gap is
    /// only taken when student, baseline and teacher share the run's tokenizer.
    public static func fillGaps(_ models: inout [ReportModel]) {
        let students = models.indices.filter { models[$0].kind != .teacher && !models[$0].kind.isBaseline }
        let teacherModel = models.first(where: { $0.kind == .teacher })
        for index in students {
            let vocabulary = models[index].vocabulary
            guard let baselineModel = models.first(where: { $0.kind.isBaseline && $0.vocabulary == vocabulary })
                    ?? models.first(where: { $0.kind.isBaseline }) else { continue }
            if let teacher = teacherModel?.evaluation?.bitsPerByte, let baseline = baselineModel.evaluation?.bitsPerByte,
               abs(baseline - teacher) > 1e-9, let own = models[index].evaluation?.bitsPerByte {
                models[index].gapClosed = (baseline - own) / (baseline - teacher)
            }
            if let teacher = teacherModel?.validationCurve?.final, let baselineBest = baselineModel.validationCurve?.best,
               abs(baselineBest - teacher) > 1e-9, vocabulary == nil, baselineModel.vocabulary == nil, teacherModel?.vocabulary == nil {
                if let own = models[index].validationCurve?.final {
                    models[index].gapClosedAgainstBestBaseline = (baselineBest - own) / (baselineBest - teacher)
                }
            }
        }
    }

    // MARK: writing

    /// Draws the plots and writes report.md and report.json into the run directory; returns their paths.
    @discardableResult
    public mutating func write() throws -> [URL] {
        let plotsDirectory = runDirectory.appendingPathComponent("plots")
        try AtomicFile.ensureDirectory(plotsDirectory)
        var written: [URL] = []
        plots = []
        var validation: [ChartSeries] = [], training: [ChartSeries] = []
        // A model keeps its colour in every chart: the colour of its row.
        for (index, model) in models.enumerated() {
            guard let metrics = TrainingMetrics.read(directory: resolve(model.directory)) else { continue }
            validation.append(ChartSeries(name: model.name, points: metrics.points(LossTerm.ce.rawValue, validation: true), colour: index))
            training.append(ChartSeries(name: model.name, points: SVGChart.smoothed(metrics.points(LossTerm.ce.rawValue, validation: false)), colour: index))
        }
        func plot(_ id: String, _ title: String, _ svg: String) throws {
            let url = plotsDirectory.appendingPathComponent(id + ".svg")
            try AtomicFile.write(Data(svg.utf8), to: url)
            plots.append((id, "plots/\(id).svg", title))
            written.append(url)
        }
        if !validation.isEmpty {
            try plot("validation-loss", "Validation loss during training",
                     SVGChart.lines(title: "Validation loss during training", xLabel: "training step",
                                    yLabel: "validation cross-entropy (nats/token)", series: validation))
            try plot("training-loss", "Training loss (smoothed)",
                     SVGChart.lines(title: "Training cross-entropy, smoothed (EMA 0.9)", xLabel: "training step",
                                    yLabel: "training cross-entropy (nats/token)", series: training))
        }
        let bars = models.enumerated().compactMap { index, model in
            model.evaluation.map { ChartBar(label: model.name, value: $0.bitsPerByte, colour: index) }
        }
        if !bars.isEmpty {
            try plot("bits-per-byte", "Bits per byte on the evaluation text",
                     SVGChart.bars(title: "Bits per byte on the evaluation text (lower is better)", yLabel: "bits per byte", bars: bars))
        }
        let markdownURL = runDirectory.appendingPathComponent("report.md"), jsonURL = runDirectory.appendingPathComponent("report.json")
        try AtomicFile.write(Data(markdown().utf8), to: markdownURL)
        try AtomicFile.write(Data(json.prettyText.utf8), to: jsonURL)
        return [markdownURL, jsonURL] + written
    }

    func resolve(_ directory: String) -> URL {
        directory.hasPrefix("/") ? URL(fileURLWithPath: directory) : runDirectory.appendingPathComponent(directory)
    }

    /// report.json: every number of the table, unrounded.
    public var json: JSONNode {
        func optional(_ value: Double?) -> JSONNode { value.map { $0.isFinite ? .number($0) : .null } ?? .null }
        let modelValues = models.map { model -> JSONNode in
            var fields: [(String, JSONNode)] = [
                ("name", .string(model.name)), ("role", .string(model.kind.role)), ("kind", .string(model.kind.description)),
                ("directory", .string(model.directory)), ("parameters", model.parameters.map { .integer(Int64($0)) } ?? .null),
            ]
            if let evaluation = model.evaluation {
                fields += [("perplexity", .number(evaluation.perplexity)), ("bits_per_byte", .number(evaluation.bitsPerByte)),
                           ("mean_nll", .number(evaluation.meanNLL)), ("nll_sum", .number(evaluation.nllSum)),
                           ("tokens", .integer(Int64(evaluation.tokens))), ("bytes", .integer(Int64(evaluation.bytes)))]
            } else {
                fields += [("perplexity", .null), ("bits_per_byte", .null)]
            }
            fields += [("gap_closed", optional(model.gapClosed)), ("training_seconds", optional(model.trainingSeconds)),
                       ("training_tokens_per_second", optional(model.trainingTokensPerSecond)),
                       ("generation_tokens_per_second", optional(model.generationTokensPerSecond))]
            if let curve = model.validationCurve {
                fields += [("validation_ce_final", .number(curve.final)), ("validation_ce_final_step", .integer(Int64(curve.finalStep))),
                           ("validation_ce_best", .number(curve.best)), ("validation_ce_best_step", .integer(Int64(curve.bestStep))),
                           ("validation_rose_after_best", .bool(curve.rose)),
                           ("gap_closed_against_best_baseline", optional(model.gapClosedAgainstBestBaseline))]
            }
            if let quality = model.sampleQuality {
                fields += [("samples_teacher_nll", .number(quality.judgeMeanNLL)), ("samples_teacher_bits_per_byte", .number(quality.judgeBitsPerByte)),
                           ("samples_own_nll", .number(quality.ownMeanNLL)), ("samples_repeated_4grams", .number(quality.repeatedFourGrams)),
                           ("samples_tokens", .integer(Int64(quality.tokens)))]
            }
            if model.vocabulary != nil || model.alignedBytes != nil {
                fields += [("vocabulary", model.vocabulary.map(JSONNode.string) ?? .null), ("aligned_bytes", optional(model.alignedBytes))]
            }
            return .object(fields)
        }
        return .object([
            ("report_version", .integer(1)), ("name", .string(name)), ("machine", .string(machine)),
            ("evaluation", .string(evaluationText)), ("models", .array(modelValues)),
            ("samples", .object([("settings", sampleSettings),
                                 ("prompts", .array(samples.map { sample in
                                     .object([("prompt", .string(sample.prompt)),
                                              ("texts", .object(sample.texts.map { ($0.model, .string($0.text)) }))])
                                 }))])),
            ("plots", .object(plots.map { ($0.id, .string($0.path)) })),
        ])
    }

    /// The table's cells: header, then one row per model.
    /// Whether some model has its own tokenizer: per-token figures then do not compare across rows.
    var mixesTokenizers: Bool { models.contains { $0.vocabulary != nil } }

    /// The table's cells: header, then one row per model. With several tokenizers the teacher's view of
    /// the samples is in bits per byte, and cross-tokenizer students add their aligned share of bytes.
    var cells: [[String]] {
        let mixed = mixesTokenizers, aligned = models.contains { $0.alignedBytes != nil }
        let header = ["model", "kind", "parameters", "perplexity", "bits/byte", "gap closed",
                      mixed ? "teacher bits/byte of samples" : "teacher NLL of samples", "own NLL",
                      "repeated 4-grams", "training time", "train tok/s", "generate tok/s"] + (aligned ? ["aligned bytes"] : [])
        let rows = models.map { model -> [String] in
            let alignedCell: [String] = aligned ? [model.alignedBytes.map { String(format: "%.1f%%", 100 * $0) } ?? "–"] : []
            let cells: [String] = [model.name, model.kind.description, model.parameters.map(SVGChart.grouped) ?? "–",
             model.evaluation.map { String(format: "%.2f", $0.perplexity) } ?? "–",
             model.evaluation.map { String(format: "%.4f", $0.bitsPerByte) } ?? "–",
             // Rounded first, so that a tiny negative share prints as 0%, not -0%.
             model.gapClosed.map { String(format: "%.0f%%", ($0 * 100).rounded() + 0) } ?? "–",
             model.sampleQuality.map { String(format: "%.3f", mixed ? $0.judgeBitsPerByte : $0.judgeMeanNLL) } ?? "–",
             model.sampleQuality.map { String(format: "%.3f", $0.ownMeanNLL) } ?? "–",
             model.sampleQuality.map { String(format: "%.1f%%", 100 * $0.repeatedFourGrams) } ?? "–",
             model.trainingSeconds.map(Self.duration) ?? "–",
             model.trainingTokensPerSecond.map { SVGChart.grouped(Int($0.rounded())) } ?? "–",
             model.generationTokensPerSecond.map { SVGChart.grouped(Int($0.rounded())) } ?? "–"]
            return cells + alignedCell
        }
        return [header] + rows
    }

    /// The table as aligned plain text, for the terminal.
    public var table: String {
        let cells = self.cells
        let widths = (0..<cells[0].count).map { column in cells.map { $0[column].count }.max() ?? 0 }
        return cells.map { row in
            row.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column < 2 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    /// report.md.
    public func markdown() -> String {
        var text = "# \(name)\n\n"
        if let about { text += about + "\n\n" }
        text += "Run directory `\(runDirectory.path)`, on \(machine).\n\n## Models\n\n"
        let cells = self.cells
        text += "| " + cells[0].joined(separator: " | ") + " |\n"
        text += "|" + cells[0].enumerated().map { $0.offset < 2 ? "---|" : "---:|" }.joined() + "\n"
        for row in cells.dropFirst() { text += "| " + row.map(Self.markdownCell).joined(separator: " | ") + " |\n" }
        text += "\nPerplexity and bits per byte: \(evaluationText), scored as `distill eval` scores it (windows of the model's context, every token once). "
        text += "Bits per byte = total nats / (ln 2 × UTF-8 bytes), comparable across tokenizers. "
        if models.contains(where: { $0.gapClosed != nil }) {
            text += "Gap closed = (baseline − student) / (baseline − teacher) in bits per byte: the share of the way from the student trained alone to the teacher. "
        }
        text += "Training time is wall time, resumes included; tokens/s are training tokens over that time and generated tokens over the sampling time (KV cache, batch 1).\n"
        if models.contains(where: { $0.sampleQuality != nil }) {
            text += "\nTeacher NLL of samples: the teacher's mean negative log-likelihood (nats/token) of what each model writes at temperature 1 "
                + "from the same 16 prompts of the validation split (same seeds and lengths for every model): lower is text the teacher finds likely, "
                + "what on-policy distillation trains for. Own NLL is the model's own; repeated 4-grams, the share of a sample's 4-grams it already wrote.\n"
        }
        if mixesTokenizers {
            text += "\nSome models have their own tokenizer: the teacher's view of the samples is then given in bits per byte of sample text "
                + "(the teacher reads each sample's text through its own tokenizer), own NLL and the validation curves stay per token of each model's own "
                + "vocabulary, and the gap closed is taken from the baseline with the student's vocabulary.\n"
        }
        if models.contains(where: { $0.alignedBytes != nil }) {
            text += "\nAligned bytes: for students that learn across tokenizers, the share of their training windows' bytes inside chunks where both "
                + "tokenizations have a boundary at both ends (the text the teacher's signal reaches), averaged over the logged steps.\n"
        }
        let curves = models.filter { $0.validationCurve != nil }
        if !curves.isEmpty {
            text += "\n## Validation during training\n\n"
            text += "| model | final validation CE | best (step) | rose after its best | gap closed against the baseline's best |\n|---|---:|---:|---|---:|\n"
            for model in curves {
                guard let curve = model.validationCurve else { continue }
                text += "| \(model.name) | " + String(format: "%.4f @%d", curve.final, curve.finalStep) + " | " + String(format: "%.4f @%d", curve.best, curve.bestStep)
                    + " | \(curve.rose ? "**yes**" : "no") | " + (model.gapClosedAgainstBestBaseline.map { String(format: "%.0f%%", ($0 * 100).rounded() + 0) } ?? "–") + " |\n"
            }
            text += "\nOn the run's fixed sample of validation windows. A model whose loss rose after its best overfits (a small corpus, several epochs): "
                + "its final figures understate what it reached, and a student's gap closed against the baseline's final figure can be partly regularisation; "
                + "the last column measures it against the baseline at its best instead.\n"
        }
        if !plots.isEmpty {
            text += "\n## Plots\n\n"
            for plot in plots { text += "![\(plot.title)](\(plot.path))\n\n" }
            text += "The loss curves are the cross-entropy with the next token that training logs (validation on a fixed sample of windows of the validation split, not the full split the table uses).\n"
        }
        if !samples.isEmpty {
            text += "\n## Samples\n\n"
            text += "Every model continues the same prompts with the same sampler and seed (\(sampleDescription)).\n"
            for sample in samples {
                text += "\n### " + (sample.prompt.isEmpty ? "(no prompt: from the start token)" : "“\(sample.prompt)”") + "\n\n"
                for (model, generated) in sample.texts {
                    text += "**\(model)**\n\n" + generated.split(separator: "\n", omittingEmptySubsequences: false).map { "> " + $0 }.joined(separator: "\n") + "\n\n"
                }
            }
        }
        return text
    }

    /// The sampler's settings in words.
    var sampleDescription: String {
        var parts: [String] = []
        if let temperature = sampleSettings["temperature"]?.doubleValue {
            parts.append(temperature == 0 ? "greedy" : "temperature \(Normal.float(Float(temperature)).canonicalText)")
        }
        if let k = sampleSettings["top_k"]?.intValue { parts.append("top-k \(k)") }
        if let p = sampleSettings["top_p"]?.doubleValue { parts.append("top-p \(p)") }
        if let seed = sampleSettings["seed"]?.intValue { parts.append("seed \(seed)") }
        if let tokens = sampleSettings["max_tokens"]?.intValue { parts.append("at most \(tokens) new tokens") }
        return parts.joined(separator: ", ")
    }

    static func markdownCell(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }

    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        if total >= 3600 { return "\(total / 3600) h \(String(format: "%02d", total % 3600 / 60)) min" }
        if total >= 60 { return "\(total / 60) min \(String(format: "%02d", total % 60)) s" }
        return String(format: "%.1f s", seconds)
    }
}

extension StageStore {
    /// The result of a stage whose record says it finished (whatever its key: the report shows what
    /// the run directory holds).
    func finishedResult(_ stage: String) -> JSONNode? {
        guard let record = record(stage), record["status"] == .string("finished") else { return nil }
        return record["result"]
    }

    /// The result of a finished stage that was made from the current output of `producer` (its
    /// `model` input is the producer's key and the producer finished): numbers of a model that is being
    /// retrained are not shown.
    func currentResult(_ stage: String, after producer: String?) -> JSONNode? {
        guard let record = record(stage), record["status"] == .string("finished") else { return nil }
        if let producer {
            guard let made = self.record(producer), made["status"] == .string("finished"),
                  record["inputs"]?["model"] == made["key"] else { return nil }
        }
        return record["result"]
    }
}
