import Foundation
import Distill

/// A small corpus with structure a model can learn (a toy grammar), its tokenizer and token file,
/// made once per test process in a temporary directory (removed when the test bundle finishes).
enum TestCorpus {
    struct Files {
        let directory: URL
        let text: URL
        let tokenizer: String
        let data: String
    }

    static let shared: Result<Files, Error> = Result { try make() }

    static func files() throws -> Files { try shared.get() }

    /// Sentences from a toy grammar: subject, verb, object, optional clause; seeded, so always the same.
    static func grammarText(lines: Int, seed: UInt64) -> String {
        let subjects = ["the king", "a shepherd", "the people", "my brother", "the prophet", "his servant", "the elders"]
        let verbs = ["saw", "heard", "blessed", "followed", "called", "answered", "feared"]
        let objects = ["the city", "a great light", "the river", "their sons", "the mountain", "the word of the lord"]
        let clauses = [" and they rejoiced", " in the morning", " at the gate", " for seven days", ""]
        var random = SeededRandom(seed: seed)
        func pick(_ list: [String]) -> String { list[Int(random.next() % UInt64(list.count))] }
        var text = ""
        for number in 0..<lines {
            text += "\(number % 50 + 1): \(pick(subjects)) \(pick(verbs)) \(pick(objects))\(pick(clauses)).\n"
        }
        return text
    }

    private static func make() throws -> Files {
        let directory = try ScratchFolders.make("distill-tests-\(getpid())")
        let text = directory.appendingPathComponent("corpus.txt")
        try grammarText(lines: 3000, seed: 42).write(to: text, atomically: true, encoding: .utf8)
        let tokenizer = directory.appendingPathComponent("corpus.model").path
        try Tokenizer.train(inputs: [text.path], vocabSize: 320, output: tokenizer)
        let data = directory.appendingPathComponent("corpus.tok").path
        _ = try TokenFile.prepare(tokenizer: Tokenizer(modelPath: tokenizer), inputs: [text.path], output: data, valFraction: 0.1)
        return Files(directory: directory, text: text, tokenizer: tokenizer, data: data)
    }

    /// A fresh empty directory for one test.
    static func scratch(_ name: String) throws -> URL {
        let url = try files().directory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
