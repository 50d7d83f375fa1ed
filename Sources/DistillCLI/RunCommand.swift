import ArgumentParser
import Distill
import Foundation

/// `distill run`: a whole experiment from a recipe (or the default recipe on the user's text) into one
/// run directory, ending with the comparison table and the paths of the report and plots.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run an experiment from a recipe: tokenizer, teacher, students, evaluation, samples and a report.",
        discussion: """
            RECIPE is a JSON file (recipes/kjv.json, quick.json, methods.json; the schema is in docs/recipes.md). \
            Without one, --corpus runs the default recipe (recipes/kjv.json) on your own text files or folders; \
            with one, --corpus replaces the recipe's corpus (e.g. `distill run recipes/quick.json --corpus my-texts/` \
            for a two-minute look at your own text), and the run is named after the corpus. \
            Every stage lives under the run directory and is skipped when its outputs exist and its settings and \
            inputs are unchanged: running again continues an interrupted run, adding a student trains only that \
            student. Ctrl-C stops cleanly; the same command continues. The run ends with report.md, report.json \
            and plots/*.svg in the run directory.
            """)

    @Argument(help: "Recipe JSON file.") var recipe: String?
    @Option(parsing: .upToNextOption, help: "Text files or folders (their .txt files): the corpus of the default recipe, or instead of RECIPE's corpus.")
    var corpus: [String] = []
    @Option(help: "Run directory (default: runs/NAME, NAME from the recipe or the first corpus file).") var output: String?
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Every training recomputes each block's gate/up in backward: less memory, about 9% more work, the same results.")
    var recomputeActivations = false

    func validate() throws {
        if recipe == nil && corpus.isEmpty { throw ValidationError("give a RECIPE file (e.g. recipes/quick.json) or --corpus PATH...") }
        try checkThreads(threads)
    }

    func run() throws {
        if let threads { Compute.setThreads(threads) }
        Interrupt.install()
        let loaded: Recipe
        if let recipe {
            loaded = try Recipe.load(recipe, corpus: corpus)
        } else {
            loaded = try Recipe.standard(corpus: corpus)
        }
        let output = self.output ?? "runs/\(loaded.name)"
        var searchRoots = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
        if let recipe { searchRoots.insert(URL(fileURLWithPath: recipe).deletingLastPathComponent(), at: 0) }
        if let executable = Bundle.main.executableURL { searchRoots.append(executable.resolvingSymlinksInPath().deletingLastPathComponent()) }

        let progress = RunProgress()
        defer { progress.finish() }
        let outcome: PipelineOutcome
        do {
            outcome = try Pipeline.run(loaded, output: output, searchRoots: searchRoots, callbacks: PipelineCallbacks(
                log: progress.stage, training: progress.training, trainingLog: progress.trainingLog,
                shouldStop: { Interrupt.isRequested }), recomputeActivations: recomputeActivations)
        } catch let error as RecipeError where recipe == nil {
            // With --corpus the recipe is the built-in one: say where to change it.
            throw DefaultRecipeError(underlying: error)
        }
        progress.finish()
        printSummary(outcome.report, files: outcome.reportFiles)
        if outcome.interrupted {
            FileHandle.standardError.write(Data("interrupted: run the same command again to continue where it stopped\n".utf8))
            throw ExitCode(130)
        }
    }
}

/// A setting of the default recipe that does not suit the user's corpus.
struct DefaultRecipeError: Error, CustomStringConvertible {
    let underlying: RecipeError
    var description: String {
        // A mistake in the corpus itself is the flag's, not the recipe's.
        if underlying.path == "corpus" { return "--corpus: \(underlying.message)" }
        return "\(underlying) (--corpus runs the default recipe, recipes/kjv.json: copy it, set \"corpus\" to your text and change it there)"
    }
}

/// `distill report`: redraws the report of a run directory from what it holds.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Redraw report.md, report.json and the plots of a `distill run` directory, and print its table.")

    @Argument(help: "Run directory made by `distill run`.") var runDirectory: String

    func run() throws {
        var report = try RunReport.build(runDirectory: URL(fileURLWithPath: runDirectory).standardizedFileURL)
        let files = try report.write()
        printSummary(report, files: files)
    }
}

/// The table, then where the report and plots are.
func printSummary(_ report: RunReport, files: [URL]) {
    print()
    print(report.table, terminator: "")
    print()
    let shown = files.map { path in
        path.path.hasPrefix(FileManager.default.currentDirectoryPath + "/")
            ? String(path.path.dropFirst(FileManager.default.currentDirectoryPath.count + 1)) : path.path
    }
    if let first = shown.first { print("report: \(first)") }
    for other in shown.dropFirst() { print("        \(other)") }
}

/// Prints where a run is: stage lines, and each training's progress under its model's name.
final class RunProgress {
    private var printers: [String: ProgressPrinter] = [:]
    private var current: String?

    func stage(_ line: String) {
        Interrupt.noteOtherWork()
        endLiveLine()
        FileHandle.standardError.write(Data("== \(line)\n".utf8))
    }

    func training(_ model: String, _ event: TrainingEvent) {
        // The run says how to continue after an interruption; the printer's line names a flag of `train`.
        if case .interrupted = event {
            Interrupt.note(event)
            return
        }
        if current != model { endLiveLine() }
        current = model
        let printer = printers[model] ?? ProgressPrinter(label: "\(model): ")
        printers[model] = printer
        printer.handle(event)
    }

    func trainingLog(_ model: String, _ line: String) {
        endLiveLine()
        FileHandle.standardError.write(Data("\(model): \(line)\n".utf8))
    }

    func finish() { endLiveLine() }

    private func endLiveLine() {
        if let current { printers[current]?.finish() }
    }
}
