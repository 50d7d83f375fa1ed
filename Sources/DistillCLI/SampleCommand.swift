import ArgumentParser
import Distill
import Foundation

/// `distill sample`: generate text from a model, printed as it is generated.
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample", abstract: "Generate text from a model (KV cache; greedy at temperature 0).")

    @Option(help: "Model directory; repeat it to sample from the ensemble (the mean of the models' probabilities).") var model: [String] = []
    @Option(help: "Weights of the ensemble's models, w1,w2,... (default: equal).") var teacherWeights: String?
    @Option(help: "Text to continue (default: start from the BOS token).") var prompt: String?
    @Option(help: "Tokens to generate at most (past the context, generation goes on from the last half-context).") var maxTokens: Int = 200
    @Option(help: "Softmax temperature; 0 is greedy.") var temperature: Float = 0.8
    @Option(help: "Keep only the K most likely tokens.") var topK: Int?
    @Option(help: "Keep the smallest set of tokens whose probability reaches P.") var topP: Float?
    @Option(help: "Seed of the sampler.") var seed: UInt64 = 0
    @Option(help: "Samples to draw, decoded together in one batch (sample i with seed SEED + i); each is exactly --max-tokens long (no stop at the end-of-text token) and must fit the context with its prompt.")
    var numSamples: Int = 1
    @Option(help: "Threads at most (default: all cores); decoding times all and one at the start and keeps the faster.") var threads: Int?
    @Option(help: "Weights read while generating: f32, a bf16/f16 copy (half the memory traffic per token), or q8_0 (llama.cpp's 8-bit blocks, a little over a quarter); faster, and the logits are the rounded weights'.")
    var precision: WeightFormat = .f32

    func validate() throws {
        if maxTokens < 0 { throw ValidationError("--max-tokens must be 0 or more") }
        if model.isEmpty { throw ValidationError("give a --model directory") }
        try checkThreads(threads)
        try checkFinite(temperature, "--temperature")
        if let topP { try checkFinite(topP, "--top-p") }
        guard (1...1024).contains(numSamples) else { throw ValidationError("--num-samples must be between 1 and 1024, got \(numSamples)") }
        if numSamples > 1 {
            if model.count > 1 { throw ValidationError("--num-samples decodes one model's batch: give one --model (an ensemble samples one at a time)") }
            if maxTokens < 1 { throw ValidationError("--num-samples needs --max-tokens of at least 1") }
        }
    }

    func run() throws {
        if let threads { Compute.setThreads(threads) }
        if numSamples > 1 { return try runBatch() }
        var sampler = try Sampler(temperature: temperature, topK: topK, topP: topP, seed: seed)
        let (ensemble, loaded) = try LoadedModel.ensemble(model, weights: teacherWeights)
        let tokenizer = loaded.tokenizer
        var promptIDs = tokenizer.encode(prompt ?? "")
        if promptIDs.isEmpty && tokenizer.bosId >= 0 { promptIDs = [tokenizer.bosId] }
        let session = try EnsembleSession(ensemble: ensemble, precision: precision)
        if let prompt { print(prompt, terminator: "") }
        // Characters spread over several byte pieces appear once complete.
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        try generate(ensemble: session, prompt: promptIDs, maxTokens: maxTokens, sampler: &sampler,
                     stopToken: tokenizer.eosId >= 0 ? tokenizer.eosId : nil) { token in
            print(decoder.append(token), terminator: "")
            fflush(stdout)
        }
        print(decoder.finish())
    }

    /// `--num-samples N`: N continuations of the prompt decoded together, printed one after another.
    func runBatch() throws {
        let (ensemble, loaded) = try LoadedModel.ensemble(model, weights: teacherWeights)
        let tokenizer = loaded.tokenizer
        var promptIDs = tokenizer.encode(prompt ?? "")
        if promptIDs.isEmpty && tokenizer.bosId >= 0 { promptIDs = [tokenizer.bosId] }
        guard !promptIDs.isEmpty else { throw ValidationError("give a --prompt: this tokenizer has no BOS token to start from") }
        let decoder = try Flags.translatingSettings {
            try BatchedDecoder(model: ensemble.members[0], rows: numSamples, promptLength: promptIDs.count, newTokens: maxTokens,
                               precision: precision)
        }
        var samplers = try (0..<numSamples).map { try Sampler(temperature: temperature, topK: topK, topP: topP, seed: seed &+ UInt64($0)) }
        var sequences = [Int32](repeating: 0, count: numSamples * decoder.sequenceLength)
        for row in 0..<numSamples {
            for (position, token) in promptIDs.enumerated() { sequences[row * decoder.sequenceLength + position] = token }
        }
        let started = Date()
        try sequences.withUnsafeMutableBufferPointer { try decoder.generate(sequences: $0.baseAddress!, samplers: &samplers) }
        let seconds = Date().timeIntervalSince(started)
        for row in 0..<numSamples {
            let continuation = Array(sequences[(row * decoder.sequenceLength + promptIDs.count)..<((row + 1) * decoder.sequenceLength)])
            print("--- sample \(row + 1) (seed \(seed &+ UInt64(row)))")
            print((prompt ?? "") + tokenizer.decode(continuation))
        }
        FileHandle.standardError.write(Data(String(format: "%d samples × %d tokens in %.2f s: %.0f tokens/s\n", numSamples, maxTokens, seconds,
                                                   Double(numSamples * maxTokens) / max(seconds, 1e-9)).utf8))
    }
}

