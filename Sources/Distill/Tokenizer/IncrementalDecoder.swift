import Foundation

/// Turns ids into text as they arrive, for printing while a model generates: each `append` returns the
/// text its id completes, holding back the byte pieces of a character until the character is whole.
/// The work per id does not grow with what came before (decoding the whole output each time would be
/// quadratic in its length).
public struct IncrementalDecoder {
    public let tokenizer: Tokenizer
    /// Ids whose text has not been returned yet.
    private var pending: [Int32] = []
    /// The last id whose text was returned: decoded in front of `pending`, so that a tokenizer that
    /// drops the space at the start of a text does not drop the spaces between returned pieces.
    private var context: Int32?

    /// Byte pieces that can still complete a character: UTF-8 needs at most four bytes.
    private static let longestCharacter = 4
    private static let replacement = Array("\u{FFFD}".utf8)

    public init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// Adds `id` and returns the text that is now complete (often empty while a character is unfinished).
    public mutating func append(_ id: Int32) -> String {
        pending.append(id)
        let text = newText()
        if text.suffix(Self.replacement.count).elementsEqual(Self.replacement) && pending.count < Self.longestCharacter {
            return ""
        }
        context = pending.last
        pending.removeAll(keepingCapacity: true)
        return String(decoding: text, as: UTF8.self)
    }

    /// Returns whatever is still held back (an unfinished character decodes as U+FFFD).
    public mutating func finish() -> String {
        guard !pending.isEmpty else { return "" }
        let text = newText()
        context = pending.last
        pending.removeAll()
        return String(decoding: text, as: UTF8.self)
    }

    /// The UTF-8 of `pending`, decoded after `context`.
    private func newText() -> [UInt8] {
        guard let context else { return Array(tokenizer.decode(pending).utf8) }
        let before = Array(tokenizer.decode([context]).utf8)
        let both = Array(tokenizer.decode([context] + pending).utf8)
        guard both.starts(with: before) else { return Array(tokenizer.decode(pending).utf8) }
        return Array(both[before.count...])
    }
}
