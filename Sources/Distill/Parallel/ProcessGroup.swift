import CMPI
import Foundation

/// The processes of one data-parallel job. `mpirun -np N distill ...` starts N copies of `distill`; each
/// joins the job with `ProcessGroup.joinWorld()` and is one *rank* of `ProcessGroup.world`. Without
/// mpirun the world is this process alone (`ProcessGroup.single`): nothing is loaded, every collective
/// is a no-op, and the code paths are those of a plain run.
///
/// Open MPI is loaded at run time (dlopen of `libmpi.so.40`, through the `CMPI` shim), so neither the
/// build nor a plain run needs MPI installed. Every collective is called from the main thread.
public final class ProcessGroup: @unchecked Sendable {
    /// This process's index in the job, 0 ..< size; rank 0 (the root) alone prints and writes.
    public let rank: Int
    /// Processes in the job.
    public let size: Int
    /// Processes of the job on this machine (they share its cores).
    public let localSize: Int
    private let usesMPI: Bool
    /// Whether the ranks have met (compared notes in `agree`, `together` or `shareFailure`) at least once.
    /// Before their first meeting, a rank whose command fails joins that meeting with its error, so that
    /// rank 0 can say what went wrong instead of the others waiting for it.
    public private(set) var hasMet = false
    /// Seconds spent in collective calls (waiting for the slowest rank included) since this was last reset.
    public var communicationSeconds = 0.0
    /// Seconds spent in `barrier()` since this was last reset: waiting for the slowest rank.
    public var waitingSeconds = 0.0
    /// `DISTILL_MPI_TIMING=1`: training puts a barrier before each gradient reduction, so that the time
    /// spent waiting for the slowest rank is told apart from the reduction itself (a measuring aid: it
    /// costs one more collective per step).
    public static let separatesWaiting = ProcessInfo.processInfo.environment["DISTILL_MPI_TIMING"] == "1"

    init(rank: Int, size: Int, localSize: Int, usesMPI: Bool) {
        self.rank = rank
        self.size = size
        self.localSize = localSize
        self.usesMPI = usesMPI
    }

    /// A process on its own.
    public static let single = ProcessGroup(rank: 0, size: 1, localSize: 1, usesMPI: false)

    /// The job this process belongs to: `single` until `joinWorld()` joins an mpirun job.
    nonisolated(unsafe) public private(set) static var world = single

    public var isRoot: Bool { rank == 0 }

    // MARK: joining

    /// What the launcher's environment says, before MPI is loaded: whether mpirun (or another PMIx
    /// launcher) started this process, and its rank and job size when the launcher tells them.
    public struct Launch: Sendable {
        public let rank: Int
        /// nil: a PMIx launcher that does not say (MPI tells once it is loaded).
        public let size: Int?
        public let localSize: Int?
    }

