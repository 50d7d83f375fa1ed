import CKernels

/// The caller and one helper thread sharing the products of a decoding step. A step is a string of
/// matrix–vector products of a few microseconds each: too short to wake a sleeping thread for, so the
/// helper spins between them (`ck_team_run`) and sleeps only when decoding pauses. While a team is
/// active (`Compute.withDecodeTeam`), one-row products split their output rows between the two
/// threads and cached attention splits its heads; each output is still computed by one thread, so the
/// result is the same as on one thread.
final class DecodeTeam {
    private let team: OpaquePointer

    init?() {
        guard let team = ck_team_create() else { return nil }
        self.team = team
    }

    deinit { ck_team_destroy(team) }

    /// Runs body(0) on this thread and body(1) on the helper; returns when both have finished.
    func run(_ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { pointer in
                ck_team_run(team, { context, part in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(part))
                }, pointer)
            }
        }
    }
}

extension Compute {
    /// The team of the decoding loop running now, if any.
    nonisolated(unsafe) static var decodeTeam: DecodeTeam?

    /// Runs `body` (a decoding loop) with a decode team when there are at least two threads.
    static func withDecodeTeam<R>(_ body: () throws -> R) rethrows -> R {
        guard threads >= 2, decodeTeam == nil, let team = DecodeTeam() else { return try body() }
        decodeTeam = team
        defer { decodeTeam = nil }
        return try body()
    }
}
