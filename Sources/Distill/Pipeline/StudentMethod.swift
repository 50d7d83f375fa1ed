import Foundation

/// The ways a student can be made, by the name a recipe's `kind` gives.
public enum StudentKind: String, Sendable, CaseIterable {
    /// Cross-entropy on the labels alone: the reference every other student is compared with.
    case baseline
    /// CE + logit distillation from the teacher (any divergence).
    case kd
    /// Logit distillation plus hidden-state (feature) distillation.
    case kdFeature = "kd-feature"
    /// Logit distillation plus relational distillation on sentence embeddings.
    case kdRelational = "kd-relational"
    /// Logit distillation from a cache of the teacher's sampled or top-K targets.
    case kdCached = "kd-cached"
    /// On-policy distillation (GKD): a share of each batch continued by the current student, scored by
    /// the teacher at the generated tokens.
    case onPolicy = "on-policy"
    /// Sequence-level KD: a share of each batch continued by the teacher.
    case seqKD = "seq-kd"
    /// Born-again generations: each learns from the previous one (or all earlier ones).
    case bornAgain = "born-again"
    /// Online mutual learning of N peers, no teacher.
    case mutual

    public static let names = allCases.map(\.rawValue)

    /// Whether the kind learns from the recipe's teacher.
    public var usesTeacher: Bool { [.kd, .kdFeature, .kdRelational, .kdCached, .onPolicy, .seqKD].contains(self) }
    /// Whether the kind has logit distillation settings.
    public var distills: Bool { self != .baseline }

    /// The recipe fields of a student that only some kinds take, and which kinds take each: any other
    /// kind given one is refused by name rather than silently ignoring it.
    static let ownFields: [(field: String, kinds: [StudentKind])] = [
        ("logits", allCases.filter(\.distills)), ("feature", [.kdFeature]), ("relational", [.kdRelational]),
        ("cache", [.kdCached]), ("generations", [.bornAgain]), ("teach_with", [.bornAgain]), ("peers", [.mutual]),
        ("init_from_teacher", [.kd, .kdFeature, .kdRelational, .onPolicy, .seqKD]), ("generation", [.onPolicy, .seqKD]),
    ]
}

/// How one student is made: its kind with the options only that kind has. The objective's settings
/// (weights, divergence, feature and relational terms) are the student's `DistillationSettings`; what
/// is here decides the stage that trains it and the models it adds to the report. A new kind is a new
/// case here and in `StudentKind`; the compiler then names every place that must handle it (parsing,
/// normal form, the pipeline's stage).
public enum StudentMethod: Sendable, Equatable {
    case baseline
    /// `layerMap` (student:teacher block pairs; nil: uniform) only for feature distillation.
    case kd(StudentKind, initFromTeacher: Bool, layerMap: [LayerPair]?)
    case kdCached(TeacherCacheMode)
    /// `on-policy` or `seq-kd`: the generated share (the student's or the teacher's) and its sampler.
    case generated(StudentKind, OnPolicySettings, initFromTeacher: Bool)
    case bornAgain(generations: Int, teachers: GenerationTeachers)
    case mutual(peers: Int)

    public var kind: StudentKind {
        switch self {
        case .baseline: return .baseline
        case .kd(let kind, _, _): return kind
        case .kdCached: return .kdCached
        case .generated(let kind, _, _): return kind
        case .bornAgain: return .bornAgain
        case .mutual: return .mutual
        }
    }

    /// Starts from every k-th teacher block (students of the teacher's width).
    public var initFromTeacher: Bool {
        switch self {
        case .kd(_, let initFromTeacher, _), .generated(_, _, let initFromTeacher): return initFromTeacher
        default: return false
        }
    }

    /// The models a student called `name` trains, in report order: itself, its peers (`NAME-1` ...) or
    /// its generations (`NAME-g1` ...).
    public func modelNames(_ name: String) -> [String] {
        switch self {
        case .bornAgain(let generations, _): return (1...generations).map { "\(name)-g\($0)" }
        case .mutual(let peers): return (1...peers).map { "\(name)-\($0)" }
        default: return [name]
        }
    }

    /// The rows the student adds to the report: its models, and for born-again the ensemble of all
    /// generations (`NAME-ensemble`).
    public func reportNames(_ name: String) -> [String] {
        if case .bornAgain = self { return modelNames(name) + ["\(name)-ensemble"] }
        return modelNames(name)
    }

