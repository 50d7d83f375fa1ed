import ArgumentParser
import Distill
import Foundation

/// Commands that split their work over the ranks of `mpirun -np N distill ...`: training runs
/// data-parallel, `eval` shares the windows. Any other command under mpirun with several ranks would
/// do the same work N times into the same outputs, so it is refused.
protocol ParallelCommand {}
extension TrainCommand: ParallelCommand {}
extension StudentCommand: ParallelCommand {}
extension MutualCommand: ParallelCommand {}
extension EvalCommand: ParallelCommand {}
extension GenerationsCommand: ParallelCommand {}
extension CacheTeacherCommand: ParallelCommand {}

/// How `distill` runs as one rank of an mpirun job. Without mpirun nothing here loads MPI or changes
/// what a command does.
enum Parallel {
    /// Parses `arguments` (the command line without the program's name) and runs the command.
    static func main(_ arguments: [String]) -> Never {
        let launch = ProcessGroup.launch
        // Before MPI is loaded, the launcher's environment tells the rank: rank 0 speaks for the job.
        var rank = launch?.rank ?? 0
        var command: ParsableCommand
        do {
            command = try DistillCommand.parseAsRoot(arguments)
        } catch {
            // Every rank parsed the same arguments and found the same mistake.
            if rank == 0 { DistillCommand.exit(withError: error) }
            awaitRankZero(exitCode: DistillCommand.exitCode(for: error).rawValue)
        }
        var group = ProcessGroup.world
        var joined = false
        do {
            if let launch, launch.size != 1 {
                guard command is ParallelCommand else {
                    let name = type(of: command).configuration.commandName ?? "this command"
                    throw CommandError("distill \(name) runs as one process; under mpirun with several, only train, student, mutual, "
                        + "generations, cache-teacher and eval run (their work is split over the ranks)")
                }
                group = try ProcessGroup.joinWorld()
                joined = true
                rank = group.rank
                // Ranks on one machine share its cores (--threads overrides this in the command).
                Compute.setThreads(group.threadsPerRank)
            }
            try command.run()
            group.finish()
            exit(0)
        } catch let libraryError {
            let error = Flags.userFacing(libraryError)
            if error is ExitCode {
                // A saved interrupt (130): every rank got here at the same step.
                group.finish()
                exit(DistillCommand.exitCode(for: error).rawValue)
            }
            // Before the ranks first met, the others wait for this one's word: give it, rank 0 prints it.
            let metBefore = group.hasMet
            group.shareFailure(DistillCommand.message(for: error))
            if rank == 0 { DistillCommand.exit(withError: error) }
            // Refused before joining the others: every rank found the same mistake, rank 0 reports it.
            if launch != nil && !joined { awaitRankZero(exitCode: 1) }
            // After that, a failure every rank meets alike is rank 0's to report; another is this rank's own
            // (its exit makes mpirun end the job).
            if metBefore && !(error is ParallelError) && !isShared(error) {
                FileHandle.standardError.write(Data("Error: rank \(rank): \(DistillCommand.message(for: error))\n".utf8))
            }
            exit(1)
        }
    }

    /// A rank other than 0 that found, without MPI, the mistake rank 0 reports. Exiting at once with an
    /// error would make mpirun kill rank 0 before its line is written; so it waits for mpirun to end the
    /// job when rank 0 exits, and exits by itself only if that never comes.
    static func awaitRankZero(exitCode: Int32) -> Never {
        if exitCode == 0 { exit(0) }  // --help and the like: nothing to report
        sleep(60)
        exit(exitCode)
    }

    /// Failures that follow from the reduced gradients, so that every rank meets them at the same step.
    static func isShared(_ error: Error) -> Bool {
        if case TrainingError.diverged = error { return true }
        return false
    }
}
