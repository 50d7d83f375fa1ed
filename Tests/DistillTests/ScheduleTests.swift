import XCTest
import Distill

/// The KD-weight and temperature schedules: exact at their ends, resumed exactly, refused with a
/// sentence that names the setting when they cannot act.
final class ScheduleTests: XCTestCase {
    static func settings(ce: Float = 0.7, kd: Float = 1.3, kdSchedule: KDSchedule = .constant,
                         temperature: TemperatureSchedule? = nil) -> DistillationSettings {
        var settings = DistillationSettings()
        settings.weights = DistillationWeights(ce: ce, kd: kd)
        settings.logits.temperature = temperature?.end ?? 2
        settings.schedule = DistillationSchedule(kd: kdSchedule, temperature: temperature)
        return settings
    }

    /// Step 0 and the last step take exactly the configured start and end values, for every schedule and shape.
    func testSchedulesAreExactAtTheirEnds() throws {
        let total = 37
        XCTAssertEqual(DistillationSchedule.progress(step: 0, totalSteps: total), 0)
        XCTAssertEqual(DistillationSchedule.progress(step: total - 1, totalSteps: total), 1)
        XCTAssertEqual(DistillationSchedule.progress(step: 0, totalSteps: 1), 1, "a one-step run is its own last step")

        let configured = DistillationWeights(ce: 0.7, kd: 1.3)
        let expected: [(KDSchedule, start: (Float, Float), end: (Float, Float))] = [
            (.constant, (0.7, 1.3), (0.7, 1.3)), (.kdToCE, (0, 1.3), (0.7, 1.3)), (.ceToKD, (0.7, 0), (0.7, 1.3)),
        ]
        for (kd, start, end) in expected {
            let schedule = DistillationSchedule(kd: kd)
            let first = schedule.weights(configured, progress: DistillationSchedule.progress(step: 0, totalSteps: total))
            let last = schedule.weights(configured, progress: DistillationSchedule.progress(step: total - 1, totalSteps: total))
            XCTAssertEqual([first.ce, first.kd], [start.0, start.1], "\(kd) at step 0")
            XCTAssertEqual([last.ce, last.kd], [end.0, end.1], "\(kd) at the last step")
            let middle = schedule.weights(configured, progress: 0.5)
            if kd == .kdToCE { XCTAssertEqual(middle.ce, 0.35, accuracy: 1e-6) }
            if kd == .ceToKD { XCTAssertEqual(middle.kd, 0.65, accuracy: 1e-6) }
        }
        for shape in AnnealingShape.allCases {
            let annealed = TemperatureSchedule(start: 3.7, end: 1.3, shape: shape)
            XCTAssertEqual(annealed.temperature(progress: 0), 3.7, "\(shape)")
            XCTAssertEqual(annealed.temperature(progress: 1), 1.3, "\(shape)")
            XCTAssertEqual(annealed.temperature(progress: 0.5), 2.5, accuracy: 1e-6, "\(shape): both shapes pass the midpoint")
        }
        XCTAssertLessThan(TemperatureSchedule(start: 4, end: 1, shape: .linear).temperature(progress: 0.25),
                          TemperatureSchedule(start: 4, end: 1, shape: .cosine).temperature(progress: 0.25), "cosine is flat at the start")

        // Through the objective, as the Trainer drives it.
        let teacher = try LlamaModel(config: TrainingTests.config, seed: 1)
        let objective = try DistillationObjective(
            teacher: teacher, studentConfig: TrainingTests.config,
            settings: Self.settings(kdSchedule: .kdToCE, temperature: TemperatureSchedule(start: 3.7, end: 1.3)), seed: 1)
        objective.prepare(step: 0, totalSteps: total)
        XCTAssertEqual([objective.current.weights.ce, objective.current.weights.kd, objective.current.logits.temperature], [0, 1.3, 3.7])
        objective.prepare(step: total - 1, totalSteps: total)
        XCTAssertEqual([objective.current.weights.ce, objective.current.weights.kd, objective.current.logits.temperature], [0.7, 1.3, 1.3])
    }

