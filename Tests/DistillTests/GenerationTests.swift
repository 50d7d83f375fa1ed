import XCTest
import Distill

final class GenerationTests: XCTestCase {
    /// The KV-cache path gives the same logits as a full forward pass at every position, with two
    /// key/value heads (the cache keeps each head's positions together) shared by four query heads.
    func testKVCacheMatchesFullForward() throws {
        // 150 positions: the full forward's causal attention works in blocks of 64 query rows, and the
        // cache grows (copying its heads) four times.
        let config = ModelGradientTests.tinyConfig(context: 150, heads: 4, kvHeads: 2)
        let model = try ModelGradientTests.model(config)
        let tokens: [Int32] = (0..<150).map { Int32(($0 * 7 + 3) % 11) }
        let full = model.forward(tokens: tokens, batch: 1, length: tokens.count, keepForBackward: false)
        let session = KVCacheSession(model: model)
        var largest: Float = 0
        for (position, token) in tokens.enumerated() {
            try session.feed(token)
            for v in 0..<config.vocabSize {
                largest = max(largest, abs(session.logits[v] - full.logits[position * config.vocabSize + v]))
            }
        }
        print("KV cache vs full forward: largest logit difference \(largest)")
        XCTAssertLessThan(largest, 1e-4)
    }

    /// Two threads decode as a team (products split by output rows, attention by heads); every logit is
    /// still computed by one thread, so each step's logits are bitwise those of one thread. The shapes
    /// are wide enough for every product to be split, with grouped-query heads.
    func testDecodeTeamGivesTheLogitsOfOneThread() throws {
        let config = LlamaConfig(hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 2, numAttentionHeads: 4,
                                 numKeyValueHeads: 2, vocabSize: 130, maxPositionEmbeddings: 40)
        let model = try LlamaModel(config: config, seed: 3)
        func logits(threads: Int) throws -> [[Float]] {
            try Compute.withThreads(threads) {
                let session = KVCacheSession(model: model)
                var sampler = try Sampler(temperature: 0)
                var steps: [[Float]] = []
                // 60 tokens: past the context of 40, so the cache restarts once on the way.
                try generate(session: session, prompt: [5, 9, 2], maxTokens: 60, sampler: &sampler) { _ in
                    steps.append(Array(UnsafeBufferPointer(start: session.logits, count: config.vocabSize)))
                }
                return steps
            }
        }
        let one = try logits(threads: 1), two = try logits(threads: 2)
        XCTAssertEqual(one.count, 60)
        XCTAssertEqual(one, two)
    }

    /// `DecodingThreads` times its first steps on all threads and on one, alternately, then runs on the
    /// faster until it checks again: here steps on two threads take 3 ms and on one nothing, and then
    /// the other way round. (A step's logits are the same on any thread count: the test above.)
    func testDecodingTakesTheFasterThreadCountAndChecksAgain() {
        let setting = Compute.threads
        var threads = DecodingThreads(most: 2)
        var slowCount = 2, used: [Int] = []
        func step() {
            threads.step {
                used.append(Compute.threads)
                if Compute.threads == slowCount { usleep(3000) }
            }
        }
        for _ in 0..<(2 * DecodingThreads.trialSteps) { step() }
        XCTAssertEqual(used, Array(repeating: [2, 1], count: DecodingThreads.trialSteps).flatMap { $0 }, "the trial alternates")
        XCTAssertEqual(threads.chosen, 1)
        used = []
        slowCount = 1
        for _ in 0..<DecodingThreads.checkEvery { step() }
        XCTAssertEqual(Set(used), [1], "the choice holds until the next check")
        for _ in 0..<(2 * DecodingThreads.trialSteps) { step() }
        XCTAssertEqual(threads.chosen, 2, "the next trial finds two threads faster now")
        XCTAssertEqual(Compute.threads, setting, "the setting is restored after each step")
    }

    /// A session's next generation goes on with the thread count the last one chose (no new trial until
    /// `checkEvery` steps in all), unless the thread setting changed in between.
    func testTheNextGenerationKeepsTheChosenThreadCount() throws {
        let model = try ModelGradientTests.model(ModelGradientTests.tinyConfig(context: 64, heads: 4, kvHeads: 2))
        let session = KVCacheSession(model: model)
        var sampler = try Sampler(temperature: 0)
        let prompt: [Int32] = [1, 2, 3, 4]
        try Compute.withThreads(2) {
            try generate(session: session, prompt: prompt, maxTokens: 20, sampler: &sampler)
            let trial = 2 * DecodingThreads.trialSteps, steps = prompt.count + 19  // the last token is not fed
            XCTAssertNotNil(session.decodingThreads?.chosen)
            XCTAssertEqual(session.decodingThreads?.sinceChoice, steps - trial)
            try generate(session: session, prompt: prompt, maxTokens: 20, sampler: &sampler)
            XCTAssertEqual(session.decodingThreads?.sinceChoice, 2 * steps - trial, "no second trial")
        }
        try Compute.withThreads(1) {
            try generate(session: session, prompt: prompt, maxTokens: 20, sampler: &sampler)
            XCTAssertEqual(session.decodingThreads?.most, 1, "a new setting starts anew")
        }
    }

