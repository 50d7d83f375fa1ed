import Foundation

/// Errors of `distill run` and `distill report` that are not a recipe field's.
public enum PipelineError: NamesSettings, Equatable {
    case unreadable(String, String)
    case notARunDirectory(String)
    case otherSchema(path: String, found: Int, expected: Int)
    /// run.json of this recipe schema but another run-directory layout (`format`), from another version.
    case otherLayout(path: String, found: Int, expected: Int)
    /// A directory with no run.json given to `distill report`.
    case noManifest(String)
    case damagedRun(String, String)
    case defaultCorpus(String)
    case notAvailableYet(field: String, kind: String, reason: String)

    public func message(naming name: (Setting) -> String) -> String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case .notARunDirectory(let path):
            return "\(path) is not empty and holds no run.json, so it is not a distill run directory: choose a new or empty \(name(.output))"
        case let .otherSchema(path, found, expected):
            return "\(path) was made by recipe schema \(found) and this distill uses schema \(expected): "
                + "give a new \(name(.output)) (or delete \(path) to start over)"
        case let .otherLayout(path, found, expected):
            return "\(path) was made by a distill with run-directory layout \(found), and this distill uses layout \(expected): "
                + "give a new \(name(.output)) (or delete \(path) to start over)"
        case .noManifest(let path):
            return "\(path) holds no run.json, so it is not a directory that `distill run` made: give a run directory (runs/NAME)"
        case let .damagedRun(path, why): return "\(path) is damaged: \(why); give a new \(name(.output))"
        case .defaultCorpus(let why): return "the default corpus (the King James Bible) is missing: \(why)"
        case let .notAvailableYet(field, kind, reason):
            return "\(field): \(kind) students are not available yet in this distill (\(reason)); remove the student or use kind \"kd\""
        }
    }
}

/// The run directory's manifest, `run.json`: the recipe in normal form, the schema it was made with, the
/// models the report lists and the stages each came from.
public enum RunDirectory {
    public static let manifestFile = "run.json"
    /// The layout of run directories (run.json's `format`); bumped when stages or files move.
    public static let format = 1

    /// Creates the run directory or checks that an existing one is a run of this schema.
    public static func prepare(_ url: URL) throws {
        let manifest = url.appendingPathComponent(manifestFile)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw IOError.notADirectory(url.path) }
            if FileManager.default.fileExists(atPath: manifest.path) {
                _ = try readManifest(url)
            } else {
                let entries = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
                guard entries.filter({ !$0.hasPrefix(".") }).isEmpty else { throw PipelineError.notARunDirectory(url.path) }
            }
        }
        try AtomicFile.ensureDirectory(url)
    }

    /// Reads run.json and refuses one of another schema or layout.
    public static func readManifest(_ url: URL) throws -> JSONNode {
        let manifest = url.appendingPathComponent(manifestFile)
        guard let data = FileManager.default.contents(atPath: manifest.path) else {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
                throw PipelineError.noManifest(url.path)
            }
            throw IOError.missing(url.path)
        }
        guard let value = try? JSONNode.parse(data), case .object = value else {
            throw PipelineError.damagedRun(url.path, "run.json is not valid JSON")
        }
        let version = value["schema_version"]?.intValue ?? 0
        guard version == Recipe.schemaVersion else {
            throw PipelineError.otherSchema(path: url.path, found: version, expected: Recipe.schemaVersion)
        }
        let layout = value["format"]?.intValue ?? 0
        guard layout == format else { throw PipelineError.otherLayout(path: url.path, found: layout, expected: format) }
        return value
    }

    /// Writes run.json.
    static func writeManifest(_ url: URL, _ manifest: JSONNode) throws {
        try AtomicFile.write(Data(manifest.prettyText.utf8), to: url.appendingPathComponent(manifestFile))
    }

    /// The processor, cores and kernel path this process runs on, for the report.
    public static var machineDescription: String {
        var model = "unknown processor"
        if let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
           let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
           let colon = line.firstIndex(of: ":") {
            model = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let memory = Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824
        return "\(model), \(cores) core\(cores == 1 ? "" : "s"), \(String(format: "%.0f", memory)) GB; \(KernelPath.description)"
    }
}

/// The default corpus: `corpora/kjv.txt` of the distill source tree, written by `corpora/kjv.sh` from
/// Debian's bible-kjv when it is not there yet.
public enum DefaultCorpus {
    /// Finds `corpora/kjv.txt` in `searchRoots` or their parents, running `corpora/kjv.sh` when only the
    /// script is found. `log` receives the script's progress line.
    public static func locate(searchRoots: [URL], log: (String) -> Void = { _ in }) throws -> String {
        var script: URL?
        for root in searchRoots {
            var directory = root.standardizedFileURL
            while true {
                let corpora = directory.appendingPathComponent("corpora")
                let text = corpora.appendingPathComponent("kjv.txt")
                if let size = (try? FileManager.default.attributesOfItem(atPath: text.path))?[.size] as? NSNumber, size.intValue > 0 {
                    return text.path
                }
                let candidate = corpora.appendingPathComponent("kjv.sh")
                if script == nil, FileManager.default.fileExists(atPath: candidate.path) { script = candidate }
                let parent = directory.deletingLastPathComponent()
                if parent.path == directory.path { break }
                directory = parent
            }
        }
        guard let script else {
            throw PipelineError.defaultCorpus("corpora/kjv.sh was not found above \(searchRoots.map(\.path).joined(separator: " or ")): run distill from its source tree, or give the corpus's paths")
        }
        log("writing the default corpus with \(script.path)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = [script.path]
        let errors = Pipe(), output = Pipe()
        process.standardError = errors
        process.standardOutput = output
        do { try process.run() } catch { throw PipelineError.defaultCorpus("cannot run \(script.path): \(error)") }
        let said = errors.fileHandleForReading.readDataToEndOfFile()
        _ = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = script.deletingLastPathComponent().appendingPathComponent("kjv.txt")
        guard process.terminationStatus == 0, FileManager.default.fileExists(atPath: text.path) else {
            let reason = String(decoding: said, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? "it failed"
            throw PipelineError.defaultCorpus("\(script.path) said: \(reason) (tools/setup installs bible-kjv)")
        }
        return text.path
    }
}
