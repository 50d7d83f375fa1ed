import Foundation

/// The curves of one model directory's `metrics.jsonl` (written by the training loop): training
/// and validation values by step.
public struct TrainingMetrics: Sendable, Equatable {
    /// Training records: step → terms (`loss`, `ce`, `kd`, `lr`, `tokens_per_second`, ...).
    public var train: [(step: Int, terms: [String: Double])]
    /// Validation records: step → terms (`ce`, `perplexity`, ...).
    public var validation: [(step: Int, terms: [String: Double])]

    public static func == (lhs: TrainingMetrics, rhs: TrainingMetrics) -> Bool {
        lhs.train.map(\.step) == rhs.train.map(\.step) && lhs.train.map(\.terms) == rhs.train.map(\.terms)
            && lhs.validation.map(\.step) == rhs.validation.map(\.step) && lhs.validation.map(\.terms) == rhs.validation.map(\.terms)
    }

    /// Reads `directory/metrics.jsonl`; nil when there is none (a model the run did not train). Lines
    /// that do not parse (a record cut short by a crash) are skipped. After a resume, steps between the
    /// last checkpoint and the interruption appear twice; the later record wins, as it belongs to the
    /// run that produced the final weights.
    public static func read(directory: URL) -> TrainingMetrics? {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("metrics.jsonl").path) else { return nil }
        var train: [Int: [String: Double]] = [:], validation: [Int: [String: Double]] = [:]
        for line in data.split(separator: UInt8(ascii: "\n")) {
            guard let value = try? JSONNode.parse(Data(line)), case .object(let pairs) = value,
                  case .string(let kind)? = value["kind"], let step = value["step"].flatMap(Self.number).map({ Int($0) }) else { continue }
            var terms: [String: Double] = [:]
            for (key, field) in pairs where key != "kind" && key != "step" {
                if let number = Self.number(field) { terms[key] = number }
            }
            if kind == "train" { train[step] = terms } else if kind == "validation" { validation[step] = terms }
        }
        return TrainingMetrics(train: train.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                               validation: validation.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    static func number(_ value: JSONNode) -> Double? {
        switch value {
        case .integer(let v): return Double(v)
        case .number(let v): return v
        default: return nil
        }
    }

    /// The validation cross-entropy at its lowest and at the last validation, with their steps; nil without
    /// validation records.
    public var validationCE: ValidationCurve? {
        let points = validation.compactMap { record in record.terms[LossTerm.ce.rawValue].map { (step: record.step, value: $0) } }
        guard let last = points.last, let best = points.min(by: { $0.value < $1.value }) else { return nil }
        return ValidationCurve(bestStep: best.step, best: best.value, finalStep: last.step, final: last.value)
    }

    /// The points of one term of the training or validation records.
    public func points(_ term: String, validation useValidation: Bool) -> [ChartPoint] {
        (useValidation ? validation : train).compactMap { record in record.terms[term].map { ChartPoint(x: Double(record.step), y: $0) } }
    }
}

/// A model's validation cross-entropy during training (on the run's fixed sample of validation windows):
/// its lowest value and the last. A final value above the lowest is a model that overfits (a small
/// corpus trained for several epochs); its final figures then understate what it reached.
public struct ValidationCurve: Sendable, Equatable {
    public var bestStep: Int
    public var best: Double
    public var finalStep: Int
    public var final: Double

    public init(bestStep: Int, best: Double, finalStep: Int, final: Double) {
        self.bestStep = bestStep
        self.best = best
        self.finalStep = finalStep
        self.final = final
    }

    /// Whether the loss rose after its minimum by more than rounding (0.1%).
    public var rose: Bool { finalStep > bestStep && final > best * 1.001 }
}

