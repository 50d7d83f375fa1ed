import CBLAS
import CKernels

/// Incremental decoding for one sequence: each call feeds one token, appends its keys and values to
/// the cache and returns the next-token logits. Matrix–vector products go through `cblas_sgemv`.
public final class KVCacheSession {
    public let model: LlamaModel
    /// Tokens fed so far (the next token's position).
    public private(set) var position = 0
    private let config: LlamaConfig
    private let keys: UnsafeMutablePointer<Float>      // [L, maxT, KVd]
    private let values: UnsafeMutablePointer<Float>    // [L, maxT, KVd]
    private let x: UnsafeMutablePointer<Float>         // [C] residual stream
    private let normed: UnsafeMutablePointer<Float>    // [C]
    private let qkv: UnsafeMutablePointer<Float>       // [C + 2·KVd]
    private let attention: UnsafeMutablePointer<Float> // [C]
    private let scores: UnsafeMutablePointer<Float>    // [maxT]
    private let gateUp: UnsafeMutablePointer<Float>    // [2F]
    private let swiglu: UnsafeMutablePointer<Float>    // [F]
    private let rstd: UnsafeMutablePointer<Float>      // [1]
    /// Next-token logits after the last `feed`.  [V]
    public let logits: UnsafeMutablePointer<Float>

    public init(model: LlamaModel) {
        self.model = model
        config = model.config
        let c = config.hiddenSize, kvWidth = config.numKeyValueHeads * config.headDim, f = config.intermediateSize
        let cacheSize = config.numHiddenLayers * config.maxPositionEmbeddings * kvWidth
        keys = .allocate(capacity: cacheSize)
        values = .allocate(capacity: cacheSize)
        x = .allocate(capacity: c)
        normed = .allocate(capacity: c)
        qkv = .allocate(capacity: c + 2 * kvWidth)
        attention = .allocate(capacity: c)
        scores = .allocate(capacity: config.maxPositionEmbeddings)
        gateUp = .allocate(capacity: 2 * f)
        swiglu = .allocate(capacity: f)
        rstd = .allocate(capacity: 1)
        logits = .allocate(capacity: config.vocabSize)
    }

    deinit {
        for buffer in [keys, values, x, normed, qkv, attention, scores, gateUp, swiglu, rstd, logits] {
            buffer.deallocate()
        }
    }

    /// The number of positions the cache holds (the model's context).
    public var capacity: Int { config.maxPositionEmbeddings }

    /// Forgets the sequence.
    public func reset() { position = 0 }

    /// Feeds one token at the next position and computes `logits`.
    public func feed(_ token: Int32) throws {
        guard position < capacity else { throw GenerationError.contextFull(capacity) }
        guard token >= 0 && Int(token) < config.vocabSize else { throw GenerationError.badToken(Int(token)) }
        let c = config.hiddenSize, d = config.headDim, f = config.intermediateSize
        let heads = config.numAttentionHeads, kvHeads = config.numKeyValueHeads, kvWidth = kvHeads * d
        let qkvWidth = c + 2 * kvWidth, layout = model.layout, group = heads / kvHeads
        let weights = UnsafePointer(model.parameters.baseAddress!)
        let scale = 1 / Float(d).squareRoot(), t = position

        x.update(from: weights + layout.embedding + Int(token) * c, count: c)
        for layer in 0..<config.numHiddenLayers {
            let block = layout.blocks[layer]
            ck_rmsnorm_forward(normed, rstd, x, weights + block.attentionNorm, 1, c, config.rmsNormEps)
            matrixVector(qkv, weights + block.qkv, normed, rows: qkvWidth, columns: c)
            model.rope.apply(qkv, rowStride: qkvWidth, batch: 1, length: 1, startPosition: t,
                             queryHeads: heads, keyHeads: kvHeads, inverse: false)
            let layerKeys = keys + layer * capacity * kvWidth, layerValues = values + layer * capacity * kvWidth
            (layerKeys + t * kvWidth).update(from: qkv + c, count: kvWidth)
            (layerValues + t * kvWidth).update(from: qkv + c + kvWidth, count: kvWidth)
            for h in 0..<heads {
                let g = h / group
                // scores[0...t] = K[0...t, g] · q_h / √d, then softmax, then Σ p·V.
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(t + 1), Int32(d), scale, layerKeys + g * d,
                            Int32(kvWidth), qkv + h * d, 1, 0, scores, 1)
                ck_softmax_prefix(scores, t + 1, t + 1)
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(t + 1), Int32(d), 1, layerValues + g * d,
                            Int32(kvWidth), scores, 1, 0, attention + h * d, 1)
            }
            matrixVector(x, weights + block.output, attention, rows: c, columns: c, accumulate: true)
            ck_rmsnorm_forward(normed, rstd, x, weights + block.mlpNorm, 1, c, config.rmsNormEps)
            matrixVector(gateUp, weights + block.gateUp, normed, rows: 2 * f, columns: c)
            ck_swiglu_forward(swiglu, gateUp, 1, f)
            matrixVector(x, weights + block.down, swiglu, rows: c, columns: f, accumulate: true)
        }
        ck_rmsnorm_forward(normed, rstd, x, weights + layout.finalNorm, 1, c, config.rmsNormEps)
        matrixVector(logits, weights + layout.lmHead, normed, rows: config.vocabSize, columns: c)
        position += 1
    }

    /// y[rows] = W[rows, columns] · v (+ y when accumulating)
    private func matrixVector(_ y: UnsafeMutablePointer<Float>, _ weight: UnsafePointer<Float>,
                              _ v: UnsafePointer<Float>, rows: Int, columns: Int, accumulate: Bool = false) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(columns), 1, weight, Int32(columns),
                    v, 1, accumulate ? 1 : 0, y, 1)
    }
}

/// Errors of text generation that a user can act on.
public enum GenerationError: Error, CustomStringConvertible, Equatable {
    case contextFull(Int)
    case badToken(Int)
    case promptTooLong(tokens: Int, context: Int)
    case emptyPrompt
    case invalidSetting(String)

    public var description: String {
        switch self {
        case .contextFull(let n): return "the model's context of \(n) tokens is full"
        case .badToken(let id): return "token id \(id) is outside the model's vocabulary"
        case .promptTooLong(let tokens, let context):
            return "the prompt is \(tokens) tokens but the model's context is \(context): shorten the prompt"
        case .emptyPrompt: return "the prompt encodes to no tokens and the tokenizer has no BOS token: give a --prompt"
        case .invalidSetting(let why): return why
        }
    }
}