    /// The launch environment, or nil for a process not started by an MPI launcher.
    public static var launch: Launch? {
        let environment = ProcessInfo.processInfo.environment
        if let size = environment["OMPI_COMM_WORLD_SIZE"].flatMap(Int.init) {
            return Launch(rank: environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0, size: size,
                          localSize: environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init))
        }
        if let rank = environment["PMIX_RANK"].flatMap(Int.init) {
            return Launch(rank: rank, size: nil, localSize: environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init))
        }
        return nil
    }

    /// Joins the job when mpirun started several processes: loads Open MPI, initialises it and returns
    /// the new `world`. A process started without mpirun, or by `mpirun -np 1`, stays `single` and loads
    /// nothing. `DISTILL_MPI_LIBRARY` names another libmpi.
    @discardableResult
    public static func joinWorld() throws -> ProcessGroup {
        guard !world.usesMPI, let launch, launch.size != 1 else { return world }
        var message = [CChar](repeating: 0, count: 1024)
        let library = ProcessInfo.processInfo.environment["DISTILL_MPI_LIBRARY"]
        guard cmpi_init(library, &message, message.count) == 0 else {
            throw ParallelError.unavailable(String(cString: message))
        }
        let size = Int(cmpi_size())
        world = ProcessGroup(rank: Int(cmpi_rank()), size: size, localSize: launch.localSize ?? size, usesMPI: true)
        return world
    }

    /// Threads for one rank: the machine's cores shared among the job's ranks on it, and never more
    /// than the cores mpirun bound this rank to (it binds each rank to one core when N ≤ 2).
    public var threadsPerRank: Int {
        let shared = ProcessInfo.processInfo.activeProcessorCount / max(1, localSize)
        let bound = Int(cmpi_usable_cores())
        return max(1, bound > 0 ? min(bound, shared) : shared)
    }

    /// Ends this process's part in the job (MPI_Finalize): call it once, on the way out of a command
    /// that succeeded on every rank.
    public func finish() {
        if usesMPI { cmpi_finalize() }
    }

    // MARK: collectives

    /// Ends the whole job when an MPI call reports an error (Open MPI's default handler normally aborts first).
    private func check(_ status: Int32, _ call: String) {
        guard status != 0 else { return }
        FileHandle.standardError.write(Data("error: rank \(rank): \(call) failed (MPI error \(status)); stopping the job\n".utf8))
        cmpi_abort(1)
        exit(1)
    }

    private func timed(_ body: () -> Void) {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        communicationSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Sums `count` floats at `values` over the ranks, in place (MPI_Allreduce).
    public func sum(_ values: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1, count > 0 else { return }
        timed { check(cmpi_allreduce_sum_float(values, count), "MPI_Allreduce") }
    }

    /// Sums doubles over the ranks, in place (MPI_Allreduce).
    public func sum(_ values: inout [Double]) {
        guard size > 1, !values.isEmpty else { return }
        timed { values.withUnsafeMutableBufferPointer { check(cmpi_allreduce_sum_double($0.baseAddress, $0.count), "MPI_Allreduce") } }
    }

    /// Every rank's `bytes`, in rank order (MPI_Allgather of the lengths, then of the padded bytes).
    public func gather(_ bytes: [UInt8]) -> [[UInt8]] {
        guard size > 1 else { return [bytes] }
        var lengths = [Int64](repeating: 0, count: size)
        var own = Int64(bytes.count)
        timed { check(cmpi_allgather(&own, &lengths, 8), "MPI_Allgather") }
        let width = Int(lengths.max() ?? 0)
        guard width > 0 else { return Array(repeating: [], count: size) }
        var padded = bytes + [UInt8](repeating: 0, count: width - bytes.count)
        var all = [UInt8](repeating: 0, count: width * size)
        timed { check(cmpi_allgather(&padded, &all, width), "MPI_Allgather") }
        return (0..<size).map { Array(all[$0 * width ..< $0 * width + Int(lengths[$0])]) }
    }

    /// Every rank's `bytes`, in rank order, on rank `root` (nil on the others): MPI_Gather of the
    /// lengths, then MPI_Gatherv of the bytes.
    public func gather(_ bytes: [UInt8], to root: Int) -> [[UInt8]]? {
        guard size > 1 else { return [bytes] }
        var own = Int64(bytes.count)
        var lengths = [Int64](repeating: 0, count: size)
        timed { check(cmpi_gather_lengths(&own, &lengths, Int32(root)), "MPI_Gather") }
        var counts = lengths.map { Int32(clamping: $0) }
        var offsets = [Int32](repeating: 0, count: size)
        for index in counts.indices.dropFirst() { offsets[index] = offsets[index - 1] &+ counts[index - 1] }
        let total = rank == root ? Int(lengths.reduce(0, +)) : 0
        guard total <= Int(Int32.max) else {
            check(-1, "MPI_Gatherv of \(total) bytes (more than 2 GB at once)")
            return nil
        }
        var all = [UInt8](repeating: 0, count: max(total, 1))
        var sending = bytes
        timed { check(cmpi_gatherv(&sending, bytes.count, &all, &counts, &offsets, Int32(root)), "MPI_Gatherv") }
        guard rank == root else { return nil }
        return (0..<size).map { Array(all[Int(offsets[$0]) ..< Int(offsets[$0]) + Int(counts[$0])]) }
    }

    /// Every rank's doubles, summed in rank order: the same sum, bit for bit, on every rank and for any
    /// reduction algorithm MPI picks (a total that must match a one-process run closely, like `eval`'s).
    public func orderedSum(_ values: [Double]) -> [Double] {
        guard size > 1 else { return values }
        let bytes = values.withUnsafeBytes { Array($0) }
        var totals = [Double](repeating: 0, count: values.count)
        for part in gather(bytes) {
            part.withUnsafeBytes { raw in
                for index in totals.indices { totals[index] += raw.load(fromByteOffset: index * 8, as: Double.self) }
            }
        }
        return totals
    }

    /// Waits until every rank gets here (MPI_Barrier); the time goes to `waitingSeconds`.
    public func barrier() {
        guard size > 1 else { return }
        let start = DispatchTime.now().uptimeNanoseconds
        check(cmpi_barrier(), "MPI_Barrier")
        waitingSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Sends `buffer` from rank `root` to every rank (MPI_Bcast).
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, from root: Int = 0) {
        guard size > 1, buffer.count > 0 else { return }
        timed { check(cmpi_broadcast(buffer.baseAddress, buffer.count, Int32(root)), "MPI_Bcast") }
    }

    // MARK: meetings

    /// What one rank brings to a meeting: a fingerprint of what it is about to run (name → value), or
    /// the failure that stopped it.
    enum Word: Codable, Equatable {
        case fine([String: String])
        case failed(String)
    }

    /// Every rank's word, in rank order.
    private func meet(_ word: Word) -> [Word] {
        hasMet = true
        let encoded = (try? JSONEncoder().encode(word)).map { Array($0) } ?? []
        return gather(encoded).map { (try? JSONDecoder().decode(Word.self, from: Data($0))) ?? .failed("sent an unreadable word") }
    }

    /// Throws on every rank when any rank failed: the root its own error, or the lowest failing rank's
    /// message; the others `ParallelError.stoppedWithOthers` (rank 0 speaks for the job).
    private func settle(_ words: [Word], own: Error?) throws {
        guard let failing = words.firstIndex(where: { if case .failed = $0 { return true } else { return false } }) else { return }
        guard isRoot else { throw ParallelError.stoppedWithOthers }
        if let own { throw own }
        if case let .failed(message) = words[failing] { throw ParallelError.rankFailed(rank: failing, message: message) }
    }

    /// The ranks check that they are about to run the same thing: each brings `fingerprint` (what it
    /// read and built, name → hash); a rank that differs from rank 0 stops the job with one line from
    /// rank 0 naming `describe(name)`, instead of a hang or a silently different computation.
    public func agree(_ fingerprint: [String: String], describe: (String) -> String) throws {
        guard size > 1 else { return }
        let words = meet(.fine(fingerprint))
        try settle(words, own: nil)
        guard case let .fine(reference) = words[0] else { return }
        for (index, word) in words.enumerated().dropFirst() {
            guard case let .fine(theirs) = word else { continue }
            if let name = Set(reference.keys).union(theirs.keys).sorted().first(where: { reference[$0] != theirs[$0] }) {
                guard isRoot else { throw ParallelError.stoppedWithOthers }
                throw ParallelError.disagreement(rank: index, what: describe(name))
            }
        }
    }

    /// Runs `body` on this rank, then the ranks meet: if it failed on any of them, every rank throws
    /// (see `agree`), so that work done by one rank (rank 0 reading a checkpoint) fails for all at once.
    public func together<T>(_ body: () throws -> T) throws -> T {
        guard size > 1 else { return try body() }
        let result = Result { try body() }
        var own: Error?
        if case let .failure(error) = result { own = error }
        try settle(meet(own.map { .failed(String(describing: $0)) } ?? .fine([:])), own: own)
        return try result.get()
    }

    /// Tells the other ranks that this rank's command failed with `message`, when the ranks have not met
    /// yet: they are then waiting for it at their first meeting (or will be) and stop there, rank 0
    /// printing the message. After the first meeting this does nothing: the failing process exits and
    /// mpirun ends the others.
    public func shareFailure(_ message: String) {
        guard size > 1, !hasMet else { return }
        _ = meet(.failed(message))
    }
}

