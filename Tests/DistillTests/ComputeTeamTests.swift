import CKernels
import Foundation
import XCTest

/// The team of threads behind every parallel step (`CKernels/team.c`): each part of a step runs exactly
/// once whether the helpers claim parts or the caller runs them all alone, the caller goes alone
/// when a helper keeps coming late or costs more time than it saves, it takes the helpers back once
/// they are on time again, and a slow helper leaves the remaining parts to the caller.
final class ComputeTeamTests: XCTestCase {
    /// The parts' context: [microseconds a part sleeps on a helper, on the caller, the caller's thread,
    /// parts the caller ran, then runs of each part]. Each part counts its own runs, so no two threads
    /// write the same word (the caller alone writes the fourth).
    private static let task: ck_team_task = { context, part in
        let words = context!.assumingMemoryBound(to: UInt.self)
        let onCaller = UInt(pthread_self()) == words[2]
        let micros = onCaller ? words[1] : words[0]
        if micros > 0 { usleep(UInt32(micros)) }
        if onCaller { words[3] += 1 }
        words[4 + Int(part)] += 1
    }

    private func makeStep(parts: Int) -> UnsafeMutablePointer<UInt> {
        let step = UnsafeMutablePointer<UInt>.allocate(capacity: 4 + parts)
        step.initialize(repeating: 0, count: 4 + parts)
        step[2] = UInt(pthread_self())
        return step
    }

    private func runs(_ step: UnsafeMutablePointer<UInt>, parts: Int) -> [UInt] { (0..<parts).map { step[4 + $0] } }

    private func counts(_ team: OpaquePointer) -> (steps: UInt, alone: UInt) {
        var steps: UInt = 0, alone: UInt = 0
        ck_team_counts(team, &steps, &alone)
        return (steps, alone)
    }

    func testALateHelperSendsTheCallerAloneAndAnOnTimeOneBringsItBack() throws {
        let team = try XCTUnwrap(ck_team_create(1))
        defer { ck_team_destroy(team) }
        let step = makeStep(parts: 2)
        defer { step.deallocate() }

        // A helper's part takes 2 ms, a caller's 0.2 ms (time for the helper to claim the other part):
        // late every time.
        step[0] = 2000
        step[1] = 200
        for _ in 0..<10 { XCTAssertEqual(ck_team_run(team, Self.task, step, 2), 1) }
        XCTAssertEqual(runs(step, parts: 2), [10, 10], "every part ran once a step")
        let late = counts(team)
        XCTAssertEqual(late.steps, 10)
        XCTAssertGreaterThan(late.alone, 0, "three late steps send the caller alone")

        // Parts of nothing, step after step: once the stretch alone (20 ms, doubled after each stretch
        // whose helpers were late again) and the warm-up are over, the helper is on time and takes its
        // parts again: some 10 ms window has no step run alone.
        step[0] = 0
        step[1] = 0
        var stepsSince = 0
        let deadline = Date().addingTimeInterval(10)
        var recovered = false
        while !recovered && Date() < deadline {
            let before = counts(team), windowEnd = Date().addingTimeInterval(0.01)
            while Date() < windowEnd {
                XCTAssertEqual(ck_team_run(team, Self.task, step, 2), 1)
                stepsSince += 1
            }
            recovered = counts(team).alone == before.alone
        }
        XCTAssertTrue(recovered, "the helper never took its parts back")
        XCTAssertEqual(runs(step, parts: 2), [UInt(10 + stepsSince), UInt(10 + stepsSince)], "every part ran once a step")
    }

