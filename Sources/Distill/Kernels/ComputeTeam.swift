import CKernels
import Dispatch
import Foundation

/// The threads that run the model's parallel steps: the caller and `helpers` threads of a `ck_team`
/// (CKernels/team.c), which spin between steps instead of sleeping: a training step has a few hundred
/// parallel steps and a decoding step about twenty, too short to wake a sleeping thread for each.
final class ComputeTeam {
    private let team: OpaquePointer
    let helpers: Int

    init?(helpers: Int) {
        guard let team = ck_team_create(Int32(helpers)) else { return nil }
        self.team = team
        self.helpers = Int(ck_team_helpers(team))
    }

    deinit { ck_team_destroy(team) }

    /// Steps run, and how many of them the caller ran alone because the helpers came late (another
    /// process on their core: team.c).
    var counts: (steps: Int, alone: Int) {
        var steps: UInt = 0, alone: UInt = 0
        ck_team_counts(team, &steps, &alone)
        return (Int(steps), Int(alone))
    }

    /// Whether the helpers have often come late of late (team.c: ck_team_contended).
    var contended: Bool { ck_team_contended(team) != 0 }

    /// Runs body(part) once for every part in 0..<parts, each on whichever thread of the team claims it
    /// (this one included); returns false, having run nothing, when the team is busy with another step
    /// (a nested or concurrent call) or parts exceeds `CK_TEAM_MAX_PARTS`.
    /// At most `helpers` of the team's helpers take part (nil: any).
    func run(parts: Int, helpers: Int? = nil, _ body: (Int) -> Void) -> Bool {
        withoutActuallyEscaping(body) { body in
            var task = body
            return withUnsafeMutablePointer(to: &task) { pointer in
                ck_team_run_with(team, { context, part in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(part))
                }, pointer, Int32(parts), Int32(min(helpers ?? self.helpers, self.helpers))) == 1
            }
        }
    }
}

extension Compute {
    private static let teamLock = NSLock()
    nonisolated(unsafe) private static var sharedTeam: ComputeTeam?
    /// Helpers a team could not be made with (threads refused by the system): not tried again.
    nonisolated(unsafe) private static var refusedHelpers = Int.max

    /// The process's team, with at least `threads` − 1 helpers (made on first use, and again larger when
    /// more threads are asked for; a caller still running on the old one keeps it alive until it ends).
    private static func team() -> ComputeTeam? {
        teamLock.lock()
        defer { teamLock.unlock() }
        if let team = sharedTeam, team.helpers >= threads - 1 { return team }
        let helpers = threads - 1
        guard helpers < refusedHelpers else { return nil }
        guard let team = ComputeTeam(helpers: helpers) else {
            refusedHelpers = helpers
            return nil
        }
        sharedTeam = team
        return team
    }

    /// The process team's `ComputeTeam.counts` so far ((0, 0) before it is made). Read between steps.
    static var teamCounts: (steps: Int, alone: Int) {
        teamLock.lock()
        defer { teamLock.unlock() }
        return sharedTeam?.counts ?? (0, 0)
    }

    /// Parts per thread for a product split by rows: 1 on a quiet machine; 4 when the team's helpers keep
    /// coming late (another process busy on their cores), so that the caller claims the parts a slowed
    /// helper cannot take. (More parts cost time when nothing else runs: OpenBLAS packs the weights again
    /// for each. Measured on `train --preset small`: 4 parts a thread took 1.05× the time on a quiet
    /// machine, and with a busy loop on one core trained 1.11× faster than fixed halves.)
    static var productPartsPerThread: Int {
        if let fixedProductPartsPerThread { return fixedProductPartsPerThread }
        teamLock.lock()
        defer { teamLock.unlock() }
        return sharedTeam?.contended == true ? 4 : 1
    }

    /// Fixes `productPartsPerThread` (nil: chosen by contention), for tests: results must not depend on it.
    nonisolated(unsafe) public static var fixedProductPartsPerThread: Int?

    /// Runs body(part) for part in 0..<parts on the cores: on the team when it is free, else (a nested
    /// or concurrent call) on Dispatch's pool. Parts may outnumber the threads: each thread takes the
    /// next part when it is done with one, so a thread slowed by another process takes fewer.
    static func parallel(_ parts: Int, _ body: (Int) -> Void) {
        guard parts > 1 else {
            if parts == 1 { body(0) }
            return
        }
        guard threads > 1 else { return (0..<parts).forEach(body) }
        if let team = team(), team.run(parts: parts, body) { return }
        DispatchQueue.concurrentPerform(iterations: parts, execute: body)
    }

    /// `parallel`, with the slot (0..<threads) of the thread that runs each part: two parts never run at
    /// once on one slot, so per-thread scratch can be indexed by it while the parts are claimed one at a
    /// time (a fixed share of them per thread kept the faster thread waiting for the slower one's).
    static func parallelWithSlots(_ parts: Int, _ body: (_ part: Int, _ slot: Int) -> Void) {
        guard parts > 1, threads > 1 else { return (0..<max(parts, 0)).forEach { body($0, 0) } }
        if let team = team(), team.run(parts: parts, helpers: threads - 1, { body($0, Int(ck_team_thread_slot())) }) {
            return
        }
        // Dispatch's pool (a nested or concurrent call): a fixed range of parts for each worker, its slot.
        let workers = min(threads, parts)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for part in (parts * worker / workers)..<(parts * (worker + 1) / workers) { body(part, worker) }
        }
    }
}
