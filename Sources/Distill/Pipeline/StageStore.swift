import Foundation

/// The records of a run's stages, one JSON file per stage in `RUN/stages/`. A record holds the stage's
/// key (a hash of its settings and of its inputs' keys), whether it finished, and what it measured.
/// A stage whose record is finished under the same key, and whose outputs exist, is skipped; a stage
/// that started under the same key and did not finish is resumed; any other key means its settings or
/// inputs changed, so it runs again from scratch.
public final class StageStore {
    /// `RUN/stages`.
    public let directory: URL

    public init(runDirectory: URL) throws {
        directory = runDirectory.appendingPathComponent("stages")
        try AtomicFile.ensureDirectory(directory)
    }

    /// What a record says about a stage.
    public enum Status: Equatable {
        /// No record, or one made under another key.
        case stale
        /// Started under this key and not finished (interrupted).
        case started
        /// Finished under this key.
        case finished
    }

    /// The key of a stage: FNV-1a 64 of the canonical text of its name, settings and inputs' keys.
    public static func key(stage: String, settings: JSONNode, inputs: [(String, String)]) -> String {
        let text = JSONNode.object([
            ("stage", .string(stage)), ("settings", settings),
            ("inputs", .object(inputs.map { ($0.0, .string($0.1)) })),
        ]).canonicalText
        return hex(fnv1a64(Data(text.utf8)))
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    func url(_ stage: String) -> URL { directory.appendingPathComponent(stage + ".json") }

    /// The stage's record, or nil when it has none (or an unreadable one, which counts as none).
    public func record(_ stage: String) -> JSONNode? {
        guard let data = FileManager.default.contents(atPath: url(stage).path) else { return nil }
        return try? JSONNode.parse(data)
    }

    public func status(_ stage: String, key: String) -> Status {
        guard let record = record(stage), record["key"] == .string(key) else { return .stale }
        return record["status"] == .string("finished") ? .finished : .started
    }

    /// The result a finished stage recorded.
    public func result(_ stage: String) -> JSONNode? { record(stage)?["result"] }

    /// Records that the stage started under `key`.
    public func begin(_ stage: String, key: String, settings: JSONNode, inputs: [(String, String)]) throws {
        try write(stage, key: key, status: "started", settings: settings, inputs: inputs, result: .null)
    }

    /// Records that the stage finished under `key` with `result`, and the size and hash of each of its
    /// `outputs` (files), so that a later run skips it only while they are whole.
    public func finish(_ stage: String, key: String, settings: JSONNode, inputs: [(String, String)], result: JSONNode,
                       outputs: [String] = []) throws {
        let fingerprints = try outputs.map { path in (path, try Fingerprint.sizeAndContents(of: path)) }
        try write(stage, key: key, status: "finished", settings: settings, inputs: inputs, result: result,
                  outputs: .object(fingerprints.map { ($0.0, .string($0.1)) }))
    }

    /// Whether every one of `outputs` exists and, where the stage's record holds its size and hash, still
    /// has them: a truncated or edited output makes the stage run again instead of being reported as up
    /// to date. (Records written before outputs were fingerprinted are checked for existence only.)
    public func outputsAreWhole(_ stage: String, _ outputs: [String]) -> Bool {
        let recorded = record(stage)?["outputs"]
        return outputs.allSatisfy { path in
            guard FileManager.default.fileExists(atPath: path) else { return false }
            guard case .string(let fingerprint)? = recorded?[path] else { return true }
            return (try? Fingerprint.sizeAndContents(of: path)) == fingerprint
        }
    }

    private func write(_ stage: String, key: String, status: String, settings: JSONNode, inputs: [(String, String)],
                       result: JSONNode, outputs: JSONNode = .object([])) throws {
        let record = JSONNode.object([
            ("stage", .string(stage)), ("key", .string(key)), ("status", .string(status)),
            ("time", .string(ISO8601DateFormatter().string(from: Date()))),
            ("inputs", .object(inputs.map { ($0.0, .string($0.1)) })), ("settings", settings), ("result", result),
            ("outputs", outputs),
        ])
        try AtomicFile.write(Data(record.prettyText.utf8), to: url(stage))
    }
}

/// Fingerprints of files the run reads but does not make.
enum Fingerprint {
    /// FNV-1a 64 of a file's bytes, as hex; the file is memory-mapped, so large corpora cost no memory.
    static func contents(of path: String) throws -> String {
        let mapped: MappedFile
        do { mapped = try MappedFile(path: path) } catch {
            throw PipelineError.unreadable(path, error.reason)
        }
        return StageStore.hex(fnv1a64(mapped.bytes))
    }

    /// "BYTES:HASH" of a file: its size and FNV-1a 64, to tell a whole output from a truncated one.
    static func sizeAndContents(of path: String) throws -> String {
        let mapped: MappedFile
        do { mapped = try MappedFile(path: path) } catch { throw PipelineError.unreadable(path, error.reason) }
        return "\(mapped.bytes.count):\(StageStore.hex(fnv1a64(mapped.bytes)))"
    }

    /// A model directory that is not ours to read whole (it may hold gigabytes): its config and
    /// tokenizer by content, every other top-level file by name, size and modification time.
    static func modelDirectory(_ path: String) throws -> String {
        let directory = URL(fileURLWithPath: path)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path))?.filter { !$0.hasPrefix(".") }.sorted() ?? []
        var parts: [String] = []
        for name in names {
            let file = directory.appendingPathComponent(name).path
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            if name == "config.json" || name == "tokenizer.model" {
                parts.append("\(name)=\(try contents(of: file))")
            } else {
                let attributes = try? FileManager.default.attributesOfItem(atPath: file)
                let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
                let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                parts.append("\(name):\(size):\(modified)")
            }
        }
        return StageStore.hex(fnv1a64(Data(parts.joined(separator: "\n").utf8)))
    }
}
