import CKernels
import Foundation

/// Rotary position embedding in Hugging Face's "rotate half" convention: within a head of width d,
/// element i pairs with element i + d/2 and the pair is rotated by position · θ^(−2i/d). The table is
/// computed in Float the way `transformers` does, so logits agree closely. It holds only the positions
/// asked for so far (`reserve`): a model with a long context that runs short sequences does not pay for
/// the whole context.
struct RotaryTable {
    let headDim: Int
    let theta: Float
    /// Positions the table covers.
    private(set) var positions = 0
    private(set) var cos: [Float] = []  // [positions, d/2]
    private(set) var sin: [Float] = []  // [positions, d/2]

    init(headDim: Int, theta: Float) {
        self.headDim = headDim
        self.theta = theta
    }

    /// Extends the table to cover positions 0..<count (a row depends only on its position, so a grown
    /// table holds exactly the values of one computed at that size).
    mutating func reserve(_ count: Int) {
        guard count > positions else { return }
        let half = headDim / 2
        cos.reserveCapacity(count * half)
        sin.reserveCapacity(count * half)
        let inverseFrequencies = (0..<half).map { i in
            1 / Float(pow(Double(theta), Double(Float(2 * i) / Float(headDim))))
        }
        for position in positions..<count {
            for inverseFrequency in inverseFrequencies {
                let angle = Float(position) * inverseFrequency
                cos.append(Float(Foundation.cos(Double(angle))))
                sin.append(Float(Foundation.sin(Double(angle))))
            }
        }
        positions = count
    }

    /// Rotates the query and key heads of `qkv` [B·T, rowStride] in place (q heads first, then k heads;
    /// v is untouched); row b·T + t is at position startPosition + t, which the table must cover.
    /// `inverse` applies the transposed rotation, which is the backward pass.
    func apply(_ qkv: UnsafeMutablePointer<Float>, rowStride: Int, batch: Int, length: Int, startPosition: Int,
               queryHeads: Int, keyHeads: Int, inverse: Bool) {
        forEachRowRange(batch * length) { rows in
            apply(qkv, rowStride: rowStride, rows: rows, length: length, startPosition: startPosition,
                  queryHeads: queryHeads, keyHeads: keyHeads, inverse: inverse)
        }
    }

    /// The same for the rows `rows` of the B·T only, on the calling thread (a row gives the same bits
    /// whichever range it is in).
    func apply(_ qkv: UnsafeMutablePointer<Float>, rowStride: Int, rows: Range<Int>, length: Int, startPosition: Int,
               queryHeads: Int, keyHeads: Int, inverse: Bool) {
        precondition(startPosition + length <= positions, "rotary table too short: reserve the positions first")
        cos.withUnsafeBufferPointer { cosTable in
            sin.withUnsafeBufferPointer { sinTable in
                ck_rotary(qkv, rowStride, rows.lowerBound, rows.upperBound, length, startPosition, queryHeads + keyHeads,
                          headDim, cosTable.baseAddress!, sinTable.baseAddress!, inverse ? -1 : 1)
            }
        }
    }
}
