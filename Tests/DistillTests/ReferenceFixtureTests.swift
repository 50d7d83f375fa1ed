import Foundation
import XCTest
import Distill

/// The model, its loss and AdamW checked against PyTorch: the fixtures in `Fixtures/` were written by
/// `tools/reference/make_fixtures.py` with `transformers`' LlamaForCausalLM (conventions in
/// `Fixtures/README.txt`). Each comparison prints its largest relative difference.
final class ReferenceFixtureTests: XCTestCase {
    /// The largest absolute difference over the largest reference magnitude (llm.c's style of check:
    /// insensitive to entries that are tiny in both).
    static func relativeDifference(_ ours: [Float], _ reference: [Float]) -> Double {
        var largestDifference = 0.0, largestReference = 0.0
        for (a, b) in zip(ours, reference) {
            largestDifference = max(largestDifference, abs(Double(a) - Double(b)))
            largestReference = max(largestReference, abs(Double(b)))
        }
        return largestDifference / max(largestReference, 1e-30)
    }

    /// Compares, prints and asserts one tensor; returns the relative difference.
    @discardableResult
    static func compare(_ label: String, _ ours: [Float], _ reference: [Float], tolerance: Double,
                        file: StaticString = #filePath, line: UInt = #line) -> Double {
        guard ours.count == reference.count else {
            XCTFail("\(label): \(ours.count) values, the reference has \(reference.count)", file: file, line: line)
            return .infinity
        }
        let relative = relativeDifference(ours, reference)
        print(String(format: "reference %-58@ max relative difference %.3e", label as NSString, relative))
        XCTAssertLessThanOrEqual(relative, tolerance, "\(label) differs from PyTorch", file: file, line: line)
        return relative
    }

    static func fixtures() throws -> URL {
        try XCTUnwrap(Bundle.module.url(forResource: "Fixtures", withExtension: nil), "the test bundle has no Fixtures folder")
    }

    /// Loads `llama-<variant>` through `ModelDirectory.load`, runs it on the reference batch, and
    /// compares logits, hidden states, the sentence embedding, the loss and every gradient.
    func checkModel(_ variant: String) throws {
        let root = try Self.fixtures()
        let model = try ModelDirectory.load(root.appendingPathComponent("llama-\(variant)"))
        let reference = try SafetensorsFile(url: root.appendingPathComponent("reference-\(variant).safetensors"))
        let config = model.config

        let idsShape = try reference.info("input_ids").shape
        XCTAssertEqual(idsShape.count, 2)
        let batch = idsShape[0], length = idsShape[1] - 1, rows = batch * length
        let ids = try reference.int64s("input_ids").map(Int32.init)
        var inputs = [Int32](), targets = [Int32]()
        for sequence in 0..<batch {
            let row = ids[(sequence * (length + 1))..<((sequence + 1) * (length + 1))]
            inputs += row.dropLast()
            targets += row.dropFirst()
        }

        let output = inputs.withUnsafeBufferPointer {
            model.forward(tokens: $0.baseAddress!, batch: batch, length: length, captureLayers: Set(0..<config.numHiddenLayers))
        }
        let c = config.hiddenSize, vocab = config.vocabSize
        Self.compare("\(variant) logits", Array(UnsafeBufferPointer(start: output.logits, count: rows * vocab)),
                     try reference.floats("logits"), tolerance: 1e-4)
        for layer in 0..<config.numHiddenLayers {
            let hidden = try XCTUnwrap(output.hidden[layer], "hidden state \(layer) was not captured")
            Self.compare("\(variant) hidden.\(layer)", Array(UnsafeBufferPointer(start: hidden, count: rows * c)),
                         try reference.floats("hidden.\(layer)"), tolerance: 1e-4)
        }
        // The sentence embedding: mean over the positions of the final normed hidden state.
        var embedding = [Float](repeating: 0, count: batch * c)
        meanPoolForward(out: &embedding, hidden: output.finalHidden, batch: batch, tokens: length, width: c)
        Self.compare("\(variant) embedding", embedding, try reference.floats("embedding"), tolerance: 1e-4)

        var dLogits = [Float](repeating: 0, count: rows * vocab)
        let loss = try dLogits.withUnsafeMutableBufferPointer { d in
            try targets.withUnsafeBufferPointer { t in
                try crossEntropyForwardBackward(dLogits: d.baseAddress!, logits: output.logits, targets: t.baseAddress!,
                                            rows: rows, vocab: vocab, gradientScale: 1)
            }
        }
        Self.compare("\(variant) loss", [loss], try reference.floats("loss"), tolerance: 1e-4)

        model.zeroGradients()
        dLogits.withUnsafeBufferPointer { model.backward(dLogits: $0.baseAddress!) }
        let gradients = try XCTUnwrap(model.gradients)
        var expectedNames = Set(reference.tensorNames.filter { $0.hasPrefix("grad.") })
        for tensor in model.layout.tensors {
            let name = "grad." + tensor.name
            XCTAssertNotNil(expectedNames.remove(name), "the reference has no \(name)")
            guard reference.contains(name) else { continue }
            Self.compare("\(variant) \(name)", Array(gradients[tensor.offset..<(tensor.offset + tensor.count)]),
                         try reference.floats(name), tolerance: 1e-3)
        }
        XCTAssertTrue(expectedNames.isEmpty, "reference gradients with no parameter here: \(expectedNames.sorted())")
    }

