import Foundation

/// A JSON document as a tree, kept exactly as written: integers stay integers (seeds beyond 2⁵³
/// survive), objects keep their key order, and duplicate keys are an error. Recipes are read through
/// it so that every mistake can be reported with its JSON path, and stage settings are hashed from its
/// canonical text, which does not depend on how a file happened to be formatted. A `config.json`
/// decodes into it too (`Decodable`, key order lost), so that its fields are checked before use.
public indirect enum JSONNode: Equatable, Sendable, CustomStringConvertible, Decodable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONNode])
    /// Key–value pairs in the order written.
    case object([(String, JSONNode)])

    public static func == (lhs: JSONNode, rhs: JSONNode) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            // Key order is formatting, not meaning.
            return a.count == b.count && a.allSatisfy { key, value in b.first { $0.0 == key }?.1 == value }
        default: return false
        }
    }

    /// The value of `key` in an object (nil for other values or a missing key).
    public subscript(key: String) -> JSONNode? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.0 == key }?.1
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int64.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONNode].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONNode].self).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }) }
    }

    public var stringValue: String? { if case .string(let text) = self { return text } else { return nil } }

    /// A whole number (1024 or 1024.0), if it is one that fits an `Int`.
    public var intValue: Int? {
        switch self {
        case .integer(let value): return Int(exactly: value)
        case .number(let value): return value == value.rounded() && abs(value) < 0x1p62 ? Int(value) : nil
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .number(let value): return value
        default: return nil
        }
    }

    public var arrayValue: [JSONNode]? { if case .array(let values) = self { return values } else { return nil } }

    /// The value as an error message quotes it: strings bare at the top level (`gelu`), quoted inside
    /// lists and objects; whole numbers without `.0`.
    public var plainText: String { plain(quoted: false) }

    private func plain(quoted: Bool) -> String {
        switch self {
        case .null: return "null"
        case .bool(let value): return String(value)
        case .integer(let value): return String(value)
        case .number(let value): return intValue.map(String.init) ?? String(value)
        case .string(let value): return quoted ? "\"\(value)\"" : value
        case .array(let values): return "[" + values.map { $0.plain(quoted: true) }.joined(separator: ", ") + "]"
        case .object(let pairs):
            return "{" + pairs.sorted { $0.0 < $1.0 }.map { "\"\($0.0)\": \($0.1.plain(quoted: true))" }.joined(separator: ", ") + "}"
        }
    }

    /// What kind of value this is, in words, for error messages.
    public var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer: return "an integer"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// Compact JSON text with the keys of every object sorted: the same value always gives the same text.
    public var canonicalText: String {
        var text = ""
        write(to: &text, indent: nil, sortKeys: true, level: 0)
        return text
    }

    /// Indented JSON text, keys in their order, for files a person reads.
    public var prettyText: String {
        var text = ""
        write(to: &text, indent: "  ", sortKeys: false, level: 0)
        return text + "\n"
    }

    public var description: String { canonicalText }

    private func write(to text: inout String, indent: String?, sortKeys: Bool, level: Int) {
        let newline = indent.map { "\n" + String(repeating: $0, count: level + 1) } ?? ""
        let closing = indent.map { "\n" + String(repeating: $0, count: level) } ?? ""
        switch self {
        case .null: text += "null"
        case .bool(let value): text += value ? "true" : "false"
        case .integer(let value): text += String(value)
        case .number(let value): text += JSONNode.format(value)
        case .string(let value): text += JSONNode.quote(value)
        case .array(let values):
            if values.isEmpty { text += "[]"; return }
            text += "["
            for (index, value) in values.enumerated() {
                if index > 0 { text += "," }
                text += newline
                value.write(to: &text, indent: indent, sortKeys: sortKeys, level: level + 1)
            }
            text += closing + "]"
        case .object(let pairs):
            if pairs.isEmpty { text += "{}"; return }
            let ordered = sortKeys ? pairs.sorted { $0.0 < $1.0 } : pairs
            text += "{"
            for (index, (key, value)) in ordered.enumerated() {
                if index > 0 { text += "," }
                text += newline + JSONNode.quote(key) + (indent == nil ? ":" : ": ")
                value.write(to: &text, indent: indent, sortKeys: sortKeys, level: level + 1)
            }
            text += closing + "}"
        }
    }

    /// The shortest text that reads back as the same Double; non-finite values (not JSON) as null.
    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        if value == value.rounded(), abs(value) < 1e15 { return String(format: "%.1f", value) }
        return "\(value)"
    }

    static func quote(_ string: String) -> String {
        var text = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            default:
                if scalar.value < 0x20 { text += String(format: "\\u%04x", scalar.value) } else { text.unicodeScalars.append(scalar) }
            }
        }
        return text + "\""
    }
}

