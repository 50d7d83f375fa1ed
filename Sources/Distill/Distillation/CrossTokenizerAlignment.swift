/// A span of text that both tokenizations cut into whole tokens: it starts and ends where both have a
/// token boundary, and no byte strictly inside it is a boundary of both.
public struct AlignedChunk: Equatable, Sendable, CustomStringConvertible {
    /// The chunk's bytes in the window's text.
    public let bytes: Range<Int>
    /// Indices of the student's tokens that cover `bytes`.
    public let studentTokens: Range<Int>
    /// Indices of the teacher's tokens that cover `bytes`.
    public let teacherTokens: Range<Int>

    public init(bytes: Range<Int>, studentTokens: Range<Int>, teacherTokens: Range<Int>) {
        self.bytes = bytes
        self.studentTokens = studentTokens
        self.teacherTokens = teacherTokens
    }

    public var description: String { "\(bytes) student \(studentTokens) teacher \(teacherTokens)" }
}

/// Cuts a window of text into aligned chunks: the spans between consecutive bytes where BOTH
/// tokenizations have a token boundary.
///
/// `student` and `teacher` are the byte spans of each side's tokens, in order and each starting where
/// the previous one ended (an empty span is allowed). Spans may reach outside `window`: a window cuts a
/// token in half at each end, and only whole tokens inside the window count, so a token that reaches
/// outside it is no token of either chunk, and the bytes it covers inside the window belong to no chunk.
/// An empty token sits in the chunk that starts at its position. The result is empty when the two share
/// fewer than two boundaries.
public func alignChunks(student: [Range<Int>], teacher: [Range<Int>], window: Range<Int>) -> [AlignedChunk] {
    /// The whole tokens of a side (a contiguous run of indices) and its boundaries in order.
    func boundaries(_ spans: [Range<Int>]) -> (whole: Range<Int>, cuts: [Int])? {
        guard let first = spans.firstIndex(where: { $0.lowerBound >= window.lowerBound && $0.upperBound <= window.upperBound }) else {
            return nil
        }
        var last = first
        while last + 1 < spans.count, spans[last + 1].lowerBound >= window.lowerBound, spans[last + 1].upperBound <= window.upperBound {
            last += 1
        }
        var cuts = [spans[first].lowerBound]
        for index in first...last where spans[index].upperBound != cuts[cuts.count - 1] { cuts.append(spans[index].upperBound) }
        return (first..<(last + 1), cuts)
    }
    guard let s = boundaries(student), let t = boundaries(teacher) else { return [] }
    var common: [Int] = []
    var i = 0, j = 0
    while i < s.cuts.count && j < t.cuts.count {
        if s.cuts[i] == t.cuts[j] {
            common.append(s.cuts[i])
            i += 1
            j += 1
        } else if s.cuts[i] < t.cuts[j] {
            i += 1
        } else {
            j += 1
        }
    }
    guard common.count >= 2 else { return [] }

    /// The first token of `whole` at or after byte `position` (by where it starts).
    func firstToken(startingAt position: Int, in spans: [Range<Int>], whole: Range<Int>, from: Int) -> Int {
        var index = from
        while index < whole.upperBound && spans[index].lowerBound < position { index += 1 }
        return index
    }
    var chunks: [AlignedChunk] = []
    var studentIndex = firstToken(startingAt: common[0], in: student, whole: s.whole, from: s.whole.lowerBound)
    var teacherIndex = firstToken(startingAt: common[0], in: teacher, whole: t.whole, from: t.whole.lowerBound)
    for (start, end) in zip(common, common.dropFirst()) {
        let studentEnd = firstToken(startingAt: end, in: student, whole: s.whole, from: studentIndex)
        let teacherEnd = firstToken(startingAt: end, in: teacher, whole: t.whole, from: teacherIndex)
        chunks.append(AlignedChunk(bytes: start..<end, studentTokens: studentIndex..<studentEnd, teacherTokens: teacherIndex..<teacherEnd))
        studentIndex = studentEnd
        teacherIndex = teacherEnd
    }
    return chunks
}