    /// Sharded checkpoint with a separate LM head.
    func testUntiedModelMatchesPyTorch() throws { try checkModel("untied") }

    /// Single-file checkpoint whose head is the embedding: its gradient sums both uses.
    func testTiedModelMatchesPyTorch() throws { try checkModel("tied") }

    /// Three steps of `AdamW` against `torch.optim.AdamW` (lr 0.01, betas (0.9, 0.95), eps 1e-8, wd 0.1).
    func testAdamWMatchesPyTorch() throws {
        let reference = try SafetensorsFile(url: try Self.fixtures().appendingPathComponent("adamw.safetensors"))
        var parameters = try reference.floats("param.initial")
        let count = parameters.count
        let optimizer = AdamW(totalCount: count, beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1)
        for step in 1...3 {
            var gradient = try reference.floats("grad.\(step)")
            parameters.withUnsafeMutableBufferPointer { p in
                gradient.withUnsafeMutableBufferPointer { g in
                    optimizer.update([TrainableSegment(parameters: p.baseAddress!, gradients: g.baseAddress!, count: count, decays: true)],
                                     learningRate: 0.01)
                }
            }
            Self.compare("adamw param.step\(step)", parameters, try reference.floats("param.step\(step)"), tolerance: 1e-6)
        }
        Self.compare("adamw exp_avg.step3", optimizer.firstMoment, try reference.floats("exp_avg.step3"), tolerance: 1e-6)
        Self.compare("adamw exp_avg_sq.step3", optimizer.secondMoment, try reference.floats("exp_avg_sq.step3"), tolerance: 1e-6)
    }

    /// Greedy decoding with our KV cache gives exactly the tokens of transformers' `generate` (the
    /// untied model with its weights, not its norm gains, multiplied by 10, as in the fixture script).
    func testGreedyGenerationMatchesTransformers() throws {
        let root = try Self.fixtures()
        let model = try ModelDirectory.load(root.appendingPathComponent("llama-untied"))
        for tensor in model.layout.tensors where !tensor.name.contains("norm") {
            for i in tensor.offset..<(tensor.offset + tensor.count) { model.parameters[i] *= 10 }
        }
        let reference = try SafetensorsFile(url: root.appendingPathComponent("generation.safetensors"))
        let prompt = try reference.int64s("prompt").map(Int32.init)
        let expected = try reference.int64s("generated").map(Int32.init)
        var sampler = try Sampler(temperature: 0)
        let generated = try generate(session: KVCacheSession(model: model), prompt: prompt, maxTokens: expected.count,
                                     sampler: &sampler)
        XCTAssertEqual(generated, expected)
    }
}