/// Errors of data-parallel runs that a user can act on.
public enum ParallelError: Error, CustomStringConvertible, Equatable {
    /// Open MPI could not be loaded or started.
    case unavailable(String)
    /// Rank `rank` failed with `message` (rank 0 reports it for the job).
    case rankFailed(rank: Int, message: String)
    /// Rank `rank` is not running what rank 0 runs: `what` says in which respect.
    case disagreement(rank: Int, what: String)
    /// Another rank failed and rank 0 says why; this rank stops quietly.
    case stoppedWithOthers
    /// The ranks hold different weights after the same steps (a bug: the run stops before saving them).
    case weightsDiverged(step: Int, rank: Int)

    public var description: String {
        switch self {
        case .unavailable(let why): return "started by mpirun but cannot use MPI: \(why)"
        case let .rankFailed(rank, message): return "rank \(rank): \(message)"
        case let .disagreement(rank, what):
            return "rank \(rank) \(what) than rank 0: start every rank with the same arguments on the same files (a rank started "
                + "in another directory reads other files)"
        case .stoppedWithOthers: return "stopped with the other ranks (rank 0 says why)"
        case let .weightsDiverged(step, rank):
            return "rank \(rank) holds other weights than rank 0 after step \(step); stopped without saving them (the last "
                + "checkpoint is kept): please report this"
        }
    }
}
