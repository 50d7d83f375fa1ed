import Foundation

/// How far `TokenFile.prepare` has got, reported after each block of text.
public struct PrepareProgress: Sendable {
    /// Bytes of text encoded so far.
    public let bytesDone: Int
    /// Bytes of text in all inputs.
    public let totalBytes: Int
    /// Tokens written so far.
    public let tokensDone: Int
    /// Seconds since encoding started.
    public let seconds: Double
    /// Encoding speed so far, in millions of bytes per second.
    public var megabytesPerSecond: Double { seconds > 0 ? Double(bytesDone) / 1e6 / seconds : 0 }
}

/// What `TokenFile.prepare` wrote.
public struct PrepareSummary: Sendable {
    public let output: String
    public let tokenCount: Int
    public let sourceByteCount: Int
    public let trainTokenCount: Int
    public let validationTokenCount: Int
    public let trainByteCount: Int
    public let validationByteCount: Int
    /// Seconds spent encoding and writing (reading and checking the inputs excluded).
    public let seconds: Double
    public var megabytesPerSecond: Double { seconds > 0 ? Double(sourceByteCount) / 1e6 / seconds : 0 }
}

extension TokenFile {
    /// Where `prepare` leaves a copy of the tokenizer for a token file: `DATA.tokenizer.model`.
    public static func companionTokenizerPath(for tokenFile: String) -> String { tokenFile + ".tokenizer.model" }

    /// Encodes text into a token file at `output`. `inputs` are files, folders (their .txt files,
    /// sorted) or "-" for standard input, read in order as one text; a file that does not end with a
    /// newline gets one, so that files never run together mid-line. Lines are encoded one at a time,
    /// newline included, on two threads. The last `valFraction` of the text's bytes, moved to the
    /// nearest line boundary, becomes the validation split. The file appears atomically when done.
    /// Neither `output` nor the tokenizer copy beside it may overwrite an input or the tokenizer.
    @discardableResult
    public static func prepare(
        tokenizer: Tokenizer, inputs: [String], output: String, valFraction: Double = 0.1,
        progress: ((PrepareProgress) -> Void)? = nil
    ) throws -> PrepareSummary {
        guard valFraction >= 0, valFraction < 1 else { throw DataError.invalidValidationFraction(valFraction) }
        let files = try TextInput.expand(inputs, allowStandardInput: true, purpose: "")
        guard !files.isEmpty else { throw TokenizerError.noInput }
        let readFiles = files.filter { $0 != "-" }.map { OutputGuard.Role("input", $0) }
        let tokenizerRole = OutputGuard.Role(Setting.tokenizer.rawValue, tokenizer.modelPath)
        try OutputGuard.refuseOverlap(output: .init(Setting.output.rawValue, output), inputs: readFiles + [tokenizerRole])
        // The copy may land on the tokenizer itself (preparing again with the copy a run left): then
        // there is nothing to copy.
        let companion = companionTokenizerPath(for: output)
        let companionIsTokenizer = OutputGuard.canonical(companion) == OutputGuard.canonical(tokenizer.modelPath)
        try OutputGuard.refuseOverlap(output: .init(Setting.output.rawValue, companion), inputs: readFiles)
        try TextInput.refuseDuplicates(files)
        let text = ConcatenatedText(sources: try files.map(TextInput.open))
        let validationTarget = Int((Double(text.count) * valFraction).rounded())
        let splitOffset = valFraction == 0 ? text.count : try text.lineBoundary(near: text.count - validationTarget)

        let writer = try TokenFileWriter(path: output, bytesPerToken: TokenFileFormat.bytesPerToken(vocabSize: tokenizer.vocabSize))
        let started = Date()
        var bytesDone = 0
        // Each split is encoded on its own, so that the split point is a token index.
        func encode(_ region: Range<Int>) throws {
            for block in text.blocks(in: region, targetSize: 4 << 20) {
                try writer.append(encodeInParallel(block, tokenizer: tokenizer))
                bytesDone += block.count
                progress?(PrepareProgress(bytesDone: bytesDone, totalBytes: text.count, tokensDone: writer.tokenCount,
                                          seconds: Date().timeIntervalSince(started)))
            }
        }
        try encode(0..<splitOffset)
        let trainTokenCount = writer.tokenCount
        try encode(splitOffset..<text.count)
        let header = TokenFileFormat.Header(
            bytesPerToken: writer.bytesPerToken, vocabSize: tokenizer.vocabSize, tokenizerHash: tokenizer.modelHash,
            tokenCount: writer.tokenCount, sourceByteCount: text.count, splitIndex: trainTokenCount,
            validationByteCount: text.count - splitOffset)
        try writer.finish(header: header)
        // Training needs the tokenizer to put into the model directory: keep a copy beside the data.
        if !companionIsTokenizer {
            try AtomicFile.write(try RegularFile.read(tokenizer.modelPath), to: URL(fileURLWithPath: companion))
        }
        return PrepareSummary(
            output: output, tokenCount: header.tokenCount, sourceByteCount: text.count,
            trainTokenCount: trainTokenCount, validationTokenCount: header.tokenCount - trainTokenCount,
            trainByteCount: splitOffset, validationByteCount: header.validationByteCount,
            seconds: Date().timeIntervalSince(started))
    }

