import Foundation

/// Rotary position embedding in Hugging Face's "rotate half" convention: within a head of width d,
/// element i pairs with element i + d/2 and the pair is rotated by position · θ^(−2i/d). The table is
/// computed in Float the way `transformers` does, so logits agree closely.
struct RotaryTable {
    let headDim: Int
    let cos: [Float]  // [maxPositions, d/2]
    let sin: [Float]  // [maxPositions, d/2]

    init(config: LlamaConfig) {
        headDim = config.headDim
        let half = headDim / 2, positions = config.maxPositionEmbeddings
        var cosTable = [Float](repeating: 0, count: positions * half)
        var sinTable = cosTable
        for i in 0..<half {
            let inverseFrequency = 1 / Float(pow(Double(config.ropeTheta), Double(Float(2 * i) / Float(headDim))))
            for position in 0..<positions {
                let angle = Float(position) * inverseFrequency
                cosTable[position * half + i] = Float(Foundation.cos(Double(angle)))
                sinTable[position * half + i] = Float(Foundation.sin(Double(angle)))
            }
        }
        cos = cosTable
        sin = sinTable
    }

    /// Rotates the query and key heads of `qkv` [B·T, rowStride] in place (q heads first, then k heads;
    /// v is untouched). `inverse` applies the transposed rotation, which is the backward pass.
    func apply(_ qkv: UnsafeMutablePointer<Float>, rowStride: Int, batch: Int, length: Int, startPosition: Int,
               queryHeads: Int, keyHeads: Int, inverse: Bool) {
        let half = headDim / 2, heads = queryHeads + keyHeads
        let direction: Float = inverse ? -1 : 1
        cos.withUnsafeBufferPointer { cosTable in
            sin.withUnsafeBufferPointer { sinTable in
                for row in 0..<(batch * length) {
                    let position = startPosition + row % length
                    let c = cosTable.baseAddress! + position * half, s = sinTable.baseAddress! + position * half
                    for head in 0..<heads {
                        let x = qkv + row * rowStride + head * headDim
                        for i in 0..<half {
                            let a = x[i], b = x[i + half], sine = direction * s[i]
                            x[i] = a * c[i] - b * sine
                            x[i + half] = b * c[i] + a * sine
                        }
                    }
                }
            }
        }
    }
}