// MARK: reading

extension JSONNode {
    /// Parses JSON text. Errors name the line and column.
    public static func parse(_ data: Data) throws -> JSONNode {
        var parser = JSONParser(bytes: [UInt8](data))
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.atEnd else { throw parser.failure("unexpected text after the JSON value") }
        return value
    }

    public static func parse(_ text: String) throws -> JSONNode { try parse(Data(text.utf8)) }

    /// The value as Foundation objects, for JSONSerialization.
    public var foundationObject: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let value): return value
        case .integer(let value): return value
        case .number(let value): return value
        case .string(let value): return value
        case .array(let values): return values.map(\.foundationObject)
        case .object(let pairs): return Dictionary(pairs.map { ($0.0, $0.1.foundationObject) }, uniquingKeysWith: { $1 })
        }
    }
}

/// Why JSON text could not be read: the position and what was wrong.
public struct JSONSyntaxError: Error, CustomStringConvertible, Equatable {
    public let line: Int
    public let column: Int
    public let reason: String
    public var description: String { "line \(line), column \(column): \(reason)" }
}

/// A recursive-descent reader of RFC 8259 JSON over UTF-8 bytes.
private struct JSONParser {
    let bytes: [UInt8]
    var offset = 0

    init(bytes: [UInt8]) {
        // A UTF-8 byte-order mark is not JSON but editors write it; skip it.
        self.bytes = bytes
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { offset = 3 }
    }

    var atEnd: Bool { offset >= bytes.count }

    func failure(_ reason: String) -> JSONSyntaxError {
        var line = 1, column = 1
        for byte in bytes[0..<min(offset, bytes.count)] {
            if byte == 0x0A { line += 1; column = 1 } else if byte & 0xC0 != 0x80 { column += 1 }
        }
        return JSONSyntaxError(line: line, column: column, reason: reason)
    }

    mutating func skipWhitespace() {
        while offset < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
    }

