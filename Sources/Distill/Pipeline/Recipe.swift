import Foundation

/// An experiment for `distill run`: a corpus, a tokenizer, a teacher, the students to make from it, how to
/// evaluate them and what to sample. Read from JSON (schema in docs/recipes.md) strictly: an unknown
/// field, a wrong type or a missing required field is an error naming its JSON path. Paths in a recipe
/// are relative to the recipe file's folder.
public struct Recipe: Sendable {
    /// The schema this version of distill reads and writes (`schema_version` in the JSON).
    public static let schemaVersion = 1

    /// A title for the report.
    public var name: String
    public var about: String?
    public var corpus: RecipeCorpus
    /// Share of the corpus's bytes (from its end) held out as the validation split.
    public var validationFraction: Double
    public var tokenizer: RecipeTokenizer
    public var teacher: RecipeTeacher
    public var students: [RecipeStudent]
    public var evaluation: RecipeEvaluation
    public var samples: RecipeSamples
    /// The recipe in normal form: every default written out, paths absolute. Stage hashes and run.json
    /// are made from it, so writing a default explicitly or reformatting the file changes nothing.
    public var normalized: JSONNode

    /// Reads and checks the recipe file at `path`; a non-empty `corpus` replaces the recipe's (see
    /// `replacingCorpus`).
    public static func load(_ path: String, corpus: [String] = []) throws -> Recipe {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw RecipeError("", "\(path) is a directory: give the recipe's JSON file (e.g. recipes/quick.json)")
        }
        let data: Data
        do { data = try RegularFile.read(path) }
        catch IOError.missing {
            throw RecipeError("", "the recipe \(path) does not exist: check the path (recipes/ holds kjv.json, quick.json and methods.json)")
        } catch { throw RecipeError("", "\(error)") }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        do { return try decode(data, baseDirectory: base, corpus: corpus) }
        catch let error as RecipeError where error.path.isEmpty { throw RecipeError("", "\(path): \(error.message)") }
        catch let error as RecipeError { throw RecipeError(error.path, error.message + " (in \(path))") }
    }

    /// Parses recipe JSON; relative paths are resolved against `baseDirectory`; a non-empty `corpus`
    /// replaces the recipe's.
    public static func decode(_ data: Data, baseDirectory: URL, corpus: [String] = []) throws -> Recipe {
        let value: JSONNode
        do { value = try JSONNode.parse(data) } catch let error as JSONSyntaxError {
            throw RecipeError("", "not valid JSON: \(error)")
        }
        let edited = corpus.isEmpty ? value : try replacingCorpus(value, with: corpus)
        return try RecipeParser(base: baseDirectory.standardizedFileURL).recipe(edited)
    }

    public static func decode(_ text: String, baseDirectory: URL) throws -> Recipe {
        try decode(Data(text.utf8), baseDirectory: baseDirectory)
    }

    /// The default experiment (the same as recipes/kjv.json) on `corpus`: a tokenizer, a `tiny` teacher,
    /// a baseline student and a distilled student, sampled and compared.
    public static func standard(corpus: [String]) throws -> Recipe {
        let recipe = try replacingCorpus(try JSONNode.parse(standardText), with: corpus)
        return try RecipeParser(base: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).recipe(recipe)
    }

    /// `recipe` (its JSON) with `corpus` (paths as given, made absolute) instead of its corpus, named after
    /// the first path (`runName(forCorpus:)`), and a description that names this corpus: the shipped
    /// recipes say "the King James Bible", which is replaced; any other description gets the corpus added.
    static func replacingCorpus(_ recipe: JSONNode, with corpus: [String]) throws -> JSONNode {
        guard case .object(let pairs) = recipe, let first = corpus.first else { return recipe }
        let absolute = corpus.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let names = corpus.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ")
        var edited: [(String, JSONNode)] = pairs.filter { key, _ in key != "corpus" && key != "name" && key != "description" }
        let description = recipe["description"]?.stringValue.map { text in
            text.contains("the King James Bible") ? text.replacingOccurrences(of: "the King James Bible", with: names)
                : text + " Corpus: \(names)."
        }
        edited.insert(("corpus", .array(absolute.map(JSONNode.string))), at: 0)
        edited.insert(("name", .string(runName(forCorpus: first))), at: 0)
        if let description { edited.insert(("description", .string(description)), at: 0) }
        return .object(edited)
    }

    /// A run name from a corpus path: its file or folder name without extension, with every character a
    /// directory name cannot hold turned into '-' (`RecipeParser.directoryName`), "corpus" when nothing is left.
    public static func runName(forCorpus path: String) -> String {
        let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        var scalars = stem.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "-_.".unicodeScalars.contains(scalar)) ? Character(scalar) : "-"
        }
        while let first = scalars.first, !(first.isLetter || first.isNumber) { scalars.removeFirst() }
        let name = String(scalars.prefix(64))
        return name.isEmpty ? "corpus" : name
    }

    /// The default recipe's text; recipes/kjv.json is this file.
    public static let standardText = """
        {
          "schema_version": 1,
          "name": "kjv",
          "description": "The default experiment: a tiny teacher on the King James Bible, a student trained alone and one distilled from the teacher, on the same batches.",
          "corpus": "default",
          "tokenizer": {"vocab_size": 4096},
          "teacher": {
            "preset": "tiny",
            "training": {"steps": 1500, "batch_size": 16, "context": 128, "lr": 0.002, "eval_every": 250, "save_every": 500}
          },
          "student": {
            "preset": "tiny-student",
            "training": {"steps": 1500, "batch_size": 16, "context": 128, "lr": 0.003, "eval_every": 250, "save_every": 500}
          },
          "students": [
            {"name": "baseline", "kind": "baseline"},
            {"name": "distilled", "kind": "kd"}
          ],
          "samples": {"prompts": ["And God said", "In the beginning"], "max_tokens": 60, "temperature": 0.8, "top_k": 40, "seed": 1}
        }

        """
}