    /// A helper that is late only now and then (a core it shares with another process, in slices of
    /// milliseconds) is never late three steps in a row, but it costs the caller more in the steps it holds
    /// up than it saves in the others: the caller adds that up over a window and goes alone.
    func testAHelperThatCostsMoreThanItSavesSendsTheCallerAlone() throws {
        let team = try XCTUnwrap(ck_team_create(1))
        defer { ck_team_destroy(team) }
        let step = makeStep(parts: 2)
        defer { step.deallocate() }
        // Parts of 0.3 ms on either thread (the helper saves 0.3 ms a step), but every other step the
        // helper's takes 3 ms (it costs 2.7 ms): late one step in two, never three in a row. Judged step
        // by step, such a helper kept its parts (one step in about 500 ran alone, when timing made three
        // in a row late); judged over 20 ms windows, the caller goes alone for stretches that double while
        // the helper keeps costing time, most of some 400 steps (0.3 s).
        step[1] = 300
        let steps = 400
        for index in 0..<steps {
            step[0] = index % 2 == 0 ? 300 : 3000
            XCTAssertEqual(ck_team_run(team, Self.task, step, 2), 1)
        }
        let alone = counts(team).alone
        XCTAssertGreaterThan(alone, UInt(steps / 3), "a helper that cost more than it saved kept its parts (\(alone) of \(steps) steps alone)")
        XCTAssertEqual(runs(step, parts: 2), [UInt(steps), UInt(steps)], "every part ran once a step")
    }

