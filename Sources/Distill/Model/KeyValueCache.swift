/// The keys and values of the positions of one sequence fed so far, per block, for incremental
/// decoding. It grows (doubling) with the positions actually used, up to `limit` (the model's context),
/// so a long context that is not used costs nothing. Each key/value head keeps its positions together, so
/// that attention reads one contiguous matrix per head: its values as [capacity, d] rows, its keys
/// transposed, [d, capacity], so that the scores of many positions are broadcast products with no
/// horizontal sums (`ck_attend_cached`).
final class KeyValueCache {
    let layers: Int
    /// Key/value heads and their width d.
    let heads: Int, headDim: Int
    /// Positions the cache may ever hold.
    let limit: Int
    /// Positions the buffers hold now.
    private(set) var capacity = 0
    private var keys: UnsafeMutablePointer<Float>     // [L, KV, d, capacity]
    private var values: UnsafeMutablePointer<Float>   // [L, KV, capacity, d]
    /// Attention scores of one query row, for each of up to `scoreRows` threads.  [scoreRows, capacity]
    private(set) var scores: UnsafeMutablePointer<Float>
    /// Threads the scores have room for (the thread count when the cache last grew).
    private(set) var scoreRows = 1

    init(layers: Int, heads: Int, headDim: Int, limit: Int) {
        self.layers = layers
        self.heads = heads
        self.headDim = headDim
        self.limit = limit
        keys = .allocate(capacity: 1)
        values = .allocate(capacity: 1)
        scores = .allocate(capacity: 1)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
        scores.deallocate()
    }

    /// Floats per position of a layer: KV·d.
    var width: Int { heads * headDim }

    /// A layer's keys [KV, d, capacity] or values [KV, capacity, d].
    func keys(layer: Int) -> UnsafeMutablePointer<Float> { keys + layer * capacity * width }
    func values(layer: Int) -> UnsafeMutablePointer<Float> { values + layer * capacity * width }

    /// Bytes the cache would hold for `positions`.
    func bytes(positions: Int) -> Int {
        saturatingProduct(saturatingSum([saturatingProduct(2, layers, positions, width), saturatingProduct(Compute.threads, positions)]),
                          MemoryLayout<Float>.size)
    }

    /// Makes room for positions 0..<count (count ≤ limit), keeping the first `filled` positions of every
    /// layer. Refuses a size beyond the machine's memory.
    func reserve(_ count: Int, filled: Int) throws {
        guard count > capacity else { return }
        precondition(count <= limit && filled <= capacity)
        let newCapacity = min(limit, max(count, 2 * capacity, 16))
        let needed = Double(bytes(positions: newCapacity))
        guard needed <= MachineMemory.usableFraction * MachineMemory.physicalBytes else {
            throw ModelError.insufficientMemory("the key/value cache for \(newCapacity) positions needs about \(MachineMemory.describe(needed)); this machine has \(MachineMemory.describe(MachineMemory.physicalBytes)): generate fewer tokens")
        }
        let newKeys = UnsafeMutablePointer<Float>.allocate(capacity: layers * newCapacity * width)
        // Zeros past the filled positions: attention's 64-position blocks read (and drop) them, and garbage
        // there could be subnormal floats, which some CPUs multiply a hundred times slower.
        newKeys.initialize(repeating: 0, count: layers * newCapacity * width)
        let newValues = UnsafeMutablePointer<Float>.allocate(capacity: layers * newCapacity * width)
        for layer in 0..<layers where filled > 0 {
            for head in 0..<heads {
                let from = (layer * heads + head) * capacity * headDim, to = (layer * heads + head) * newCapacity * headDim
                for k in 0..<headDim {
                    (newKeys + to + k * newCapacity).update(from: keys + from + k * capacity, count: filled)
                }
                (newValues + to).update(from: values + from, count: filled * headDim)
            }
        }
        keys.deallocate()
        values.deallocate()
        scores.deallocate()
        keys = newKeys
        values = newValues
        scoreRows = Compute.threads
        scores = .allocate(capacity: scoreRows * newCapacity)
        capacity = newCapacity
    }
}