    mutating func value(depth: Int) throws -> JSONNode {
        guard depth < 512 else { throw failure("nested too deeply") }
        guard offset < bytes.count else { throw failure("the text ends where a value should be") }
        switch bytes[offset] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default:
            throw failure("expected a value (object, array, string, number, true, false or null)")
        }
    }

    mutating func literal(_ word: String) throws {
        let expected = Array(word.utf8)
        guard bytes.count - offset >= expected.count, Array(bytes[offset..<offset + expected.count]) == expected else {
            throw failure("expected a value (object, array, string, number, true, false or null)")
        }
        offset += expected.count
    }

    mutating func expect(_ character: Character, _ context: String) throws {
        skipWhitespace()
        guard offset < bytes.count, bytes[offset] == character.asciiValue! else { throw failure("expected '\(character)' \(context)") }
        offset += 1
    }

    mutating func object(depth: Int) throws -> JSONNode {
        offset += 1
        var pairs: [(String, JSONNode)] = []
        skipWhitespace()
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") { offset += 1; return .object([]) }
        while true {
            skipWhitespace()
            guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else { throw failure("expected a key in double quotes") }
            let keyStart = offset
            let key = try string()
            if pairs.contains(where: { $0.0 == key }) {
                offset = keyStart
                throw failure("the key \"\(key)\" appears twice in one object")
            }
            try expect(":", "after the key \"\(key)\"")
            skipWhitespace()
            pairs.append((key, try value(depth: depth + 1)))
            skipWhitespace()
            guard offset < bytes.count else { throw failure("the text ends inside an object: a '}' is missing") }
            if bytes[offset] == UInt8(ascii: ",") { offset += 1; continue }
            if bytes[offset] == UInt8(ascii: "}") { offset += 1; return .object(pairs) }
            throw failure("expected ',' or '}' after the value of \"\(key)\"")
        }
    }

    mutating func array(depth: Int) throws -> JSONNode {
        offset += 1
        var values: [JSONNode] = []
        skipWhitespace()
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "]") { offset += 1; return .array([]) }
        while true {
            skipWhitespace()
            values.append(try value(depth: depth + 1))
            skipWhitespace()
            guard offset < bytes.count else { throw failure("the text ends inside an array: a ']' is missing") }
            if bytes[offset] == UInt8(ascii: ",") { offset += 1; continue }
            if bytes[offset] == UInt8(ascii: "]") { offset += 1; return .array(values) }
            throw failure("expected ',' or ']' in an array")
        }
    }

    mutating func string() throws -> String {
        offset += 1
        var scalars = String.UnicodeScalarView()
        var run = [UInt8]()
        func flush() throws {
            guard !run.isEmpty else { return }
            guard let text = String(validating: run, as: UTF8.self) else { throw failure("a string is not valid UTF-8") }
            scalars.append(contentsOf: text.unicodeScalars)
            run.removeAll(keepingCapacity: true)
        }
        while true {
            guard offset < bytes.count else { throw failure("the text ends inside a string: a '\"' is missing") }
            let byte = bytes[offset]
            if byte == UInt8(ascii: "\"") { offset += 1; try flush(); return String(scalars) }
            if byte < 0x20 { throw failure("a string holds a control character (a raw line break?); write it as \\n") }
            if byte != UInt8(ascii: "\\") { run.append(byte); offset += 1; continue }
            try flush()
            offset += 1
            guard offset < bytes.count else { throw failure("the text ends inside a string") }
            let escape = bytes[offset]
            offset += 1
            switch escape {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xD800..<0xDC00).contains(code) {
                    // A surrogate pair spells one scalar beyond the basic plane.
                    guard offset + 1 < bytes.count, bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u") else {
                        throw failure("a \\u escape is half of a surrogate pair")
                    }
                    offset += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw failure("a \\u escape is half of a surrogate pair") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(code) else { throw failure("a \\u escape is not a character") }
                scalars.append(scalar)
            default:
                offset -= 1
                throw failure("unknown escape in a string")
            }
        }
    }

    mutating func hex4() throws -> UInt32 {
        guard offset + 4 <= bytes.count, let code = UInt32(String(decoding: bytes[offset..<offset + 4], as: UTF8.self), radix: 16) else {
            throw failure("a \\u escape needs four hex digits")
        }
        offset += 4
        return code
    }

    mutating func number() throws -> JSONNode {
        let start = offset
        var isInteger = true
        if bytes[offset] == UInt8(ascii: "-") { offset += 1 }
        func digits() -> Int {
            let first = offset
            while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) { offset += 1 }
            return offset - first
        }
        let integerDigits = digits()
        guard integerDigits > 0 else { throw failure("a number needs digits") }
        if integerDigits > 1, bytes[offset - integerDigits] == UInt8(ascii: "0") { throw failure("a number cannot start with 0") }
        if offset < bytes.count, bytes[offset] == UInt8(ascii: ".") {
            offset += 1
            isInteger = false
            guard digits() > 0 else { throw failure("a number needs digits after '.'") }
        }
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "e") || bytes[offset] == UInt8(ascii: "E") {
            offset += 1
            isInteger = false
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "+") || bytes[offset] == UInt8(ascii: "-") { offset += 1 }
            guard digits() > 0 else { throw failure("a number needs digits in its exponent") }
        }
        let text = String(decoding: bytes[start..<offset], as: UTF8.self)
        if isInteger, let value = Int64(text) { return .integer(value) }
        guard let value = Double(text), value.isFinite else { throw failure("the number \(text) is out of range") }
        return .number(value)
    }
}
