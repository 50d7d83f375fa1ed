/// A reusable, zero-filled Float buffer that keeps its address between steps (gradients handed to
/// `backward` are read through raw pointers, so they must not live in a Swift array that may move).
public final class ScratchBuffer {
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public private(set) var count: Int

    public init() {
        pointer = .allocate(capacity: 1)
        count = 0
    }

    deinit { pointer.deallocate() }

    /// The buffer with room for `count` values, all zero.
    @discardableResult
    public func zeroed(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > self.count {
            pointer.deallocate()
            pointer = .allocate(capacity: count)
            self.count = count
        }
        pointer.update(repeating: 0, count: count)
        return pointer
    }
}
