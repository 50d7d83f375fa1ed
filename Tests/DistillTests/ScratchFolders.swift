import Foundation
import XCTest

/// Scratch folders that outlive one test (a corpus and its tokenizer, shared by many) are removed when the
/// test bundle finishes, so that runs of the suite do not pile up in the temporary folder.
final class ScratchFolders: NSObject, XCTestObservation {
    private static let shared = ScratchFolders()
    private let lock = NSLock()
    private var folders: [URL] = []
    private var observing = false

    /// A new folder `name` in the temporary folder, removed when the test bundle finishes.
    static func make(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        shared.remove(atEnd: url)
        return url
    }

    private func remove(atEnd url: URL) {
        lock.lock()
        defer { lock.unlock() }
        folders.append(url)
        if !observing {
            observing = true
            XCTestObservationCenter.shared.addTestObserver(self)
        }
    }

    func testBundleDidFinish(_ testBundle: Bundle) {
        lock.lock()
        defer { lock.unlock() }
        for folder in folders { try? FileManager.default.removeItem(at: folder) }
        folders = []
    }
}
