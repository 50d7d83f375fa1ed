import Foundation

/// What a model directory can be exported as.
public enum ExportFormat: String, CaseIterable, Sendable {
    /// A Hugging Face directory (`transformers` loads it with `LlamaForCausalLM.from_pretrained`).
    case hf
    /// One llama.cpp file with the SentencePiece vocabulary.
    case gguf
}

/// Why an export cannot be written, in words a user can act on.
public enum ExportError: Error, CustomStringConvertible, Equatable {
    /// A GGUF file was asked for at a path that is a directory.
    case outputIsDirectory(String)
    /// The tokenizer has more pieces than the model has embedding rows.
    case vocabularyTooLarge(tokenizer: Int, model: Int, path: String)
    /// An HF export was asked into a directory that holds something other than an earlier export.
    case outputHoldsOtherFiles(String)
    /// A GGUF export was asked over a file that is not an earlier GGUF export.
    case outputIsOtherFile(String)
    /// A Hugging Face export was asked with weights in a type only GGUF stores.
    case notAFloatType(WeightFormat)

    public var description: String {
        switch self {
        case .outputIsDirectory(let path):
            return "\(path) is a directory: a GGUF export is one file, give a file path such as \(path)/model.gguf"
        case .vocabularyTooLarge(let tokenizer, let model, let path):
            return "\(path): the tokenizer has \(tokenizer) pieces but the model only \(model) embedding rows: the tokenizer does not belong to this model"
        case .outputHoldsOtherFiles(let path):
            return "\(path) already holds files that are not an earlier `distill export` (another model?): give a new or empty directory"
        case .outputIsOtherFile(let path):
            return "\(path) exists and is not a GGUF that `distill export` wrote: give a new file path (or delete it first)"
        case .notAFloatType(let format):
            return "\(format.rawValue) is a llama.cpp (GGUF) type: export GGUF, or store a Hugging Face export as f32, f16 or bf16"
        }
    }
}

/// Exports a model directory (ours, or any Hugging Face Llama one with a `tokenizer.model`).
public enum ModelExport {
    /// The `__metadata__` entry of `model.safetensors` that marks a directory written by `export`, which
    /// a later export may replace.
    public static let exportMarker = (key: "distill.export", value: "hf")
    /// The metadata entry of a GGUF written by `export`, which a later export may replace.
    public static let ggufExportMarker = (key: "distill.export", value: "gguf")

    /// Reads the model at `source` and writes it as `format` to `output` (a directory for `.hf`, a file
    /// for `.gguf`), with weight matrices stored as `dtype` (GGUF keeps the norm gains in F32).
    ///
    /// The output may not be, hold or lie inside the model directory (symlinks resolved). An HF
    /// directory is written as one unit (a temporary sibling, then a rename), and replaces an existing
    /// directory only when that is empty or an earlier export.
    public static func export(modelAt source: URL, format: ExportFormat, to output: URL, dtype: WeightFormat = .f32) throws {
        let floatType = dtype.floatFormat
        if format == .hf && floatType == nil { throw ExportError.notAFloatType(dtype) }
        let checkpoint = try HFModelDirectory(source)
        let tokenizerModel = try checkpoint.tokenizerModel()
        let tokenizer = try Tokenizer(modelPath: tokenizerModel.path)
        guard tokenizer.vocabSize <= checkpoint.config.vocabSize else {
            throw ExportError.vocabularyTooLarge(tokenizer: tokenizer.vocabSize, model: checkpoint.config.vocabSize, path: source.path)
        }
        // Writing into the directory being read would replace files while they are still needed.
        try OutputGuard.refuseOverlap(output: .init(Setting.output.rawValue, output.path),
                                      inputs: [.init("model", source.path), .init("model", tokenizerModel.path)])
        switch format {
        case .hf: try checkReplaceable(output)
        case .gguf: try checkReplaceableFile(output)
        }
        let model = try ModelDirectory.load(source)
        // One export to an output at a time; then the leftovers of an export that was killed can go.
        try AtomicFile.ensureDirectory(output.deletingLastPathComponent())
        let lock = try OutputLock(beside: output)
        defer { withExtendedLifetime(lock) {} }
        TemporaryFiles.removeStale(besides: output)
        switch format {
        case .hf:
            try AtomicFile.writeDirectory(output) { directory in
                try HFExport.write(config: model.config, tensors: ModelDirectory.tensors(of: model),
                                   tokenizerModel: tokenizerModel, specialTokens: ModelDirectory.specialTokens(of: tokenizer),
                                   to: directory, dtype: floatType ?? .f32, metadata: [exportMarker.key: exportMarker.value])
            }
        case .gguf:
            try AtomicFile.ensureDirectory(output.deletingLastPathComponent())
            try GGUFExport.write(config: model.config, name: source.standardizedFileURL.lastPathComponent,
                                 hfTensors: ModelDirectory.tensors(of: model),
                                 vocabulary: ggufVocabulary(of: tokenizer, vocabSize: model.config.vocabSize),
                                 to: output, type: GGMLType(dtype))
        }
    }

