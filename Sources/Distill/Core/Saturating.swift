import Foundation

// Size arithmetic that saturates at Int.max instead of trapping on overflow: sizes are estimated before
// anything is allocated, so that an absurd config is refused in a sentence, not in the allocator.

/// a·b·…, or Int.max when the product overflows (sizes are never negative).
func saturatingProduct(_ factors: Int...) -> Int {
    var product = 1
    for factor in factors {
        let (result, overflow) = product.multipliedReportingOverflow(by: max(factor, 0))
        if overflow { return Int.max }
        product = result
    }
    return product
}

/// a + b + …, or Int.max when the sum overflows.
func saturatingSum(_ terms: [Int]) -> Int {
    var sum = 0
    for term in terms {
        let (result, overflow) = sum.addingReportingOverflow(max(term, 0))
        if overflow { return Int.max }
        sum = result
    }
    return sum
}
