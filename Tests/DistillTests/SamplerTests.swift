import Distill
import XCTest

/// The sampler's draws follow the distribution it promises: the softmax of the logits at the
/// temperature, cut to the top k, then to the top-p nucleus, renormalised. Each case draws many tokens
/// at a fixed seed and compares the counts with that distribution by Pearson's chi-squared statistic.
final class SamplerTests: XCTestCase {
    /// Distinct logits, largest first, so the order of the candidates is plain.
    static let logits: [Float] = [2.0, 1.6, 1.1, 0.7, 0.2, -0.3, -0.9, -1.5]
    static let draws = 100_000

    /// The 99.9% quantile of chi-squared with 1...7 degrees of freedom: a correct sampler exceeds it
    /// for one seed in a thousand, a sampler that ignores a setting by orders of magnitude.
    static let chiSquaredLimit: [Int: Double] = [1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32]

    /// What the sampler should draw from, computed independently of it.
    static func expected(_ logits: [Float], temperature: Double, topK: Int?, topP: Double?) -> [Double] {
        let order = logits.indices.sorted { logits[$0] > logits[$1] }
        let kept = Array(order.prefix(topK ?? logits.count))
        let largest = Double(logits[kept[0]])
        var weights = kept.map { exp((Double(logits[$0]) - largest) / temperature) }
        let total = weights.reduce(0, +)
        weights = weights.map { $0 / total }
        var nucleus = weights.count
        if let topP {
            var cumulative = 0.0
            for (rank, weight) in weights.enumerated() {
                cumulative += weight
                if cumulative >= topP { nucleus = rank + 1; break }
            }
        }
        let mass = weights.prefix(nucleus).reduce(0, +)
        var probabilities = [Double](repeating: 0, count: logits.count)
        for rank in 0..<nucleus { probabilities[kept[rank]] = weights[rank] / mass }
        return probabilities
    }

    func counts(temperature: Float, topK: Int?, topP: Float?, seed: UInt64) throws -> [Int] {
        var sampler = try Sampler(temperature: temperature, topK: topK, topP: topP, seed: seed)
        var counts = [Int](repeating: 0, count: Self.logits.count)
        Self.logits.withUnsafeBufferPointer { logits in
            for _ in 0..<Self.draws { counts[sampler.sample(logits.baseAddress!, count: logits.count)] += 1 }
        }
        return counts
    }

    /// Pearson's statistic of `observed` counts against `probabilities`, over the tokens that may be drawn,
    /// and how many draws fell on tokens that may not.
    static func chiSquared(_ observed: [Int], _ probabilities: [Double]) -> (statistic: Double, cells: Int, impossible: Int) {
        var statistic = 0.0, cells = 0, impossible = 0
        for (count, probability) in zip(observed, probabilities) {
            guard probability > 0 else {
                impossible += count
                continue
            }
            let expected = probability * Double(Self.draws)
            statistic += (Double(count) - expected) * (Double(count) - expected) / expected
            cells += 1
        }
        return (statistic, cells, impossible)
    }

    func checkDistribution(temperature: Float, topK: Int? = nil, topP: Float? = nil, seed: UInt64 = 7,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let label = "temperature \(temperature), top-k \(topK.map(String.init) ?? "-"), top-p \(topP.map { "\($0)" } ?? "-")"
        let probabilities = Self.expected(Self.logits, temperature: Double(temperature), topK: topK, topP: topP.map(Double.init))
        let observed = try counts(temperature: temperature, topK: topK, topP: topP, seed: seed)
        let (statistic, cells, impossible) = Self.chiSquared(observed, probabilities)
        XCTAssertEqual(impossible, 0, "\(label): a token outside the cut was drawn: \(observed)", file: file, line: line)
        XCTAssertGreaterThan(cells, 1, "\(label) leaves one candidate: nothing to compare", file: file, line: line)
        let limit = try XCTUnwrap(Self.chiSquaredLimit[cells - 1])
        print("sampler \(label): chi-squared \(String(format: "%.2f", statistic)) over \(cells) tokens (limit \(limit))")
        XCTAssertLessThan(statistic, limit, "\(label): counts \(observed) against probabilities \(probabilities)", file: file, line: line)
    }

    func testTemperatureShapesTheDistribution() throws {
        try checkDistribution(temperature: 1)
        try checkDistribution(temperature: 0.5)
        try checkDistribution(temperature: 2)
    }

    func testTopKKeepsTheKLikeliest() throws {
        try checkDistribution(temperature: 1, topK: 3)
        try checkDistribution(temperature: 0.7, topK: 5)
    }

    func testTopPKeepsTheNucleus() throws {
        try checkDistribution(temperature: 1, topP: 0.8)
        try checkDistribution(temperature: 1.5, topP: 0.6)
    }

    func testCombinedCuts() throws {
        try checkDistribution(temperature: 0.8, topK: 4, topP: 0.9)
        try checkDistribution(temperature: 2, topK: 6, topP: 0.5)
    }

    /// The check has the power it needs: the draws of a sampler that ignored a setting (the plain sampler's,
    /// at temperature 1 with no cut) fail the check of every other setting, by far.
    func testASamplerThatIgnoredASettingWouldFail() throws {
        let plain = try counts(temperature: 1, topK: nil, topP: nil, seed: 7)
        for (temperature, topK, topP) in [(0.5, nil, nil), (2.0, nil, nil), (1.0, 3, nil), (1.0, nil, 0.8)] as [(Double, Int?, Double?)] {
            let (statistic, cells, impossible) = Self.chiSquared(plain, Self.expected(Self.logits, temperature: temperature, topK: topK, topP: topP))
            let limit = try XCTUnwrap(Self.chiSquaredLimit[cells - 1])
            XCTAssertTrue(impossible > 0 || statistic > 10 * limit,
                          "temperature \(temperature) top-k \(String(describing: topK)) top-p \(String(describing: topP)): chi-squared \(statistic)")
        }
    }

    func testTopKOneAndTemperatureZeroAreGreedy() throws {
        var random = SeededRandom(seed: 11)
        for trial in 0..<200 {
            var logits = (0..<50).map { _ in random.nextGaussian() * 3 }
            // Some ties for the largest value: greedy takes the first.
            if trial % 4 == 0 { logits[37] = logits.max()!; logits[12] = logits[37] }
            let greedy = logits.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress!, count: $0.count) }
            var topOne = try Sampler(temperature: 1.3, topK: 1, seed: UInt64(trial))
            var zero = try Sampler(temperature: 0, topK: 10, topP: 0.5, seed: UInt64(trial))
            logits.withUnsafeBufferPointer { buffer in
                for _ in 0..<5 {
                    XCTAssertEqual(topOne.sample(buffer.baseAddress!, count: buffer.count), greedy, "trial \(trial)")
                    XCTAssertEqual(zero.sample(buffer.baseAddress!, count: buffer.count), greedy, "trial \(trial)")
                }
            }
        }
    }

    func testInvalidSettingsAreRefused() {
        for (temperature, topK, topP) in [(-1, nil, nil), (.nan, nil, nil), (.infinity, nil, nil), (1, 0, nil), (1, -3, nil),
                                          (1, nil, 0), (1, nil, 1.5), (1, nil, .nan)] as [(Float, Int?, Float?)] {
            XCTAssertThrowsError(try Sampler(temperature: temperature, topK: topK, topP: topP), "\(temperature) \(String(describing: topK)) \(String(describing: topP))")
        }
    }
}
