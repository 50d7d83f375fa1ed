import CBLAS
import Foundation

// Feature distillation (Heo et al., ICCV 2019, as in the seed): a learned projection P(Z_S) = Z_S·Wᵀ takes
// the student's hidden states to the teacher's width, both sides are normalised per token and their
// distance is averaged over tokens. One call handles one (student block, teacher block) pair; the
// objective sums the pairs of a `LayerMap`.

/// How two unit vectors a (teacher) and b (projected student) are compared per token.
public enum FeatureDistance: String, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// Σ_d |a − b|, the seed's distance.
    case l1
    /// Σ_d (a − b)².
    case l2
    /// 1 − ⟨a, b⟩.
    case cosine

    /// The names the command line accepts.
    public static let names = FeatureDistance.allCases.map(\.rawValue)

    /// Parses `l1`, `l2` or `cosine`.
    public init(name: String) throws {
        guard let distance = FeatureDistance(rawValue: name.lowercased()) else {
            throw SettingError(.featureDistance, "is '\(name)'; use one of \(FeatureDistance.names.joined(separator: ", "))")
        }
        self = distance
    }

    public var description: String { rawValue }
}

/// One student block distilled from one teacher block (0-based block numbers).
public struct LayerPair: Sendable, Equatable, Hashable, Codable {
    public var student: Int
    public var teacher: Int

    public init(student: Int, teacher: Int) {
        self.student = student
        self.teacher = teacher
    }
}

/// Which student blocks learn from which teacher blocks, validated against both models' depths.
public struct LayerMap: Sendable, Equatable, CustomStringConvertible {
    /// The pairs in the order given.
    public let pairs: [LayerPair]

    /// Checks every pair against the depths; throws `layerOutOfDepth` or, for no pair or a repeated
    /// pair, `invalidLayerMap`.
    public init(pairs: [LayerPair], studentLayers: Int, teacherLayers: Int) throws {
        let text = LayerMap.text(pairs)
        guard !pairs.isEmpty else { throw DistillationError.invalidLayerMap(text: text, reason: "it has no pair") }
        var seen = Set<LayerPair>()
        for pair in pairs {
            guard pair.student >= 0 && pair.student < studentLayers else {
                throw DistillationError.layerOutOfDepth(model: "student", layer: pair.student, depth: studentLayers)
            }
            guard pair.teacher >= 0 && pair.teacher < teacherLayers else {
                throw DistillationError.layerOutOfDepth(model: "teacher", layer: pair.teacher, depth: teacherLayers)
            }
            guard seen.insert(pair).inserted else {
                throw DistillationError.invalidLayerMap(
                    text: text, reason: "the pair \(pair.student):\(pair.teacher) appears twice")
            }
        }
        self.pairs = pairs
    }

    /// Parses "S:T,S:T" (0-based student and teacher block numbers; spaces allowed around numbers).
    public init(parsing text: String, studentLayers: Int, teacherLayers: Int) throws {
        try self.init(pairs: try LayerMap.pairs(parsing: text), studentLayers: studentLayers, teacherLayers: teacherLayers)
    }

    /// The pairs of "S:T,S:T", not yet checked against any depth (the command line and recipes parse
    /// them; `ShapeRules.layerMap` checks them once the depths are known).
    public static func pairs(parsing text: String) throws -> [LayerPair] {
        var pairs: [LayerPair] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let sides = item.split(separator: ":", omittingEmptySubsequences: false)
            let trimmed = sides.map { $0.trimmingCharacters(in: .whitespaces) }
            guard trimmed.count == 2, let student = Int(trimmed[0]), let teacher = Int(trimmed[1]) else {
                throw DistillationError.invalidLayerMap(
                    text: text, reason: "'\(item)' is not a pair of whole numbers student:teacher")
            }
            pairs.append(LayerPair(student: student, teacher: teacher))
        }
        return pairs
    }

    /// "S:T,S:T", the form `pairs(parsing:)` reads.
    public static func text(_ pairs: [LayerPair]) -> String {
        pairs.map { "\($0.student):\($0.teacher)" }.joined(separator: ",")
    }

    /// Every student block i paired with teacher block round((i+1)·L_T/L_S) − 1 (halves round up), so the
    /// last blocks meet and the others spread evenly over the teacher's depth.
    public static func uniform(studentLayers: Int, teacherLayers: Int) throws -> LayerMap {
        guard studentLayers >= 1 else {
            throw DistillationError.layerOutOfDepth(model: "student", layer: 0, depth: studentLayers)
        }
        guard teacherLayers >= 1 else {
            throw DistillationError.layerOutOfDepth(model: "teacher", layer: 0, depth: teacherLayers)
        }
        // Integer arithmetic: round(x) = floor(x + ½) with x = (i+1)·L_T/L_S.
        let pairs = (0 ..< studentLayers).map { i in
            LayerPair(student: i, teacher: max(((i + 1) * teacherLayers * 2 + studentLayers) / (2 * studentLayers) - 1, 0))
        }
        return try LayerMap(pairs: pairs, studentLayers: studentLayers, teacherLayers: teacherLayers)
    }

    /// The map in the form `init(parsing:)` reads.
    public var description: String { pairs.map { "\($0.student):\($0.teacher)" }.joined(separator: ",") }
}

