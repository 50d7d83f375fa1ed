import XCTest
import Distill

/// Recipes read strictly: every mistake names its JSON path; the normal form ignores formatting and
/// explicit defaults; the shipped recipes parse.
final class RecipeTests: XCTestCase {
    var base: URL!

    override func setUpWithError() throws {
        base = try TestCorpus.scratch("recipes")
        try TestCorpus.grammarText(lines: 20, seed: 1).write(to: base.appendingPathComponent("text.txt"), atomically: true, encoding: .utf8)
    }

    /// A valid recipe over the scratch corpus, with `edit` applied to its JSON text.
    func recipeText(students: String = #"[{"name": "baseline", "kind": "baseline"}, {"name": "kd", "kind": "kd"}]"#,
                    extra: String = "") -> String {
        """
        {"schema_version": 1, "name": "t", "corpus": "text.txt", "tokenizer": {"vocab_size": 300},
         "teacher": {"preset": "tiny", "training": {"steps": 5}},
         "student": {"preset": "tiny-student", "training": {"steps": 4, "context": 32}},
         "students": \(students)\(extra)}
        """
    }

    func expectError(_ text: String, path: String, mentions phrase: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try Recipe.decode(text, baseDirectory: base)
            XCTFail("no error for \(text)", file: file, line: line)
        } catch let error as RecipeError {
            XCTAssertEqual(error.path, path, "\(error)", file: file, line: line)
            XCTAssertTrue(error.description.localizedCaseInsensitiveContains(phrase), "'\(phrase)' not in: \(error)", file: file, line: line)
        } catch {
            XCTFail("not a RecipeError: \(error)", file: file, line: line)
        }
    }

    func testValidRecipeResolvesDefaultsAndPaths() throws {
        let recipe = try Recipe.decode(recipeText(), baseDirectory: base)
        XCTAssertEqual(recipe.corpus, .paths([base.appendingPathComponent("text.txt").standardizedFileURL.path]))
        XCTAssertEqual(recipe.tokenizer, .train(vocabSize: 300, modelType: .unigram))
        XCTAssertEqual(recipe.students.map(\.kind), [.baseline, .kd])
        XCTAssertEqual(recipe.students[1].training.steps, 4)
        XCTAssertEqual(recipe.students[1].context, 32)
        XCTAssertEqual(recipe.students[0].settings.weights.kd, 0, "a baseline learns from labels alone")
        XCTAssertEqual(recipe.students[1].settings.weights.kd, 1)
        XCTAssertEqual(recipe.students[1].settings.weights.ce, 0, "distill student's defaults, chosen by the sweep")
        XCTAssertEqual(recipe.students[1].settings.logits.temperature, 1)
    }

    func testNormalFormIgnoresFormattingAndExplicitDefaults() throws {
        let plain = try Recipe.decode(recipeText(), baseDirectory: base)
        let explicit = try Recipe.decode(recipeText(students: """
            [{"name": "baseline", "kind": "baseline", "training": {"steps": 4}},
             {"kind": "kd", "name": "kd", "logits": {"divergence": "forward-kl", "temperature": 1.0, "ce_weight": 0, "tau_squared": true}}]
            """), baseDirectory: base)
        XCTAssertEqual(plain.normalized.canonicalText, explicit.normalized.canonicalText)
        let changed = try Recipe.decode(recipeText(students: #"[{"name": "baseline", "kind": "baseline"}, {"name": "kd", "kind": "kd", "logits": {"temperature": 2}}]"#),
                                        baseDirectory: base)
        XCTAssertEqual(plain.students[0].normalized, changed.students[0].normalized)
        XCTAssertNotEqual(plain.students[1].normalized, changed.students[1].normalized)
    }

    func testMistakesNameTheirField() {
        expectError(recipeText(extra: #", "temprature": 2"#), path: "temprature", mentions: "unknown field")
        expectError(recipeText(students: #"[{"name": "a", "kind": "kd", "logits": {"temprature": 2}}]"#),
                    path: "students[0].logits.temprature", mentions: "did you mean \"temperature\"")
        expectError(recipeText(students: #"[{"name": "a", "kind": "baseline"}, {"name": "b", "kind": "kd"}, {"name": "c", "kind": "foo"}]"#),
                    path: "students[2].kind", mentions: "unknown student kind \"foo\"; use one of baseline, kd")
        expectError(recipeText(students: #"[{"name": "a", "kind": "kd", "training": {"steps": "ten"}}]"#),
                    path: "students[0].training.steps", mentions: "expected an integer, found a string")
        expectError(recipeText(students: #"[{"name": "a", "kind": "kd", "training": {"steps": 0}}]"#),
                    path: "students[0].training.steps", mentions: "at least 1")
        expectError(recipeText(students: #"[{"name": "a", "kind": "baseline", "logits": {"temperature": 2}}]"#),
                    path: "students[0].logits", mentions: "does not take")
        expectError(recipeText(students: #"[{"name": "a", "kind": "kd"}, {"name": "a", "kind": "baseline"}]"#),
                    path: "students[1].name", mentions: "already used")
        expectError(recipeText(students: #"[{"name": "../x", "kind": "kd"}]"#), path: "students[0].name", mentions: "cannot name a directory")
        expectError(recipeText(students: #"[{"name": "r", "kind": "kd-relational", "training": {"batch_size": 2}}]"#),
                    path: "students[0].training.batch_size", mentions: "at least 3")
        expectError(recipeText(students: #"[{"name": "a", "kind": "kd", "logits": {"divergence": "kl"}}]"#),
                    path: "students[0].logits.divergence", mentions: "forward-kl")
        expectError(recipeText(students: "[]"), path: "students", mentions: "at least one")
        expectError(recipeText(students: #"[{"name": "a", "kind": "kd", "preset": "huge"}]"#), path: "students[0].preset", mentions: "unknown preset")
        expectError(recipeText(students: #"[{"name": "a", "kind": "kd", "config": "missing.json"}]"#),
                    path: "students[0].config", mentions: "does not exist")
    }

    /// The run's name becomes its directory under runs/: the student-name rule applies (bad-input sweep 2,
    /// findings 1 and 20: "../../other_run" replaced another run's files; "a/b" made nested folders).
    func testTheRunNameCannotLeaveTheRunsFolder() {
        for bad in ["../../other_run", "a/b", "..", ".hidden", "/abs", ""] {
            expectError(recipeText().replacingOccurrences(of: #""name": "t""#, with: #""name": "\#(bad)""#), path: "name",
                        mentions: "cannot name a directory")
        }
        let long = String(repeating: "a", count: 300)
        expectError(recipeText().replacingOccurrences(of: #""name": "t""#, with: #""name": "\#(long)""#), path: "name",
                    mentions: "too long to name a directory (300 characters, at most 64)")
        expectError(recipeText(students: #"[{"name": "\#(long)", "kind": "kd"}]"#), path: "students[0].name", mentions: "too long")
    }

    /// Findings 19 of the second sweep: numbers beyond a field's range say "too large", not "at least 1".
    func testNumbersBeyondTheRangeAreTooLarge() {
        let edit = { (field: String) in self.recipeText(students: #"[{"name": "a", "kind": "kd", "training": {\#(field)}}]"#) }
        expectError(edit(#""steps": 2147483648"#), path: "students[0].training.steps", mentions: "is too large (at most 2147483647), got 2147483648")
        expectError(edit(#""steps": 4611686018427387904"#), path: "students[0].training.steps", mentions: "too large")
        expectError(edit(#""steps": 1e30"#), path: "students[0].training.steps", mentions: "is too large (at most 2147483647)")
        expectError(edit(#""lr": 1e39"#), path: "students[0].training.lr", mentions: "is too large")
        expectError(edit(#""steps": 0"#), path: "students[0].training.steps", mentions: "at least 1")
    }

    /// Findings 27 and 28: `--corpus` replaces a recipe's corpus; the run is named after the corpus and the
    /// description names it (not "the King James Bible").
    func testACorpusGivenBesideARecipeReplacesItsCorpus() throws {
        let file = base.appendingPathComponent("quick.json")
        try recipeText().replacingOccurrences(of: #""name": "t", "#, with: #""name": "t", "description": "a tiny teacher on the King James Bible", "#)
            .write(to: file, atomically: true, encoding: .utf8)
        let mine = base.appendingPathComponent("my texts!.txt")
        try TestCorpus.grammarText(lines: 20, seed: 3).write(to: mine, atomically: true, encoding: .utf8)
        let recipe = try Recipe.load(file.path, corpus: [mine.path])
        XCTAssertEqual(recipe.corpus, .paths([mine.path]))
        XCTAssertEqual(recipe.name, "my-texts-")
        XCTAssertEqual(recipe.about, "a tiny teacher on my texts!.txt")
        XCTAssertEqual(try Recipe.load(file.path).name, "t", "without --corpus the recipe is as written")
        let standard = try Recipe.standard(corpus: [mine.path])
        XCTAssertFalse(standard.about?.contains("King James") ?? true, standard.about ?? "")
        XCTAssertEqual(Recipe.runName(forCorpus: "!!!.txt"), "corpus")
        XCTAssertEqual(Recipe.runName(forCorpus: "-x-.txt"), "x-")
        XCTAssertEqual(Recipe.runName(forCorpus: "/data/../notes.md"), "notes")
    }

    /// A file of the repository (the tests' sources sit two folders below its root).
    static func projectDocument(_ path: String) throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    /// Every student kind is parsed, written in normal form, listed in the report and documented in
    /// docs/recipes.md: a kind left out of one of them fails here.
    func testEveryStudentKindIsParsedReportedAndDocumented() throws {
        let documentation = try Self.projectDocument("docs/recipes.md")
        for kind in StudentKind.allCases {
            XCTAssertTrue(documentation.contains("`\(kind.rawValue)`"), "docs/recipes.md does not document the \(kind.rawValue) kind")
            let recipe = try Recipe.decode(recipeText(students: #"[{"name": "s", "kind": "\#(kind.rawValue)"}]"#), baseDirectory: base)
            let student = try XCTUnwrap(recipe.students.first)
            XCTAssertEqual(student.kind, kind)
            XCTAssertEqual(student.normalized["kind"], .string(kind.rawValue))
            XCTAssertFalse(student.reportNames.isEmpty, kind.rawValue)
            XCTAssertTrue(student.reportNames.allSatisfy { $0.hasPrefix("s") }, "\(kind.rawValue): \(student.reportNames)")
        }
    }

    /// Every loss term is documented in docs/formats.md's `metrics.jsonl` table: a term left out fails here.
    func testEveryLossTermIsDocumented() throws {
        let documentation = try Self.projectDocument("docs/formats.md")
        for term in LossTerm.allCases {
            XCTAssertTrue(documentation.contains("| `\(term.rawValue)` |"), "docs/formats.md does not describe the \(term.rawValue) term")
        }
    }

    /// On-policy and sequence-level students: their `generation` fields, with mistakes named by field.
    func testGeneratedStudentsReadTheirGenerationFields() throws {
        let recipe = try Recipe.decode(recipeText(students: #"[{"name": "g", "kind": "on-policy", "generation": {"share": 0.25, "new_tokens": 8, "top_k": 5}}]"#),
                                       baseDirectory: base)
        guard case let .generated(kind, options, _)? = recipe.students.first?.method else { return XCTFail("not a generated student") }
        XCTAssertEqual(kind, .onPolicy)
        XCTAssertEqual(options.studentShare, 0.25)
        XCTAssertEqual(options.teacherShare, 0)
        XCTAssertEqual(options.newTokens, 8)
        XCTAssertEqual(options.topK, 5)
        expectError(recipeText(students: #"[{"name": "g", "kind": "seq-kd", "generation": {"share": 1.5}}]"#),
                    path: "students[0].generation.share", mentions: "must be in (0, 1]")
        expectError(recipeText(students: #"[{"name": "g", "kind": "on-policy", "generation": {"top_p": 0}}]"#),
                    path: "students[0].generation.top_p", mentions: "\"top_p\" must be in (0, 1]")
        expectError(recipeText(students: #"[{"name": "g", "kind": "kd", "generation": {"share": 0.5}}]"#),
                    path: "students[0].generation", mentions: "does not take")
        expectError(recipeText(students: #"[{"name": "g", "kind": "on-policy", "logits": {"kd_weight": 0, "ce_weight": 1}}]"#),
                    path: "students[0].logits.kd_weight", mentions: "must be positive")
    }

    /// Cross-tokenizer students and students with their own tokenizer: defaults, normal form, mistakes by field.
    func testCrossTokenizerStudentsAndOwnTokenizers() throws {
        let recipe = try Recipe.decode(recipeText(students: #"""
            [{"name": "b", "kind": "baseline", "tokenizer": {"vocab_size": 280}},
             {"name": "x", "kind": "cross-tokenizer", "cross_tokenizer": "uld", "tokenizer": {"vocab_size": 280, "model_type": "bpe"}},
             {"name": "y", "kind": "cross-tokenizer"}]
            """#), baseDirectory: base)
        XCTAssertEqual(recipe.students[0].tokenizer, .train(vocabSize: 280, modelType: .unigram))
        XCTAssertEqual(recipe.students[1].method, .crossTokenizer(.uld))
        XCTAssertEqual(recipe.students[1].tokenizer, .train(vocabSize: 280, modelType: .bpe))
        XCTAssertEqual(recipe.students[2].method, .crossTokenizer(.alm), "likelihood matching by default")
        XCTAssertEqual(recipe.students[2].tokenizer, .train(vocabSize: 1024, modelType: .unigram))
        XCTAssertEqual(recipe.students[2].settings.weights.ce, 1, "the student's own CE stays on by default")
        XCTAssertEqual(recipe.students[2].normalized["cross_tokenizer"], .string("alm"))
        XCTAssertEqual(recipe.students[2].normalized["tokenizer"]?["vocab_size"], .integer(1024))
        XCTAssertNil(recipe.students[2].normalized["init_from_teacher"])
        // A student's fields, the path of the mistake, a phrase of its message.
        let mistakes: [(String, String, String)] = [
            (#""kind": "cross-tokenizer", "tokenizer": {"vocab_size": 300}"#, "tokenizer", "is the run's own tokenizer"),
            (#""kind": "cross-tokenizer", "cross_tokenizer": "kl""#, "cross_tokenizer", "use uld or alm"),
            (#""kind": "cross-tokenizer", "logits": {"kd_weight": 0}"#, "logits.kd_weight", "must be positive"),
            (#""kind": "kd", "tokenizer": {"vocab_size": 280}"#, "tokenizer", "does not take"),
            (#""kind": "baseline", "cross_tokenizer": "alm""#, "cross_tokenizer", "does not take"),
            (#""kind": "cross-tokenizer", "tokenizer": {"vocab_size": 10}"#, "tokenizer.vocab_size", "at least 260"),
        ]
        for (fields, path, phrase) in mistakes {
            expectError(recipeText(students: #"[{"name": "x", "#  + fields + "}]"), path: "students[0].\(path)", mentions: phrase)
        }
    }

    func testMissingAndWrongTopLevelFields() throws {
        let withoutCorpus = recipeText().replacingOccurrences(of: #""corpus": "text.txt", "#, with: "")
        expectError(withoutCorpus, path: "corpus", mentions: "missing")
        expectError(recipeText().replacingOccurrences(of: #""corpus": "text.txt""#, with: #""corpus": 3"#),
                    path: "corpus", mentions: "expected a string or an array of strings")
        expectError(recipeText().replacingOccurrences(of: #""corpus": "text.txt""#, with: #""corpus": ["text.txt", "nowhere.txt"]"#),
                    path: "corpus[1]", mentions: "does not exist")
        expectError(recipeText().replacingOccurrences(of: #""schema_version": 1"#, with: #""schema_version": 2"#),
                    path: "schema_version", mentions: "schema 1")
        expectError(recipeText().replacingOccurrences(of: #""schema_version": 1, "#, with: ""), path: "schema_version", mentions: "missing")
        expectError(recipeText().replacingOccurrences(of: #"{"preset": "tiny", "training": {"steps": 5}}"#,
                                                      with: #"{"directories": ["no-such-teacher"]}"#),
                    path: "teacher.directories[0]", mentions: "does not exist")
        expectError("{\"schema_version\": 1,\n \"corpus\": \"text.txt\",,}", path: "", mentions: "line 2")
        expectError(#"{"schema_version": 1, "corpus": "a", "corpus": "b"}"#, path: "", mentions: "appears twice")
    }

    func testShippedRecipesParse() throws {
        let recipes = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("recipes")
        let names = try FileManager.default.contentsOfDirectory(atPath: recipes.path).filter { $0.hasSuffix(".json") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 6, "\(names)")
        for name in names {
            let recipe = try Recipe.load(recipes.appendingPathComponent(name).path)
            XCTAssertEqual(recipe.corpus, .standard, name)
            XCTAssertTrue(recipe.students.contains { $0.kind == .baseline }, name)
        }
        let methods = try Recipe.load(recipes.appendingPathComponent("methods.json").path)
        XCTAssertEqual(Set(methods.students.map(\.kind)), Set(StudentKind.allCases), "methods.json has every student kind")
        XCTAssertEqual(Set(methods.students.map(\.training.steps)).count, 1, "methods.json gives every student the same budget")
        // The built-in default recipe is recipes/kjv.json.
        let kjv = try Recipe.load(recipes.appendingPathComponent("kjv.json").path)
        let standard = try Recipe.decode(Recipe.standardText, baseDirectory: recipes)
        XCTAssertEqual(kjv.normalized, standard.normalized)
    }

    func testJSONNodeReadsAndWritesExactly() throws {
        let value = try JSONNode.parse(#"{"b": [1, 2.5, -3e2, true, null, "x\"\u00e9\n"], "a": {"seed": 18446744073709551}}"#)
        XCTAssertEqual(value["a"]?["seed"], .integer(18446744073709551))
        XCTAssertEqual(value["b"], .array([.integer(1), .number(2.5), .number(-300), .bool(true), .null, .string("x\"é\n")]))
        XCTAssertEqual(try JSONNode.parse(value.canonicalText), value)
        XCTAssertEqual(try JSONNode.parse(value.prettyText), value)
        XCTAssertTrue(value.canonicalText.hasPrefix(#"{"a":"#), "canonical text sorts keys")
        XCTAssertThrowsError(try JSONNode.parse("[1, 2")) { XCTAssertTrue("\($0)".contains("']'"), "\($0)") }
        XCTAssertThrowsError(try JSONNode.parse("01"))
        // The accessors and the message form, shared with the config reader.
        XCTAssertEqual(JSONNode.number(1024).intValue, 1024)
        XCTAssertNil(JSONNode.number(1e300).intValue, "a number too large for Int is not a whole number here, not a trap")
        XCTAssertNil(JSONNode.number(2.5).intValue)
        XCTAssertEqual(try JSONNode.parse(#"{"b": ["gelu", 2.0], "a": "x"}"#).plainText, #"{"a": "x", "b": ["gelu", 2]}"#)
        XCTAssertEqual(JSONNode.string("gelu").plainText, "gelu")
        let decoded = try JSONDecoder().decode(JSONNode.self, from: Data(#"{"n": 3, "x": 0.5, "s": [null, false]}"#.utf8))
        XCTAssertEqual(decoded, .object([("n", .integer(3)), ("x", .number(0.5)), ("s", .array([.null, .bool(false)]))]))
    }
}
