import Foundation

// The stages of `distill run` that measure models: evaluation, samples and the teacher-scored quality of
// samples.
extension Pipeline {
    /// A model entry's weights (one model, or an ensemble's members) with their tokenizer, through the
    /// one loader. Teachers may come from Hugging Face with a padded head.
    func loadModels(_ entry: ModelEntry) throws -> (models: [LlamaModel], tokenizer: Tokenizer) {
        try ModelAndTokenizer.members((entry.members ?? [entry.directory]).map(resolve), fit: .paddedHead)
    }

    func evaluationStage(_ entry: ModelEntry, producer: String, plan: Plan) throws {
        let vocabulary = try self.vocabulary(entry.vocabulary)
        var settings = JSONNode.object([("text", recipe.evaluation.text.map(JSONNode.string) ?? .null),
                                         ("stride", recipe.evaluation.stride.map { .integer(Int64($0)) } ?? .null)])
        if let text = recipe.evaluation.text {
            settings = .object([("evaluation", settings), ("text_hash", .string(try Fingerprint.contents(of: text)))])
        }
        let inputs = [("model", producer), ("data", vocabulary.dataKey)]
        let stage = "eval-\(entry.name)"
        let key = StageStore.key(stage: stage, settings: settings, inputs: inputs)
        try simpleStage(stage, label: "evaluation \(entry.name)", key: key, settings: settings, inputs: inputs, outputs: []) {
            let (models, tokenizer) = try loadModels(entry)
            let tokens: [Int32], bytes: Int
            if let text = recipe.evaluation.text {
                let raw = try RegularFile.read(text)
                guard let string = String(data: raw, encoding: .utf8) else { throw EvaluationError.notText(text) }
                tokens = tokenizer.encode(string)
                bytes = raw.count
            } else {
                let data = try TokenFile(path: vocabulary.dataPath)
                try data.checkTokenizer(tokenizer)
                tokens = Array(data.validationTokens)
                bytes = data.validationByteCount
            }
            // Exactly `distill eval`'s computation, so the report and `eval` agree to the last digit.
            let report = entry.members == nil
                ? try scoreTokens(model: models[0], tokens: tokens, bytes: bytes, stride: recipe.evaluation.stride)
                : try scoreTokens(ensemble: ModelEnsemble(members: models), tokens: tokens, bytes: bytes, stride: recipe.evaluation.stride)
            callbacks.log(String(format: "evaluation %@: perplexity %.2f, %.4f bits/byte", entry.name, report.perplexity, report.bitsPerByte))
            let parameters = models.reduce(0) { $0 + $1.parameterCount }
            return .object([("parameters", .integer(Int64(parameters))), ("tokens", .integer(Int64(report.tokens))),
                            ("nll_sum", .number(report.nllSum)), ("bytes", .integer(Int64(report.bytes))),
                            ("perplexity", .number(report.perplexity)), ("bits_per_byte", .number(report.bitsPerByte))])
        }
    }