    /// Helpers that keep coming late make the team contended (callers then split their work finer), and
    /// once they are on time again it clears: not on one late step, and not for ever.
    func testLateHelpersMakeTheTeamContendedUntilTheyAreOnTimeAgain() throws {
        let team = try XCTUnwrap(ck_team_create(1))
        defer { ck_team_destroy(team) }
        let step = makeStep(parts: 2)
        defer { step.deallocate() }
        XCTAssertEqual(ck_team_contended(team), 0, "a new team")

        func runUntil(_ contended: Int32, within seconds: TimeInterval) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                XCTAssertEqual(ck_team_run(team, Self.task, step, 2), 1)
                if ck_team_contended(team) == contended { return true }
            }
            return false
        }
        // Late every time (as above): between the stretches alone, late steps accumulate.
        step[0] = 2000
        step[1] = 200
        XCTAssertEqual(ck_team_run(team, Self.task, step, 2), 1)
        XCTAssertEqual(ck_team_contended(team), 0, "one late step")
        XCTAssertTrue(runUntil(1, within: 5), "late helpers never made the team contended")
        // On time: the late steps leave the last 64 once the stretch alone is over.
        step[0] = 0
        step[1] = 0
        XCTAssertTrue(runUntil(0, within: 10), "on-time helpers never cleared the contention")
    }

    /// A helper slowed down (its core shared with another process) claims fewer parts: the caller takes
    /// the rest instead of waiting for a fixed half.
    func testASlowHelperLeavesTheRemainingPartsToTheCaller() throws {
        let team = try XCTUnwrap(ck_team_create(1))
        defer { ck_team_destroy(team) }
        let parts = 8
        let step = makeStep(parts: parts)
        defer { step.deallocate() }
        step[0] = 20_000  // 20 ms a part on the helper
        step[1] = 200     // 0.2 ms on the caller
        XCTAssertEqual(ck_team_run(team, Self.task, step, Int32(parts)), 1)
        XCTAssertEqual(runs(step, parts: parts), Array(repeating: 1, count: parts), "every part ran once")
        // The helper is busy with its first part for all the time the caller needs for the other seven; a
        // fixed half would have given the caller 4. (More than half, not 7: the caller's own core may be
        // shared too.)
        XCTAssertGreaterThan(step[3], UInt(parts / 2), "the caller ran the parts the slow helper did not claim")
        XCTAssertEqual(ck_team_run(team, Self.task, step, Int32(CK_TEAM_MAX_PARTS) + 1), 0, "too many parts: refused")
    }

    /// Slot context, three words a part, each written by the part alone: its slot, its start and its end
    /// (nanoseconds); a part runs 50 µs.
    private static let slotTask: ck_team_task = { context, part in
        let words = context!.assumingMemoryBound(to: UInt64.self) + 3 * Int(part)
        words[1] = DispatchTime.now().uptimeNanoseconds
        usleep(50)
        words[0] = UInt64(ck_team_thread_slot())
        words[2] = DispatchTime.now().uptimeNanoseconds
    }

    /// Parts may index scratch by `ck_team_thread_slot()`: slots stay below the helpers a step allows
    /// plus one (a team made for 4 threads, used by steps that allow 1, 3 or no helpers), every part runs
    /// (its end after its start), and no two parts run on one slot at once.
    func testSlotsStayBelowTheAllowedHelpersAndAreNeverShared() throws {
        let team = try XCTUnwrap(ck_team_create(3))
        defer { ck_team_destroy(team) }
        XCTAssertEqual(ck_team_thread_slot(), 0, "a thread outside the team")
        let parts = 64
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 3 * parts)
        defer { words.deallocate() }
        var slotsSeen = Set<UInt64>()
        for (round, allowed) in [1, 3, 1, 0, 3].enumerated() {
            words.initialize(repeating: 0, count: 3 * parts)
            XCTAssertEqual(ck_team_run_with(team, Self.slotTask, words, Int32(parts), Int32(allowed)), 1)
            let runs = (0..<parts).map { (slot: words[3 * $0], start: words[3 * $0 + 1], end: words[3 * $0 + 2]) }
            XCTAssertTrue(runs.allSatisfy { $0.start > 0 && $0.end > $0.start }, "round \(round): every part ran")
            let slots = Set(runs.map(\.slot))
            slotsSeen.formUnion(slots)
            XCTAssertTrue(slots.isSubset(of: Set(0...UInt64(allowed))), "round \(round): slots \(slots), \(allowed) helpers allowed")
            for slot in slots {
                let spans = runs.filter { $0.slot == slot }.sorted { $0.start < $1.start }
                for (earlier, later) in zip(spans, spans.dropFirst()) {
                    XCTAssertLessThanOrEqual(earlier.end, later.start, "round \(round): two parts at once on slot \(slot)")
                }
            }
        }
        XCTAssertGreaterThan(slotsSeen.count, 1, "the helpers took parts")
    }

    /// Nested context: team B, then for each of the outer step's 2 parts [the outer slot, whether team B ran
    /// the inner step (on the outer team's helper only)], then each outer part's inner words (3 a part, as
    /// `slotTask` writes them).
    private static let outerTask: ck_team_task = { context, part in
        let words = context!.assumingMemoryBound(to: UInt64.self)
        let inner = OpaquePointer(bitPattern: UInt(words[0]))!
        let record = words + 1 + 2 * Int(part), innerWords = words + 5 + 3 * 64 * Int(part)
        record[0] = UInt64(ck_team_thread_slot())
        // The caller's part waits while the helper's runs team B's step.
        if record[0] == 0 { usleep(3000) } else { record[1] = UInt64(ck_team_run_with(inner, ComputeTeamTests.slotTask, innerWords, 64, 1)) }
    }

    /// A helper of one team that runs a step of another is that step's caller: slot 0 there, so that the
    /// other team's helper (slot 1) never shares a slot with it.
    func testAHelperCallingAnotherTeamRunsItsPartsOnSlotZero() throws {
        let outer = try XCTUnwrap(ck_team_create(1)), inner = try XCTUnwrap(ck_team_create(1))
        defer {
            ck_team_destroy(outer)
            ck_team_destroy(inner)
        }
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 5 + 2 * 3 * 64)
        defer { words.deallocate() }
        var checked = false
        for _ in 0..<200 where !checked {
            words.initialize(repeating: 0, count: 5 + 2 * 3 * 64)
            words[0] = UInt64(UInt(bitPattern: inner))
            XCTAssertEqual(ck_team_run(outer, Self.outerTask, words, 2), 1)
            for part in 0..<2 where words[1 + 2 * part] == 1 && words[2 + 2 * part] == 1 {
                // An inner step run by the outer team's helper.
                let innerWords = words + 5 + 3 * 64 * part
                let runs = (0..<64).map { (slot: innerWords[3 * $0], start: innerWords[3 * $0 + 1], end: innerWords[3 * $0 + 2]) }
                XCTAssertTrue(Set(runs.map(\.slot)).isSubset(of: [0, 1]))
                for slot in Set(runs.map(\.slot)) {
                    let spans = runs.filter { $0.slot == slot }.sorted { $0.start < $1.start }
                    for (earlier, later) in zip(spans, spans.dropFirst()) {
                        XCTAssertLessThanOrEqual(earlier.end, later.start, "two parts at once on slot \(slot)")
                    }
                }
                checked = true
            }
        }
        XCTAssertTrue(checked, "the outer team's helper never ran an inner step")
        XCTAssertEqual(ck_team_thread_slot(), 0)
    }
}
