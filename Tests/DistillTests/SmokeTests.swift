import XCTest
import Distill

final class SmokeTests: XCTestCase {
    func testVersion() { XCTAssertFalse(DistillVersion.string.isEmpty) }
}