    /// Throws unless `output` is absent, an empty directory, or a directory holding nothing but an
    /// earlier HF export (its files, with the marker in `model.safetensors`).
    static func checkReplaceable(_ output: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: output.path, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else { throw IOError.notADirectory(output.path) }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: output.path) } catch {
            throw IOError.unwritable(output.path)
        }
        if names.isEmpty { return }
        let weights = output.appendingPathComponent(HFModelDirectory.weightsFileName)
        guard Set(names).isSubset(of: HFExport.fileNames),
              (try? SafetensorsFile(url: weights))?.metadata[exportMarker.key] == exportMarker.value else {
            throw ExportError.outputHoldsOtherFiles(output.path)
        }
    }

    /// Throws unless `output` is absent or a GGUF file an earlier export wrote (its marker in the metadata):
    /// an export never replaces another model's weights, a token file or a text.
    static func checkReplaceableFile(_ output: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: output.path, isDirectory: &isDirectory) else { return }
        if isDirectory.boolValue { throw ExportError.outputIsDirectory(output.path) }
        let marker = (try? GGUFFile(url: output))?.metadata.first { $0.key == ggufExportMarker.key }?.value
        guard case .string(ggufExportMarker.value)? = marker else { throw ExportError.outputIsOtherFile(output.path) }
    }

    /// The tokenizer's pieces, scores and kinds as llama.cpp stores them. Embedding rows beyond the
    /// tokenizer's pieces get placeholder pieces `[PAD<id>]` of the unused kind, as llama.cpp's
    /// converter writes them, so that the vocabulary has one entry per row.
    public static func ggufVocabulary(of tokenizer: Tokenizer, vocabSize: Int) throws -> GGUFVocabulary {
        guard tokenizer.vocabSize <= vocabSize else {
            throw ExportError.vocabularyTooLarge(tokenizer: tokenizer.vocabSize, model: vocabSize, path: tokenizer.modelPath)
        }
        var tokens = [String](), scores = [Float](), types = [Int32]()
        for id in 0..<Int32(vocabSize) {
            if let piece = tokenizer.piece(for: id), let score = tokenizer.score(for: id), let kind = tokenizer.pieceType(for: id) {
                tokens.append(piece)
                scores.append(score)
                types.append(ggufTokenType(kind))
            } else {
                tokens.append("[PAD\(id)]")
                scores.append(-10_000)
                types.append(ggufTokenType(.unused))
            }
        }
        // llama.cpp needs BOS, EOS and UNK ids: a tokenizer without BOS or EOS falls back to its
        // unknown piece, as in the Hugging Face export.
        let special = ModelDirectory.specialTokens(of: tokenizer)
        return GGUFVocabulary(tokens: tokens, scores: scores, tokenTypes: types, bos: special.bos.id, eos: special.eos.id,
                              unk: special.unk.id, pad: special.pad?.id ?? -1)
    }

    /// llama.cpp's token type numbers (`LLAMA_TOKEN_TYPE_*`).
    public static func ggufTokenType(_ kind: PieceType) -> Int32 {
        switch kind {
        case .normal: return 1
        case .unknown: return 2
        case .control: return 3
        case .userDefined: return 4
        case .unused: return 5
        case .byte: return 6
        }
    }
}

extension GGMLType {
    /// The ggml tensor type that stores weights as `format`.
    public init(_ format: WeightFormat) {
        switch format {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        case .q8_0: self = .q8_0
        }
    }
}
