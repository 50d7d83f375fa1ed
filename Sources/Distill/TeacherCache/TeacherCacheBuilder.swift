import CKernels
import Foundation

/// How `distill cache-teacher` builds a cache.
public struct TeacherCacheSettings: Sendable, Equatable {
    /// Samples (default, S = 16) or top-K per position.
    public var mode: TeacherCacheMode = .default
    /// The temperature τ of the stored distributions (the student trains at the same τ).
    public var temperature: Float = 2
    /// The teacher's window (nil: the shortest context of the members).
    public var context: Int?
    /// Seed of the samples.
    public var seed: UInt64 = 1
    /// Ensemble member weights (nil: equal).
    public var teacherWeights: [Float]?

    public init(mode: TeacherCacheMode = .default, temperature: Float = 2, context: Int? = nil, seed: UInt64 = 1,
                teacherWeights: [Float]? = nil) {
        self.mode = mode
        self.temperature = temperature
        self.context = context
        self.seed = seed
        self.teacherWeights = teacherWeights
    }
}

/// Where a build stands, for a progress line.
public struct TeacherCacheProgress: Sendable {
    public let positionsDone: Int
    public let totalPositions: Int
    /// Positions per second since this run (re)started.
    public let tokensPerSecond: Double
    public let secondsLeft: Double
}

/// What a build did.
public struct TeacherCacheSummary: Sendable {
    public let path: String
    public let positions: Int
    /// Size of the cache file (of the partial file when interrupted).
    public let bytes: Int
    /// Positions a previous, interrupted run had already written.
    public let resumedFrom: Int
    /// False when the build was asked to stop before the end (run it again to continue).
    public let complete: Bool
    /// True when the output already was this build's finished cache (nothing was done).
    public let alreadyBuilt: Bool
    public let seconds: Double
    /// Positions scored per second by this run.
    public let tokensPerSecond: Double

    public var bytesPerToken: Double { Double(bytes) / Double(max(positions, 1)) }
}

/// Runs a teacher (or an ensemble) once over a token file and writes its targets to a cache.
public enum TeacherCacheBuilder {
    /// Loads the teachers from model directories, checks that they and the data share one tokenizer,
    /// and builds `output` (continuing an interrupted build of the same settings).
    /// `group`: the ranks of an mpirun job that share the work (see the other `build`).
    public static func build(teachers paths: [String], data dataPath: String, output: String, settings: TeacherCacheSettings,
                             group: ProcessGroup = .single, progress: (TeacherCacheProgress) -> Void = { _ in },
                             shouldStop: () -> Bool = { false }) throws -> TeacherCacheSummary {
        guard !paths.isEmpty else { throw EnsembleError.noMembers }
        let inputs = [OutputGuard.Role("data", dataPath)] + paths.map { OutputGuard.Role("teacher", $0) }
        try OutputGuard.refuseOverlap(output: .init("output", output), inputs: inputs)
        try OutputGuard.refuseOverlap(output: .init("output", TeacherCacheWriter.partialPath(for: output)), inputs: inputs)
        let data = try TokenFile(path: dataPath)
        try data.checkTokenRange()
        var models: [LlamaModel] = []
        for path in paths {
            let loaded = try ModelAndTokenizer(directory: URL(fileURLWithPath: path), fit: .paddedHead)
            guard loaded.tokenizer.modelHash == data.tokenizerHash else {
                throw TeacherCacheError.teacherTokenizer(teacher: path, data: dataPath)
            }
            models.append(loaded.model)
        }
        return try build(teachers: models, data: data, output: output, settings: settings, group: group, progress: progress,
                         shouldStop: shouldStop)
    }

