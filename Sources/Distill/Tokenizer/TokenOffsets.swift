import Foundation

/// The bytes of text each vocabulary entry stands for, so that every token of a tokenization knows the
/// byte span it covers. SentencePiece writes a space as "▁" (U+2581) inside pieces, a byte-fallback piece
/// `<0xNN>` is the one byte NN, and control pieces (`<s>`, `</s>`) stand for no text. The unknown piece
/// stands for text it has lost, so it has no bytes (`bytes(of:)` is nil).
public struct PieceBytes: Sendable {
    /// [V + 1] where each id's bytes start in `storage`.
    private let starts: [Int]
    private let storage: [UInt8]
    /// [V] false for ids whose text is not known (the unknown piece).
    private let known: [Bool]

    public var vocabSize: Int { known.count }

    public init(_ tokenizer: Tokenizer) {
        var starts = [0], storage: [UInt8] = [], known: [Bool] = []
        starts.reserveCapacity(tokenizer.vocabSize + 1)
        for id in 0..<Int32(tokenizer.vocabSize) {
            let piece = Array((tokenizer.piece(for: id) ?? "").utf8)
            switch tokenizer.pieceType(for: id) {
            case .byte:
                // "<0xNN>": the byte itself.
                let hex = String(decoding: piece.dropFirst(3).dropLast(), as: UTF8.self)
                if let byte = UInt8(hex, radix: 16) {
                    storage.append(byte)
                    known.append(true)
                } else {
                    known.append(false)
                }
            case .control, .unused:
                known.append(true)
            case .unknown, nil:
                known.append(false)
            case .normal, .userDefined:
                storage.append(contentsOf: PieceBytes.replacingSpaceSymbol(piece))
                known.append(true)
            }
            starts.append(storage.count)
        }
        self.starts = starts
        self.storage = storage
        self.known = known
    }

    /// The bytes `id` stands for in text, or nil for an id outside the vocabulary or one whose text is lost.
    public func bytes(of id: Int32) -> ArraySlice<UInt8>? {
        guard id >= 0, Int(id) < known.count, known[Int(id)] else { return nil }
        return storage[starts[Int(id)]..<starts[Int(id) + 1]]
    }

    /// `piece` with each "▁" (E2 96 81) read as the space it stands for.
    private static func replacingSpaceSymbol(_ piece: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(piece.count)
        var index = 0
        while index < piece.count {
            if index + 2 < piece.count, piece[index] == 0xE2, piece[index + 1] == 0x96, piece[index + 2] == 0x81 {
                result.append(0x20)
                index += 3
            } else {
                result.append(piece[index])
                index += 1
            }
        }
        return result
    }
}

/// A text's bytes cut into tokens: `ids[i]` covers `bytes[spans[i]]`, and the spans follow each other
/// with no gap (a span may be empty: the dummy-prefix space of a Hugging Face tokenizer covers no byte).
public struct TokenizedText: Sendable, Equatable {
    public var bytes: [UInt8]
    public var ids: [Int32]
    public var spans: [Range<Int>]

    public init(bytes: [UInt8], ids: [Int32], spans: [Range<Int>]) {
        self.bytes = bytes
        self.ids = ids
        self.spans = spans
    }
}

/// Why the bytes of a tokenization cannot be known.
public enum TokenOffsetError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The tokenizer's pieces do not spell the text's bytes back from `byteOffset` on: its normaliser
    /// changed them, or it lacks byte pieces and wrote the unknown piece.
    case textNotReproduced(tokenizer: String, byteOffset: Int, near: String)
    /// A token id that is not in the vocabulary, or whose text is lost (the unknown piece).
    case unknownText(tokenizer: String, id: Int32)

    public var description: String {
        switch self {
        case let .textNotReproduced(tokenizer, offset, near):
            return "tokenizer \(tokenizer) does not give back the text's bytes at byte \(offset) (near \"\(near)\"): its normaliser "
                + "or a missing byte piece changes the text, so its tokens cannot be aligned by the bytes they cover; use a tokenizer "
                + "that keeps every byte (identity normalisation, byte fallback)"
        case let .unknownText(tokenizer, id):
            return "token \(id) of tokenizer \(tokenizer) stands for no known text (an unknown piece or an id outside the vocabulary), "
                + "so the bytes it covers cannot be known"
        }
    }
}

