import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
import Distill

/// The report's parts that need no training: SVG charts, metrics files, the gap column, stage records.
final class ReportTests: XCTestCase {
    /// The elements of an SVG document, parsed by Foundation's XML parser (fails on malformed XML).
    func elements(_ svg: String, file: StaticString = #filePath, line: UInt = #line) throws -> [XMLElement] {
        let document = try XMLDocument(data: Data(svg.utf8), options: [])
        guard let root = document.rootElement() else { XCTFail("no root element", file: file, line: line); return [] }
        XCTAssertEqual(root.name, "svg", file: file, line: line)
        var all: [XMLElement] = []
        func walk(_ element: XMLElement) {
            all.append(element)
            for child in element.children ?? [] { if let child = child as? XMLElement { walk(child) } }
        }
        walk(root)
        return all
    }

    func testLineChartIsXMLWithOneLinePerModelAxesAndLegend() throws {
        let series = [
            ChartSeries(name: "teacher", points: [ChartPoint(x: 0, y: 5), ChartPoint(x: 100, y: 3), ChartPoint(x: 200, y: 2.5)]),
            ChartSeries(name: "student <kd & co>", points: [ChartPoint(x: 0, y: 5.5), ChartPoint(x: 200, y: 3.1)]),
            ChartSeries(name: "baseline", points: [ChartPoint(x: 50, y: 4)]),
        ]
        let svg = SVGChart.lines(title: "Validation loss", xLabel: "training step", yLabel: "cross-entropy", series: series)
        let all = try elements(svg)
        let lines = all.filter { $0.name == "polyline" && $0.value(of: "class") == "series" }
        XCTAssertEqual(lines.map { $0.value(of: "data-name") ?? "" }, ["teacher", "student <kd & co>", "baseline"])
        XCTAssertEqual(lines[0].value(of: "points")?.split(separator: " ").count, 3)
        let texts = all.filter { $0.name == "text" }.compactMap(\.stringValue)
        XCTAssertTrue(texts.contains("training step"))
        XCTAssertTrue(texts.contains("cross-entropy"))
        for name in ["teacher", "student <kd & co>", "baseline"] { XCTAssertTrue(texts.contains(name), "legend lacks \(name)") }
        // Every point lies inside the drawing.
        for line in lines {
            for pair in line.value(of: "points")?.split(separator: " ") ?? [] {
                let coordinates = pair.split(separator: ",").compactMap { Double($0) }
                XCTAssertEqual(coordinates.count, 2)
                XCTAssertTrue((0...760).contains(coordinates[0]) && (0...440).contains(coordinates[1]), "\(pair)")
            }
        }
    }

    func testBarChartHasOneBarPerModel() throws {
        let bars = [ChartBar(label: "teacher", value: 1.59), ChartBar(label: "baseline", value: 1.67), ChartBar(label: "kd", value: 1.63)]
        let all = try elements(SVGChart.bars(title: "Bits per byte", yLabel: "bits per byte", bars: bars))
        let rects = all.filter { $0.name == "rect" && $0.value(of: "class") == "bar" }
        XCTAssertEqual(rects.count, 3)
        let heights = rects.compactMap { $0.value(of: "height").flatMap(Double.init) }
        XCTAssertTrue(heights[1] > heights[2] && heights[2] > heights[0], "bar heights follow the values: \(heights)")
    }

    func testAxisTicksAreRoundAndCoverTheData() {
        let axis = SVGChart.Axis(low: 2.13, high: 5.87, includeZero: false)
        XCTAssertLessThanOrEqual(axis.low, 2.13)
        XCTAssertGreaterThanOrEqual(axis.high, 5.87)
        XCTAssertEqual(axis.step, 1)
        XCTAssertEqual(axis.ticks.map { axis.label($0) }, ["2", "3", "4", "5", "6"])
        let flat = SVGChart.Axis(low: 3, high: 3, includeZero: false)
        XCTAssertLessThan(flat.low, 3)
        XCTAssertGreaterThan(flat.high, 3)
    }

    func testSmoothingStartsAtTheFirstValue() {
        let points = [ChartPoint(x: 1, y: 10), ChartPoint(x: 2, y: 0), ChartPoint(x: 3, y: 0)]
        let smoothed = SVGChart.smoothed(points, weight: 0.5)
        XCTAssertEqual(smoothed[0].y, 10, accuracy: 1e-12)
        XCTAssertEqual(smoothed[1].y, 10.0 / 3, accuracy: 1e-12)   // (0.25·10 + 0.5·0) / 0.75
        XCTAssertEqual(smoothed.map(\.x), [1, 2, 3])
    }

