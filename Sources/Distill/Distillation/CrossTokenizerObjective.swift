import CKernels
import Foundation

/// What can go wrong when a student learns across tokenizers; each message is one line.
public enum CrossTokenizerError: NamesSettings, Equatable {
    /// A teacher whose tokenizer differs from the data's, with no cross-tokenizer objective chosen.
    case needsCrossTokenizer(teacher: String, data: String)
    /// A cross-tokenizer objective for a teacher that shares the data's tokenizer.
    case sameTokenizer(teacher: String)
    /// A setting that the cross-tokenizer objective does not combine with.
    case unsupported(Setting, why: String)
    /// The data's tokenizer puts a space before each line it encodes, so a token file's text is not known.
    case dummyPrefixData(tokenizer: String)
    /// No batch window has two bytes where both tokenizations have a boundary.
    case emptyAlignment(windows: Int, teacherTokenizer: String)
    /// A token's bytes cannot be known, or the teacher's tokenizer does not spell the text back.
    case offsets(TokenOffsetError)
    /// The teacher's tokenizer writes ids that its model has no row for.
    case teacherVocabulary(tokenizer: Int, model: Int)

    public func message(naming name: (Setting) -> String) -> String {
        switch self {
        case let .needsCrossTokenizer(teacher, data):
            return "\(teacher) uses another tokenizer than \(data): logit distillation needs a shared vocabulary, so prepare the data "
                + "with the teacher's tokenizer.model, or distil across tokenizers with \(name(.crossTokenizer)) uld or alm"
        case let .sameTokenizer(teacher):
            return "\(name(.crossTokenizer)) distils across tokenizers, but \(teacher) uses the data's own tokenizer: leave it out "
                + "for plain logit distillation"
        case let .unsupported(setting, why):
            return "\(name(setting)) does not combine with \(name(.crossTokenizer)): \(why)"
        case let .dummyPrefixData(tokenizer):
            return "the data's tokenizer \(tokenizer) puts a space before every text it encodes, so the token file's text cannot be "
                + "told from those spaces; prepare the data with a tokenizer made by `distill tokenizer train`"
        case let .emptyAlignment(windows, teacherTokenizer):
            return "no byte inside the batch's \(windows) windows is a token boundary of both the data's tokenizer and the teacher's "
                + "(\(teacherTokenizer)), so there is nothing to align and the distillation term would be empty; use a teacher whose "
                + "tokenizer cuts text into comparable pieces, or a longer \(name(.context))"
        case let .offsets(error):
            return error.description
        case let .teacherVocabulary(tokenizer, model):
            return "the teacher's tokenizer has \(tokenizer) pieces but its model only \(model) rows: the tokenizer.model is not this model's"
        }
    }
}

/// A student with its own tokenizer learning from a teacher with another, on the same text.
///
/// Each batch row is a window of the token file: its T+1 student tokens (`inputs` and the last target)
/// are turned back into bytes, piece by piece; the teacher encodes those bytes with its own tokenizer
/// (only whole UTF-8 characters: a window may start or end inside a character spelled in byte pieces),
/// and both tokenizations keep each token's byte span. With `surroundings`, the teacher encodes the whole
/// lines around the window and its tokens that the window's ends cut in half count in no chunk; without,
/// it encodes the window's text alone and its last token counts as cut (the text goes on in the corpus,
/// so it may be the start of a longer token). `alignChunks` then cuts the window where both sides have a
/// token boundary. The teacher reads at most its context of tokens; chunks past it are left out.
///
/// The two objectives, each added to CE on the student's own labels (`w_ce·CE + w_kd·term`):
/// - ULD pairs, for every aligned chunk, the position of its last token on each side: there both models
///   predict the text that follows the chunk (each its own first token of the next chunk). The student's
///   position must have logits (not the window's last token) and the teacher's must lie inside its
///   context. The term is the mean over pairs of `universalLogitDistance` at τ.
/// - ALM takes every chunk whose tokens all have a prediction (not the window's first chunk, whose first
///   token on each side has no context) and compares the chunk's log-likelihood (the sum of its tokens'
///   log-probabilities at τ = 1) under the teacher and the student with `binarisedChunkKL` at τ; the term
///   is the mean over those chunks. With the same tokenizer on both sides every chunk is one token, and
///   the term is the mean over the predicted tokens 1...T (1..<T without `surroundings`, where the last is
///   cut) of the binary KL between the two models' probabilities of the true next token.
/// Both are multiplied by τ² when `tauSquared` (as KD's divergences are), so that their gradients keep
/// their size as τ changes.
public final class CrossTokenizerObjective: TermwiseObjective {
    public let teacher: LlamaModel
    public let loss: CrossTokenizerLoss
    public let settings: DistillationSettings
    /// The settings of the current step (`settings` moved along its schedule).
    public private(set) var current: DistillationSettings
    public var extraTensors: [TrainableTensor] { [] }
    private let studentTokenizer: Tokenizer, teacherTokenizer: Tokenizer
    private let studentPieces: PieceBytes, teacherPieces: PieceBytes
    private let teacherHash: String
    private let dFinal = ScratchBuffer()  // [B·T, Cs]

