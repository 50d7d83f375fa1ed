import Foundation

extension TrainingRun {
    /// The tokenizer of a teacher model directory (ours or a Hugging Face one).
    static func teacherTokenizer(_ path: String) throws -> Tokenizer {
        try Tokenizer(modelPath: try HFModelDirectory(URL(fileURLWithPath: path)).tokenizerModel().path)
    }

    /// Refuses, before any model is loaded, a teacher whose tokenizer is not the data's when no
    /// cross-tokenizer objective was chosen, and a cross-tokenizer objective for a teacher that shares it.
    static func checkTeacherTokenizers(_ student: StudentRequest, data: TokenFile, dataPath: String) throws {
        for path in student.teachers {
            // A directory without a readable tokenizer is left to the model loading, which says what is wrong.
            guard let tokenizer = try? teacherTokenizer(path) else { continue }
            let same = tokenizer.modelHash == data.tokenizerHash
            if student.crossTokenizer == nil && !same { throw CrossTokenizerError.needsCrossTokenizer(teacher: path, data: dataPath) }
            if student.crossTokenizer != nil && same { throw CrossTokenizerError.sameTokenizer(teacher: path) }
        }
    }

    /// `distill student` with a teacher of another tokenizer: a student of the data's vocabulary trained
    /// with `CrossTokenizerObjective`. One teacher; the student's shape from the request (its vocabulary
    /// is the data's, not the teacher's).
    static func crossTokenizerStudent(_ request: TrainingRequest, _ student: StudentRequest, inputs: Inputs, loss: CrossTokenizerLoss,
                                      callbacks: TrainingCallbacks) throws -> TrainingOutcome {
        guard student.teachers.count == 1 else {
            throw CrossTokenizerError.unsupported(.teacher, why: "give one teacher (an ensemble across tokenizers is not supported)")
        }
        if student.initFromTeacher {
            throw CrossTokenizerError.unsupported(.initFromTeacher, why: "the teacher's embedding rows are another vocabulary's")
        }
        if student.teacherWeights != nil {
            throw CrossTokenizerError.unsupported(.teacherWeights, why: "there is one teacher")
        }
        let settings = student.settings
        try settings.validate()
        let path = student.teachers[0]
        let output = try claimOutput(request, reads: [OutputGuard.Role(Setting.teacher.rawValue, path)])
        let loaded = try ModelAndTokenizer(directory: URL(fileURLWithPath: path), fit: .paddedHead)
        let teacher = loaded.model
        // The student's own vocabulary, not the teacher's: otherwise the rules of any student.
        var own = request
        own.defaultPreset = teacher.config.hiddenSize >= 256 ? "small-student" : "tiny-student"
        let shape = try scratchShape(own, vocabSize: inputs.data.vocabSize, defaultContext: min(256, teacher.config.maxPositionEmbeddings))
        let config = shape.config, context = shape.context
        let (model, parameters) = try newModel(shape, for: request)
        let objective = try CrossTokenizerObjective(
            teacher: teacher, teacherTokenizer: loaded.tokenizer, studentTokenizer: try Tokenizer(modelPath: inputs.tokenizerModel),
            studentConfig: config, loss: loss, settings: settings)
        objective.surroundings = inputs.data
        // A teacher that cannot spell the data's text is refused now, not at the first batch that meets it.
        let sample = inputs.data.validationTokens.count > 1 ? inputs.data.validationTokens : inputs.data.trainTokens
        var ids = [Int32](repeating: 0, count: min(sample.count, 4096))
        ids.withUnsafeMutableBufferPointer { sample.copy(from: 0, into: $0) }
        _ = try objective.align(window: ids)
        let trainer = try Trainer(model: model, objective: objective, parameters: parameters, tokenizerHash: inputs.data.tokenizerHash)
        let tau = settings.schedule.temperature.map { "τ \($0.start) → \($0.end)" } ?? "τ \(settings.logits.temperature)"
        callbacks.log("teacher: \(teacher.parameterCount) parameters, vocab \(teacher.config.vocabSize) (its own tokenizer); student: "
            + "\(model.parameterCount) parameters (width \(config.hiddenSize), \(config.numHiddenLayers) layers, vocab \(config.vocabSize), "
            + "context \(context)); objective: ce \(settings.weights.ce), \(loss.rawValue) \(settings.weights.kd) (\(tau))")
        return try execute([trainer], outputs: [output], inputs: inputs, callbacks: [callbacks])[0]
    }
}
