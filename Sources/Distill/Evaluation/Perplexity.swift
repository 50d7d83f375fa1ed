import Foundation

/// Negative log-likelihood of a token sequence under a model, and what follows from it.
public struct PerplexityReport: Codable, Equatable, Sendable {
    /// Tokens scored (every token but the first).
    public var tokens: Int
    /// Total negative log-likelihood in nats.
    public var nllSum: Double
    /// UTF-8 bytes of the evaluated text.
    public var bytes: Int

    public var meanNLL: Double { nllSum / Double(max(tokens, 1)) }
    public var perplexity: Double { exp(meanNLL) }
    /// Nats over ln 2 times bytes: independent of the tokenizer, so models with different vocabularies compare.
    public var bitsPerByte: Double { nllSum / (log(2) * Double(max(bytes, 1))) }

    enum CodingKeys: String, CodingKey { case tokens, nllSum = "nll_sum", bytes }

    public init(tokens: Int, nllSum: Double, bytes: Int) {
        self.tokens = tokens
        self.nllSum = nllSum
        self.bytes = bytes
    }

    public var json: [String: Any] {
        ["tokens": tokens, "nll_sum": nllSum, "mean_nll": meanNLL, "perplexity": perplexity,
         "bytes": bytes, "bits_per_byte": bitsPerByte]
    }
}

/// Scores `tokens` with windows of the model's context (or `context`) advanced by `stride`: a window
/// starting at `begin` reads tokens[begin ..< begin+T] and predicts tokens[begin+1 ... begin+T]; only the
/// targets no earlier window scored count, so each token after the first is scored exactly once, and a
/// stride below the context gives every token more left context. Windows of equal length run as one batch.
/// `group`: the ranks of an mpirun job that share the work (every rank calls this with the same model and
/// tokens); they take turns batch by batch, and the totals are summed in double in rank order, so the
/// total NLL is the one-process figure up to the order of a few double additions.
public func scoreTokens(model: LlamaModel, tokens: [Int32], bytes: Int, context: Int? = nil, stride: Int? = nil,
                        batchSize: Int = 8, group: ProcessGroup = .single) throws -> PerplexityReport {
    try scoreWindows(tokens: tokens, bytes: bytes, window: min(context ?? model.config.maxPositionEmbeddings, model.config.maxPositionEmbeddings),
                     stride: stride, batchSize: batchSize, group: group,
                     activationBytes: { model.activationBytes(batch: 1, length: $0, keepForBackward: false) },
                     identity: String(weightsHash(UnsafeBufferPointer(model.parameters)), radix: 16)) { batch in
        try meanCrossEntropy(model: model, batch: batch)
    }
}

