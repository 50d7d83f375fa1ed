import Dispatch

/// Generates up to `maxTokens` tokens after `prompt`, calling `onToken` with each new id as soon as it
/// is chosen. Stops at `stopToken` (EOS). When the context fills up, the cache restarts from the
/// last half-context of tokens (positions from 0, as every training window starts), so generation can
/// run past the context. Returns the new ids.
@discardableResult
public func generate(session: KVCacheSession, prompt: [Int32], maxTokens: Int, sampler: inout Sampler,
                     stopToken: Int32? = nil, onToken: (Int32) -> Void = { _ in }) throws -> [Int32] {
    try generate(stream: session, prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopToken: stopToken, onToken: onToken)
}

/// A model, or an ensemble of models, fed one token at a time; after each `feed`, `logits` holds the
/// next-token logits.
protocol TokenStream: AnyObject {
    /// Tokens fed so far.
    var position: Int { get }
    /// The most positions it holds (the context).
    var capacity: Int { get }
    var vocabSize: Int { get }
    var logits: UnsafeMutablePointer<Float> { get }
    func reset()
    func feed(_ token: Int32) throws
    /// The thread count chosen by the last generation over this stream, kept so that the next one (a
    /// report's samples, `bench`'s repeats) goes on with it instead of timing both counts again.
    var decodingThreads: DecodingThreads? { get set }
}

extension KVCacheSession: TokenStream {
    var vocabSize: Int { model.config.vocabSize }
}

/// The one decoding loop of `generate(session:)` and `generate(ensemble:)`.
func generate(stream: some TokenStream, prompt: [Int32], maxTokens: Int, sampler: inout Sampler,
              stopToken: Int32?, onToken: (Int32) -> Void) throws -> [Int32] {
    guard !prompt.isEmpty else { throw GenerationError.emptyPrompt }
    guard prompt.count <= stream.capacity else {
        throw GenerationError.promptTooLong(tokens: prompt.count, context: stream.capacity)
    }
    stream.reset()
    var threads = stream.decodingThreads.flatMap { $0.most == Compute.threads ? $0 : nil } ?? DecodingThreads(most: Compute.threads)
    defer { stream.decodingThreads = threads }
    for token in prompt { try threads.step { try stream.feed(token) } }
    var history = prompt, produced: [Int32] = []
    // One workspace for the whole run: a draw per token allocates nothing.
    let workspace = SamplingWorkspace(vocabSize: stream.vocabSize)
    while produced.count < maxTokens {
        let next = Int32(sampler.sample(stream.logits, count: stream.vocabSize, workspace: workspace))
        if next == stopToken { break }
        produced.append(next)
        history.append(next)
        onToken(next)
        if produced.count == maxTokens { break }
        if stream.position >= stream.capacity {
            // Keep the most recent half of the context (at least one token) and refill the cache.
            stream.reset()
            for token in history.suffix(max(1, stream.capacity / 2)) { try threads.step { try stream.feed(token) } }
        } else {
            try threads.step { try stream.feed(next) }
        }
    }
    return produced
}

/// The thread count of each decoding step, chosen by measurement. A one-token step reads every weight
/// once; whether a second core speeds that up depends on the machine and on what else runs there (on
/// one AMD EPYC two threads decoded reduced weights 1.4–1.6× as fast as one in some runs, 0.85–0.95× in
/// others). So the first steps alternate between all threads and one, timing each, and the steps
/// after use the faster, trying both again every `checkEvery` steps (counted across the generations over
/// one stream: with a busy core, timing both counts anew for each 120-token sample cost up to 0.7× the
/// rate, each trial's two-thread steps waiting on a helper the busy core had preempted). A decoding step gives the same
/// logits on any thread count (each output is computed whole by one thread), so the choice changes
/// only the speed.
public struct DecodingThreads {
    /// The thread setting when decoding started: the most a step uses.
    public let most: Int
    /// Steps timed with each count before choosing, and steps between two trials.
    public static let trialSteps = 4, checkEvery = 512
    /// The count in use; nil while both are being timed.
    public private(set) var chosen: Int?
    private var timings: [Int: [UInt64]] = [:]
    /// Steps run with `chosen` since the trial.
    public private(set) var sinceChoice = 0

    public init(most: Int = Compute.threads) { self.most = most }

    /// Runs one decoding step, `body`, on the threads this step uses.
    public mutating func step<R>(_ body: () throws -> R) rethrows -> R {
        guard most > 1 else { return try body() }
        if let chosen, sinceChoice < Self.checkEvery {
            sinceChoice += 1
            return try Compute.withThreads(chosen, body)
        }
        if chosen != nil { (chosen, timings) = (nil, [:]) }
        let count = (timings[most]?.count ?? 0) <= (timings[1]?.count ?? 0) ? most : 1
        let started = DispatchTime.now().uptimeNanoseconds
        let result = try Compute.withThreads(count, body)
        timings[count, default: []].append(DispatchTime.now().uptimeNanoseconds - started)
        if let all = timings[most], let one = timings[1], all.count >= Self.trialSteps, one.count >= Self.trialSteps {
            chosen = Self.median(one) < Self.median(all) ? 1 : most
            sinceChoice = 0
        }
        return result
    }

    private static func median(_ values: [UInt64]) -> UInt64 { values.sorted()[values.count / 2] }
}
