import CKernels
import Distill
import XCTest

/// `ck_rotary`, the rotary embedding of the model's queries and keys: whichever body the CPU (or
/// `DISTILL_ISA`) picks gives the bits of the scalar expression Hugging Face's "rotate half" writes, on
/// head widths that are not multiples of a vector, several heads, a row stride wider than the heads,
/// rows at positions start + r % length, and a part of the rows alone; and the inverse undoes it.
final class RotaryKernelTests: XCTestCase {
    func testTheKernelGivesTheScalarExpressionsBitsAndItsInverseUndoesIt() {
        var random = SeededRandom(seed: 31)
        for headDim in [2, 6, 32, 34, 66] {
            let half = headDim / 2, heads = 3, stride = heads * headDim + 5, rows = 7, length = 3, start = 2
            let positions = start + length
            let cosines = (0..<positions * half).map { _ in random.nextGaussian() }
            let sines = (0..<positions * half).map { _ in random.nextGaussian() }
            let input = (0..<rows * stride).map { _ in random.nextGaussian() }
            for direction: Float in [1, -1] {
                var expected = input
                for row in 0..<rows {
                    let position = start + row % length
                    for head in 0..<heads {
                        let base = row * stride + head * headDim
                        for i in 0..<half {
                            let a = input[base + i], b = input[base + i + half], sine = direction * sines[position * half + i]
                            let cosine = cosines[position * half + i]
                            expected[base + i] = a * cosine - b * sine
                            expected[base + i + half] = b * cosine + a * sine
                        }
                    }
                }
                var whole = input, parts = input
                ck_rotary(&whole, stride, 0, rows, length, start, heads, headDim, cosines, sines, direction)
                ck_rotary(&parts, stride, 0, 3, length, start, heads, headDim, cosines, sines, direction)
                ck_rotary(&parts, stride, 3, rows, length, start, heads, headDim, cosines, sines, direction)
                XCTAssertEqual(whole.map(\.bitPattern), expected.map(\.bitPattern), "d \(headDim), direction \(direction)")
                XCTAssertEqual(parts.map(\.bitPattern), expected.map(\.bitPattern), "rows split, d \(headDim)")
            }
        }
        // A true rotation (unit cosine and sine pairs): the inverse brings the values back.
        let headDim = 34, half = 17, stride = 2 * headDim, rows = 4
        let angles = (0..<rows * half).map { Float($0) * 0.37 }
        let cosines = angles.map { Float(cos(Double($0))) }, sines = angles.map { Float(sin(Double($0))) }
        let input = (0..<rows * stride).map { Float($0 % 13) - 6 }
        var values = input
        ck_rotary(&values, stride, 0, rows, rows, 0, 2, headDim, cosines, sines, 1)
        XCTAssertGreaterThan(zip(values, input).map { abs($0 - $1) }.max() ?? 0, 0.1, "the rotation moved the values")
        ck_rotary(&values, stride, 0, rows, rows, 0, 2, headDim, cosines, sines, -1)
        XCTAssertLessThan(zip(values, input).map { abs($0 - $1) }.max() ?? 1, 1e-5)
    }
}
