import ArgumentParser
import Distill

@main
struct DistillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Knowledge distillation of small Llama-style language models.",
        version: DistillVersion.string,
        subcommands: [TokenizerCommand.self, PrepareCommand.self, TrainCommand.self, StudentCommand.self, MutualCommand.self, CacheTeacherCommand.self, GenerationsCommand.self,
                      SampleCommand.self, EvalCommand.self, ExportCommand.self, BenchCommand.self, RunCommand.self, ReportCommand.self]
    )

    /// Runs the command, under mpirun as one rank of the job (Parallel.swift).
    static func main() {
        Parallel.main(TokenizerCommand.Decode.joiningIDs(Array(CommandLine.arguments.dropFirst())))
    }
}
