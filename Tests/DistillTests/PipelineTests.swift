import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
import Distill

/// `distill run` end to end on the tiny test corpus: every stage, skipping what is up to date, resuming
/// what was interrupted, re-running only what changed, and a report that agrees with `distill eval`.
final class PipelineTests: XCTestCase {
    /// A quick-sized recipe over the test corpus; `students` is the JSON array of students.
    static func recipe(in directory: URL, students: String, tokenizer: String? = nil, teacherSteps: Int = 30,
                       text corpusText: String? = nil) throws -> Recipe {
        let corpus = try TestCorpus.files()
        let text = """
            {"schema_version": 1, "name": "test", "corpus": "\(corpusText ?? corpus.text.path)",
             "tokenizer": \(tokenizer ?? #"{"model": "\#(corpus.tokenizer)"}"#),
             "teacher": {"preset": "tiny", "training": {"steps": \(teacherSteps), "batch_size": 4, "context": 32, "eval_every": 10, "eval_batches": 2, "log_every": 5, "save_every": 10}},
             "student": {"preset": "tiny-student", "training": {"steps": 20, "batch_size": 4, "context": 32, "eval_every": 10, "eval_batches": 2, "log_every": 5, "save_every": 10}},
             "students": \(students),
             "samples": {"prompts": ["the king", ""], "max_tokens": 8, "temperature": 0.8, "top_k": 20, "seed": 3}}
            """
        return try Recipe.decode(text, baseDirectory: directory)
    }

    static let students = #"[{"name": "baseline", "kind": "baseline"}, {"name": "kd", "kind": "kd"}, {"name": "mutual", "kind": "mutual"}]"#

    func run(_ recipe: Recipe, _ output: URL, stopAfterEvents: Int? = nil) throws -> (PipelineOutcome, [String]) {
        var lines: [String] = [], events = 0
        let callbacks = PipelineCallbacks(log: { lines.append($0) }, training: { _, event in
            if case .step = event { events += 1 }
        }, shouldStop: { stopAfterEvents.map { events >= $0 } ?? false })
        return (try Pipeline.run(recipe, output: output.path, callbacks: callbacks), lines)
    }

