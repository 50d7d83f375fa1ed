import Foundation

/// One piece of input text: a file (memory-mapped) or everything read from standard input.
final class TextSource: @unchecked Sendable {
    /// The path as the user wrote it, or "-" for standard input.
    let name: String
    let bytes: UnsafeRawBufferPointer
    // Keeps the mapping or the stdin buffer alive as long as `bytes` is used.
    private let storage: AnyObject

    init(name: String, mapped: MappedFile) {
        self.name = name
        self.bytes = mapped.bytes
        self.storage = mapped
    }

    init(name: String, data: Data) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(data.count, 1), alignment: 16)
        data.copyBytes(to: buffer)
        let owner = RawBufferOwner(buffer)
        self.name = name
        self.bytes = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<data.count])
        self.storage = owner
    }
}

private final class RawBufferOwner {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
    deinit { buffer.deallocate() }
}

extension Tokenizer {
    /// Throws the error `TokenFile.prepare` would give for `text` as an input named `name`: empty or
    /// whitespace only, NUL bytes, or invalid UTF-8 (with its line and byte offset).
    public static func checkText(_ text: Data, name: String) throws {
        try text.withUnsafeBytes { try TextInput.check($0, name: name) }
    }
}

/// Turns the --input arguments into a checked list of text files.
enum TextInput {
    /// Expands each path: a file as itself, a folder as its .txt files (sorted by name, not
    /// recursive), "-" as standard input when `allowStandardInput` (otherwise an error naming
    /// `purpose`). Throws for missing paths and for folders without .txt files.
    static func expand(_ paths: [String], allowStandardInput: Bool, purpose: String) throws -> [String] {
        var files: [String] = []
        for path in paths {
            if path == "-" {
                guard allowStandardInput else { throw TokenizerError.standardInputNotSupported(purpose) }
                files.append(path)
                continue
            }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw TokenizerError.missingInput(path)
            }
            guard isDirectory.boolValue else {
                files.append(path)
                continue
            }
            let names: [String]
            do { names = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
                throw TokenizerError.unreadableInput(path, reason: "cannot list the folder")
            }
            let textFiles = names.filter { $0.hasSuffix(".txt") && !$0.hasPrefix(".") }.sorted()
            guard !textFiles.isEmpty else { throw TokenizerError.noTextFiles(path) }
            files += textFiles.map { (path as NSString).appendingPathComponent($0) }
        }
        return files
    }

    /// Refuses a file reached twice (listed twice, or through a folder and a link): its text would count
    /// twice, and its validation bytes would also lie in the training text. Callers check first that no
    /// output overwrites an input, the graver mistake.
    static func refuseDuplicates(_ files: [String]) throws {
        var seen: [String: String] = [:]  // resolved path → the path as first reached
        for file in files where file != "-" {
            let resolved = URL(fileURLWithPath: file).standardizedFileURL.resolvingSymlinksInPath().path
            if let first = seen[resolved] { throw TokenizerError.duplicateInput(file, sameAs: first) }
            seen[resolved] = file
        }
    }

    /// Opens a file (or reads all of standard input for "-") and checks that it is non-empty UTF-8
    /// text without NUL bytes.
    static func open(_ path: String) throws -> TextSource {
        let source: TextSource
        if path == "-" {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            source = TextSource(name: "(standard input)", data: data)
        } else {
            do { source = TextSource(name: path, mapped: try MappedFile(path: path)) } catch {
                switch error {
                case .missing: throw TokenizerError.missingInput(path)
                case .isDirectory: throw TokenizerError.folderInput(path)
                case .unreadable(let reason): throw TokenizerError.unreadableInput(path, reason: reason)
                }
            }
        }
        try check(source.bytes, name: source.name)
        return source
    }

    /// Throws the first problem that makes `bytes` unusable as text.
    static func check(_ bytes: UnsafeRawBufferPointer, name: String) throws {
        guard let base = bytes.baseAddress, bytes.contains(where: { !isASCIIWhitespace($0) }) else {
            throw TokenizerError.emptyInput(name)
        }
        if memchr(base, 0, bytes.count) != nil { throw TokenizerError.binaryInput(name) }
        if let offset = firstInvalidUTF8Offset(bytes) {
            let line = 1 + UnsafeRawBufferPointer(rebasing: bytes[0..<offset]).reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
            throw TokenizerError.invalidUTF8(name, line: line, byteOffset: offset)
        }
    }

    static func isASCIIWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (0x09...0x0D).contains(byte)
    }

    /// The offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629:
    /// no overlong forms, no surrogates, nothing above U+10FFFF), or nil when all of `bytes` is valid.
    static func firstInvalidUTF8Offset(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let count = bytes.count
        var index = 0
        while index < count {
            // Most text is ASCII: skip eight bytes at a time while no high bit is set.
            if index + 8 <= count,
               bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                index += 8
                continue
            }
            let lead = bytes[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            var length = 0
            var secondLow: UInt8 = 0x80
            var secondHigh: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; secondLow = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; secondHigh = 0x9F
            case 0xF0: length = 4; secondLow = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; secondHigh = 0x8F
            default: return index
            }
            guard index + length <= count else { return index }
            let second = bytes[index + 1]
            guard second >= secondLow, second <= secondHigh else { return index }
            for continuation in 2..<length where bytes[index + continuation] & 0xC0 != 0x80 {
                return index
            }
            index += length
        }
        return nil
    }
}
