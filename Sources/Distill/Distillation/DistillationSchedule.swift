import Foundation

/// How the CE and KD weights move over a run. Every schedule ends at the configured weights
/// (`--ce-weight`, `--kd-weight`); the two ramps start from one of the terms alone.
public enum KDSchedule: String, Sendable, CaseIterable, Codable {
    /// The configured weights at every step.
    case constant
    /// Soft targets first: the CE weight rises linearly from 0 (pure KD) at step 0 to the configured CE
    /// weight at the last step; the KD weight stays as configured.
    case kdToCE = "kd-to-ce"
    /// Labels first: the KD weight rises linearly from 0 (pure CE) at step 0 to the configured KD
    /// weight at the last step; the CE weight stays as configured.
    case ceToKD = "ce-to-kd"
}

/// The shape of the temperature's path from its start to its end.
public enum AnnealingShape: String, Sendable, CaseIterable, Codable {
    /// Equal steps: τ(s) = start + (end − start)·s.
    case linear
    /// Half a cosine: τ(s) = end + (start − end)·(1 + cos πs)/2, flat at both ends.
    case cosine
}

/// A temperature annealed from `start` at step 0 to `end` at the last step.
public struct TemperatureSchedule: Sendable, Equatable, CustomStringConvertible {
    public var start: Float
    public var end: Float
    public var shape: AnnealingShape

    public init(start: Float, end: Float, shape: AnnealingShape = .linear) {
        self.start = start
        self.end = end
        self.shape = shape
    }

    /// Reads `START:END` or `START:END:SHAPE` (shape `linear`, the default, or `cosine`), e.g. `4:1`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3, let start = Float(parts[0]), let end = Float(parts[1]) else {
            throw SettingError(.temperatureSchedule, "must be START:END or START:END:linear|cosine, e.g. 4:1 (got \(text))")
        }
        var shape = AnnealingShape.linear
        if parts.count == 3 {
            guard let chosen = AnnealingShape(rawValue: parts[2]) else {
                throw SettingError(.temperatureSchedule, "has shape \(parts[2]); use linear or cosine (got \(text))")
            }
            shape = chosen
        }
        self.init(start: start, end: end, shape: shape)
    }

    /// Both ends must be temperatures a run accepts.
    public func validate() throws {
        let range = LogitDistillation.temperatureRange
        for value in [start, end] where !(value.isFinite && range.contains(value)) {
            throw SettingError(.temperatureSchedule, "needs temperatures in [\(range.lowerBound), \(range.upperBound)] (got \(self)); try 4:1")
        }
    }

    /// τ at `progress` ∈ [0, 1]; exactly `start` at 0 and `end` at 1.
    public func temperature(progress s: Double) -> Float {
        if s <= 0 { return start }
        if s >= 1 { return end }
        let a = Double(start), b = Double(end)
        switch shape {
        case .linear: return Float(a + (b - a) * s)
        case .cosine: return Float(b + (a - b) * (1 + cos(Double.pi * s)) / 2)
        }
    }

    public var description: String { "\(start):\(end)" + (shape == .linear ? "" : ":\(shape.rawValue)") }
}

/// The objective's schedules: a pure function of (step, total steps), so that a resumed run takes
/// exactly the values an uninterrupted one would.
public struct DistillationSchedule: Sendable, Equatable {
    public var kd: KDSchedule = .constant
    /// nil: the fixed `LogitDistillation.temperature`.
    public var temperature: TemperatureSchedule?

    public init(kd: KDSchedule = .constant, temperature: TemperatureSchedule? = nil) {
        self.kd = kd
        self.temperature = temperature
    }

    public var isConstant: Bool { kd == .constant && temperature == nil }

    /// How far the run is at optimizer step `step` (0-based) of `totalSteps`: 0 at the first step, 1 at
    /// the last (and 1 for a run of one step, which is its own last step).
    public static func progress(step: Int, totalSteps: Int) -> Double {
        guard totalSteps > 1 else { return 1 }
        return min(max(Double(step) / Double(totalSteps - 1), 0), 1)
    }

    /// The CE and KD weights at `progress`, from the configured (end) weights.
    public func weights(_ configured: DistillationWeights, progress s: Double) -> DistillationWeights {
        var weights = configured
        let ramp = Float(min(max(s, 0), 1))
        switch kd {
        case .constant: break
        // At s = 1 the product is the configured weight itself (x·1 = x), so the end is exact.
        case .kdToCE: weights.ce = configured.ce * ramp
        case .ceToKD: weights.kd = configured.kd * ramp
        }
        return weights
    }

    /// The settings that apply at `progress`: weights and temperature moved along their schedules.
    public func settings(_ configured: DistillationSettings, progress s: Double) -> DistillationSettings {
        var settings = configured
        settings.weights = weights(configured.weights, progress: s)
        if let temperature { settings.logits.temperature = temperature.temperature(progress: s) }
        return settings
    }

    /// Refuses schedules that cannot act: a ramp of a term that is off, a ramp whose start already is
    /// its end, a temperature schedule without KD.
    public func validate(_ weights: DistillationWeights) throws {
        try temperature?.validate()
        switch kd {
        case .constant: break
        case .kdToCE:
            if weights.kd == 0 { throw SettingError(.kdSchedule, "kd-to-ce starts from pure KD, but the KD weight is 0: give a positive KD weight") }
            if weights.ce == 0 { throw SettingError(.kdSchedule, "kd-to-ce ramps the CE weight up from 0, but the CE weight is 0: give a positive CE weight or use constant") }
        case .ceToKD:
            if weights.ce == 0 { throw SettingError(.kdSchedule, "ce-to-kd starts from pure CE, but the CE weight is 0: give a positive CE weight") }
            if weights.kd == 0 { throw SettingError(.kdSchedule, "ce-to-kd ramps the KD weight up from 0, but the KD weight is 0: give a positive KD weight or use constant") }
        }
        if temperature != nil && weights.kd == 0 {
            throw SettingError(.temperatureSchedule, "anneals the KD temperature, but the KD weight is 0: give a positive KD weight")
        }
    }
}