extension Tokenizer {
    /// The bytes of `ids` (tokens of the same text, as a token file holds them) and each token's span.
    /// Throws `TokenOffsetError.unknownText` for an id whose text is not known.
    public func spans(of ids: [Int32], pieces: PieceBytes) throws -> TokenizedText {
        var bytes: [UInt8] = [], spans: [Range<Int>] = []
        spans.reserveCapacity(ids.count)
        for id in ids {
            guard let piece = pieces.bytes(of: id) else { throw TokenOffsetError.unknownText(tokenizer: modelPath, id: id) }
            let start = bytes.count
            bytes.append(contentsOf: piece)
            spans.append(start..<bytes.count)
        }
        return TokenizedText(bytes: bytes, ids: ids, spans: spans)
    }

    /// Encodes `bytes` (valid UTF-8) and gives each token its byte span in them. A tokenizer of ours
    /// encodes line by line, as `TokenFile.prepare` does; one that adds a dummy prefix (a Hugging Face
    /// Llama tokenizer) encodes the text as one string, as it reads a document, and that first space
    /// covers no byte.
    ///
    /// The spans come from matching each piece's bytes against the text with a cursor, not from
    /// SentencePiece's own offsets: those point through its normaliser, so they would not show a text
    /// the normaliser changed, and the match proves that the pieces spell the text exactly. Throws
    /// `TokenOffsetError.textNotReproduced` at the first byte they do not.
    public func encodeWithSpans(_ bytes: [UInt8], pieces: PieceBytes) throws -> TokenizedText {
        var ids: [Int32] = []
        bytes.withUnsafeBytes { buffer in
            if addsDummyPrefix {
                appendIDs(of: buffer, to: &ids)
            } else {
                TextBlock(bytes: buffer, addsNewline: false).forEachLine { appendIDs(of: $0, to: &ids) }
            }
        }
        var spans: [Range<Int>] = []
        spans.reserveCapacity(ids.count)
        var cursor = 0
        var dummySpacePending = addsDummyPrefix
        for id in ids {
            guard var piece = pieces.bytes(of: id) else {
                throw TokenOffsetError.textNotReproduced(tokenizer: modelPath, byteOffset: cursor, near: Self.excerpt(bytes, at: cursor))
            }
            if dummySpacePending {
                dummySpacePending = false
                if piece.first == 0x20 { piece = piece.dropFirst() }
            }
            let end = cursor + piece.count
            guard end <= bytes.count, bytes[cursor..<end].elementsEqual(piece) else {
                throw TokenOffsetError.textNotReproduced(tokenizer: modelPath, byteOffset: cursor, near: Self.excerpt(bytes, at: cursor))
            }
            spans.append(cursor..<end)
            cursor = end
        }
        guard cursor == bytes.count else {
            throw TokenOffsetError.textNotReproduced(tokenizer: modelPath, byteOffset: cursor, near: Self.excerpt(bytes, at: cursor))
        }
        return TokenizedText(bytes: bytes, ids: ids, spans: spans)
    }

    /// A few characters of `bytes` around `offset`, escaped for a one-line message.
    static func excerpt(_ bytes: [UInt8], at offset: Int) -> String {
        let start = max(0, offset - 12), end = min(bytes.count, offset + 12)
        let text = String(decoding: bytes[start..<end], as: UTF8.self)
        return text.unicodeScalars.map { $0.value < 0x20 || $0 == "\"" ? $0.escaped(asASCII: true) : String($0) }.joined()
    }
}

/// The largest prefix and suffix cut from `bytes` that keep only whole UTF-8 characters: a window of
/// tokens may start or end inside a character spelled in byte pieces, and a tokenizer reads characters.
/// Returns the range of whole characters.
public func wholeCharacters(_ bytes: [UInt8]) -> Range<Int> {
    var start = 0
    // Continuation bytes (10xxxxxx) at the start belong to a character that began before the window.
    while start < bytes.count, start < 3, bytes[start] & 0xC0 == 0x80 { start += 1 }
    var end = bytes.count
    // The last lead byte: if its character needs more bytes than are left, cut before it.
    var lead = end - 1
    while lead >= start, lead > end - 4, bytes[lead] & 0xC0 == 0x80 { lead -= 1 }
    if lead >= start {
        let byte = bytes[lead]
        let length = byte < 0x80 ? 1 : byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
        if lead + length > end { end = lead }
    }
    return start..<max(start, end)
}
