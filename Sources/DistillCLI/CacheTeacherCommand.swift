import ArgumentParser
import Distill
import Foundation

/// `distill cache-teacher`: runs a teacher (or an ensemble) once over a token file and stores its
/// targets, so that students train from the cache without running the teacher.
struct CacheTeacherCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache-teacher",
        abstract: "Run a teacher once over a token file and cache its targets for `student --teacher-cache`.",
        discussion: """
            Per position the cache keeps S samples of the teacher's tempered distribution as (token, count) pairs \
            (--samples, default 16: an unbiased target, Anshumann et al. 2025), or its K most likely tokens with \
            their probabilities and the remaining mass (--top-k). Both splits are scored, with overlapping windows \
            of the teacher's context. An interrupted build (Ctrl-C) continues when the same command is run again \
            and ends byte for byte as an uninterrupted one.
            """)

    @Option(help: "Teacher model directory; repeat it for an ensemble (the mean of the members' tempered distributions).")
    var teacher: [String] = []
    @Option(help: "Ensemble member weights, w1,w2,... (default: equal).") var teacherWeights: String?
    @Option(help: "Token file made by `distill prepare`.") var data: String
    @Option(help: "The cache file to write.") var output: String
    @Option(help: "Softmax temperature τ of the stored distributions (the student trains at this τ).") var temperature: Float
    @Option(help: "Samples per position (default 16).") var samples: Int?
    @Option(help: "Keep the K most likely tokens per position instead of samples.") var topK: Int?
    @Option(help: "The teacher's window (default: its context).") var context: Int?
    @Option(help: "Seed of the samples.") var seed: UInt64 = 1
    @Option(help: "Threads (default: all cores).") var threads: Int?

    func validate() throws {
        if teacher.isEmpty { throw ValidationError("give a --teacher model directory") }
        if samples != nil && topK != nil { throw ValidationError("give --samples or --top-k, not both") }
        if let samples, samples < 1 { throw ValidationError("--samples must be at least 1, got \(samples)") }
        if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1, got \(topK)") }
        if !(temperature.isFinite && temperature > 0) { throw ValidationError("--temperature must be a finite number above 0, got \(temperature)") }
        if let context, context < 1 { throw ValidationError("--context must be at least 1, got \(context)") }
        try checkThreads(threads)
    }

    func run() throws {
        if let threads { Compute.setThreads(threads) }
        var settings = TeacherCacheSettings(temperature: temperature, context: context, seed: seed)
        if let topK { settings.mode = .topK(topK) } else if let samples { settings.mode = .samples(samples) }
        settings.teacherWeights = try Flags.translatingSettings { try teacherWeights.map { try ModelEnsemble.parseWeights($0) } }
        let live = isatty(STDERR_FILENO) == 1
        var lastLine = Date.distantPast
        Interrupt.install()
        // Under mpirun the ranks share the passes and rank 0 writes (and alone prints).
        let group = ProcessGroup.world
        let summary = try Flags.translatingSettings { try TeacherCacheBuilder.build(teachers: teacher, data: data, output: output, settings: settings,
                                                                                    group: group, progress: { progress in
            // A live line on a terminal; otherwise a line every 10 seconds.
            guard live || Date().timeIntervalSince(lastLine) > 10 else { return }
            lastLine = Date()
            let line = String(format: "cached %d / %d positions (%.1f%%)  %.0f tok/s  %@ left", progress.positionsDone, progress.totalPositions,
                              100 * Double(progress.positionsDone) / Double(max(progress.totalPositions, 1)), progress.tokensPerSecond,
                              duration(progress.secondsLeft))
            FileHandle.standardError.write(Data((live ? "\r\u{1B}[2K" + line : line + "\n").utf8))
        }, shouldStop: { Interrupt.isRequested }) }
        if !summary.complete && !group.isRoot { throw ExitCode(130) }
        guard group.isRoot else { return }
        if live { FileHandle.standardError.write(Data("\n".utf8)) }
        if summary.alreadyBuilt {
            print("\(output) is already this cache: \(summary.positions) positions, "
                  + String(format: "%.2f bytes/token", summary.bytesPerToken))
            return
        }
        if !summary.complete {
            FileHandle.standardError.write(Data("interrupted: \(summary.path) keeps the work done; run the same command to continue\n".utf8))
            throw ExitCode(130)
        }
        if summary.resumedFrom > 0 { FileHandle.standardError.write(Data("(continued from position \(summary.resumedFrom))\n".utf8)) }
        print("wrote \(output): \(summary.positions) positions, \(settings.mode), τ \(temperature), \(summary.bytes) bytes "
              + String(format: "(%.2f bytes/token) in %.1f s, %.0f tokens/s", summary.bytesPerToken, summary.seconds, summary.tokensPerSecond))
    }
}
