import Foundation
// TEMPORARY until the loss branch lands.
public func crossEntropyForwardBackward(dLogits: UnsafeMutablePointer<Float>?, logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, rows: Int, vocab: Int, gradientScale: Float) -> Float {
    var total = 0.0; var counted = 0
    for r in 0..<rows where targets[r] >= 0 { counted += 1 }
    for r in 0..<rows {
        let t = Int(targets[r]); if t < 0 { continue }
        let row = logits + r * vocab
        var m = -Float.infinity; for i in 0..<vocab { m = max(m, row[i]) }
        var s = 0.0; for i in 0..<vocab { s += Double(exp(row[i] - m)) }
        let lse = Double(m) + log(s)
        total += lse - Double(row[t])
        if let d = dLogits {
            let scale = gradientScale / Float(counted)
            for i in 0..<vocab { d[r * vocab + i] += scale * Float(exp(Double(row[i]) - lse)) }
            d[r * vocab + t] -= scale
        }
    }
    return Float(total / Double(max(counted, 1)))
}
