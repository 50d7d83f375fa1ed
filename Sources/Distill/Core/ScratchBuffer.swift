/// A reusable, zero-filled Float buffer that keeps its address between steps (gradients handed to
/// `backward` are read through raw pointers, so they must not live in a Swift array that may move).
public final class ScratchBuffer {
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public private(set) var count: Int

    public init() {
        pointer = alignedFloats(1)
        count = 0
    }

    deinit { pointer.deallocate() }

    /// The buffer with room for `count` values, all zero.
    @discardableResult
    public func zeroed(_ count: Int) -> UnsafeMutablePointer<Float> {
        let buffer = reserved(count)
        buffer.update(repeating: 0, count: count)
        return buffer
    }

    /// The buffer with room for `count` values, left as they are (for a caller that writes them all).
    public func reserved(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > self.count {
            pointer.deallocate()
            pointer = alignedFloats(count)
            self.count = count
        }
        return pointer
    }
}

/// `count` zeroed floats starting on a 64-byte boundary (free with `deallocate()`). The vectorised
/// reductions of the kernels split a row by its alignment, so a buffer whose alignment depended on the
/// allocator would make sums differ in the last bit from one process to the next.
func alignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    let floats = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
        .bindMemory(to: Float.self, capacity: count)
    floats.initialize(repeating: 0, count: count)
    return floats
}