    func testMetricsKeepTheLastRecordOfAStepAndSkipBrokenLines() throws {
        let directory = try TestCorpus.scratch("metrics")
        let lines = [
            #"{"kind":"train","step":10,"ce":5.0,"loss":5.0}"#,
            #"{"kind":"validation","step":10,"ce":4.9,"perplexity":134.3}"#,
            #"{"kind":"train","step":20,"ce":4.0}"#,
            #"{"kind":"train","step":20,"ce":4.5}"#,
            #"{"kind":"train","st"#,
        ]
        try (lines.joined(separator: "\n") + "\n").write(to: directory.appendingPathComponent("metrics.jsonl"), atomically: true, encoding: .utf8)
        let metrics = try XCTUnwrap(TrainingMetrics.read(directory: directory))
        XCTAssertEqual(metrics.points("ce", validation: false), [ChartPoint(x: 10, y: 5), ChartPoint(x: 20, y: 4.5)])
        XCTAssertEqual(metrics.points("ce", validation: true), [ChartPoint(x: 10, y: 4.9)])
        XCTAssertNil(TrainingMetrics.read(directory: directory.appendingPathComponent("none")))
    }

    func testGapClosedIsTheShareOfTheBaselineToTeacherDistance() {
        func model(_ name: String, _ kind: String, bitsPerByte: Double) -> ReportModel {
            ReportModel(name: name, kind: ModelKind(name: kind)!, directory: name,
                        evaluation: PerplexityReport(tokens: 100, nllSum: bitsPerByte * log(2) * 1000, bytes: 1000))
        }
        var models = [model("teacher", "teacher", bitsPerByte: 1.0), model("baseline", "baseline", bitsPerByte: 2.0),
                      model("kd", "kd", bitsPerByte: 1.5), model("worse", "kd", bitsPerByte: 2.2)]
        RunReport.fillGaps(&models)
        XCTAssertNil(models[0].gapClosed)
        XCTAssertNil(models[1].gapClosed)
        XCTAssertEqual(models[2].gapClosed ?? .nan, 0.5, accuracy: 1e-12)
        XCTAssertEqual(models[3].gapClosed ?? .nan, -0.2, accuracy: 1e-12)
    }

