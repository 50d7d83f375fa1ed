import CKernels
import Foundation
import XCTest

/// The team of threads behind every parallel step (`CKernels/team.c`): each part of a step runs exactly
/// once whether the helpers take their parts or the caller runs them all alone, the caller goes alone
/// when a helper keeps coming late, and it takes the helpers back once they are on time again.
final class ComputeTeamTests: XCTestCase {
    /// The parts' context: [runs of part 0, runs of part 1, microseconds part 1 (a helper's) sleeps].
    /// Each part counts its own runs, so no two threads write the same word.
    private static let task: ck_team_task = { context, part in
        let words = context!.assumingMemoryBound(to: Int32.self)
        if part == 1 && words[2] > 0 { usleep(UInt32(words[2])) }
        words[Int(part)] += 1
    }

    private func counts(_ team: OpaquePointer) -> (steps: UInt, alone: UInt) {
        var steps: UInt = 0, alone: UInt = 0
        ck_team_counts(team, &steps, &alone)
        return (steps, alone)
    }

    func testALateHelperSendsTheCallerAloneAndAnOnTimeOneBringsItBack() throws {
        let team = try XCTUnwrap(ck_team_create(1))
        defer { ck_team_destroy(team) }
        let step = UnsafeMutablePointer<Int32>.allocate(capacity: 3)
        step.initialize(repeating: 0, count: 3)
        defer { step.deallocate() }

        // A helper part of 2 ms against a caller's part of nothing: late every time.
        step[2] = 2000
        for _ in 0..<10 { XCTAssertEqual(ck_team_run(team, Self.task, step, 2), 1) }
        XCTAssertEqual([step[0], step[1]], [10, 10], "every part ran once a step")
        let late = counts(team)
        XCTAssertEqual(late.steps, 10)
        XCTAssertGreaterThan(late.alone, 0, "three late steps send the caller alone")

        // Parts of nothing, step after step: once the stretch alone (20 ms, doubled after each stretch
        // whose helpers were late again) and the warm-up are over, the helper is on time and takes its
        // parts again: some 10 ms window has no step run alone.
        step[2] = 0
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
        XCTAssertEqual([step[0], step[1]], [Int32(10 + stepsSince), Int32(10 + stepsSince)], "every part ran once a step")
    }
}
