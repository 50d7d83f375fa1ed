import CSentencePiece
import Foundation

/// The kind of a vocabulary entry.
public enum PieceType: String, Sendable, CaseIterable {
    /// An ordinary learned piece.
    case normal
    /// The unknown-token piece (`<unk>`).
    case unknown
    /// A control symbol such as `<s>` or `</s>`; it decodes to nothing.
    case control
    /// A piece the user asked to keep whole.
    case userDefined
    /// One of the 256 byte pieces (`<0x41>`) that spell out characters the vocabulary lacks.
    case byte
    /// A reserved, unused entry.
    case unused
}

/// A SentencePiece tokenizer loaded from a `.model` file. Encoding and decoding are safe to call from
/// several threads at once (SentencePiece's processor is read-only once loaded).
public final class Tokenizer: @unchecked Sendable {
    /// The model file this tokenizer was loaded from.
    public let modelPath: String
    /// FNV-1a 64 of the model file's bytes: token files record it so that data and models made with
    /// different tokenizers are not mixed up.
    public let modelHash: UInt64
    /// Number of entries in the vocabulary; every id is in 0..<vocabSize.
    public let vocabSize: Int
    /// Beginning-of-sequence id, or -1 when the model has none.
    public let bosId: Int32
    /// End-of-sequence id, or -1 when the model has none.
    public let eosId: Int32
    /// Padding id, or -1 when the model has none (the default for models trained here).
    public let padId: Int32
    /// Unknown-token id.
    public let unkId: Int32
    /// Whether SentencePiece puts a space before each text it encodes (a Hugging Face Llama tokenizer
    /// does; ours never): that space is in no text, so byte offsets must skip it.
    public let addsDummyPrefix: Bool

    private let processor: OpaquePointer
    /// The byte pieces of U+2581 ("▁", E2 96 81), which SentencePiece reads as its space symbol and
    /// would decode as a space: `encode` spells the character with them instead, so it survives the
    /// round trip. Nil when the vocabulary lacks byte pieces, or when encoding adds a dummy prefix
    /// (a model trained elsewhere), where text is encoded as SentencePiece itself does.
    private let spaceSymbolPieces: [Int32]?

    /// Loads a SentencePiece model file.
    public init(modelPath: String) throws {
        guard FileManager.default.fileExists(atPath: modelPath) else { throw TokenizerError.missingModel(modelPath) }
        let mapped: MappedFile
        do { mapped = try MappedFile(path: modelPath) } catch {
            switch error {
            case .missing: throw TokenizerError.missingModel(modelPath)
            case .isDirectory: throw TokenizerError.invalidModel(modelPath, reason: "it is a folder")
            case .unreadable(let reason): throw TokenizerError.invalidModel(modelPath, reason: reason)
            }
        }
        var error: UnsafeMutablePointer<CChar>?
        guard let processor = spm_processor_load(modelPath, &error) else {
            let reason = Tokenizer.readableReason(Tokenizer.takeMessage(error), fallback: "it does not parse")
            throw TokenizerError.invalidModel(modelPath, reason: reason)
        }
        self.processor = processor
        self.modelPath = modelPath
        self.modelHash = fnv1a64(mapped.bytes)
        self.vocabSize = Int(spm_vocab_size(processor))
        self.bosId = spm_bos_id(processor)
        self.eosId = spm_eos_id(processor)
        self.padId = spm_pad_id(processor)
        self.unkId = spm_unk_id(processor)
        self.addsDummyPrefix = spm_adds_dummy_prefix(processor) != 0
        spaceSymbolPieces = spm_adds_dummy_prefix(processor) != 0 ? nil : Tokenizer.bytePieces(of: [0xE2, 0x96, 0x81], processor: processor)
    }

