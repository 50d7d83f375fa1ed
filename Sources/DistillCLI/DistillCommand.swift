import ArgumentParser
import Distill
import Foundation

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
        if let problem = OwnKernels.environmentProblem(ProcessInfo.processInfo.environment) {
            FileHandle.standardError.write(Data("error: \(problem)\n".utf8))
            Foundation.exit(2)
        }
        restartWithTheCPUsBLASKernels()
        Parallel.main(TokenizerCommand.Decode.joiningIDs(Array(CommandLine.arguments.dropFirst())))
    }
}

extension DistillCommand {
    /// When OpenBLAS chose weaker kernels than this CPU runs (an OpenBLAS older than the CPU falls back to
    /// SSE3) and the user set no `OPENBLAS_CORETYPE`, sets it and starts this program again, once, in the
    /// same process (exec keeps the PID, so mpirun and signals see no difference). A user's own
    /// `OPENBLAS_CORETYPE` is always kept.
    static func restartWithTheCPUsBLASKernels() {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, let core = BLASKernels.betterCoreType else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("DISTILL_CHOSE_OPENBLAS_CORETYPE", "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed (no /proc): carry on with the kernels OpenBLAS chose.
    }
}