/// The windows, batches and rank sharing of both `scoreTokens`: plans the windows of `window` tokens
/// advanced by `stride`, groups windows of equal length into batches, gives each rank its turns and sums
/// `meanCrossEntropy` (mean CE of a batch's counted targets; −1 targets are not counted) over them.
/// `activationBytes(length)` is the memory of one window's forward pass; `identity` names the model for
/// the ranks' agreement.
func scoreWindows(tokens: [Int32], bytes: Int, window: Int, stride: Int?, batchSize: Int, group: ProcessGroup,
                  activationBytes: (Int) -> Double, identity: String,
                  meanCrossEntropy: (Batch) throws -> Float) throws -> PerplexityReport {
    let step = stride ?? window
    guard step >= 1 && step <= window else {
        throw EvaluationError.badStride(step, context: window)
    }
    guard tokens.count >= 2 else { throw EvaluationError.tooShort(tokens.count) }
    // Several windows share a forward pass, within about 1 GB of activations (attention is T² per window).
    // A text shorter than the context needs only its own length.
    let perWindow = activationBytes(min(window, tokens.count - 1))
    let memory = Double(ProcessInfo.processInfo.physicalMemory)
    guard perWindow < 0.8 * memory else {
        throw EvaluationError.windowTooLarge(min(window, tokens.count - 1), gigabytes: perWindow / 1e9, available: memory / 1e9)
    }
    let batchSize = max(1, min(batchSize, Int(1e9 / max(perWindow, 1))))
    // Plan the windows: (begin, length, first target index that counts).
    var plans: [(begin: Int, length: Int, firstNew: Int)] = []
    var scoredThrough = 0, begin = 0
    while scoredThrough < tokens.count - 1 {
        let length = min(window, tokens.count - 1 - begin)
        plans.append((begin, length, scoredThrough + 1))
        scoredThrough = begin + length
        begin += step
    }
    try agreeOnScoring(group, tokens: tokens, bytes: bytes, model: identity, windows: "\(window) \(step) \(batchSize)")
    var nll = 0.0, counted = 0
    var index = 0, batchNumber = 0
    while index < plans.count {
        // Group consecutive windows of the same length into one batch.
        var windows = [plans[index]]
        while windows.count < batchSize, index + windows.count < plans.count,
              plans[index + windows.count].length == windows[0].length {
            windows.append(plans[index + windows.count])
        }
        index += windows.count
        batchNumber += 1
        // The batches are the same as one process's, so each window's figures are too.
        guard (batchNumber - 1) % group.size == group.rank else { continue }
        let length = windows[0].length
        var inputs = [Int32](), targets = [Int32]()
        for plan in windows {
            inputs += tokens[plan.begin ..< plan.begin + length]
            for position in 0..<length {
                let target = plan.begin + position + 1
                targets.append(target >= plan.firstNew ? tokens[target] : -1)
            }
        }
        let batch = Batch(batchSize: windows.count, contextLength: length, inputs: inputs, targets: targets)
        let scored = targets.filter { $0 >= 0 }.count
        nll += Double(try meanCrossEntropy(batch)) * Double(scored)
        counted += scored
    }
    if group.size > 1 {
        let totals = group.orderedSum([nll, Double(counted)])
        nll = totals[0]
        counted = Int(totals[1])
    }
    return PerplexityReport(tokens: counted, nllSum: nll, bytes: bytes)
}

/// Under mpirun, the ranks check that they score the same tokens with the same model and windows
/// (`ProcessGroup.agree`) before sharing the batches out.
func agreeOnScoring(_ group: ProcessGroup, tokens: [Int32], bytes: Int, model: String, windows: String) throws {
    guard group.size > 1 else { return }
    let tokenHash = tokens.withUnsafeBytes { fnv1a64($0) }
    try group.agree(["command": "eval", "tokens": "\(tokens.count) \(String(tokenHash, radix: 16)) \(bytes)", "model": model,
                     "windows": windows]) { name in
        ["command": "runs another command", "tokens": "scores other tokens (another text or token file)", "model": "scores another model",
         "windows": "scores other windows (context or stride)"][name] ?? "differs in \(name)"
    }
}

/// Errors of evaluation that a user can act on.
public enum EvaluationError: NamesSettings, Equatable {
    /// Prompts and samples longer than a model's context.
    case samplesTooLong(length: Int, context: Int)
    case badStride(Int, context: Int)
    case tooShort(Int)
    case notText(String)
    case windowTooLarge(Int, gigabytes: Double, available: Double)
    /// A token file whose validation split holds fewer than two tokens.
    case noValidationSplit(String, tokens: Int)

    public func message(naming name: (Setting) -> String) -> String {
        switch self {
        case .badStride(let stride, let context): return "\(name(.stride)) must be between 1 and the context (\(context)), got \(stride)"
        case .tooShort(let count): return "the text has \(count) token(s); at least 2 are needed to score anything"
        case .notText(let path): return "\(path) is not UTF-8 text: give a text file"
        case let .windowTooLarge(length, needed, available):
            return "a scoring window of \(length) tokens needs about "
                + String(format: "%.1f GB of activations but this machine has %.1f GB: give a shorter context", needed, available)
        case let .samplesTooLong(length, context):
            return "a prompt and its samples take \(length) tokens, more than a model's context of \(context): give shorter ones"
        case .noValidationSplit(let path, let tokens):
            return "token file \(path) has \(tokens) validation token(s), too few to score: prepare it with a validation split (`distill prepare \(name(.valFraction)) 0.1`), or score a text with \(name(.text))"
        }
    }
}