    public init(teacher: LlamaModel, teacherTokenizer: Tokenizer, studentTokenizer: Tokenizer, studentConfig: LlamaConfig,
                loss: CrossTokenizerLoss, settings: DistillationSettings) throws {
        try settings.validate()
        if settings.weights.feature > 0 {
            throw CrossTokenizerError.unsupported(.featureWeight, why: "hidden states across tokenizers are not matched yet")
        }
        if settings.weights.rkdDistance > 0 || settings.weights.rkdAngle > 0 {
            throw CrossTokenizerError.unsupported(settings.weights.rkdDistance > 0 ? .rkdDistanceWeight : .rkdAngleWeight,
                                                  why: "relational terms across tokenizers are not matched yet")
        }
        if settings.logits.teacherTopK != nil {
            throw CrossTokenizerError.unsupported(.teacherTopK, why: "both objectives read the teacher's whole distribution")
        }
        if studentTokenizer.addsDummyPrefix { throw CrossTokenizerError.dummyPrefixData(tokenizer: studentTokenizer.modelPath) }
        guard teacherTokenizer.vocabSize <= teacher.config.vocabSize else {
            throw CrossTokenizerError.teacherVocabulary(tokenizer: teacherTokenizer.vocabSize, model: teacher.config.vocabSize)
        }
        guard studentTokenizer.vocabSize <= studentConfig.vocabSize else {
            throw DistillationError.invalidShape("the data's tokenizer has \(studentTokenizer.vocabSize) pieces, the student \(studentConfig.vocabSize) rows")
        }
        self.teacher = teacher
        self.loss = loss
        self.settings = settings
        current = settings
        self.studentTokenizer = studentTokenizer
        self.teacherTokenizer = teacherTokenizer
        studentPieces = PieceBytes(studentTokenizer)
        teacherPieces = PieceBytes(teacherTokenizer)
        teacherHash = String(weightsHash(UnsafeBufferPointer(teacher.parameters)), radix: 16)
        teacher.releaseActivations()
    }

    public var identity: [String: String] {
        let w = settings.weights
        var result: [String: String] = [
            "objective": "cross-tokenizer distillation",
            Setting.crossTokenizer.rawValue: loss.rawValue,
            Setting.ceWeight.rawValue: "\(w.ce)", Setting.kdWeight.rawValue: "\(w.kd)",
            Setting.teacher.rawValue: teacherHash,
            "teacher_tokenizer": String(teacherTokenizer.modelHash, radix: 16),
        ]
        if w.kd > 0 {
            result[Setting.temperature.rawValue] = "\(settings.logits.temperature)"
            result[Setting.tauSquared.rawValue] = "\(settings.logits.tauSquared)"
            if let temperature = settings.schedule.temperature {
                result[Setting.temperatureSchedule.rawValue] = "\(temperature)"
                result[Setting.temperature.rawValue] = nil
            }
        }
        if settings.schedule.kd != .constant { result[Setting.kdSchedule.rawValue] = settings.schedule.kd.rawValue }
        return result
    }

    public func prepare(step: Int, totalSteps: Int) {
        guard !settings.schedule.isConstant else { return }
        current = settings.schedule.settings(settings, progress: DistillationSchedule.progress(step: step, totalSteps: totalSteps))
    }

    /// One window's two tokenizations and their chunks.
    public struct WindowAlignment: Sendable {
        /// The window's text and the student's T+1 tokens of it.
        public let student: TokenizedText
        /// The teacher's tokens of the window's whole characters, spans in the window's bytes.
        public let teacher: TokenizedText
        /// How many teacher tokens it reads (its input is tokens 0..<teacherLength; tokens 1...teacherLength
        /// have a log-probability).
        public let teacherLength: Int
        public let chunks: [AlignedChunk]
    }

