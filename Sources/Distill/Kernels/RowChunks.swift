import Foundation

/// Splits `rows` into fixed chunks of `rowsPerChunk`, runs `body` on each chunk on the available cores and
/// returns the chunk results in chunk order. The chunking depends only on `rows`, never on the thread
/// count or the schedule, so sums folded in chunk order are bitwise repeatable.
func mapRowChunks<Result>(rows: Int, rowsPerChunk: Int, _ body: (Range<Int>) -> Result) -> [Result] {
    guard rows > 0 else { return [] }
    let chunkSize = max(rowsPerChunk, 1)
    let chunkCount = (rows + chunkSize - 1) / chunkSize
    let results = UnsafeMutablePointer<Result?>.allocate(capacity: chunkCount)
    results.initialize(repeating: nil, count: chunkCount)
    defer {
        results.deinitialize(count: chunkCount)
        results.deallocate()
    }
    // The chunks claimed one at a time by the team's threads: whoever finishes first takes more.
    Compute.parallel(chunkCount) { chunk in
        let start = chunk * chunkSize
        // Each chunk writes only its own slot.
        results[chunk] = body(start ..< min(start + chunkSize, rows))
    }
    return (0 ..< chunkCount).compactMap { results[$0] }
}