    func testStageRecordsSayWhetherAStageIsCurrent() throws {
        let store = try StageStore(runDirectory: try TestCorpus.scratch("stages"))
        let settings = JSONNode.object([("steps", .integer(10))])
        let key = StageStore.key(stage: "s", settings: settings, inputs: [("data", "abc")])
        XCTAssertNotEqual(key, StageStore.key(stage: "s", settings: .object([("steps", .integer(11))]), inputs: [("data", "abc")]))
        XCTAssertNotEqual(key, StageStore.key(stage: "s", settings: settings, inputs: [("data", "abd")]))
        XCTAssertEqual(key, StageStore.key(stage: "s", settings: try JSONNode.parse(#"{ "steps" : 10 }"#), inputs: [("data", "abc")]))
        XCTAssertEqual(store.status("s", key: key), .stale)
        try store.begin("s", key: key, settings: settings, inputs: [("data", "abc")])
        XCTAssertEqual(store.status("s", key: key), .started)
        try store.finish("s", key: key, settings: settings, inputs: [("data", "abc")], result: .object([("x", .integer(1))]))
        XCTAssertEqual(store.status("s", key: key), .finished)
        XCTAssertEqual(store.status("s", key: "other"), .stale)
        XCTAssertEqual(store.result("s")?["x"], .integer(1))
    }

    /// Expects `RunDirectory.prepare` to refuse a run directory whose run.json is `manifest`, with `expected`
    /// (made from the directory's path) and a message that mentions `phrase`.
    func expectRefusal(ofRunJSON manifest: String, _ expected: (String) -> PipelineError, mentioning phrase: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let run = try TestCorpus.scratch("refused-run")
        try manifest.write(to: run.appendingPathComponent("run.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunDirectory.prepare(run), file: file, line: line) { error in
            XCTAssertEqual(error as? PipelineError, expected(run.path), file: file, line: line)
            XCTAssertTrue("\(error)".contains(phrase), "\(error)", file: file, line: line)
        }
    }

    func testRunDirectoryOfAnotherSchemaIsRefused() throws {
        try expectRefusal(ofRunJSON: #"{"format": 1, "schema_version": 0, "models": []}"#,
                          { .otherSchema(path: $0, found: 0, expected: Recipe.schemaVersion) }, mentioning: "schema 0")
        let stranger = try TestCorpus.scratch("stranger")
        try "x".write(to: stranger.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunDirectory.prepare(stranger)) { XCTAssertEqual($0 as? PipelineError, .notARunDirectory(stranger.path)) }
        XCTAssertNoThrow(try RunDirectory.prepare(try TestCorpus.scratch("empty-run")))
    }

    /// Bad-input sweep 2, findings 16 and 17: a run.json of another layout names the layout (not "schema 1
    /// and schema 1"), and `report` on a directory without run.json says it is not a run (no --output advice).
    func testOtherLayoutsAndNonRunsAreNamedForWhatTheyAre() throws {
        try expectRefusal(ofRunJSON: #"{"format": 7, "schema_version": 1, "models": []}"#,
                          { .otherLayout(path: $0, found: 7, expected: RunDirectory.format) }, mentioning: "layout 7")
        let model = try TestCorpus.scratch("a-model")
        try "{}".write(to: model.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunReport.build(runDirectory: model)) { error in
            XCTAssertEqual(error as? PipelineError, .noManifest(model.path))
            XCTAssertFalse("\(error)".contains("--output"), "\(error)")
        }
    }

    func testDefaultCorpusIsFoundAboveTheSearchRoot() throws {
        let tree = try TestCorpus.scratch("tree")
        let corpora = tree.appendingPathComponent("corpora"), deep = tree.appendingPathComponent("recipes/more")
        try FileManager.default.createDirectory(at: corpora, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: deep, withIntermediateDirectories: true)
        try "In the beginning\n".write(to: corpora.appendingPathComponent("kjv.txt"), atomically: true, encoding: .utf8)
        XCTAssertEqual(try DefaultCorpus.locate(searchRoots: [deep]), corpora.appendingPathComponent("kjv.txt").standardizedFileURL.path)
        // Only a failing script: its error says what to install.
        try FileManager.default.removeItem(at: corpora.appendingPathComponent("kjv.txt"))
        try "echo 'error: the bible program is missing: install it with apt-get install bible-kjv' >&2; exit 1\n"
            .write(to: corpora.appendingPathComponent("kjv.sh"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DefaultCorpus.locate(searchRoots: [deep])) { XCTAssertTrue("\($0)".contains("bible-kjv"), "\($0)") }
    }

    /// A baseline that overfits is marked, and a student's gap is also measured against the baseline at
    /// its best (issue 22's honest baselines: a win that is only regularisation shows).
    func testOverfittingIsMarkedAndTheGapIsAlsoTakenFromTheBestBaseline() throws {
        var teacher = ReportModel(name: "teacher", kind: .teacher, directory: "t")
        teacher.validationCurve = ValidationCurve(bestStep: 100, best: 3.0, finalStep: 100, final: 3.0)
        var baseline = ReportModel(name: "baseline", kind: .student(.baseline), directory: "b")
        baseline.validationCurve = ValidationCurve(bestStep: 50, best: 4.0, finalStep: 100, final: 4.5)
        var student = ReportModel(name: "kd", kind: .student(.kd), directory: "s")
        student.validationCurve = ValidationCurve(bestStep: 100, best: 3.8, finalStep: 100, final: 3.8)
        var models = [teacher, baseline, student]
        RunReport.fillGaps(&models)
        XCTAssertTrue(try XCTUnwrap(models[1].validationCurve).rose)
        XCTAssertFalse(try XCTUnwrap(models[2].validationCurve).rose)
        XCTAssertEqual(try XCTUnwrap(models[2].gapClosedAgainstBestBaseline), 0.2, accuracy: 1e-12)  // (4.0 − 3.8) / (4.0 − 3.0)
        XCTAssertNil(models[1].gapClosedAgainstBestBaseline)
    }

    /// The sample-quality measures' pieces: prompts evenly spaced and whole, repeated 4-grams counted within
    /// each sequence.
    func testSampleQualityPromptsAndRepeats() {
        let tokens = (0..<100).map { Int32($0) }
        let prompts = SampleQuality.prompts(from: tokens, count: 4, promptLength: 10)
        XCTAssertEqual(prompts.map(\.first), [0, 22, 44, 66])
        XCTAssertTrue(prompts.allSatisfy { $0.count == 10 })
        XCTAssertEqual(SampleQuality.prompts(from: Array(tokens.prefix(5)), count: 4, promptLength: 10), [])
        // 1 2 3 4 1 2 3 4: five 4-grams, of which "1 2 3 4" comes again once.
        XCTAssertEqual(SampleQuality.repeatedFourGramShare([[1, 2, 3, 4, 1, 2, 3, 4]]), 1.0 / 5.0, accuracy: 1e-12)
        // The same 4-gram in two sequences is not a repeat.
        XCTAssertEqual(SampleQuality.repeatedFourGramShare([[1, 2, 3, 4], [1, 2, 3, 4]]), 0)
        XCTAssertEqual(SampleQuality.repeatedFourGramShare([[1, 2, 3]]), 0)
    }
}

extension XMLElement {
    /// An attribute's value by name (`attribute(forName:)` misses attributes of elements in the SVG
    /// namespace on Linux).
    func value(of name: String) -> String? { attributes?.first { $0.name == name }?.stringValue }
}