    func testRunsEveryStageThenSkipsAllOfThem() throws {
        let scratch = try TestCorpus.scratch("pipeline")
        let run = scratch.appendingPathComponent("run")
        let recipe = try Self.recipe(in: scratch, students: Self.students, tokenizer: #"{"vocab_size": 300}"#)
        let (first, lines) = try self.run(recipe, run)
        XCTAssertFalse(first.interrupted)
        let models = ["teacher", "baseline", "kd", "mutual-1", "mutual-2"]
        XCTAssertEqual(first.ran, ["tokenizer", "data", "teacher", "student-baseline", "student-kd", "student-mutual"]
                       + models.map { "eval-\($0)" } + models.map { "samples-\($0)" } + models.map { "quality-\($0)" })
        XCTAssertTrue(lines.contains { $0.hasPrefix("teacher: training") }, "\(lines)")
        XCTAssertEqual(first.report.models.map(\.name), models)
        for model in first.report.models {
            XCTAssertNotNil(model.evaluation, model.name)
            XCTAssertNotNil(model.trainingSeconds, model.name)
            XCTAssertNotNil(model.generationTokensPerSecond, model.name)
            // The teacher's view of the model's own samples: 16 prompts × 16 new tokens at context 32.
            let quality = try XCTUnwrap(model.sampleQuality, model.name)
            XCTAssertEqual(quality.tokens, 16 * 16, model.name)
            XCTAssertTrue(quality.judgeMeanNLL > 0 && quality.ownMeanNLL > 0 && quality.judgeBitsPerByte > 0, "\(quality)")
            XCTAssertTrue((0...1).contains(quality.repeatedFourGrams), "\(quality)")
            // Every model here was trained with validation every 10 steps: its curve is in the report.
            let curve = try XCTUnwrap(model.validationCurve, model.name)
            XCTAssertLessThanOrEqual(curve.best, curve.final, model.name)
        }
        XCTAssertNotNil(first.report.models[2].gapClosedAgainstBestBaseline)
        XCTAssertTrue(try String(contentsOf: run.appendingPathComponent("report.md"), encoding: .utf8).contains("## Validation during training"))
        // A model judged by itself: the teacher's own NLL of its samples is its judge NLL.
        let teacherQuality = try XCTUnwrap(first.report.models[0].sampleQuality)
        XCTAssertEqual(teacherQuality.judgeNLLSum, teacherQuality.ownNLLSum, accuracy: 1e-9 * teacherQuality.ownNLLSum)
        XCTAssertNotNil(first.report.models[2].gapClosed)
        XCTAssertEqual(first.report.samples.map(\.prompt), ["the king", ""])
        XCTAssertEqual(first.report.samples[0].texts.count, models.count)
        XCTAssertTrue(first.report.samples[0].texts.allSatisfy { $0.text.hasPrefix("the king") })
        for file in ["report.md", "report.json", "plots/validation-loss.svg", "plots/training-loss.svg", "plots/bits-per-byte.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent(file).path), file)
        }
        let markdown = try String(contentsOf: run.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(markdown.contains("(plots/validation-loss.svg)"), markdown)
        // The plots parse as XML; the loss charts have one line per trained model, the bars one per model.
        for (plot, element, kind) in [("validation-loss", "polyline", "series"), ("training-loss", "polyline", "series"),
                                      ("bits-per-byte", "rect", "bar")] {
            let document = try XMLDocument(contentsOf: run.appendingPathComponent("plots/\(plot).svg"), options: [])
            var names: [String] = []
            func walk(_ node: XMLElement) {
                if node.name == element, node.value(of: "class") == kind { names.append(node.value(of: "data-name") ?? "") }
                for child in node.children ?? [] { if let child = child as? XMLElement { walk(child) } }
            }
            if let root = document.rootElement() { walk(root) }
            XCTAssertEqual(names, models, plot)
        }

        // Again: nothing to do, the same report.
        let weights = run.appendingPathComponent("models/kd/model.safetensors")
        let modified = try FileManager.default.attributesOfItem(atPath: weights.path)[.modificationDate] as? Date
        let (second, secondLines) = try self.run(recipe, run)
        XCTAssertEqual(second.ran, [], "\(secondLines)")
        XCTAssertEqual(second.skipped.count, first.ran.count)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: weights.path)[.modificationDate] as? Date, modified)
        XCTAssertEqual(second.report.models, first.report.models)

        // `distill report` draws the same report from the directory alone.
        XCTAssertEqual(try RunReport.build(runDirectory: run).json.canonicalText, try RunReport.build(runDirectory: run).json.canonicalText)
        XCTAssertEqual(try RunReport.build(runDirectory: run).models, first.report.models)

        // A truncated output is not "up to date" (bad-input sweep 2, finding 7): its stage runs again, and
        // (the run being deterministic) makes the same weights and the same report.
        let whole = try Data(contentsOf: weights)
        try whole.prefix(whole.count / 2).write(to: weights)
        let (third, thirdLines) = try self.run(recipe, run)
        XCTAssertEqual(third.ran, ["student-kd"], "\(thirdLines)")
        XCTAssertEqual(try Data(contentsOf: weights), whole)
        XCTAssertEqual(third.report.models.map(\.evaluation), first.report.models.map(\.evaluation))
    }

    /// `distill run --recompute-activations`: every training (teacher, a student, mutual peers) says it
    /// recomputes, and writes the same weights as without it (the choice gives the same bits).
    func testRecomputingActivationsInARunGivesTheSameWeights() throws {
        let scratch = try TestCorpus.scratch("pipeline-recompute")
        let recipe = try Self.recipe(in: scratch, students: #"[{"name": "kd", "kind": "kd"}, {"name": "mutual", "kind": "mutual"}]"#,
                                     teacherSteps: 10)
        _ = try Pipeline.run(recipe, output: scratch.appendingPathComponent("plain").path)
        var recomputing: Set<String> = []
        let callbacks = PipelineCallbacks(trainingLog: { model, line in
            if line.hasPrefix("activations: gate/up recomputed") { recomputing.insert(model) }
        })
        _ = try Pipeline.run(recipe, output: scratch.appendingPathComponent("recomputed").path, callbacks: callbacks,
                             recomputeActivations: true)
        let models = ["teacher", "kd", "mutual-1", "mutual-2"]
        XCTAssertEqual(recomputing, Set(models))
        for model in models {
            let file = "models/\(model)/model.safetensors"
            XCTAssertEqual(try Data(contentsOf: scratch.appendingPathComponent("plain/" + file)),
                           try Data(contentsOf: scratch.appendingPathComponent("recomputed/" + file)), model)
        }
    }