    /// Builds `output` from loaded teachers over `data` (both splits).
    /// Under mpirun (`group`, every rank calling this with the same teachers and data) the forward passes
    /// are shared out: in each round rank r scores pass round·N + r, and rank 0 gathers the records and
    /// writes them in file order, alone, so the file is byte for byte the one a single process writes
    /// (with the same threads per process: the logits' last bits depend on the thread count).
    public static func build(teachers: [LlamaModel], data: TokenFile, output: String, settings: TeacherCacheSettings,
                             group ranks: ProcessGroup = .single, progress: (TeacherCacheProgress) -> Void = { _ in },
                             shouldStop: () -> Bool = { false }) throws -> TeacherCacheSummary {
        let started = Date()
        let ensemble = try ModelEnsemble(members: teachers, weights: settings.teacherWeights)
        let vocab = ensemble.vocabSize
        guard vocab >= data.vocabSize else {
            throw SettingError(.teacher, "has a vocabulary of \(vocab), smaller than the data's \(data.vocabSize): prepare the data with the teacher's tokenizer")
        }
        try settings.mode.validate(vocabSize: vocab)
        try LogitDistillation(temperature: settings.temperature).validate()
        let window = settings.context ?? ensemble.context
        guard window >= 1, window <= ensemble.context else {
            throw SettingError(.context, "must be between 1 and the teacher's context \(ensemble.context) (got \(window))")
        }
        let perWindow = teachers.map { $0.activationBytes(batch: 1, length: window, keepForBackward: false) }.max() ?? 1
        let header = TeacherCacheFormat.Header(
            mode: settings.mode, vocabSize: vocab, temperature: settings.temperature, window: window,
            tokenCount: data.tokenCount, splitIndex: data.splitIndex, tokenFileHash: try TeacherCache.hash(tokenFile: data),
            tokenizerHash: data.tokenizerHash, teacherHash: teacherHash(teachers, weights: ensemble.weights), seed: settings.seed,
            windowsPerPass: max(1, min(8, Int(1e9 / max(perWindow, 1)))))

        if ranks.size > 1 {
            try ranks.agree(["command": "cache-teacher", "cache": header.binding.map { String($0, radix: 16) }.joined()]) { _ in
                "builds another cache (other data, teachers or settings)"
            }
        }
        // A finished cache of the same build is kept as it is; anything else is not overwritten. Only
        // rank 0 looks at the output and writes it.
        var finished: TeacherCacheSummary?, openedWriter: TeacherCacheWriter?, lock: OutputLock?
        defer { withExtendedLifetime(lock) {} }
        try ranks.together {
            guard ranks.isRoot else { return }
            try AtomicFile.ensureDirectory(URL(fileURLWithPath: output).deletingLastPathComponent())
            // One build of an output at a time: a second would write the same .partial.
            lock = try OutputLock(beside: URL(fileURLWithPath: output))
            if FileManager.default.fileExists(atPath: output) {
                if let existing = try? TeacherCache(path: output), existing.header.binding == header.binding {
                    finished = TeacherCacheSummary(path: output, positions: existing.tokenCount, bytes: existing.byteCount, resumedFrom: existing.tokenCount,
                                                   complete: true, alreadyBuilt: true, seconds: 0, tokensPerSecond: 0)
                    return
                }
                throw TeacherCacheError.outputExists(output)
            }
            openedWriter = try TeacherCacheWriter(path: output, header: header)
        }
        // Rank 0 tells the others where the build stands.
        var standing: [Int64] = [finished == nil ? 0 : 1, Int64(openedWriter?.positionsDone ?? 0)]
        standing.withUnsafeMutableBytes { ranks.broadcast($0) }
        if standing[0] == 1 {
            return finished ?? TeacherCacheSummary(path: output, positions: data.tokenCount, bytes: 0, resumedFrom: data.tokenCount,
                                                   complete: true, alreadyBuilt: true, seconds: 0, tokensPerSecond: 0)
        }
        let resumedFrom = Int(standing[1])
        let plan = WindowPlan(data: data, window: window, windowsPerPass: header.windowsPerPass)
        var next = resumedFrom
        var lastCommit = Date()

        /// Empty records up to `position` (only a split's first token may be skipped).
        func emitEmpty(upTo position: Int) {
            guard let writer = openedWriter else { return }
            while next < position {
                precondition(!writer.header.hasHistory(next), "position \(next) was not scored")
                writer.append(TeacherCacheRecord())
                next += 1
            }
        }
        func stopped(complete: Bool) throws -> TeacherCacheSummary {
            guard let writer = openedWriter else {
                return TeacherCacheSummary(path: output, positions: data.tokenCount, bytes: 0, resumedFrom: resumedFrom, complete: complete,
                                           alreadyBuilt: false, seconds: Date().timeIntervalSince(started), tokensPerSecond: 0)
            }
            if complete { try writer.finish() } else { try writer.commit() }
            return summary(writer, output: output, resumedFrom: resumedFrom, complete: complete, started: started)
        }

        var inputs: [Int32] = []
        let passes = plan.groups.filter { $0.lastTarget >= resumedFrom }
        var round = 0
        while round * ranks.size < passes.count {
            // Every rank stops at the same round when any was asked to.
            var stop = [shouldStop() ? 1.0 : 0]
            ranks.sum(&stop)
            if stop[0] > 0 { return try stopped(complete: false) }
            let index = round * ranks.size + ranks.rank
            round += 1
            var scored: [(position: Int, record: TeacherCacheRecord)] = []
            if index < passes.count {
                let group = passes[index]
                let length = group.windows[0].length
                inputs.removeAll(keepingCapacity: true)
                for window in group.windows {
                    for offset in 0..<length { inputs.append(data.token(at: window.begin + offset)) }
                }
                let logits = inputs.withUnsafeBufferPointer {
                    ensemble.logits(tokens: $0.baseAddress!, batch: group.windows.count, length: length, temperature: settings.temperature)
                }
                // Rows whose target is new to this window and not written yet, in file order (a pass's new
                // targets all follow the earlier passes', so only a resumed build's first pass skips some).
                var rows: [(row: Int, position: Int)] = []
                for (index, window) in group.windows.enumerated() {
                    for t in 0..<length {
                        let position = window.begin + t + 1
                        if position >= window.firstNew && position >= resumedFrom { rows.append((index * length + t, position)) }
                    }
                }
                let records = mapRowChunks(rows: rows.count, rowsPerChunk: 32) { range -> [TeacherCacheRecord] in
                    var scorer = RowScorer(vocab: vocab, mode: header.mode, temperature: settings.temperature, seed: settings.seed)
                    return range.map { scorer.record(logits: logits + rows[$0].row * vocab, position: rows[$0].position) }
                }.flatMap { $0 }
                scored = zip(rows, records).map { ($0.position, $1) }
            }
            // Rank 0 writes the round's passes in order.
            let parts = ranks.size == 1 ? [scored]
                : ranks.gather(TeacherCacheRecord.encode(scored), to: 0).map { $0.map(TeacherCacheRecord.decode) }
            guard let writer = openedWriter, let parts else { continue }
            for (position, record) in parts.joined() {
                emitEmpty(upTo: position)
                writer.append(record)
                next += 1
            }
            if Date().timeIntervalSince(lastCommit) > 2 {
                try writer.commit()
                lastCommit = Date()
            }
            let seconds = Date().timeIntervalSince(started), speed = Double(next - resumedFrom) / max(seconds, 1e-9)
            progress(TeacherCacheProgress(positionsDone: next, totalPositions: data.tokenCount, tokensPerSecond: speed,
                                          secondsLeft: Double(data.tokenCount - next) / max(speed, 1e-9)))
        }
        emitEmpty(upTo: data.tokenCount)
        ensemble.releaseActivations()
        return try stopped(complete: true)
    }

