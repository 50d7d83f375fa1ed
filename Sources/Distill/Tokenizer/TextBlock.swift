import Foundation

/// A run of whole lines from one source, and whether the newline the source lacks at its end
/// follows them.
struct TextBlock: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    let addsNewline: Bool

    /// Bytes of text, the added newline included.
    var count: Int { bytes.count + (addsNewline ? 1 : 0) }

    /// Cuts the block into at most `parts` blocks of about equal size, at line boundaries.
    func split(into parts: Int) -> [TextBlock] {
        guard !bytes.isEmpty else { return [self] }
        var blocks: [TextBlock] = []
        var start = 0
        let step = max(1, bytes.count / parts)
        while start < bytes.count {
            let end = lineEnd(from: min(start + step, bytes.count) - 1)
            blocks.append(TextBlock(bytes: UnsafeRawBufferPointer(rebasing: bytes[start..<end]),
                                    addsNewline: addsNewline && end == bytes.count))
            start = end
        }
        return blocks
    }

    /// The offset just after the first newline at or after `offset`, or the end of the bytes.
    private func lineEnd(from offset: Int) -> Int {
        guard let base = bytes.baseAddress, offset < bytes.count,
              let newline = memchr(base + offset, 0x0A, bytes.count - offset) else { return bytes.count }
        return UnsafeRawPointer(newline) - base + 1
    }

    /// Calls `body` with each line, its newline included (the added one too).
    func forEachLine(_ body: (UnsafeRawBufferPointer) -> Void) {
        var start = 0
        while start < bytes.count {
            let end = lineEnd(from: start)
            if end == bytes.count && addsNewline {
                // The last line needs the newline the source lacks: encode a copy with it.
                var line = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                line.append(0x0A)
                line.withUnsafeBytes(body)
            } else {
                body(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
            }
            start = end
        }
    }
}
