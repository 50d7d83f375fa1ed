/// One batch of next-token examples: `inputs[b*T + t]` is followed in the text by `targets[b*T + t]`.
public struct Batch: Sendable, Equatable {
    /// Number of sequences, B.
    public let batchSize: Int
    /// Tokens per sequence, T.
    public let contextLength: Int
    /// [B*T] token ids, row-major by sequence.
    public var inputs: [Int32]
    /// [B*T] the ids that follow `inputs`: each window's ids shifted left by one.
    public var targets: [Int32]
    /// [B] where each row's first input token lies in the token file (both splits counted), so that
    /// `targets[b*T + t]` is the file's token `starts[b] + t + 1`; empty when the rows do not come
    /// from a token file. A cached teacher finds its targets through it.
    public var starts: [Int]

    public init(batchSize: Int, contextLength: Int, inputs: [Int32], targets: [Int32], starts: [Int] = []) {
        self.batchSize = batchSize
        self.contextLength = contextLength
        self.inputs = inputs
        self.targets = targets
        self.starts = starts
    }
}

/// Draws batches of random windows of `contextLength + 1` tokens from one split. Its random state is
/// a `SeededRandom`, which is Codable: save `random` in a checkpoint and set it back on resume, and
/// the run draws the same windows an uninterrupted one would.
public struct BatchSampler: Sendable {
    /// The split windows are drawn from.
    public let tokens: TokenView
    public let batchSize: Int
    public let contextLength: Int
    /// The generator the window starts come from.
    public var random: SeededRandom

    /// Throws `DataError.splitTooShort` when `tokens` cannot hold one window of `contextLength + 1`
    /// tokens, and `DataError.invalidBatchShape` for sizes below 1.
    public init(tokens: TokenView, batchSize: Int, contextLength: Int, random: SeededRandom) throws {
        guard batchSize >= 1, contextLength >= 1 else {
            throw DataError.invalidBatchShape(batchSize: batchSize, contextLength: contextLength)
        }
        guard tokens.count >= contextLength + 1 else {
            throw DataError.splitTooShort(split: tokens.split.rawValue, tokens: tokens.count, needed: contextLength + 1)
        }
        self.tokens = tokens
        self.batchSize = batchSize
        self.contextLength = contextLength
        self.random = random
    }

    /// The same, starting from a fresh generator seeded with `seed`.
    public init(tokens: TokenView, batchSize: Int, contextLength: Int, seed: UInt64) throws {
        try self.init(tokens: tokens, batchSize: batchSize, contextLength: contextLength, random: SeededRandom(seed: seed))
    }

    /// Draws the next batch.
    public mutating func next() -> Batch {
        var batch = Batch(batchSize: batchSize, contextLength: contextLength,
                          inputs: [Int32](repeating: 0, count: batchSize * contextLength),
                          targets: [Int32](repeating: 0, count: batchSize * contextLength),
                          starts: [Int](repeating: 0, count: batchSize))
        fill(&batch)
        return batch
    }

    /// Draws the next batch into `batch`'s arrays (no allocation); `batch` must have this sampler's shape.
    public mutating func fill(_ batch: inout Batch) {
        precondition(batch.batchSize == batchSize && batch.contextLength == contextLength
                     && batch.inputs.count == batchSize * contextLength && batch.targets.count == batchSize * contextLength,
                     "batch shape differs from the sampler's")
        fill(&batch, keeping: 0..<batchSize)
    }

    /// Draws the next batch of `batchSize` windows but keeps only the windows of `rows` (one rank's share
    /// of a data-parallel run's global batch): the generator advances exactly as `next()` advances it.
    public mutating func next(rows: Range<Int>) -> Batch {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= batchSize && !rows.isEmpty, "rows outside the batch")
        var batch = Batch(batchSize: rows.count, contextLength: contextLength,
                          inputs: [Int32](repeating: 0, count: rows.count * contextLength),
                          targets: [Int32](repeating: 0, count: rows.count * contextLength),
                          starts: [Int](repeating: 0, count: rows.count))
        fill(&batch, keeping: rows)
        return batch
    }

    /// Draws `batchSize` window starts and copies the windows of `rows` into `batch` (row `rows.lowerBound` first).
    private mutating func fill(_ batch: inout Batch, keeping rows: Range<Int>) {
        let window = contextLength + 1
        // Every start from 0 to count − window is possible. The modulo's bias is below 2⁻³⁰ for any
        // real corpus, and unlike Int.random(in:using:) it cannot change between Swift releases.
        let startCount = UInt64(tokens.count - window + 1)
        var windowIDs = [Int32](repeating: 0, count: window)
        if batch.starts.count != rows.count { batch.starts = [Int](repeating: 0, count: rows.count) }
        for row in 0..<batchSize {
            let start = Int(random.next() % startCount)
            guard rows.contains(row) else { continue }
            batch.starts[row - rows.lowerBound] = tokens.tokenRange.lowerBound + start
            windowIDs.withUnsafeMutableBufferPointer { tokens.copy(from: start, into: $0) }
            let offset = (row - rows.lowerBound) * contextLength
            for position in 0..<contextLength {
                batch.inputs[offset + position] = windowIDs[position]
                batch.targets[offset + position] = windowIDs[position + 1]
            }
        }
    }
}
