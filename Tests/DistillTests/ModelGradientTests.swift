import XCTest
import Distill

/// Every backward pass of the model checked against central finite differences.
final class ModelGradientTests: XCTestCase {
    /// Tiny shapes with grouped-query heads, an untied head, and weights large enough that every
    /// nonlinearity (softmax, SiLU, RMSNorm) is far from linear.
    static func tinyConfig(tied: Bool = false, context: Int = 8) -> LlamaConfig {
        LlamaConfig(hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 2, numAttentionHeads: 2,
                    numKeyValueHeads: 1, vocabSize: 11, maxPositionEmbeddings: context, tieWordEmbeddings: tied)
    }

    static func model(_ config: LlamaConfig, seed: UInt64 = 1) throws -> LlamaModel {
        let model = try LlamaModel(config: config, seed: seed)
        var random = SeededRandom(seed: seed + 100)
        for i in 0..<model.parameterCount {
            model.parameters[i] = model.parameters[i] == 1 ? 1 + 0.3 * random.nextGaussian() : 0.4 * random.nextGaussian()
        }
        return model
    }

    /// loss = Σ logits·R + Σ hidden(block 0)·S + Σ finalHidden·U: a linear read-out, so d loss/d output
    /// is R, S, U, and the check isolates the model's own backward.
    func checkGradients(tied: Bool, batch: Int = 2, length: Int = 5) throws {
        let config = Self.tinyConfig(tied: tied, context: max(8, length))
        let model = try Self.model(config)
        let rows = batch * length, c = config.hiddenSize
        var random = SeededRandom(seed: 7)
        let tokens: [Int32] = (0..<rows).map { _ in Int32(random.next() % UInt64(config.vocabSize)) }
        let readLogits = (0..<rows * config.vocabSize).map { _ in random.nextGaussian() }
        let readHidden = (0..<rows * c).map { _ in random.nextGaussian() }
        let readFinal = (0..<rows * c).map { _ in random.nextGaussian() }

        func loss() -> Double {
            let out = tokens.withUnsafeBufferPointer {
                model.forward(tokens: $0.baseAddress!, batch: batch, length: length, captureLayers: [0])
            }
            var total = 0.0
            for i in 0..<rows * config.vocabSize { total += Double(out.logits[i]) * Double(readLogits[i]) }
            for i in 0..<rows * c {
                total += Double(out.hidden[0]![i]) * Double(readHidden[i])
                total += Double(out.finalHidden[i]) * Double(readFinal[i])
            }
            return total
        }
        _ = loss()
        model.zeroGradients()
        readLogits.withUnsafeBufferPointer { dLogits in
            readHidden.withUnsafeBufferPointer { dHidden in
                readFinal.withUnsafeBufferPointer { dFinal in
                    model.backward(dLogits: dLogits.baseAddress!, dHidden: [0: dHidden.baseAddress!],
                                   dFinalHidden: dFinal.baseAddress!)
                }
            }
        }
        let analytic = Array(model.gradients!)
        for tensor in model.layout.tensors {
            var numeric = [Double](), exact = [Double]()
            for j in stride(from: 0, to: tensor.count, by: max(1, tensor.count / 12)) {
                let index = tensor.offset + j, saved = model.parameters[index]
                func centralDifference(_ step: Float) -> Double {
                    model.parameters[index] = saved + step
                    let up = loss()
                    model.parameters[index] = saved - step
                    let down = loss()
                    model.parameters[index] = saved
                    return (up - down) / Double(2 * step)
                }
                // Richardson extrapolation cancels the h² error term, so Float's coarse steps suffice.
                numeric.append((4 * centralDifference(5e-3) - centralDifference(1e-2)) / 3)
                exact.append(Double(analytic[index]))
            }
            let difference = zip(numeric, exact).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
            let size = numeric.map { $0 * $0 }.reduce(0, +).squareRoot()
            let relative = difference / max(size, 1e-6)
            XCTAssertLessThan(relative, 1e-3, "\(tensor.name): relative error \(relative)")
        }
    }

    func testGradientsUntied() throws { try checkGradients(tied: false) }
    func testGradientsTied() throws { try checkGradients(tied: true) }
    /// Long enough for attention's causal blocks of 64 query rows to come in three pieces.
    func testGradientsLongSequence() throws { try checkGradients(tied: false, batch: 1, length: 130) }

    /// Changing a later token never changes an earlier position's logits.
    func testCausalMask() throws {
        let config = Self.tinyConfig()
        let model = try Self.model(config)
        var tokens: [Int32] = [1, 2, 3, 4, 5, 6]
        let first = Array(UnsafeBufferPointer(start: model.forward(tokens: tokens, batch: 1, length: 6).logits,
                                              count: 6 * config.vocabSize))
        tokens[4] = 9
        let second = Array(UnsafeBufferPointer(start: model.forward(tokens: tokens, batch: 1, length: 6).logits,
                                               count: 6 * config.vocabSize))
        let v = config.vocabSize
        XCTAssertEqual(Array(first[0..<(4 * v)]), Array(second[0..<(4 * v)]))
        XCTAssertNotEqual(Array(first[(4 * v)...]), Array(second[(4 * v)...]))
    }
}