    /// The token file the batches' windows come from (their `starts`): the teacher then reads the whole
    /// lines around each window, so that its tokens at the window's ends are the ones it writes for the
    /// running text, and a token that crosses an end is cut there (see `align`). Nil, or a batch without
    /// `starts`: the teacher reads the window's text alone, and its last token counts as cut.
    public var surroundings: TokenFile?
    /// How many tokens on each side of a window are read to find the lines around it.
    public static let surroundingTokens = 64

    /// Aligns one window of T+1 student ids (see the type's summary). `before` and `after` are the student
    /// ids just before and after the window in the token file, if known: the teacher encodes the text from
    /// the start of the window's first line (the last newline in `before`) to the end of its last line (the
    /// first newline in `after`), so that its tokens are those of the running text, and its tokens that
    /// start before the window or end after it are the halves the window cuts; they count in no chunk, and
    /// the teacher's input starts at its first token inside the window. Without text after the window,
    /// the teacher's last token may be cut short by the window's end, so it counts as cut.
    public func align(window ids: [Int32], before: [Int32] = [], after: [Int32] = []) throws -> WindowAlignment {
        do {
            let student = try studentTokenizer.spans(of: ids, pieces: studentPieces)
            let head = try studentTokenizer.spans(of: before, pieces: studentPieces).bytes
            let tail = try studentTokenizer.spans(of: after, pieces: studentPieces).bytes
            let headStart = head.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
            let tailEnd = tail.firstIndex(of: 0x0A).map { $0 + 1 } ?? tail.count
            let text = Array(head[headStart...]) + student.bytes + Array(tail[..<tailEnd])
            let windowStart = head.count - headStart
            let whole = wholeCharacters(text)
            let encoded = try teacherTokenizer.encodeWithSpans(Array(text[whole]), pieces: teacherPieces)
            let shift = whole.lowerBound - windowStart
            let shifted = encoded.spans.map { ($0.lowerBound + shift)..<($0.upperBound + shift) }
            // The teacher's sequence starts at its first token inside the window.
            let first = shifted.firstIndex { $0.lowerBound >= 0 } ?? shifted.count
            let teacherText = TokenizedText(bytes: student.bytes, ids: Array(encoded.ids[first...]), spans: Array(shifted[first...]))
            if let bad = teacherText.ids.first(where: { Int($0) >= teacher.config.vocabSize }) {
                throw CrossTokenizerError.teacherVocabulary(tokenizer: Int(bad) + 1, model: teacher.config.vocabSize)
            }
            let last = teacherText.ids.count - 1
            let teacherLength = max(0, min(last, teacher.config.maxPositionEmbeddings))
            var spans = Array(teacherText.spans.prefix(teacherLength + 1))
            if tailEnd == 0, teacherLength == last, let cut = spans.last, cut.upperBound <= student.bytes.count {
                spans[spans.count - 1] = cut.lowerBound..<(student.bytes.count + 1)
            }
            let chunks = alignChunks(student: student.spans, teacher: spans, window: 0..<student.bytes.count)
            return WindowAlignment(student: student, teacher: teacherText, teacherLength: teacherLength, chunks: chunks)
        } catch let error as TokenOffsetError {
            throw CrossTokenizerError.offsets(error)
        }
    }