/// F.normalize's floor on a norm: x / max(‖x‖, 1e-12).
let normalizationFloor: Float = 1e-12

/// Feature distillation for one layer pair, forward and backward.
///
/// Per token n: y = Zs[n]·Wᵀ, a = Zt[n]/max(‖Zt[n]‖, 1e-12), b = y/max(‖y‖, 1e-12); returns the mean over
/// tokens of `distance(a, b)`. When given, ACCUMULATES gradientScale·∂loss/∂Zs into `dStudentHidden` and
/// gradientScale·∂loss/∂W into `dProjection` (the teacher gets no gradient).
public func featureDistillationForwardBackward(
    dStudentHidden: UnsafeMutablePointer<Float>?,  // [tokens, studentWidth]
    dProjection: UnsafeMutablePointer<Float>?,  // [teacherWidth, studentWidth]
    studentHidden: UnsafePointer<Float>,  // [tokens, studentWidth]
    teacherHidden: UnsafePointer<Float>,  // [tokens, teacherWidth]
    projection: UnsafePointer<Float>,  // [teacherWidth, studentWidth], nn.Linear layout
    tokens: Int, studentWidth: Int, teacherWidth: Int,
    distance: FeatureDistance, gradientScale: Float
) -> Float {
    guard tokens > 0, studentWidth > 0, teacherWidth > 0 else { return 0 }
    let projected = UnsafeMutablePointer<Float>.allocate(capacity: tokens * teacherWidth)  // [tokens, Dt]
    defer { projected.deallocate() }
    // y = Zs·Wᵀ
    linearForward(projected, studentHidden, projection, rows: tokens, inFeatures: studentWidth, outFeatures: teacherWidth)

    let wantsGradient = dStudentHidden != nil || dProjection != nil
    // Overwritten row by row with ∂loss/∂y before the two products below.
    let dProjected = wantsGradient ? UnsafeMutablePointer<Float>.allocate(capacity: tokens * teacherWidth) : nil
    defer { dProjected?.deallocate() }
    let tokenScale = gradientScale / Float(tokens)
    var total = 0.0
    for token in 0 ..< tokens {
        let teacherRow = teacherHidden + token * teacherWidth  // [Dt]
        let projectedRow = projected + token * teacherWidth  // [Dt], becomes b in place
        let teacherInverse = 1 / max(l2Norm(teacherRow, teacherWidth), normalizationFloor)
        let projectedNorm = l2Norm(UnsafePointer(projectedRow), teacherWidth)
        let projectedInverse = 1 / max(projectedNorm, normalizationFloor)
        for d in 0 ..< teacherWidth { projectedRow[d] *= projectedInverse }

        var tokenLoss = 0.0
        switch distance {
        case .l1:
            for d in 0 ..< teacherWidth { tokenLoss += Double(abs(teacherRow[d] * teacherInverse - projectedRow[d])) }
        case .l2:
            for d in 0 ..< teacherWidth {
                let diff = Double(teacherRow[d] * teacherInverse - projectedRow[d])
                tokenLoss += diff * diff
            }
        case .cosine:
            var dot = 0.0
            for d in 0 ..< teacherWidth { dot += Double(teacherRow[d] * teacherInverse * projectedRow[d]) }
            tokenLoss = 1 - dot
        }
        total += tokenLoss

        guard let dProjected else { continue }
        let dRow = dProjected + token * teacherWidth  // [Dt]
        // ∂distance/∂b
        var dotBGrad: Float = 0
        for d in 0 ..< teacherWidth {
            let a = teacherRow[d] * teacherInverse, b = projectedRow[d]
            let grad: Float
            switch distance {
            // |x|' at 0 is taken as 0, like PyTorch's abs.
            case .l1: grad = b > a ? 1 : (b < a ? -1 : 0)
            case .l2: grad = 2 * (b - a)
            case .cosine: grad = -a
            }
            dRow[d] = grad
            dotBGrad += b * grad
        }
        // Through b = y / max(‖y‖, ε): (g − b⟨b, g⟩)/‖y‖ above the floor, g/ε below it.
        let keepsNorm = projectedNorm > normalizationFloor
        for d in 0 ..< teacherWidth {
            let grad = keepsNorm ? dRow[d] - projectedRow[d] * dotBGrad : dRow[d]
            dRow[d] = tokenScale * grad * projectedInverse
        }
    }
    if let dProjected {
        // dZs += dy·W;  dW += dyᵀ·Zs
        linearBackward(dx: dStudentHidden, dWeight: dProjection, dy: dProjected, x: studentHidden, weight: projection,
                       rows: tokens, inFeatures: studentWidth, outFeatures: teacherWidth)
    }
    return Float(total / Double(tokens))
}

/// ‖x‖₂ of `count` floats, summed in Double.
func l2Norm(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
    var sum = 0.0
    for i in 0 ..< count { sum += Double(x[i]) * Double(x[i]) }
    return Float(sum.squareRoot())
}
