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
    }
}