    func samplesStage(_ entry: ModelEntry, producer: String) throws {
        let settings = Normal.samples(recipe.samples)
        let inputs = [("model", producer)]
        let stage = "samples-\(entry.name)"
        let key = StageStore.key(stage: stage, settings: settings, inputs: inputs)
        try simpleStage(stage, label: "samples \(entry.name)", key: key, settings: settings, inputs: inputs, outputs: []) {
            let (models, tokenizer) = try loadModels(entry)
            // One model, or the ensemble's mixture (an ensemble of one generates exactly what its member does).
            let session = try EnsembleSession(ensemble: try ModelEnsemble(members: models))
            // A short untimed generation first: the first one pays for thread start-up and page faults.
            var warmUp = try Sampler(temperature: 0)
            _ = try generate(ensemble: session, prompt: [max(tokenizer.bosId, 0)], maxTokens: 4, sampler: &warmUp)
            var texts: [JSONNode] = [], produced = 0, seconds = 0.0
            for prompt in recipe.samples.prompts {
                // The same sampler and seed for every model and prompt.
                var sampler = try Sampler(temperature: recipe.samples.temperature, topK: recipe.samples.topK,
                                          topP: recipe.samples.topP, seed: recipe.samples.seed)
                var ids = tokenizer.encode(prompt)
                if ids.isEmpty && tokenizer.bosId >= 0 { ids = [tokenizer.bosId] }
                let started = Date()
                let continuation = try generate(ensemble: session, prompt: ids, maxTokens: recipe.samples.maxTokens, sampler: &sampler,
                                                stopToken: tokenizer.eosId >= 0 ? tokenizer.eosId : nil)
                seconds += Date().timeIntervalSince(started)
                produced += continuation.count
                texts.append(.string(prompt + tokenizer.decode(continuation)))
            }
            let speed = Double(produced) / max(seconds, 1e-9)
            callbacks.log("samples \(entry.name): \(produced) tokens at \(SVGChart.grouped(Int(speed.rounded()))) tokens/s")
            return .object([("texts", .array(texts)), ("tokens", .integer(Int64(produced))), ("seconds", .number(seconds)),
                            ("tokens_per_second", .number(speed))])
        }
    }

    /// The teacher's NLL of each model's own samples (`SampleQuality`): 16 prompts of a quarter of the
    /// shortest context from the validation split, continued for half of it at temperature 1, the same
    /// prompts and seeds for every model.
    func sampleQualityStage(_ entry: ModelEntry, producer: String, plan: Plan, teacherKey: String,
                                    judge: () throws -> ModelEnsemble) throws {
        let vocabulary = try self.vocabulary(entry.vocabulary)
        let shortest = ([plan.teacherContext] + plan.studentContexts).min() ?? plan.teacherContext
        let promptLength = max(1, shortest / 4), newTokens = max(1, shortest / 2), count = 16
        let settings = JSONNode.object([("prompts", .integer(Int64(count))), ("prompt_tokens", .integer(Int64(promptLength))),
                                        ("new_tokens", .integer(Int64(newTokens))), ("temperature", .integer(1)),
                                        ("seed", .integer(Int64(bitPattern: recipe.samples.seed)))])
        let inputs = [("model", producer), ("teacher", teacherKey), ("data", vocabulary.dataKey)]
        let stage = "quality-\(entry.name)"
        let key = StageStore.key(stage: stage, settings: settings, inputs: inputs)
        try simpleStage(stage, label: "sample quality \(entry.name)", key: key, settings: settings, inputs: inputs, outputs: []) {
            let (members, tokenizer) = try loadModels(entry)
            let model = try ModelEnsemble(members: members)
            let data = try TokenFile(path: vocabulary.dataPath)
            let prompts = SampleQuality.prompts(from: Array(data.validationTokens), count: count, promptLength: promptLength)
            // A model with its own tokenizer: the teacher scores its samples' text through the run's.
            let quality = try SampleQuality.measure(model: model, judge: try judge(), tokenizer: tokenizer, prompts: prompts,
                                                    newTokens: newTokens, seed: recipe.samples.seed,
                                                    judgeTokenizer: entry.vocabulary == nil ? nil : try Tokenizer(modelPath: tokenizerPath))
            callbacks.log(String(format: "sample quality %@: teacher NLL %.3f, own NLL %.3f nats/token, %.1f%% repeated 4-grams",
                                 entry.name, quality.judgeMeanNLL, quality.ownMeanNLL, 100 * quality.repeatedFourGrams))
            return .object([("tokens", .integer(Int64(quality.tokens))), ("judge_nll_sum", .number(quality.judgeNLLSum)),
                            ("own_nll_sum", .number(quality.ownNLLSum)), ("bytes", .integer(Int64(quality.bytes))),
                            ("repeated_4grams", .number(quality.repeatedFourGrams))])
        }
    }

    func resolve(_ directory: String) -> URL {
        directory.hasPrefix("/") ? URL(fileURLWithPath: directory) : run.appendingPathComponent(directory)
    }
}