    /// Decoding with a bf16, f16 or Q8_0 copy of the weights gives the logits of the f32 model whose
    /// weights were rounded the same way (the kernels widen them exactly; only the order of the sums
    /// differs), on widths that are not multiples of the kernels' 16 lanes or 4 rows, with Q8_0 on all
    /// matrices, on none (rows not a multiple of 32) and on some; and two threads split it as the team
    /// does, bitwise.
    func testReducedWeightsDecodeAsTheRoundedModel() throws {
        let awkward = LlamaConfig(hiddenSize: 40, intermediateSize: 70, numHiddenLayers: 2, numAttentionHeads: 4,
                                  numKeyValueHeads: 2, vocabSize: 131, maxPositionEmbeddings: 40)
        let even = LlamaConfig(hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 2, numAttentionHeads: 4,
                               numKeyValueHeads: 4, vocabSize: 256, maxPositionEmbeddings: 40, tieWordEmbeddings: false)
        let mixed = LlamaConfig(hiddenSize: 64, intermediateSize: 80, numHiddenLayers: 2, numAttentionHeads: 4,
                                numKeyValueHeads: 2, vocabSize: 200, maxPositionEmbeddings: 40)
        for config in [awkward, even, mixed] {
            let model = try LlamaModel(config: config, seed: 11)
            for precision in [WeightFormat.bf16, .f16, .q8_0] {
                let rounded = try model.rounded(to: precision)
                func logits(_ session: KVCacheSession, threads: Int) throws -> [[Float]] {
                    try Compute.withThreads(threads) {
                        var sampler = try Sampler(temperature: 0)
                        var steps: [[Float]] = []
                        try generate(session: session, prompt: [5, 9, 2], maxTokens: 30, sampler: &sampler) { _ in
                            steps.append(Array(UnsafeBufferPointer(start: session.logits, count: config.vocabSize)))
                        }
                        return steps
                    }
                }
                let half = try logits(KVCacheSession(model: model, precision: precision), threads: 1)
                let reference = try logits(KVCacheSession(model: rounded), threads: 1)
                let unrounded = try logits(KVCacheSession(model: model), threads: 1)
                func largestDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
                    zip(a.joined(), b.joined()).map { abs($0 - $1) }.max() ?? .infinity
                }
                let toRounded = largestDifference(half, reference), toF32 = largestDifference(half, unrounded)
                print("\(precision) decoding, width \(config.hiddenSize): largest logit difference \(toRounded) to the rounded model, \(toF32) to f32")
                XCTAssertEqual(half.count, 30)
                XCTAssertLessThan(toRounded, 2e-5, "\(precision)")
                XCTAssertGreaterThan(toF32, 10 * toRounded, "\(precision) decoding should read the rounded weights")
                XCTAssertEqual(try logits(KVCacheSession(model: model, precision: precision), threads: 2), half, "\(precision)")
            }
        }
    }

    func testGreedyIsDeterministicAndSamplingRepeatsForASeed() throws {
        let model = try ModelGradientTests.model(ModelGradientTests.tinyConfig())
        let session = KVCacheSession(model: model)
        func run(_ temperature: Float, seed: UInt64) throws -> [Int32] {
            var sampler = try Sampler(temperature: temperature, topK: 5, topP: 0.9, seed: seed)
            return try generate(session: session, prompt: [1, 2], maxTokens: 6, sampler: &sampler)
        }
        XCTAssertEqual(try run(0, seed: 1), try run(0, seed: 2))
        XCTAssertEqual(try run(1, seed: 3), try run(1, seed: 3))
        let draws = try (0..<8).map { try run(1.5, seed: UInt64($0)) }
        XCTAssertGreaterThan(Set(draws.map { $0.description }).count, 1, "different seeds should differ")
        // Greedy picks the argmax of the logits at each step.
        let greedy = try run(0, seed: 0)
        session.reset()
        try session.feed(1); try session.feed(2)
        XCTAssertEqual(Int32(Sampler.argmax(session.logits, count: model.config.vocabSize)), greedy[0])
    }

    /// Past the context, generation goes on from the last half-context of tokens.
    func testGenerationRunsPastTheContext() throws {
        let model = try ModelGradientTests.model(ModelGradientTests.tinyConfig())  // context 8
        var sampler = try Sampler(temperature: 0)
        let long = try generate(session: KVCacheSession(model: model), prompt: [1, 2], maxTokens: 20, sampler: &sampler)
        XCTAssertEqual(long.count, 20)
        var again = try Sampler(temperature: 0)
        let short = try generate(session: KVCacheSession(model: model), prompt: [1, 2], maxTokens: 6, sampler: &again)
        XCTAssertEqual(Array(long.prefix(6)), short, "within the context nothing changes")
        // The 7th new token fills the context; the 8th is predicted from the last four tokens, restarted
        // at position 0.
        let session = KVCacheSession(model: model)
        for token in ([1, 2] + long.prefix(7)).suffix(4) { try session.feed(token) }
        XCTAssertEqual(Int32(Sampler.argmax(session.logits, count: model.config.vocabSize)), long[7])
    }

    func testPromptLongerThanContextIsRejected() throws {
        let model = try ModelGradientTests.model(ModelGradientTests.tinyConfig())
        var sampler = try Sampler(temperature: 0)
        XCTAssertThrowsError(try generate(session: KVCacheSession(model: model), prompt: Array(repeating: 1, count: 9),
                                          maxTokens: 2, sampler: &sampler)) { error in
            XCTAssertEqual(error as? GenerationError, .promptTooLong(tokens: 9, context: 8))
        }
        XCTAssertThrowsError(try Sampler(temperature: -1))
        XCTAssertThrowsError(try Sampler(topP: 1.5))
    }
}
