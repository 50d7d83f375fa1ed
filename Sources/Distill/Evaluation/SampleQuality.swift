import Foundation

/// What a model's own samples are worth to a judge (the teacher): what on-policy training is for. From
/// fixed prompts taken from the validation split, the model continues each at temperature 1 with a fixed
/// seed; the judge's negative log-likelihood of the continuations measures whether it finds them likely,
/// the model's own NLL how sure the model was, and the share of repeated 4-grams how much it loops.
public struct SampleQuality: Sendable, Equatable {
    /// Continuation tokens scored, over all prompts.
    public var tokens: Int
    /// The judge's total NLL of the continuation tokens (nats), given their prompts.
    public var judgeNLLSum: Double
    /// The model's own total NLL of them.
    public var ownNLLSum: Double
    /// UTF-8 bytes of the continuation texts.
    public var bytes: Int
    /// Of the 4-grams of token ids in each continuation, the share that already occurred earlier in it.
    public var repeatedFourGrams: Double

    public var judgeMeanNLL: Double { judgeNLLSum / Double(max(tokens, 1)) }
    public var ownMeanNLL: Double { ownNLLSum / Double(max(tokens, 1)) }
    /// The judge's NLL per byte of sample text, in bits: comparable across tokenizers.
    public var judgeBitsPerByte: Double { judgeNLLSum / (log(2) * Double(max(bytes, 1))) }

    /// `count` prompts of `promptLength` tokens, evenly spaced over `tokens` (the validation split): the
    /// same for every model of a run.
    public static func prompts(from tokens: [Int32], count: Int, promptLength: Int) -> [[Int32]] {
        guard tokens.count >= promptLength, count >= 1, promptLength >= 1 else { return [] }
        let spacing = max(1, (tokens.count - promptLength) / count)
        return (0..<count).map { index in
            let start = min(index * spacing, tokens.count - promptLength)
            return Array(tokens[start..<(start + promptLength)])
        }.filter { !$0.isEmpty }
    }

    /// Samples `newTokens` tokens after each prompt from `model` (temperature 1, prompt i drawn with seed
    /// `seed + i`) and scores them under `judge` and `model`. Prompt and continuation must fit both
    /// models' context: each is then scored as one window, the continuation's NLL being the whole
    /// sequence's less the prompt's. `judgeTokenizer`: the judge's own tokenizer when it is not the model's;
    /// the judge then scores the text of prompt and continuation encoded with it (its NLL of the whole text
    /// less that of the prompt's text, in windows of its context if that text is longer), so only
    /// `judgeBitsPerByte` compares across tokenizers.
    public static func measure(model: ModelEnsemble, judge: ModelEnsemble, tokenizer: Tokenizer, prompts: [[Int32]],
                               newTokens: Int, seed: UInt64, judgeTokenizer: Tokenizer? = nil) throws -> SampleQuality {
        let longest = (prompts.map(\.count).max() ?? 0) + newTokens
        guard longest <= min(model.context, judge.context) else {
            throw EvaluationError.samplesTooLong(length: longest, context: min(model.context, judge.context))
        }
        let session = try EnsembleSession(ensemble: model)
        var quality = SampleQuality(tokens: 0, judgeNLLSum: 0, ownNLLSum: 0, bytes: 0, repeatedFourGrams: 0)
        var continuations: [[Int32]] = []
        for (index, prompt) in prompts.enumerated() {
            var sampler = try Sampler(temperature: 1, seed: seed &+ UInt64(index))
            let continuation = try generate(ensemble: session, prompt: prompt, maxTokens: newTokens, sampler: &sampler)
            guard !continuation.isEmpty else { continue }
            let sequence = prompt + continuation
            func continuationNLL(_ scorer: ModelEnsemble, whole sequence: [Int32], prompt: [Int32]) throws -> Double {
                let whole = try scoreTokens(ensemble: scorer, tokens: sequence, bytes: 1).nllSum
                let promptPart = prompt.count >= 2 ? try scoreTokens(ensemble: scorer, tokens: prompt, bytes: 1).nllSum : 0
                return whole - promptPart
            }
            if let judgeTokenizer {
                quality.judgeNLLSum += try continuationNLL(judge, whole: judgeTokenizer.encode(tokenizer.decode(sequence)),
                                                           prompt: judgeTokenizer.encode(tokenizer.decode(prompt)))
            } else {
                quality.judgeNLLSum += try continuationNLL(judge, whole: sequence, prompt: prompt)
            }
            quality.ownNLLSum += try continuationNLL(model, whole: sequence, prompt: prompt)
            quality.tokens += continuation.count
            quality.bytes += tokenizer.decode(continuation).utf8.count
            continuations.append(continuation)
        }
        quality.repeatedFourGrams = repeatedFourGramShare(continuations)
        return quality
    }

    /// Of all 4-grams of the sequences, the share that already occurred earlier in the same sequence
    /// (0 for no 4-gram at all).
    public static func repeatedFourGramShare(_ sequences: [[Int32]]) -> Double {
        var fourGrams = 0, repeated = 0
        for sequence in sequences {
            var seen = Set<ArraySlice<Int32>>()
            for start in 0..<max(0, sequence.count - 3) {
                fourGrams += 1
                if !seen.insert(sequence[start..<(start + 4)]).inserted { repeated += 1 }
            }
        }
        return fourGrams == 0 ? 0 : Double(repeated) / Double(fourGrams)
    }
}