    /// A hash of the members' configs and weights and of the ensemble weights: what the cache's
    /// targets depend on besides the data and the settings.
    public static func teacherHash(_ teachers: [LlamaModel], weights: [Float]) -> UInt64 {
        var hash = fnvOffsetBasis
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for teacher in teachers {
            let config = (try? encoder.encode(teacher.config)) ?? Data()
            hash = config.withUnsafeBytes { fnv1a64(continuing: hash, $0) }
            hash = fnv1a64(continuing: hash, UnsafeRawBufferPointer(teacher.parameters))
        }
        if teachers.count > 1 { hash = weights.withUnsafeBytes { fnv1a64(continuing: hash, $0) } }
        return hash
    }

    /// What the builder stores for one row of (ensemble) logits `logits` [vocab] predicting the token at
    /// `position`: the drawn ids (ascending) with their counts and rest 0, or the top K ids (most likely
    /// first) with their probabilities and the remaining mass.
    public static func target(logits: UnsafePointer<Float>, vocab: Int, mode: TeacherCacheMode, temperature: Float,
                              seed: UInt64, position: Int) -> (ids: [Int32], values: [Float], rest: Float) {
        var scorer = RowScorer(vocab: vocab, mode: mode, temperature: temperature, seed: seed)
        let record = scorer.record(logits: logits, position: position)
        return (record.ids, record.values, record.rest)
    }

