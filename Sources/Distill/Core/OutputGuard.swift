import Foundation

/// Refuses outputs that would overwrite something the user handed us as an input. Paths are compared
/// after making them absolute and resolving symlinks (of the path itself, or of its nearest existing
/// ancestor when it does not exist yet), so `./d/`, `d` and a link to `d` are one path.
public enum OutputGuard {
    /// A path the command reads or writes, with the setting it came from (for the error message).
    public struct Role: Sendable {
        public let setting: String
        public let path: String
        public init(_ setting: String, _ path: String) {
            self.setting = setting
            self.path = path
        }
    }

    /// The absolute path with `.`/`..` removed and every symlink of its existing part resolved.
    public static func canonical(_ path: String) -> URL {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        var missing: [String] = []
        // Resolve the longest prefix that exists; the rest cannot hold links yet.
        while !FileManager.default.fileExists(atPath: url.path), url.pathComponents.count > 1 {
            missing.insert(url.lastPathComponent, at: 0)
            url = url.deletingLastPathComponent()
        }
        url = url.resolvingSymlinksInPath()
        for component in missing { url.appendPathComponent(component) }
        return url.standardizedFileURL
    }

    /// Whether `inner` is `outer` or lies inside it.
    public static func isSameOrInside(_ inner: URL, _ outer: URL) -> Bool {
        let a = inner.pathComponents, b = outer.pathComponents
        return a.count >= b.count && Array(a.prefix(b.count)) == b
    }

    /// Throws when `output` is one of `inputs`, lies inside one (a file written into an input model
    /// directory), or contains one (a directory output that would replace an input file).
    public static func refuseOverlap(output: Role, inputs: [Role]) throws {
        let written = canonical(output.path)
        for input in inputs {
            let read = canonical(input.path)
            if isSameOrInside(written, read) || isSameOrInside(read, written) {
                throw IOError.wouldOverwrite(output: output.setting, path: output.path, input: input.setting, inputPath: input.path)
            }
        }
    }

    /// Throws when two outputs are the same place or one holds the other.
    public static func refuseSharedOutputs(_ outputs: [Role]) throws {
        for (i, first) in outputs.enumerated() {
            for second in outputs[(i + 1)...] {
                let a = canonical(first.path), b = canonical(second.path)
                if isSameOrInside(a, b) || isSameOrInside(b, a) {
                    throw IOError.sharedOutput(first.setting, first.path, second.setting, second.path)
                }
            }
        }
    }
}