/// Where the text comes from.
public enum RecipeCorpus: Sendable, Equatable {
    /// The King James Bible, `corpora/kjv.txt` as written by `corpora/kjv.sh`.
    case standard
    /// Files and folders (their .txt files), absolute.
    case paths([String])
}

/// How the run gets its tokenizer.
public enum RecipeTokenizer: Sendable, Equatable {
    /// Train a lossless SentencePiece model on the training corpus.
    case train(vocabSize: Int, modelType: TokenizerModelType)
    /// Use an existing SentencePiece model (absolute path).
    case file(String)
    /// The teachers' own tokenizer.model (existing teacher directories).
    case teacher
}

/// A model shape: a preset name or a config.json (absolute path).
/// The teacher: trained by the run, or existing model directories (ours or Hugging Face Llama).
public struct RecipeTeacher: Sendable {
    public enum Source: Sendable {
        /// `context`: tokens per sequence when the recipe gives it (nil: the model's).
        case train(shape: ModelShape, training: TrainingParameters, context: Int?)
        case directories([String])
    }
    public var source: Source
    /// Ensemble weights of several teachers (nil: equal).
    public var weights: [Float]?

    /// Whether the run trains the teacher (rather than using existing directories).
    public var isTrained: Bool { if case .train = source { return true } else { return false } }
}

/// One student of a recipe, with its settings resolved (the shared `student` block merged with its own).
public struct RecipeStudent: Sendable {
    public var name: String
    /// How it is made: its kind with that kind's own options.
    public var method: StudentMethod
    public var shape: ModelShape
    /// The JSON path the shape came from (the student's own, or the shared `student` block's).
    public var shapeField: String
    public var training: TrainingParameters
    /// Tokens per sequence when the recipe gives it (nil: decided from the model and the teacher).
    public var context: Int?
    /// CE/KD weights, divergence, temperature, feature and relational terms; for `baseline` only `ce` is used.
    public var settings: DistillationSettings
    /// Its own tokenizer (nil: the run's), trained or read once per distinct setting with its own token file.
    public var tokenizer: RecipeTokenizer?
    /// A cross-tokenizer student's vocabulary when the recipe gives none.
    public static let defaultCrossTokenizerVocabulary = 1024
    /// This student's settings in normal form (hashed by its stage).
    public var normalized: JSONNode

    public var kind: StudentKind { method.kind }
    /// The models this student trains, in report order.
    public var modelNames: [String] { method.modelNames(name) }
    /// The rows this student adds to the report.
    public var reportNames: [String] { method.reportNames(name) }
}

/// What the models are scored on.
public struct RecipeEvaluation: Sendable, Equatable {
    /// A UTF-8 text file (absolute), or nil for the token file's validation split.
    public var text: String?
    /// Advance of the scoring window (nil: the model's context, as `distill eval`).
    public var stride: Int?
}

/// What every model samples.
public struct RecipeSamples: Sendable, Equatable {
    /// Prompts ("" starts from the BOS token); empty: no samples.
    public var prompts: [String]
    public var maxTokens: Int
    public var temperature: Float
    public var topK: Int?
    public var topP: Float?
    public var seed: UInt64
}