    func testChangingOrAddingAStudentRerunsOnlyThatStudent() throws {
        let scratch = try TestCorpus.scratch("pipeline-edit")
        let run = scratch.appendingPathComponent("run")
        _ = try self.run(try Self.recipe(in: scratch, students: Self.students), run)

        let edited = Self.students.replacingOccurrences(of: #"{"name": "kd", "kind": "kd"}"#,
                                                        with: #"{"name": "kd", "kind": "kd", "logits": {"temperature": 2}}"#)
        let (changed, _) = try self.run(try Self.recipe(in: scratch, students: edited), run)
        XCTAssertEqual(changed.ran, ["student-kd", "eval-kd", "samples-kd", "quality-kd"])

        let added = edited.replacingOccurrences(of: "]", with: #", {"name": "feature", "kind": "kd-feature"}]"#)
        let (grown, _) = try self.run(try Self.recipe(in: scratch, students: added), run)
        XCTAssertEqual(grown.ran, ["student-feature", "eval-feature", "samples-feature", "quality-feature"])
        XCTAssertEqual(grown.report.models.map(\.name), ["teacher", "baseline", "kd", "mutual-1", "mutual-2", "feature"])

        // A teacher with other settings re-runs the teacher and what learns from it, not the baseline.
        let (retaught, _) = try self.run(try Self.recipe(in: scratch, students: added, teacherSteps: 31), run)
        XCTAssertEqual(Set(retaught.ran), Set(["teacher", "student-kd", "student-feature", "eval-teacher", "eval-kd", "eval-feature",
                                               "samples-teacher", "samples-kd", "samples-feature"]
                                           // The teacher judges every model's samples: all are scored again.
                                           + ["teacher", "baseline", "kd", "mutual-1", "mutual-2", "feature"].map { "quality-\($0)" }))
    }

    func testAnInterruptedRunContinuesWhereItStopped() throws {
        let scratch = try TestCorpus.scratch("pipeline-stop")
        let run = scratch.appendingPathComponent("run")
        let recipe = try Self.recipe(in: scratch, students: #"[{"name": "baseline", "kind": "baseline"}, {"name": "kd", "kind": "kd"}]"#)
        // The teacher logs every 5 of its 30 steps: stop after its 4th progress event (step 20, saved at 20).
        let (stopped, _) = try self.run(recipe, run, stopAfterEvents: 4)
        XCTAssertTrue(stopped.interrupted)
        XCTAssertFalse(stopped.ran.contains("teacher"))
        XCTAssertNil(stopped.report.models[0].evaluation)
        let (continued, lines) = try self.run(recipe, run)
        XCTAssertFalse(continued.interrupted)
        XCTAssertTrue(lines.contains { $0.hasPrefix("teacher: resuming") }, "\(lines)")
        XCTAssertTrue(continued.ran.contains("teacher"))
        XCTAssertEqual(continued.skipped, ["tokenizer", "data"])

        // The resumed teacher is the teacher an uninterrupted run makes.
        let whole = scratch.appendingPathComponent("whole")
        _ = try self.run(recipe, whole)
        for model in ["teacher", "baseline", "kd"] {
            let resumed = try Data(contentsOf: run.appendingPathComponent("models/\(model)/model.safetensors"))
            let straight = try Data(contentsOf: whole.appendingPathComponent("models/\(model)/model.safetensors"))
            XCTAssertEqual(resumed, straight, model)
        }
    }

    func testReportHoldsTheNumbersOfDistillEval() throws {
        try skipUnlessDistillIsBuilt()
        let scratch = try TestCorpus.scratch("pipeline-eval")
        let run = scratch.appendingPathComponent("run")
        _ = try self.run(try Self.recipe(in: scratch, students: #"[{"name": "baseline", "kind": "baseline"}, {"name": "kd", "kind": "kd"}]"#), run)
        let report = try JSONNode.parse(Data(contentsOf: run.appendingPathComponent("report.json")))
        guard case .array(let models)? = report["models"] else { return XCTFail("no models in report.json") }
        XCTAssertEqual(models.count, 3)
        // The command line would pick OpenBLAS kernels for this CPU; the pipeline ran in this process on
        // the ones OpenBLAS chose itself. Same kernels, same sums.
        let sameKernels = ProcessInfo.processInfo.environment.merging(["OPENBLAS_CORETYPE": BLASKernels.coreName]) { $1 }
        for model in models {
            guard let name = model["name"]?.stringValue else { return XCTFail("a model without a name") }
            let eval = try runProcess(CommandLineTests.executable, ["eval", "--data", run.appendingPathComponent("data.tok").path,
                                                                     "--model", run.appendingPathComponent("models/\(name)").path, "--json"],
                                  environment: sameKernels)
            XCTAssertEqual(eval.status, 0, eval.transcript)
            let expected = try JSONNode.parse(eval.output)
            for field in ["perplexity", "bits_per_byte", "nll_sum", "tokens", "bytes", "parameters"] {
                let ours = try XCTUnwrap(model[field]?.doubleValue, field), theirs = try XCTUnwrap(expected[field]?.doubleValue, field)
                XCTAssertEqual(ours, theirs, accuracy: abs(theirs) * 1e-12, "\(name) \(field)")
            }
        }
    }

    func testBadRecipesFailBeforeAnyTraining() throws {
        let scratch = try TestCorpus.scratch("pipeline-bad")
        let corpus = try TestCorpus.files()
        func expectRefusal(_ students: String, path: String, mentions phrase: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let run = scratch.appendingPathComponent("run-\(UUID().uuidString.prefix(6))")
            XCTAssertThrowsError(try self.run(try Self.recipe(in: scratch, students: students), run), file: file, line: line) { error in
                XCTAssertTrue("\(error)".hasPrefix(path + ":"), "\(error)", file: file, line: line)
                XCTAssertTrue("\(error)".contains(phrase), "\(error)", file: file, line: line)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("models").path), "trained before refusing",
                           file: file, line: line)
        }
        let config = scratch.appendingPathComponent("student.json")
        try #"{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 1000}"#
            .write(to: config, atomically: true, encoding: .utf8)
        try expectRefusal(#"[{"name": "s", "kind": "kd", "config": "\#(config.path)"}]"#, path: "students[0].config",
                          mentions: "vocab_size 1000 but the tokenizer has 320 pieces")
        try expectRefusal(#"[{"name": "s", "kind": "kd"}, {"name": "c", "kind": "kd-cached", "logits": {"divergence": "reverse-kl"}}]"#,
                          path: "students[1].logits.divergence", mentions: "only forward-kl")
        try expectRefusal(#"[{"name": "s", "kind": "kd", "training": {"context": 64}}]"#, path: "students[0].training.context",
                          mentions: "longer than the teacher's context 32")
        try expectRefusal(#"[{"name": "r", "kind": "kd-relational", "training": {"batch_size": 2}}]"#, path: "students[0].training.batch_size",
                          mentions: "relational angle distillation needs at least 3 sequences")
        try expectRefusal(#"[{"name": "s", "kind": "kd-feature", "feature": {"layer_map": "0:9"}}]"#, path: "students[0].feature.layer_map",
                          mentions: "9")
        try expectRefusal(#"[{"name": "s", "kind": "baseline", "training": {"eval_batches": 100000}}]"#,
                          path: "students[0].training.eval_batches", mentions: "validation split")
        // A run directory that holds something else, or a run of another schema.
        let stranger = scratch.appendingPathComponent("stranger")
        try FileManager.default.createDirectory(at: stranger, withIntermediateDirectories: true)
        try "notes".write(to: stranger.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try self.run(try Self.recipe(in: scratch, students: Self.students), stranger)) {
            XCTAssertEqual($0 as? PipelineError, .notARunDirectory(stranger.path))
        }
        // The run directory must not hold the corpus.
        XCTAssertThrowsError(try self.run(try Self.recipe(in: scratch, students: Self.students), corpus.directory)) {
            XCTAssertTrue("\($0)".contains("would overwrite"), "\($0)")
        }
        // Nor lie inside a corpus folder, whose .txt files it would join (bad-input sweep 2, finding 10).
        let folder = scratch.appendingPathComponent("texts")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: corpus.text, to: folder.appendingPathComponent("corpus.txt"))
        XCTAssertThrowsError(try self.run(try Self.recipe(in: scratch, students: Self.students, text: folder.path),
                                          folder.appendingPathComponent("run"))) {
            XCTAssertTrue("\($0)".contains("would overwrite the corpus folder"), "\($0)")
        }
        // Finding 12: every value is checked before any work, naming its own field.
        try expectRefusal(#"[{"name": "s", "kind": "baseline", "training": {"batch_size": 100000000}}]"#,
                          path: "students[0].training.batch_size", mentions: "of activations")
        var longStride = try Self.recipe(in: scratch, students: Self.students)
        longStride.evaluation.stride = 1_000_000
        let strideRun = scratch.appendingPathComponent("stride-run")
        XCTAssertThrowsError(try self.run(longStride, strideRun)) {
            XCTAssertTrue("\($0)".hasPrefix("evaluation.stride:") && "\($0)".contains("longer than the shortest model context"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: strideRun.appendingPathComponent("models").path), "trained before refusing")
    }

    /// One run at a time in a run directory (bad-input sweep 2, finding 2: a second `distill run` on the
    /// same output restarted the teacher stage under the first). The second is refused before any work,
    /// and the directory is free again when the first ends.
    func testASecondRunIntoTheSameDirectoryIsRefused() throws {
        let scratch = try TestCorpus.scratch("pipeline-lock")
        let run = scratch.appendingPathComponent("run")
        let recipe = try Self.recipe(in: scratch, students: #"[{"name": "baseline", "kind": "baseline"}]"#, teacherSteps: 2)
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        do {
            let first = try OutputLock(directory: run)  // a live run, as another process would hold it
            XCTAssertThrowsError(try self.run(recipe, run)) { XCTAssertEqual($0 as? IOError, .locked(run.path)) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("models").path), "worked while locked")
            withExtendedLifetime(first) {}
        }
        // A .lock that is a folder is not a lock distill made: one line saying so.
        let strange = scratch.appendingPathComponent("strange")
        try FileManager.default.createDirectory(at: strange.appendingPathComponent(".lock"), withIntermediateDirectories: true)
        XCTAssertThrowsError(try OutputLock(directory: strange)) {
            XCTAssertEqual($0 as? IOError, .foreignLock(strange.appendingPathComponent(".lock").path))
        }
    }

    func testCommandLineMistakesGiveOneLine() throws {
        try skipUnlessDistillIsBuilt()
        let scratch = try TestCorpus.scratch("pipeline-cli")
        let corpus = try TestCorpus.files()
        func expectError(_ arguments: [String], mentions phrase: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let outcome = try runProcess(CommandLineTests.executable, arguments)
            XCTAssertNotEqual(outcome.status, 0, "exit status for \(arguments)", file: file, line: line)
            let lines = outcome.errors.split(separator: "\n").filter { $0.hasPrefix("Error:") }
            XCTAssertEqual(lines.count, 1, outcome.transcript, file: file, line: line)
            XCTAssertTrue(outcome.errors.contains(phrase), "'\(phrase)' not in: \(outcome.errors)", file: file, line: line)
            XCTAssertFalse(outcome.errors.contains("Fatal error") || outcome.errors.contains("Stack dump"), outcome.errors, file: file, line: line)
        }
        let bad = scratch.appendingPathComponent("bad.json")
        try """
            {"schema_version": 1, "corpus": "\(corpus.text.path)", "tokenizer": {"vocab_size": 300}, "teacher": {"preset": "tiny"},
             "students": [{"name": "a", "kind": "baseline"}, {"name": "b", "kind": "foo"}]}
            """.write(to: bad, atomically: true, encoding: .utf8)
        try expectError(["run", bad.path, "--output", scratch.appendingPathComponent("r1").path],
                        mentions: "students[1].kind: unknown student kind \"foo\"")
        try expectError(["run"], mentions: "RECIPE")
        // --corpus beside a recipe replaces its corpus; the recipe's own mistakes are still named.
        try expectError(["run", bad.path, "--corpus", corpus.text.path], mentions: "unknown student kind")
        try expectError(["run", scratch.appendingPathComponent("none.json").path], mentions: "does not exist")
        // A role in words is not spelt as a flag ("--the corpus file"; bad-input sweep 2, finding 25).
        let collision = try runProcess(CommandLineTests.executable, ["run", "--corpus", corpus.text.path, "--output", corpus.text.path])
        XCTAssertTrue(collision.errors.contains("would overwrite the corpus file"), collision.errors)
        XCTAssertFalse(collision.errors.contains("--the"), collision.errors)
        try expectError(["report", scratch.path], mentions: "run.json")
        // The default recipe's 4,096 pieces do not fit the tiny corpus: said before any training.
        let run = scratch.appendingPathComponent("r2")
        try expectError(["run", "--corpus", corpus.text.path, "--output", run.path], mentions: "tokenizer.vocab_size")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("models").path))
    }

    func testExistingTeacherDirectoriesBringTheirTokenizer() throws {
        let scratch = try TestCorpus.scratch("pipeline-existing")
        let corpus = try TestCorpus.files()
        let first = scratch.appendingPathComponent("first")
        let (trained, _) = try self.run(try Self.recipe(in: scratch, students: #"[{"name": "baseline", "kind": "baseline"}]"#), first)
        func recipe(_ teacher: String) throws -> Recipe {
            try Recipe.decode("""
                {"schema_version": 1, "corpus": "\(corpus.text.path)", "teacher": {"directories": ["\(teacher)"]},
                 "student": {"training": {"steps": 10, "batch_size": 4, "context": 32, "eval_batches": 2}},
                 "students": [{"name": "baseline", "kind": "baseline"}, {"name": "kd", "kind": "kd"}], "samples": {"prompts": []}}
                """, baseDirectory: scratch)
        }
        let (outcome, lines) = try self.run(try recipe(first.appendingPathComponent("models/teacher").path), scratch.appendingPathComponent("second"))
        XCTAssertEqual(outcome.report.models.map(\.name), ["teacher", "baseline", "kd"])
        XCTAssertFalse(outcome.ran.contains("teacher"), "\(lines)")
        XCTAssertEqual(outcome.report.models[0].evaluation, trained.report.models[0].evaluation,
                       "the same teacher on the same text encoded with its own tokenizer")
        XCTAssertNil(outcome.report.models[0].trainingSeconds)
        XCTAssertNotNil(outcome.report.models[2].gapClosed)

        // A Hugging Face directory without tokenizer.model cannot encode the corpus.
        let fixture = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("llama-tied")
        XCTAssertThrowsError(try self.run(try recipe(fixture.path), scratch.appendingPathComponent("third"))) { error in
            XCTAssertTrue("\(error)".hasPrefix("teacher.directories[0]:"), "\(error)")
        }
    }

    func testCachedBornAgainAndThreePeerStudents() throws {
        let scratch = try TestCorpus.scratch("pipeline-kinds")
        let run = scratch.appendingPathComponent("run")
        // A fifth of the test corpus: a cache covers every position of the token file.
        let text = scratch.appendingPathComponent("small.txt")
        try TestCorpus.grammarText(lines: 600, seed: 7).write(to: text, atomically: true, encoding: .utf8)
        let students = #"""
            [{"name": "baseline", "kind": "baseline"}, {"name": "cached", "kind": "kd-cached", "cache": {"samples": 4}},
             {"name": "cached-again", "kind": "kd-cached", "cache": {"samples": 4}, "training": {"lr": 0.002}},
             {"name": "ba", "kind": "born-again", "generations": 2}, {"name": "peers", "kind": "mutual", "peers": 3}]
            """#
        let (first, _) = try self.run(try Self.recipe(in: scratch, students: students, text: text.path), run)
        XCTAssertEqual(first.report.models.map(\.name),
                       ["teacher", "baseline", "cached", "cached-again", "ba-g1", "ba-g2", "ba-ensemble", "peers-1", "peers-2", "peers-3"])
        XCTAssertEqual(first.ran.filter { $0.hasPrefix("cache-") }.count, 1, "one cache for one setting")
        for model in first.report.models { XCTAssertNotNil(model.evaluation, model.name) }
        let ensemble = try XCTUnwrap(first.report.models.first { $0.name == "ba-ensemble" })
        XCTAssertEqual(ensemble.parameters, 2 * (first.report.models[1].parameters ?? 0))
        XCTAssertNotNil(ensemble.gapClosed)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("models/ba/gen-2/model.safetensors").path))

        let (second, _) = try self.run(try Self.recipe(in: scratch, students: students, text: text.path), run)
        XCTAssertEqual(second.ran, [])
        XCTAssertEqual(second.report.models, first.report.models)

        // A cached student with another temperature needs another cache; the others stay.
        let warmer = students.replacingOccurrences(of: #""cache": {"samples": 4}}"#, with: #""cache": {"samples": 4}, "logits": {"temperature": 2}}"#)
        let (third, _) = try self.run(try Self.recipe(in: scratch, students: warmer, text: text.path), run)
        XCTAssertEqual(third.ran.filter { !$0.hasPrefix("cache-") }, ["student-cached", "eval-cached", "samples-cached", "quality-cached"])
        XCTAssertEqual(third.ran.filter { $0.hasPrefix("cache-") }.count, 1)
    }

    /// Students with their own vocabulary: one tokenizer and token file made once for all of them; the
    /// cross-tokenizer students learn from the teacher across the two, their aligned share of bytes and the
    /// teacher's view of their samples (in bits per byte) reach the report, gaps are taken from the
    /// baseline of their own vocabulary; a second run does nothing.
    func testStudentsWithTheirOwnTokenizer() throws {
        let scratch = try TestCorpus.scratch("pipeline-own-tokenizer")
        let run = scratch.appendingPathComponent("run")
        let students = #"""
            [{"name": "baseline", "kind": "baseline", "tokenizer": {"vocab_size": 300}},
             {"name": "alm", "kind": "cross-tokenizer", "tokenizer": {"vocab_size": 300}},
             {"name": "uld", "kind": "cross-tokenizer", "cross_tokenizer": "uld", "tokenizer": {"vocab_size": 300}},
             {"name": "kd", "kind": "kd"}]
            """#
        let (first, _) = try self.run(try Self.recipe(in: scratch, students: students), run)
        XCTAssertEqual(first.report.models.map(\.name), ["teacher", "baseline", "alm", "uld", "kd"])
        XCTAssertEqual(first.ran.filter { $0.hasPrefix("tokenizer") }.count, 2, "the run's and one shared own tokenizer: \(first.ran)")
        XCTAssertEqual(first.ran.filter { $0.hasPrefix("data") }.count, 2, "\(first.ran)")
        let models = Dictionary(uniqueKeysWithValues: first.report.models.map { ($0.name, $0) })
        let own = try XCTUnwrap(models["baseline"]?.vocabulary)
        XCTAssertEqual(models["alm"]?.vocabulary, own)
        XCTAssertEqual(models["uld"]?.vocabulary, own)
        XCTAssertNil(models["kd"]?.vocabulary)
        XCTAssertNil(models["teacher"]?.vocabulary)
        for name in ["baseline", "alm", "uld"] {
            let config = try JSONNode.parse(Data(contentsOf: run.appendingPathComponent("models/\(name)/config.json")))
            XCTAssertEqual(config["vocab_size"]?.intValue, 300, name)
        }
        for name in ["alm", "uld"] {
            let model = try XCTUnwrap(models[name])
            let aligned = try XCTUnwrap(model.alignedBytes, name)
            XCTAssertTrue(aligned > 0.5 && aligned <= 1, "\(name): \(aligned)")
            XCTAssertNotNil(model.gapClosed, name)
            XCTAssertNil(model.gapClosedAgainstBestBaseline, "validation CE per token does not compare across vocabularies")
        }
        XCTAssertNil(models["baseline"]?.alignedBytes)
        for model in first.report.models {
            XCTAssertNotNil(model.evaluation, model.name)
            XCTAssertTrue((model.sampleQuality?.judgeBitsPerByte ?? 0) > 0, model.name)
        }
        let markdown = try String(contentsOf: run.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(markdown.contains("teacher bits/byte of samples") && markdown.contains("aligned bytes"), markdown)

        let (second, _) = try self.run(try Self.recipe(in: scratch, students: students), run)
        XCTAssertEqual(second.ran, [])
        XCTAssertEqual(second.report.models, first.report.models)
    }
}
