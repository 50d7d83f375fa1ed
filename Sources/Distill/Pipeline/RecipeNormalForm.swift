import Foundation

/// The normal forms of recipe parts: every setting written out, in a fixed order.
enum Normal {
    /// A Float as the shortest decimal that reads back as it (0.003, not 0.003000000026077032).
    static func float(_ value: Float) -> JSONNode { .number(Double("\(value)") ?? Double(value)) }

    static func shape(_ shape: ModelShape) -> JSONNode {
        switch shape {
        case .preset(let name): return .object([("preset", .string(name))])
        case .config(let path): return .object([("config", .string(path))])
        }
    }

    static func training(_ p: TrainingParameters, context: Int?) -> JSONNode {
        .object([
            ("steps", .integer(Int64(p.steps))), ("batch_size", .integer(Int64(p.batchSize))),
            ("context", context.map { .integer(Int64($0)) } ?? .null), ("accumulation", .integer(Int64(p.accumulationSteps))),
            ("lr", Normal.float(p.learningRate)), ("warmup", .integer(Int64(p.warmupSteps))),
            ("min_lr_fraction", Normal.float(p.minimumLearningRateFraction)),
            ("weight_decay", Normal.float(p.weightDecay)), ("beta1", Normal.float(p.beta1)),
            ("beta2", Normal.float(p.beta2)), ("grad_clip", Normal.float(p.gradientClip)),
            ("seed", .integer(Int64(bitPattern: p.seed))), ("eval_every", .integer(Int64(p.evalEvery))),
            ("eval_batches", .integer(Int64(p.evalBatches))), ("save_every", .integer(Int64(p.saveEvery))),
            ("log_every", .integer(Int64(p.logEvery))),
        ])
    }

    static func logits(_ s: DistillationSettings) -> JSONNode {
        var fields: [(String, JSONNode)] = [
            ("ce_weight", Normal.float(s.weights.ce)), ("kd_weight", Normal.float(s.weights.kd)),
            ("temperature", Normal.float(s.logits.temperature)), ("divergence", .string(s.logits.divergence.name)),
        ]
        switch s.logits.divergence {
        case .jsd(let beta): fields.append(("beta", Normal.float(beta)))
        case .skewKL(let alpha), .skewReverseKL(let alpha): fields.append(("skew_alpha", Normal.float(alpha)))
        default: break
        }
        fields.append(("tau_squared", .bool(s.logits.tauSquared)))
        fields.append(("teacher_top_k", s.logits.teacherTopK.map { .integer(Int64($0)) } ?? .null))
        return .object(fields)
    }

    static func tokenizer(_ tokenizer: RecipeTokenizer) -> JSONNode {
        switch tokenizer {
        case let .train(vocab, type): return .object([("vocab_size", .integer(Int64(vocab))), ("model_type", .string(type.rawValue))])
        case .file(let path): return .object([("model", .string(path))])
        case .teacher: return .object([("from_teacher", .bool(true))])
        }
    }

    static func teacher(_ teacher: RecipeTeacher) -> JSONNode {
        switch teacher.source {
        case let .train(shape, training, context):
            return .object([("model", self.shape(shape)), ("training", self.training(training, context: context))])
        case .directories(let directories):
            return .object([("directories", .array(directories.map(JSONNode.string))),
                            ("weights", teacher.weights.map { .array($0.map { Normal.float($0) }) } ?? .null)])
        }
    }

    static func samples(_ samples: RecipeSamples) -> JSONNode {
        .object([
            ("prompts", .array(samples.prompts.map(JSONNode.string))), ("max_tokens", .integer(Int64(samples.maxTokens))),
            ("temperature", Normal.float(samples.temperature)), ("top_k", samples.topK.map { .integer(Int64($0)) } ?? .null),
            ("top_p", samples.topP.map { Normal.float($0) } ?? .null), ("seed", .integer(Int64(bitPattern: samples.seed))),
        ])
    }
}