    /// The schedule is read from the trainer's step: a scheduled run stopped and resumed ends with
    /// exactly the weights of an uninterrupted one, and its steps really differ from a constant run's.
    func testScheduledRunResumesBitwise() throws {
        let corpus = try TestCorpus.files()
        let data = try TokenFile(path: corpus.data)
        let teacher = try LlamaModel(config: TrainingTests.config, seed: 7)
        var p = TrainingTests.parameters(steps: 8)
        p.accumulationSteps = 2
        p.logEvery = 1
        func trainer(_ settings: DistillationSettings, seed: UInt64) throws -> Trainer {
            let objective = try DistillationObjective(teacher: teacher, studentConfig: TrainingTests.config, settings: settings, seed: 1)
            return try Trainer(model: LlamaModel(config: TrainingTests.config, seed: seed), objective: objective,
                               parameters: p, tokenizerHash: data.tokenizerHash)
        }
        let scheduled = Self.settings(kdSchedule: .ceToKD, temperature: TemperatureSchedule(start: 4, end: 1, shape: .cosine))

        var kdTerms: [Double] = []
        let straight = try trainer(scheduled, seed: 3)
        try straight.run(trainingTokens: data.trainTokens, validation: [], output: try TestCorpus.scratch("schedule-straight"),
                         tokenizerModel: corpus.tokenizer, report: { event in
            if case let .step(report) = event { kdTerms.append(report.terms[.kd] ?? -1) }
        })
        XCTAssertEqual(kdTerms.first, -1, "ce-to-kd starts from pure CE: no KD term at step 0")
        XCTAssertGreaterThan(kdTerms.last ?? 0, 0)

        let constant = try trainer(Self.settings(), seed: 3)
        try TrainingTests.run(constant, data: data, output: try TestCorpus.scratch("schedule-constant"), tokenizer: corpus.tokenizer)
        XCTAssertNotEqual(Array(constant.model.parameters), Array(straight.model.parameters), "the schedule changed nothing")

        let directory = try TestCorpus.scratch("schedule-interrupted")
        let first = try trainer(scheduled, seed: 3)
        try TrainingTests.run(first, data: data, output: directory, tokenizer: corpus.tokenizer, stopAfter: 3)
        XCTAssertEqual(first.step, 3)
        let resumed = try trainer(scheduled, seed: 99)
        try resumed.resume(from: directory)
        try TrainingTests.run(resumed, data: data, output: directory, tokenizer: corpus.tokenizer)
        XCTAssertEqual(resumed.step, 8)
        XCTAssertEqual(Array(resumed.model.parameters), Array(straight.model.parameters), "resumed weights differ")

        // The checkpoint names the schedules: a resume with another one is refused, naming it.
        for (other, name) in [(Self.settings(kdSchedule: .kdToCE, temperature: scheduled.schedule.temperature), "kd_schedule"),
                              (Self.settings(kdSchedule: .ceToKD, temperature: TemperatureSchedule(start: 4, end: 1)), "temperature_schedule")] {
            XCTAssertThrowsError(try trainer(other, seed: 3).resume(from: directory)) { error in
                XCTAssertTrue("\(error)".contains(name), "\(error)")
            }
        }
    }

    /// Out-of-range or conflicting schedules are SettingErrors naming the schedule's setting.
    func testBadSchedulesAreRefused() throws {
        func refused(_ settings: DistillationSettings, _ setting: Setting, _ phrase: String, line: UInt = #line) {
            XCTAssertThrowsError(try settings.validate(), line: line) { error in
                guard let error = error as? SettingError else { return XCTFail("\(error)", line: line) }
                XCTAssertEqual(error.setting, setting, line: line)
                XCTAssertTrue(error.problem.contains(phrase), error.problem, line: line)
            }
        }
        refused(Self.settings(ce: 0, kdSchedule: .kdToCE), .kdSchedule, "CE weight is 0")
        refused(Self.settings(kd: 0, kdSchedule: .ceToKD), .kdSchedule, "KD weight is 0")
        refused(Self.settings(temperature: TemperatureSchedule(start: 0, end: 1)), .temperatureSchedule, "temperatures in")
        refused(Self.settings(temperature: TemperatureSchedule(start: .nan, end: 1)), .temperatureSchedule, "temperatures in")
        refused(Self.settings(ce: 1, kd: 0, temperature: TemperatureSchedule(start: 4, end: 1)), .temperatureSchedule, "KD weight is 0")
        var conflicting = Self.settings(temperature: TemperatureSchedule(start: 4, end: 1))
        conflicting.logits.temperature = 3
        refused(conflicting, .temperatureSchedule, "conflicts with temperature")
        for text in ["4", "4:x", "4:1:cubic", "", "4:1:linear:9"] {
            XCTAssertThrowsError(try TemperatureSchedule(parsing: text)) { error in
                XCTAssertEqual((error as? SettingError)?.setting, .temperatureSchedule, "\(text): \(error)")
            }
        }
        XCTAssertEqual(try TemperatureSchedule(parsing: "4:1"), TemperatureSchedule(start: 4, end: 1, shape: .linear))
        XCTAssertEqual(try TemperatureSchedule(parsing: "0.5:2:cosine"), TemperatureSchedule(start: 0.5, end: 2, shape: .cosine))
        XCTAssertNoThrow(try Self.settings(kdSchedule: .kdToCE, temperature: TemperatureSchedule(start: 4, end: 2)).validate())
    }
}

/// The schedule flags on the command line: one line naming the flag.
extension CommandLineTests {
    func testScheduleFlagMistakes() throws {
        let corpus = try TestCorpus.files()
        let base = ["student", "--teacher", "/nonexistent/teacher", "--data", corpus.data,
                    "--output", try TestCorpus.scratch("cli-schedule").appendingPathComponent("s").path]
        try expectError(base + ["--temperature-schedule", "4:1", "--temperature", "3"], mentions: "--temperature-schedule conflicts with temperature")
        try expectError(base + ["--temperature-schedule", "0:1"], mentions: "--temperature-schedule needs temperatures in")
        try expectError(base + ["--temperature-schedule", "four:one"], mentions: "--temperature-schedule must be START:END")
        try expectError(base + ["--kd-schedule", "kd-to-ce", "--ce-weight", "0"], mentions: "--kd-schedule kd-to-ce")
        try expectError(base + ["--kd-schedule", "ce-to-kd", "--ce-weight", "1", "--kd-weight", "0"], mentions: "--kd-schedule ce-to-kd")
        try expectError(base + ["--kd-schedule", "sideways"], mentions: "kd-schedule")
    }
}
