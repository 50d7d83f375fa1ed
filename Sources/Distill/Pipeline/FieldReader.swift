import Foundation

/// A mistake in a recipe: the JSON path of the field (`students[2].kind`) and what is wrong with it,
/// with what to do where there is something to say.
public struct RecipeError: Error, CustomStringConvertible, Equatable {
    /// Where in the recipe, e.g. `students[2].logits.temperature`; empty for the file as a whole.
    public let path: String
    public let message: String

    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Reads one JSON object of a recipe field by field. Every field asked for is remembered, so that
/// `finish()` can refuse the fields nobody asked for (a misspelt `"temprature"` must not silently
/// fall back to a default) and list the ones that exist.
struct FieldReader {
    /// The JSON path of this object, e.g. `students[1]` (empty at the top level).
    let path: String
    private let pairs: [(String, JSONNode)]
    private var known: [String] = []

    init(_ value: JSONNode, path: String) throws {
        guard case .object(let pairs) = value else {
            throw RecipeError(path.isEmpty ? "recipe" : path, "expected an object ({...}), found \(value.kind)")
        }
        self.path = path
        self.pairs = pairs
    }

    /// The path of a field of this object.
    func path(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Whether the object has `key` (null counts as absent).
    func has(_ key: String) -> Bool {
        if let value = pairs.first(where: { $0.0 == key })?.1, value != .null { return true }
        return false
    }

    /// The raw value of `key`, or nil when absent or null.
    mutating func value(_ key: String) -> JSONNode? {
        if !known.contains(key) { known.append(key) }
        guard let value = pairs.first(where: { $0.0 == key })?.1, value != .null else { return nil }
        return value
    }

    mutating func required(_ key: String, _ what: String) throws -> JSONNode {
        guard let value = value(key) else { throw RecipeError(path(key), "missing: give \(what)") }
        return value
    }

    mutating func string(_ key: String) throws -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let text) = value else { throw RecipeError(path(key), "expected a string, found \(value.kind)") }
        return text
    }

    /// An integer within `range` (a number like 3.0 is accepted; 3.5 is not).
    mutating func integer(_ key: String, in range: ClosedRange<Int64> = Int64.min...Int64.max) throws -> Int64? {
        guard let value = value(key) else { return nil }
        let number: Int64
        switch value {
        case .integer(let integer): number = integer
        case .number(let real) where real == real.rounded() && abs(real) < 9e18: number = Int64(real)
        case .number(let real) where real.isFinite && real == real.rounded():
            // An integer written with an exponent (1e30), beyond any count a recipe holds.
            throw RecipeError(path(key), real > 0 ? "is too large (at most \(range.upperBound)), got \(value)" : "must be \(RecipeError.describe(range)), got \(value)")
        default: throw RecipeError(path(key), "expected an integer, found \(value.kind)\(value.kind == "a number" ? " (\(value))" : "")")
        }
        if number > range.upperBound { throw RecipeError(path(key), "is too large (at most \(range.upperBound)), got \(number)") }
        guard range.contains(number) else { throw RecipeError(path(key), "must be \(RecipeError.describe(range)), got \(number)") }
        return number
    }

    mutating func int(_ key: String, in range: ClosedRange<Int64> = Int64(Int32.min)...Int64(Int32.max)) throws -> Int? {
        try integer(key, in: range).map { Int($0) }
    }

    mutating func number(_ key: String) throws -> Double? {
        guard let value = value(key) else { return nil }
        switch value {
        case .integer(let integer): return Double(integer)
        case .number(let real): return real
        default: throw RecipeError(path(key), "expected a number, found \(value.kind)")
        }
    }

    /// A number as a Float: one beyond Float's range is refused here ("too large"), not turned into inf.
    mutating func float(_ key: String) throws -> Float? {
        guard let number = try number(key) else { return nil }
        guard abs(number) <= Double(Float.greatestFiniteMagnitude) else {
            throw RecipeError(path(key), "is too large (at most \(Float.greatestFiniteMagnitude) in size), got \(number)")
        }
        return Float(number)
    }

    mutating func bool(_ key: String) throws -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .bool(let flag) = value else { throw RecipeError(path(key), "expected true or false, found \(value.kind)") }
        return flag
    }

    /// A string or an array of strings, as an array.
    mutating func strings(_ key: String) throws -> [String]? {
        guard let value = value(key) else { return nil }
        switch value {
        case .string(let text): return [text]
        case .array(let values):
            return try values.enumerated().map { index, element in
                guard case .string(let text) = element else {
                    throw RecipeError("\(path(key))[\(index)]", "expected a string, found \(element.kind)")
                }
                return text
            }
        default: throw RecipeError(path(key), "expected a string or an array of strings, found \(value.kind)")
        }
    }

    mutating func object(_ key: String) throws -> FieldReader? {
        guard let value = value(key) else { return nil }
        return try FieldReader(value, path: path(key))
    }

    mutating func array(_ key: String) throws -> [JSONNode]? {
        guard let value = value(key) else { return nil }
        guard case .array(let values) = value else { throw RecipeError(path(key), "expected an array ([...]), found \(value.kind)") }
        return values
    }

    /// Refuses any field that was not asked for, naming the closest known one.
    func finish() throws {
        for (key, _) in pairs where !known.contains(key) {
            let suggestion = known.min { editDistance($0, key) < editDistance($1, key) }
            let hint = suggestion.map { editDistance($0, key) <= max(2, key.count / 3) ? "; did you mean \"\($0)\"?" : "" } ?? ""
            throw RecipeError(path(key), "unknown field\(hint) (fields here: \(known.joined(separator: ", ")))")
        }
    }
}

extension RecipeError {
    static func describe(_ range: ClosedRange<Int64>) -> String {
        if range.upperBound >= Int64(Int32.max) { return "at least \(range.lowerBound)" }
        return "between \(range.lowerBound) and \(range.upperBound)"
    }
}

/// Levenshtein distance, for "did you mean" hints.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    guard !a.isEmpty else { return b.count }
    guard !b.isEmpty else { return a.count }
    var previous = Array(0...b.count), current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
