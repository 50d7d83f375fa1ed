import ArgumentParser
import Distill
import Foundation

/// Prints training progress: one live line on a terminal, plain lines otherwise (logs, CI).
final class ProgressPrinter {
    private let live: Bool
    private var lineOpen = false
    /// Put before every line (tells two models apart in `mutual`).
    private let label: String

    /// `live` false prints plain lines even on a terminal (two models' progress would overwrite each other).
    init(label: String = "", live: Bool = true) {
        self.label = label
        self.live = live && isatty(STDERR_FILENO) != 0
    }

    func handle(_ event: TrainingEvent) {
        Interrupt.note(event)
        switch event {
        case .started:
            break
        case let .step(report):
            let shown = report.terms.present.filter { $0.term != .alignedBytes && $0.term != .perplexity }
                .map { "\($0.term.rawValue) \(format($0.value, 4))" }
            let statistics = report.statistics
            // Under mpirun: the sequences per step over all ranks, and the time share of summing gradients.
            let globalBatch: String = statistics.globalBatch.map { "  global batch \($0)" } ?? ""
            var allreduce: String = statistics.allreduceShare.map { "  allreduce \(format(100 * $0, 1))%" } ?? ""
            if let wait = statistics.allreduceWaitShare { allreduce += " + wait \(format(100 * wait, 1))%" }
            // On-policy runs: the speed of the generation inside the steps and its share of their time.
            var generation = ""
            if let speed = statistics.generationTokensPerSecond, let share = statistics.generationShare {
                generation = "  gen \(Int(speed)) tok/s (\(format(100 * share, 1))% of step)"
            }
            let line = "step \(report.step)/\(report.total)  " + shown.joined(separator: "  ")
                + "  lr \(String(format: "%.2e", report.learningRate))  |g| \(format(Double(report.gradientNorm), 3))" + globalBatch
                + "  \(Int(report.tokensPerSecond)) tok/s" + generation + allreduce + "  \(duration(report.secondsLeft)) left"
            emit(line, transient: report.step < report.total)
        case let .validation(step, terms):
            // A sample of the validation split (the run's fixed batches); `eval` scores all of it.
            // Cross-entropy and perplexity first, then the other terms in their order.
            let first: [LossTerm] = [.ce, .perplexity]
            let ordered = first.compactMap { term in terms[term].map { (term: term, value: $0) } }
                + terms.present.filter { !first.contains($0.term) }
            let parts = ordered.map { "\($0.term.rawValue) \(format($0.value, $0.term == .perplexity ? 2 : 4))" }
            emit((["validation sample @\(step):"] + parts).joined(separator: " "), transient: false)
        case let .checkpoint(step, directory):
            emit("saved step \(step) to \(directory.path)", transient: false)
        case let .interrupted(step):
            emit("interrupted: saved step \(step); continue with --resume", transient: false)
        }
    }

    /// Ends a live line so that later output starts on a fresh line.
    func finish() {
        if lineOpen { FileHandle.standardError.write(Data("\n".utf8)); lineOpen = false }
    }

    private func emit(_ unlabelled: String, transient: Bool) {
        let text = label + unlabelled
        if live {
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + text + (transient ? "" : "\n")).utf8))
            lineOpen = transient
        } else {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
    }
}

func format(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }

func duration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
}

/// Ctrl-C or SIGTERM asks the training loop to save and stop at its next safe point (the end of the
/// current step); a second signal exits at once. When no step has finished since the last save (a first
/// step that takes minutes, at a huge context), there is nothing to save and waiting for the step would
/// ignore the signal: the process exits at once, the last checkpoint whole. Installed before any work, so
/// a signal during setup or validation is never lost to the default handler. A save on a full disk (or
/// over `ulimit -f`) fails with an error instead of killing the process with SIGXFSZ.
enum Interrupt {
    nonisolated(unsafe) private static var requested: sig_atomic_t = 0
    /// 1 while a training loop runs with nothing unsaved: started or just saved, no step since.
    nonisolated(unsafe) private static var nothingUnsaved: sig_atomic_t = 0

    /// The line the handler writes, made before any signal: a handler may only call write(2) and _exit.
    nonisolated(unsafe) private static var stopNote: UnsafeMutablePointer<CChar>? = nil

    static func install() {
        if stopNote == nil { stopNote = strdup("interrupted: no step finished since the last save, so there is nothing new to save; stopped\n") }
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber) { _ in
                if Interrupt.requested != 0 { _exit(130) }
                Interrupt.requested = 1
                if Interrupt.nothingUnsaved != 0 {
                    if let note = Interrupt.stopNote { _ = write(STDERR_FILENO, note, strlen(note)) }
                    _exit(130)
                }
            }
        }
        signal(SIGXFSZ, SIG_IGN)
    }

    /// Follows a training loop's events: whether stopping now would lose a step.
    static func note(_ event: TrainingEvent) {
        switch event {
        case .started, .checkpoint, .interrupted: nothingUnsaved = 1
        case .step: nothingUnsaved = 0
        case .validation: break
        }
    }

    /// Work other than a training loop begins (a stage of `distill run`): a signal waits for its safe point.
    static func noteOtherWork() { nothingUnsaved = 0 }

    static var isRequested: Bool { requested != 0 }

    /// Exit status 130 after an interrupted run has saved, as shells expect after Ctrl-C.
    static func exitIfInterrupted(_ outcomes: [TrainingOutcome]) throws {
        if outcomes.contains(where: \.interrupted) || isRequested { throw ExitCode(130) }
    }
}