    /// The ids of the byte pieces `<0xHH>` of `bytes`, or nil when one is missing.
    private static func bytePieces(of bytes: [UInt8], processor: OpaquePointer) -> [Int32]? {
        var idByByte: [UInt8: Int32] = [:]
        for id in 0..<spm_vocab_size(processor) where spm_piece_type_of(processor, id) == Int32(SPM_PIECE_BYTE.rawValue) {
            var length = 0
            guard let piece = spm_piece(processor, id, &length) else { continue }
            let text = String(decoding: UnsafeRawBufferPointer(start: piece, count: length), as: UTF8.self)
            if text.hasPrefix("<0x"), text.hasSuffix(">"), let byte = UInt8(text.dropFirst(3).dropLast(), radix: 16) {
                idByByte[byte] = id
            }
        }
        let ids = bytes.compactMap { idByByte[$0] }
        return ids.count == bytes.count ? ids : nil
    }

    deinit { spm_processor_free(processor) }

    /// The ids of `text`, encoded line by line (each line with its newline) exactly as
    /// `TokenFile.prepare` does. With a model trained by `Tokenizer.train`,
    /// `decode(encode(text)) == text`, U+2581 ("▁", SentencePiece's space symbol) included: it is
    /// spelled with byte pieces, since its own piece decodes as a space.
    public func encode(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        var text = text
        text.withUTF8 { utf8 in
            TextBlock(bytes: UnsafeRawBufferPointer(utf8), addsNewline: false).forEachLine { appendIDs(of: $0, to: &ids) }
        }
        return ids
    }

    /// Appends the ids of `bytes` (valid UTF-8) to `ids`, each U+2581 spelled in byte pieces (see
    /// `spaceSymbolPieces`).
    func appendIDs(of bytes: UnsafeRawBufferPointer, to ids: inout [Int32]) {
        guard let escape = spaceSymbolPieces, let base = bytes.baseAddress else {
            appendEncodedIDs(of: bytes, to: &ids)
            return
        }
        var start = 0, search = 0
        // Text rarely holds U+2581: look for its lead byte E2 with memchr and check the next two.
        while search < bytes.count, let found = memchr(base + search, 0xE2, bytes.count - search) {
            let offset = UnsafeRawPointer(found) - base
            search = offset + 1
            guard offset + 3 <= bytes.count, bytes[offset + 1] == 0x96, bytes[offset + 2] == 0x81 else { continue }
            appendEncodedIDs(of: UnsafeRawBufferPointer(rebasing: bytes[start..<offset]), to: &ids)
            ids.append(contentsOf: escape)
            start = offset + 3
            search = start
        }
        appendEncodedIDs(of: UnsafeRawBufferPointer(rebasing: bytes[start...]), to: &ids)
    }

    /// Appends SentencePiece's ids of `bytes` (valid UTF-8) to `ids`. SentencePiece only fails here
    /// when the model is unusable, which loading already ruled out; then nothing is appended.
    private func appendEncodedIDs(of bytes: UnsafeRawBufferPointer, to ids: inout [Int32]) {
        guard !bytes.isEmpty, let base = bytes.baseAddress?.assumingMemoryBound(to: CChar.self) else { return }
        let start = ids.count
        // A piece covers at least one byte of the text, so this is enough, except for models trained
        // elsewhere with a dummy prefix, which adds a piece: those take a second call.
        var capacity = bytes.count + 1
        while true {
            ids.append(contentsOf: repeatElement(0, count: capacity))
            var error: UnsafeMutablePointer<CChar>?
            let needed = ids.withUnsafeMutableBufferPointer { buffer in
                spm_encode(processor, base, bytes.count, buffer.baseAddress.map { $0 + start }, capacity, &error)
            }
            _ = Tokenizer.takeMessage(error)
            let count = Int(max(needed, 0))
            if count <= capacity {
                ids.removeLast(capacity - count)
                return
            }
            ids.removeLast(capacity)
            capacity = count
        }
    }