    /// What `build` reports from rank 0's writer.
    private static func summary(_ writer: TeacherCacheWriter, output: String, resumedFrom: Int, complete: Bool,
                                started: Date) -> TeacherCacheSummary {
        let path = complete ? output : writer.partialPath
        let bytes = ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.intValue ?? 0
        let seconds = Date().timeIntervalSince(started)
        return TeacherCacheSummary(path: path, positions: writer.header.tokenCount, bytes: bytes, resumedFrom: resumedFrom,
                                   complete: complete, alreadyBuilt: false, seconds: seconds,
                                   tokensPerSecond: Double(writer.positionsDone - resumedFrom) / max(seconds, 1e-9))
    }
}

/// The teacher's windows over both splits, as `scoreTokens` lays them out with a stride of half the
/// window: each window predicts its tokens 1...length, and only those no earlier window predicted
/// count, so every token after a split's first is scored once with at least half a window of history
/// where the split allows. Consecutive windows of one length share a forward pass, in groups that
/// depend only on the data and the window, so a resumed build repeats the same passes.
struct WindowPlan {
    struct Window {
        /// File index of the first input token.
        let begin: Int
        let length: Int
        /// File index of the first target that counts.
        let firstNew: Int
    }
    struct Group {
        let windows: [Window]
        var lastTarget: Int { windows.last.map { $0.begin + $0.length } ?? -1 }
    }
    let groups: [Group]

    init(data: TokenFile, window: Int, windowsPerPass: Int) {
        var windows: [Window] = []
        let stride = max(1, window / 2)
        for split in [0..<data.splitIndex, data.splitIndex..<data.tokenCount] where split.count >= 2 {
            var scoredThrough = 0, begin = 0
            while scoredThrough < split.count - 1 {
                let length = min(window, split.count - 1 - begin)
                windows.append(Window(begin: split.lowerBound + begin, length: length, firstNew: split.lowerBound + scoredThrough + 1))
                scoredThrough = begin + length
                begin += stride
            }
        }
        var groups: [Group] = [], index = 0
        while index < windows.count {
            var members = [windows[index]]
            while members.count < windowsPerPass, index + members.count < windows.count,
                  windows[index + members.count].length == members[0].length {
                members.append(windows[index + members.count])
            }
            index += members.count
            groups.append(Group(windows: members))
        }
        self.groups = groups
    }
}

/// Turns one row of teacher logits into a record: seeded samples or the top K. Holds its scratch.
struct RowScorer {
    let vocab: Int
    let mode: TeacherCacheMode
    let temperature: Float
    let seed: UInt64
    private var weights: [Float]
    private var cumulative: [Double]
    private var heap: [Float]

    init(vocab: Int, mode: TeacherCacheMode, temperature: Float, seed: UInt64) {
        self.vocab = vocab
        self.mode = mode
        self.temperature = temperature
        self.seed = seed
        weights = [Float](repeating: 0, count: vocab)
        switch mode {
        case .samples:
            cumulative = [Double](repeating: 0, count: vocab)
            heap = []
        case .topK(let k):
            cumulative = []
            heap = [Float](repeating: 0, count: k)
        }
    }