    /// Reads the kind's own fields of a student (`kind`'s in `StudentKind.ownFields`, besides the
    /// objective's sections), with their defaults and checks. `settings` is the student's objective as
    /// parsed, for the checks that depend on it.
    static func parse(_ kind: StudentKind, _ reader: inout FieldReader, settings: DistillationSettings, layerMap: [LayerPair]?) throws -> StudentMethod {
        switch kind {
        case .baseline:
            return .baseline
        case .kd, .kdFeature, .kdRelational:
            return .kd(kind, initFromTeacher: try reader.bool("init_from_teacher") ?? false, layerMap: layerMap)
        case .kdCached:
            var cache = try reader.object("cache") ?? FieldReader(.object([]), path: reader.path("cache"))
            let samples = try cache.int("samples", in: 1...65_535)
            let topK = try cache.int("top_k", in: 1...Int64(Int32.max))
            if samples != nil && topK != nil { throw RecipeError(cache.path("top_k"), "give \"samples\" or \"top_k\", not both") }
            try cache.finish()
            if settings.logits.divergence != .forwardKL {
                throw RecipeError(reader.path("logits.divergence"), "a cached teacher holds a sparse target, which only forward-kl can use")
            }
            if settings.logits.teacherTopK != nil {
                throw RecipeError(reader.path("logits.teacher_top_k"), "a kd-cached student takes its top K from \"cache\": {\"top_k\": K}")
            }
            return .kdCached(topK.map { .topK($0) } ?? .samples(samples ?? 16))
        case .bornAgain:
            let generations = try reader.int("generations", in: 1...100) ?? 3
            let teachWith = try reader.string("teach_with") ?? GenerationTeachers.previous.rawValue
            guard let teachers = GenerationTeachers(rawValue: teachWith) else {
                throw RecipeError(reader.path("teach_with"), "unknown value \"\(teachWith)\"; use \(GenerationTeachers.allCases.map(\.rawValue).joined(separator: " or "))")
            }
            return .bornAgain(generations: generations, teachers: teachers)
        case .mutual:
            return .mutual(peers: try reader.int("peers", in: 2...64) ?? 2)
        case .onPolicy, .seqKD:
            // TRL's GKDTrainer generates half of each batch; the sampler draws from the model as it is.
            var generation = try reader.object("generation") ?? FieldReader(.object([]), path: reader.path("generation"))
            var options = OnPolicySettings()
            let share = try generation.number("share") ?? 0.5
            guard share > 0 && share <= 1 else { throw RecipeError(generation.path("share"), "must be in (0, 1], got \(share)") }
            if kind == .onPolicy { options.studentShare = share } else { options.teacherShare = share }
            options.promptTokens = try generation.int("prompt_tokens", in: 1...Int64(Int32.max))
            options.newTokens = try generation.int("new_tokens", in: 1...Int64(Int32.max))
            options.temperature = try generation.float("temperature") ?? 1
            options.topK = try generation.int("top_k", in: 1...Int64(Int32.max))
            options.topP = try generation.float("top_p")
            options.lossOnPrompt = try generation.bool("loss_on_prompt") ?? false
            try generation.finish()
            do { try options.validate() } catch let error as OnPolicyError {
                throw RecipeError(generation.path(generationField(error.setting)), error.message(naming: { "\"\(generationField($0))\"" }))
            }
            if settings.weights.kd <= 0 {
                throw RecipeError(reader.path("logits.kd_weight"), "must be positive: a \(kind.rawValue) student learns from the teacher's scores of the generated tokens")
            }
            return .generated(kind, options, initFromTeacher: try reader.bool("init_from_teacher") ?? false)
        }
    }

    /// The field of a student's `generation` object that holds an on-policy setting.
    static func generationField(_ setting: Setting) -> String {
        switch setting {
        case .onPolicy, .teacherGenerated: return "share"
        case .sampleTemperature: return "temperature"
        case .sampleTopK: return "top_k"
        case .sampleTopP: return "top_p"
        default: return setting.rawValue
        }
    }

    /// The kind's own fields in normal form, after the student's name, kind, model, training and logits.
    func normalFields(_ settings: DistillationSettings) -> [(String, JSONNode)] {
        switch self {
        case .baseline: return []
        case let .kd(kind, initFromTeacher, layerMap):
            var fields: [(String, JSONNode)] = [("init_from_teacher", .bool(initFromTeacher))]
            if kind == .kdFeature {
                fields.append(("feature", .object([("weight", Normal.float(settings.weights.feature)),
                                                    ("layer_map", layerMap.map { .string(LayerMap.text($0)) } ?? .null),
                                                    ("distance", .string(settings.featureDistance.rawValue))])))
            }
            if kind == .kdRelational {
                fields.append(("relational", .object([("distance_weight", Normal.float(settings.weights.rkdDistance)),
                                                       ("angle_weight", Normal.float(settings.weights.rkdAngle))])))
            }
            return fields
        case .kdCached(.samples(let samples)):
            return [("cache", .object([("samples", .integer(Int64(samples))), ("top_k", .null)]))]
        case .kdCached(.topK(let k)):
            return [("cache", .object([("samples", .null), ("top_k", .integer(Int64(k)))]))]
        case let .generated(_, options, initFromTeacher):
            return [("init_from_teacher", .bool(initFromTeacher)), ("generation", .object([
                ("share", .number(max(options.studentShare, options.teacherShare))),
                ("prompt_tokens", options.promptTokens.map { .integer(Int64($0)) } ?? .null),
                ("new_tokens", options.newTokens.map { .integer(Int64($0)) } ?? .null),
                ("temperature", Normal.float(options.temperature)),
                ("top_k", options.topK.map { .integer(Int64($0)) } ?? .null),
                ("top_p", options.topP.map(Normal.float) ?? .null),
                ("loss_on_prompt", .bool(options.lossOnPrompt)),
            ]))]
        case let .bornAgain(generations, teachers):
            return [("generations", .integer(Int64(generations))), ("teach_with", .string(teachers.rawValue))]
        case .mutual(let peers):
            return [("peers", .integer(Int64(peers)))]
        }
    }
}
