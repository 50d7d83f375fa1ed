import CKernels

/// One trainable tensor group: a weight buffer, its gradient and whether it takes weight decay per
/// element range (norm gains do not).
public struct TrainableSegment {
    public let parameters: UnsafeMutablePointer<Float>
    public let gradients: UnsafeMutablePointer<Float>
    public let count: Int
    public let decays: Bool
    public init(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, count: Int, decays: Bool) {
        self.parameters = parameters
        self.gradients = gradients
        self.count = count
        self.decays = decays
    }
}

/// AdamW (decoupled weight decay, as `torch.optim.AdamW`) over a list of segments whose moments live
/// in two flat buffers in segment order.
public final class AdamW {
    public var beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    /// Steps taken (for bias correction).
    public var step = 0
    /// First and second moments, concatenated over the segments.  [total]
    public var firstMoment: [Float]
    public var secondMoment: [Float]

    public init(totalCount: Int, beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8, weightDecay: Float = 0.1) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        firstMoment = Array(repeating: 0, count: totalCount)
        secondMoment = Array(repeating: 0, count: totalCount)
    }

    /// One update at `learningRate` over `segments` (in the same order every call), each gradient taken
    /// times `gradientScale` (the clipping's `clipScale`, applied here rather than in a pass over the
    /// gradients of its own: the same bits, one read and write of them fewer).
    public func update(_ segments: [TrainableSegment], learningRate: Float, gradientScale: Float = 1) {
        step += 1
        let correction1 = 1 - Float(Double(beta1).power(step))
        let correction2 = 1 - Float(Double(beta2).power(step))
        let total = segments.reduce(0) { $0 + $1.count }
        firstMoment.withUnsafeMutableBufferPointer { m in
            secondMoment.withUnsafeMutableBufferPointer { v in
                let m = m.baseAddress!, v = v.baseAddress!
                // The concatenated elements split evenly over the cores; each element's update is the
                // same whoever computes it.
                parallelFor(Compute.threads) { part in
                    let first = total * part / Compute.threads, end = total * (part + 1) / Compute.threads
                    var offset = 0
                    for segment in segments {
                        let start = max(first, offset), stop = min(end, offset + segment.count)
                        if start < stop {
                            let local = start - offset
                            ck_adamw(segment.parameters + local, m + start, v + start, segment.gradients + local,
                                     gradientScale, stop - start, learningRate, beta1, beta2, epsilon,
                                     segment.decays ? learningRate * weightDecay : 0, correction1, correction2)
                        }
                        offset += segment.count
                    }
                }
            }
        }
    }
}

extension Double {
    func power(_ exponent: Int) -> Double { Foundation.pow(self, Double(exponent)) }
}

/// Scales all gradients so that their global L2 norm is at most `maxNorm`; returns the norm before.
@discardableResult
public func clipGradientNorm(_ segments: [TrainableSegment], maxNorm: Float) -> Float {
    let norm = gradientNorm(segments)
    let scale = clipScale(norm: norm, maxNorm: maxNorm)
    if scale != 1 {
        Compute.parallel(segments.count) { i in ck_scale_inplace(segments[i].gradients, scale, segments[i].count) }
    }
    return norm
}

/// The global L2 norm of the gradients of `segments`.
public func gradientNorm(_ segments: [TrainableSegment]) -> Float {
    // Each segment's sum on whichever core claims it, the sums added in segment order: the same bits on
    // any number of threads.
    var sums = [Double](repeating: 0, count: segments.count)
    sums.withUnsafeMutableBufferPointer { sums in
        Compute.parallel(segments.count) { i in sums[i] = ck_sum_squares(segments[i].gradients, segments[i].count) }
    }
    return Float(sums.reduce(0, +).squareRoot())
}

/// The factor that brings gradients of global norm `norm` down to at most `maxNorm` (1 when they are
/// within it, or when `maxNorm` is 0: no clipping).
public func clipScale(norm: Float, maxNorm: Float) -> Float {
    maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1
}

/// Linear warm-up to the peak rate, then cosine decay to `minimumFraction` of it at the last step.
public func learningRate(step: Int, totalSteps: Int, peak: Float, warmup: Int, minimumFraction: Float = 0.1) -> Float {
    if step < warmup { return peak * Float(step + 1) / Float(warmup) }
    let decaySteps = max(1, totalSteps - warmup)
    let progress = min(1, Float(step - warmup) / Float(decaySteps))
    let cosine = 0.5 * (1 + Float(Foundation.cos(Double.pi * Double(progress))))
    return peak * (minimumFraction + (1 - minimumFraction) * cosine)
}

import Foundation