    /// The text of `ids`. Ids outside the vocabulary become U+FFFD (use `checkIDs` to reject them
    /// instead), as do byte pieces that do not form valid UTF-8.
    public func decode(_ ids: [Int32]) -> String {
        var text = ""
        var run: [Int32] = []
        for id in ids {
            if id >= 0 && Int(id) < vocabSize {
                run.append(id)
            } else {
                text += decodeValid(run) + "\u{FFFD}"
                run.removeAll(keepingCapacity: true)
            }
        }
        return text + decodeValid(run)
    }

    private func decodeValid(_ ids: [Int32]) -> String {
        guard !ids.isEmpty else { return "" }
        var length = 0
        var error: UnsafeMutablePointer<CChar>?
        let decoded = ids.withUnsafeBufferPointer { spm_decode(processor, $0.baseAddress, $0.count, &length, &error) }
        _ = Tokenizer.takeMessage(error)
        guard let decoded else { return "" }
        defer { spm_free_string(decoded) }
        return String(decoding: UnsafeRawBufferPointer(start: decoded, count: length), as: UTF8.self)
    }

    /// Throws `TokenizerError.idOutOfRange` for the first id that is not in the vocabulary.
    public func checkIDs(_ ids: [Int32]) throws {
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            throw TokenizerError.idOutOfRange(id: bad, vocabSize: vocabSize)
        }
    }

    /// The piece text of `id` (spaces appear as "▁"), or nil when `id` is not in the vocabulary.
    public func piece(for id: Int32) -> String? {
        var length = 0
        guard let piece = spm_piece(processor, id, &length) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: piece, count: length), as: UTF8.self)
    }

    /// The model's score of `id` (a log probability for unigram models), or nil when out of range.
    public func score(for id: Int32) -> Float? {
        id >= 0 && Int(id) < vocabSize ? spm_score(processor, id) : nil
    }

    /// The kind of entry `id` is, or nil when `id` is not in the vocabulary.
    public func pieceType(for id: Int32) -> PieceType? {
        switch spm_piece_type_of(processor, id) {
        case Int32(SPM_PIECE_NORMAL.rawValue): return .normal
        case Int32(SPM_PIECE_UNKNOWN.rawValue): return .unknown
        case Int32(SPM_PIECE_CONTROL.rawValue): return .control
        case Int32(SPM_PIECE_USER_DEFINED.rawValue): return .userDefined
        case Int32(SPM_PIECE_UNUSED.rawValue): return .unused
        case Int32(SPM_PIECE_BYTE.rawValue): return .byte
        default: return nil
        }
    }

    /// SentencePiece's status text without the source location and failed condition it starts with
    /// ("Internal: ./src/x.cc(42) [condition] message"): just the first line of the message, or
    /// `fallback` when nothing is left.
    /// A failed check with no message of its own is named by its condition, so that the reason is
    /// never empty.
    static func readableReason(_ status: String?, fallback: String) -> String {
        guard let status else { return fallback }
        var message = Substring(status.split(separator: "\n").first ?? "")
        var condition: Substring = ""
        if let location = message.range(of: #"^\w+: \S+\(\d+\) "#, options: .regularExpression) {
            message = message[location.upperBound...]
            // Skip the bracketed condition, whose brackets may nest.
            if message.first == "[" {
                var depth = 0
                var end = message.startIndex
                for index in message.indices {
                    if message[index] == "[" { depth += 1 } else if message[index] == "]" { depth -= 1 }
                    if depth == 0 { end = message.index(after: index); break }
                }
                condition = message[message.index(after: message.startIndex)..<message.index(before: end)]
                message = message[end...]
            }
        }
        let trimmed = message.trimmingCharacters(in: .whitespaces)
        if !trimmed.isEmpty { return trimmed }
        return condition.isEmpty ? fallback : "SentencePiece's check \(condition) failed"
    }

    /// Copies and frees a message the shim allocated.
    static func takeMessage(_ message: UnsafeMutablePointer<CChar>?) -> String? {
        guard let message else { return nil }
        defer { spm_free_string(message) }
        return String(cString: message)
    }
}