    /// The generator of position `position`'s samples: a function of the seed and the position only,
    /// so rows can be scored in any order and a resumed build draws what an uninterrupted one drew.
    static func random(seed: UInt64, position: Int) -> SeededRandom {
        SeededRandom(seed: mix64(seed ^ mix64(UInt64(position))))
    }

    mutating func record(logits z: UnsafePointer<Float>, position: Int) -> TeacherCacheRecord {
        let invTau = 1 / temperature, maximum = ck_max(z, vocab)
        // weights[j] = exp((z[j] − max)/τ) ∝ the tempered distribution.
        weights.withUnsafeMutableBufferPointer { _ = ck_exp_sum($0.baseAddress!, z, invTau, maximum * invTau, vocab) }
        var total = 0.0
        for j in 0..<vocab { total += Double(weights[j]) }
        var record = TeacherCacheRecord()
        switch mode {
        case .samples(let s):
            var running = 0.0
            for j in 0..<vocab {
                running += Double(weights[j])
                cumulative[j] = running
            }
            var random = RowScorer.random(seed: seed, position: position)
            var drawn = [Int32](repeating: 0, count: s)
            for i in 0..<s {
                let u = Double(random.next() >> 11) * 0x1p-53 * running
                // The first token whose cumulative weight exceeds u (a token of weight 0 never is).
                var low = 0, high = vocab - 1
                while low < high {
                    let middle = (low + high) / 2
                    if cumulative[middle] > u { high = middle } else { low = middle + 1 }
                }
                drawn[i] = Int32(low)
            }
            drawn.sort()
            for id in drawn {
                if record.ids.last == id { record.values[record.values.count - 1] += 1 } else {
                    record.ids.append(id)
                    record.values.append(1)
                }
            }
        case .topK(let k):
            let threshold = heap.withUnsafeMutableBufferPointer { ck_kth_largest(z, vocab, k, $0.baseAddress!) }
            var above = 0
            for j in 0..<vocab where z[j] > threshold { above += 1 }
            var tiesLeft = k - above
            var kept: [Int32] = []
            kept.reserveCapacity(k)
            var outside = 0.0
            for j in 0..<vocab {
                if z[j] > threshold || (z[j] == threshold && tiesLeft > 0) {
                    if !(z[j] > threshold) { tiesLeft -= 1 }
                    kept.append(Int32(j))
                } else {
                    outside += Double(weights[j])
                }
            }
            // Most likely first; equal ones by id.
            kept.sort { a, b in weights[Int(a)] != weights[Int(b)] ? weights[Int(a)] > weights[Int(b)] : a < b }
            record.ids = kept
            record.values = kept.map { Float(Double(weights[Int($0)]) / total) }
            record.rest = Float(outside / total)
        }
        return record
    }
}

extension TeacherCacheRecord {
    /// Records with their positions as bytes, to gather them on rank 0 of an mpirun job: per record the
    /// position, the entry count, the ids, the values and the rest.
    static func encode(_ records: [(position: Int, record: TeacherCacheRecord)]) -> [UInt8] {
        var bytes: [UInt8] = []
        func append<T>(_ value: T) { withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) } }
        for (position, record) in records {
            append(Int64(position))
            append(Int32(record.ids.count))
            for id in record.ids { append(id) }
            for value in record.values { append(value) }
            append(record.rest)
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [(position: Int, record: TeacherCacheRecord)] {
        var records: [(position: Int, record: TeacherCacheRecord)] = []
        bytes.withUnsafeBytes { raw in
            var offset = 0
            func read<T>(_ type: T.Type) -> T {
                defer { offset += MemoryLayout<T>.size }
                return raw.loadUnaligned(fromByteOffset: offset, as: T.self)
            }
            while offset < raw.count {
                let position = Int(read(Int64.self)), count = Int(read(Int32.self))
                var record = TeacherCacheRecord()
                record.ids = (0..<count).map { _ in read(Int32.self) }
                record.values = (0..<count).map { _ in read(Float.self) }
                record.rest = read(Float.self)
                records.append((position, record))
            }
        }
        return records
    }
}