    public func terms(student: LlamaModel, batch: Batch, gradientScale scale: Float, backward: Bool) throws -> LossTerms {
        let weights = current.weights, tau = current.logits.temperature
        let b = batch.batchSize, t = batch.contextLength, rows = b * t
        let studentVocab = student.config.vocabSize, teacherVocab = teacher.config.vocabSize
        let factor: Float = current.logits.tauSquared ? tau * tau : 1

        // The windows' alignments, then the teacher's input [B, teacherWidth] padded after each row's end
        // (the causal mask keeps padding out of earlier positions).
        var alignments: [WindowAlignment] = []
        if weights.kd > 0 {
            let file = batch.starts.count == b ? surroundings : nil
            alignments = try (0..<b).map { row in
                let window = Array(batch.inputs[(row * t)..<((row + 1) * t)]) + [batch.targets[row * t + t - 1]]
                guard let file else { return try align(window: window) }
                let start = batch.starts[row], end = start + t + 1, reach = Self.surroundingTokens
                let before = (max(0, start - reach)..<start).map { file.token(at: $0) }
                let after = (min(end, file.tokenCount)..<min(end + reach, file.tokenCount)).map { file.token(at: $0) }
                return try align(window: window, before: before, after: after)
            }
        }
        let teacherWidth = max(1, alignments.map(\.teacherLength).max() ?? 1)

        // ULD's pairs and ALM's chunks, in batch order.
        struct Pair { let studentRow: Int, teacherRow: Int }
        struct Chunk { let studentRows: Range<Int>, teacherRows: Range<Int> }
        var pairs: [Pair] = [], chunks: [Chunk] = []
        var alignedBytes = 0, windowBytes = 0
        for (row, alignment) in alignments.enumerated() {
            windowBytes += alignment.student.bytes.count
            for chunk in alignment.chunks {
                alignedBytes += chunk.bytes.count
                switch loss {
                case .uld:
                    let studentPosition = chunk.studentTokens.upperBound - 1, teacherPosition = chunk.teacherTokens.upperBound - 1
                    if studentPosition < t && teacherPosition < alignment.teacherLength {
                        pairs.append(Pair(studentRow: row * t + studentPosition, teacherRow: row * teacherWidth + teacherPosition))
                    }
                case .alm:
                    // Token j's log-probability is at row j − 1 of its own side.
                    if chunk.studentTokens.lowerBound >= 1 && chunk.teacherTokens.lowerBound >= 1 {
                        chunks.append(Chunk(studentRows: (row * t + chunk.studentTokens.lowerBound - 1)..<(row * t + chunk.studentTokens.upperBound - 1),
                                            teacherRows: (row * teacherWidth + chunk.teacherTokens.lowerBound - 1)..<(row * teacherWidth + chunk.teacherTokens.upperBound - 1)))
                    }
                }
            }
        }
        let termCount = loss == .uld ? pairs.count : chunks.count
        if weights.kd > 0 && termCount == 0 {
            throw CrossTokenizerError.emptyAlignment(windows: b, teacherTokenizer: teacherTokenizer.modelPath)
        }

        // The teacher: ULD keeps its sorted distribution at each pair, ALM the log-probability of each of its
        // tokens (row k predicts token k + 1).
        let shared = min(studentVocab, teacherVocab)
        var teacherSorted = [Float](), teacherTails = [Double](), teacherLogProbs = [Double]()
        if weights.kd > 0 {
            var teacherInput = [Int32](repeating: 0, count: b * teacherWidth)
            var teacherTargets = [Int32](repeating: -1, count: b * teacherWidth)
            for (row, alignment) in alignments.enumerated() {
                for position in 0..<alignment.teacherLength {
                    teacherInput[row * teacherWidth + position] = alignment.teacher.ids[position]
                    teacherTargets[row * teacherWidth + position] = alignment.teacher.ids[position + 1]
                }
            }
            var pairSlot = [Int](repeating: -1, count: b * teacherWidth)
            for (slot, pair) in pairs.enumerated() { pairSlot[pair.teacherRow] = slot }
            teacherSorted = [Float](repeating: 0, count: pairs.count * shared)
            teacherTails = [Double](repeating: 0, count: pairs.count)
            teacherLogProbs = [Double](repeating: 0, count: loss == .alm ? b * teacherWidth : 0)
            teacher.forwardHidden(tokens: teacherInput, batch: b, length: teacherWidth, keepForBackward: false)
            let uld = loss == .uld
            teacherSorted.withUnsafeMutableBufferPointer { sorted in
                teacherTails.withUnsafeMutableBufferPointer { tails in
                    teacherLogProbs.withUnsafeMutableBufferPointer { logProbs in
                        teacher.headInChunks(dFinalHidden: nil) { span, logits, _ in
                            _ = mapRowChunks(rows: span.count, rowsPerChunk: 16) { local in
                                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: teacherVocab)
                                defer { scratch.deallocate() }
                                for index in local {
                                    let row = span.lowerBound + index, rowLogits = logits + index * teacherVocab
                                    if uld, pairSlot[row] >= 0 {
                                        let slot = pairSlot[row]
                                        tails[slot] = sortedTemperedDistribution(
                                            sorted: sorted.baseAddress! + slot * shared, logits: rowLogits,
                                            teacherVocab: teacherVocab, studentVocab: studentVocab, temperature: tau)
                                    } else if !uld, teacherTargets[row] >= 0 {
                                        logProbs[row] = logProbability(rowLogits, vocab: teacherVocab, target: Int(teacherTargets[row]), scratch: scratch)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }

        // The student: CE on its own labels; ULD row by row beside it; ALM needs each chunk's whole
        // log-likelihood before any of its rows' gradients, so a first pass without gradients takes them.
        student.forwardHidden(tokens: batch.inputs, batch: b, length: t, keepForBackward: backward)
        var result = LossTerms()
        var crossTerm = 0.0
        var studentLogProbs = [Double]()
        var rowCoefficients = [Double]()  // [B·T] ALM: d(term)/d(row's log-probability of its target)
        if loss == .alm && weights.kd > 0 {
            studentLogProbs = [Double](repeating: 0, count: rows)
            studentLogProbs.withUnsafeMutableBufferPointer { logProbs in
                student.headInChunks(dFinalHidden: nil) { span, logits, _ in
                    _ = mapRowChunks(rows: span.count, rowsPerChunk: 16) { local in
                        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: studentVocab)
                        defer { scratch.deallocate() }
                        for index in local where batch.targets[span.lowerBound + index] >= 0 {
                            logProbs[span.lowerBound + index] = logProbability(
                                logits + index * studentVocab, vocab: studentVocab, target: Int(batch.targets[span.lowerBound + index]), scratch: scratch)
                        }
                    }
                }
            }
            rowCoefficients = [Double](repeating: 0, count: rows)
            for chunk in chunks {
                let teacherLikelihood = chunk.teacherRows.reduce(0.0) { $0 + teacherLogProbs[$1] }
                let studentLikelihood = chunk.studentRows.reduce(0.0) { $0 + studentLogProbs[$1] }
                let (value, dStudent) = binarisedChunkKL(teacherLogLikelihood: teacherLikelihood, studentLogLikelihood: studentLikelihood,
                                                         temperature: Double(tau))
                crossTerm += value
                for row in chunk.studentRows { rowCoefficients[row] = dStudent }
            }
        }

        var pairRows = [Int](repeating: -1, count: loss == .uld ? rows : 0)
        for (slot, pair) in pairs.enumerated() { pairRows[pair.studentRow] = slot }
        var crossEntropy = 0.0
        let dFinalPointer = backward ? dFinal.zeroed(rows * student.config.hiddenSize) : nil
        let termScale = termCount > 0 ? Double(scale * weights.kd * factor) / Double(termCount) : 0
        do {
            var uldSum = 0.0
            try batch.targets.withUnsafeBufferPointer { targets in
                let share = try BatchShare(targets: targets, vocab: studentVocab)
                try student.headInChunks(dFinalHidden: dFinalPointer) { span, logits, dLogits in
                    crossEntropy += Double(try crossEntropyForwardBackward(
                        dLogits: dLogits, logits: logits, targets: targets.baseAddress! + span.lowerBound, rows: span.count,
                        vocab: studentVocab, gradientScale: scale * weights.ce, meanOver: share))
                    guard weights.kd > 0 else { return }
                    let partials = mapRowChunks(rows: span.count, rowsPerChunk: 16) { local -> Double in
                        var sum = 0.0
                        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: studentVocab)
                        defer { scratch.deallocate() }
                        for index in local {
                            let row = span.lowerBound + index, rowLogits = logits + index * studentVocab
                            let dRow = dLogits.map { $0 + index * studentVocab }
                            switch loss {
                            case .uld:
                                guard pairRows[row] >= 0 else { continue }
                                let slot = pairRows[row]
                                sum += teacherSorted.withUnsafeBufferPointer { sorted in
                                    universalLogitDistance(
                                        dStudentLogits: dRow, studentLogits: rowLogits, studentVocab: studentVocab,
                                        sortedTeacher: sorted.baseAddress! + slot * shared, teacherVocab: teacherVocab,
                                        teacherTail: teacherTails[slot], temperature: tau, gradientScale: Float(termScale))
                                }
                            case .alm:
                                // d log p(target)/d logits = onehot(target) − softmax.
                                guard let dRow, rowCoefficients[row] != 0 else { continue }
                                let coefficient = Float(termScale * rowCoefficients[row])
                                let top = ck_max(rowLogits, studentVocab)
                                let total = ck_exp_sum(scratch, rowLogits, 1, top, studentVocab)
                                ck_axpy(dRow, scratch, -coefficient / total, studentVocab)
                                dRow[Int(targets[row])] += coefficient
                            }
                        }
                        return sum
                    }
                    uldSum += partials.reduce(0, +)
                }
            }
            if loss == .uld { crossTerm = uldSum }
        }
        result[.ce] = crossEntropy
        var total = Double(weights.ce) * crossEntropy
        if weights.kd > 0 {
            let term = Double(factor) * crossTerm / Double(termCount)
            result[.kd] = term
            result[.alignedBytes] = Double(alignedBytes) / Double(max(windowBytes, 1))
            total += Double(weights.kd) * term
        }
        result[.loss] = total
        if backward { student.backward(dLogits: nil, dFinalHidden: dFinalPointer.map { UnsafePointer($0) }) }
        return result
    }
}
