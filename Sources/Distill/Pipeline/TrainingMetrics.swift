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

    /// The points of one term of the training or validation records.
    public func points(_ term: String, validation useValidation: Bool) -> [ChartPoint] {
        (useValidation ? validation : train).compactMap { record in record.terms[term].map { ChartPoint(x: Double(record.step), y: $0) } }
    }
}
