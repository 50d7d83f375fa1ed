import Foundation

/// What can be wrong with a teacher cache, its build or its use; every message says what to do.
public enum TeacherCacheError: NamesSettings, Equatable, Sendable {
    /// The cache file does not exist or cannot be read.
    case unreadable(String, reason: String)
    /// The file does not start with the cache's magic bytes.
    case notACache(String)
    /// Written by another version of the format.
    case unsupportedVersion(String, found: UInt32, supported: UInt32)
    /// The header's fields contradict each other or the file's size.
    case corrupt(String, reason: String)
    /// The build stopped before the end (a `.partial` file, or a header that says so).
    case incomplete(String)
    /// The cache was made for other data, another tokenizer, another teacher or temperature.
    case mismatch(String, what: String)
    /// An unfinished build of another cache is in the way.
    case foreignPartial(String)
    /// The unfinished build of these very settings, whose committed part is damaged.
    case damagedPartial(String, reason: String)
    /// The output exists and is not this build's finished cache.
    case outputExists(String)
    /// A teacher whose tokenizer is not the data's: its targets would be in another vocabulary.
    case teacherTokenizer(teacher: String, data: String)

    public func message(naming name: (Setting) -> String) -> String {
        switch self {
        case let .unreadable(path, reason): return "cannot read the teacher cache \(path): \(reason)"
        case .notACache(let path): return "\(path) is not a teacher cache (made by `distill cache-teacher`)"
        case let .unsupportedVersion(path, found, supported):
            return "\(path) is a teacher cache of format version \(found), but this build reads version \(supported): rebuild it with `distill cache-teacher`"
        case let .corrupt(path, reason):
            return "the teacher cache \(path) is damaged (\(reason)): rebuild it with `distill cache-teacher`"
        case .incomplete(let path):
            return "the teacher cache \(path) is unfinished: run the same `distill cache-teacher` command again to complete it"
        case let .mismatch(path, what):
            return "the teacher cache \(path) was made for \(what)"
        case .foreignPartial(let path):
            return "\(path) holds an unfinished build with other settings (teacher, data, temperature, mode or seed): delete it, or rerun with that build's settings"
        case let .damagedPartial(path, reason):
            return "\(path) is an unfinished build of these settings, but damaged (\(reason)): delete it and run the same command again"
        case let .teacherTokenizer(teacher, data):
            return "\(teacher) uses another tokenizer than \(data): a cache holds the teacher's targets in the data's vocabulary, so a "
                + "teacher with its own tokenizer is not cached; distil across tokenizers from the live teacher instead (`distill student` "
                + "with \(name(.teacher)) \(teacher) and \(name(.crossTokenizer)) uld or alm)"
        case .outputExists(let path):
            return "\(path) already exists and is not the finished cache of these settings: choose another \(name(.output)) or delete it"
        }
    }
}