    /// Encodes a block of whole lines, cut into pieces that two threads share, and returns the ids
    /// in text order.
    private static func encodeInParallel(_ block: TextBlock, tokenizer: Tokenizer) -> [Int32] {
        // More pieces than threads, so that a thread that finishes early takes another.
        let pieces = block.split(into: 16)
        var results = [[Int32]](repeating: [], count: pieces.count)
        results.withUnsafeMutableBufferPointer { slots in
            DispatchQueue.concurrentPerform(iterations: pieces.count) { index in
                var ids: [Int32] = []
                pieces[index].forEachLine { tokenizer.appendIDs(of: $0, to: &ids) }
                slots[index] = ids
            }
        }
        return Array(results.joined())
    }
}

/// The inputs seen as one text: each source's bytes, plus a newline after any source that does not
/// end with one. Offsets count bytes of that text.
struct ConcatenatedText {
    let sources: [TextSource]
    /// Offset of each source's first byte.
    private let starts: [Int]
    /// Bytes in the whole text.
    let count: Int

    init(sources: [TextSource]) {
        self.sources = sources
        var starts: [Int] = []
        var offset = 0
        for source in sources {
            starts.append(offset)
            offset += ConcatenatedText.length(of: source)
        }
        self.starts = starts
        self.count = offset
    }

    private static func length(of source: TextSource) -> Int {
        source.bytes.count + (addsNewline(source) ? 1 : 0)
    }

    private static func addsNewline(_ source: TextSource) -> Bool {
        source.bytes.last.map { $0 != 0x0A } ?? false
    }

    /// The start of a line nearest to `target`, strictly inside the text (so both sides hold text).
    func lineBoundary(near target: Int) throws -> Int {
        let target = min(max(target, 1), count - 1)
        let candidates = [lineStart(atOrAfter: target), lineStart(atOrBefore: target)].filter { $0 > 0 && $0 < count }
        guard let nearest = candidates.min(by: { abs($0 - target) < abs($1 - target) }) else {
            throw DataError.tooFewLinesToSplit
        }
        return nearest
    }

    private func sourceIndex(containing offset: Int) -> Int {
        // The last source starting at or before `offset`.
        var low = 0
        var high = starts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if starts[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        return low
    }

    private func lineStart(atOrAfter offset: Int) -> Int {
        let index = sourceIndex(containing: offset)
        let local = offset - starts[index]
        let bytes = sources[index].bytes
        guard local > 0, let base = bytes.baseAddress else { return offset }
        if local - 1 < bytes.count, let newline = memchr(base + local - 1, 0x0A, bytes.count - local + 1) {
            return starts[index] + (UnsafeRawPointer(newline) - base) + 1
        }
        return starts[index] + ConcatenatedText.length(of: sources[index])
    }

    private func lineStart(atOrBefore offset: Int) -> Int {
        let index = sourceIndex(containing: offset)
        let local = min(offset - starts[index], sources[index].bytes.count)
        if let newline = sources[index].bytes[0..<local].lastIndex(of: 0x0A) {
            return starts[index] + newline + 1
        }
        return starts[index]
    }

    /// The text in `region` (whose ends are line starts) as blocks of whole lines of about
    /// `targetSize` bytes, in order.
    func blocks(in region: Range<Int>, targetSize: Int) -> [TextBlock] {
        var blocks: [TextBlock] = []
        for (index, source) in sources.enumerated() {
            let start = starts[index]
            let length = ConcatenatedText.length(of: source)
            let lower = max(region.lowerBound, start) - start
            let upper = min(region.upperBound, start + length) - start
            guard lower < upper else { continue }
            let whole = TextBlock(bytes: UnsafeRawBufferPointer(rebasing: source.bytes[lower..<min(upper, source.bytes.count)]),
                                  addsNewline: upper > source.bytes.count)
            blocks += whole.split(into: max(1, whole.count / targetSize))
        }
        return blocks
    }
}
