import ArgumentParser
import Distill
import Foundation

extension Divergence: ExpressibleByArgument {
    /// The name alone; β and α come from their own flags (`LogitOptions.settings`).
    public init?(argument: String) { try? self.init(name: argument) }
    public static var allValueStrings: [String] { names }
    public var defaultValueDescription: String { name }
}
extension FeatureDistance: ExpressibleByArgument {}
extension KDSchedule: ExpressibleByArgument {}

/// The one place where library settings meet command-line flags: library errors name a `Setting`, and
/// the message a user reads names the flag they typed.
enum Flags {
    static func name(_ setting: Setting) -> String {
        switch setting {
        case .tauSquared: return "--no-tau-squared"
        default: return "--" + setting.rawValue.replacingOccurrences(of: "_", with: "-")
        }
    }

    /// A role in an `OutputGuard` error: a setting's raw value becomes its flag, and so does any other
    /// one-word role (`input`, `model`), since every path a command reads or writes comes from a flag. A
    /// role in words ("the corpus file") or a recipe field ("teacher.directories[0]") stays as it is.
    static func name(role: String) -> String {
        if role.hasPrefix("--") { return role }  // a command's own role, already a flag
        let oneWord = role.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "-" }
        guard oneWord else { return role }
        return Setting(rawValue: role).map(name) ?? "--" + role.replacingOccurrences(of: "_", with: "-")
    }

    /// A library error as the user of the command line reads it: every setting it names spelt as its flag.
    /// Every error a command ends with passes through here (Parallel.main).
    static func userFacing(_ error: Error) -> Error {
        switch error {
        case let error as NamesSettings: return CommandError(error.message(naming: name))
        case let IOError.wouldOverwrite(output, path, input, inputPath):
            return IOError.wouldOverwrite(output: name(role: output), path: path, input: name(role: input), inputPath: inputPath)
        case let IOError.sharedOutput(first, firstPath, second, secondPath):
            return IOError.sharedOutput(name(role: first), firstPath, name(role: second), secondPath)
        default: return error
        }
    }

    /// Runs a command's work, turning library errors that name a setting into one line that names the flag.
    static func translatingSettings<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw userFacing(error) }
    }

    /// Refuses NaN and infinities for float flags, before any work.
    static func requireFinite(_ values: [(Float?, Setting)]) throws {
        for case let (value?, setting) in values where !value.isFinite {
            throw CommandError("\(name(setting)) must be a finite number (got \(value))")
        }
    }
}

/// A one-line error for the user (ArgumentParser prints "Error: " and the description).
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
