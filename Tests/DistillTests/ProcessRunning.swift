import Foundation

/// What a finished child process left: its exit status and what it wrote to each stream.
struct ProcessResult {
    var status: Int32
    var output: String
    var errors: String
    /// Standard output followed by standard error, for failure messages.
    var transcript: String { output + errors }
}

/// Runs `executable` with `arguments` and waits for it. Standard error goes to a temporary file, so a
/// child that writes much to both streams cannot block on a full pipe.
func runProcess(_ executable: URL, _ arguments: [String], currentDirectory: URL? = nil,
                environment: [String: String]? = nil) throws -> ProcessResult {
    let errorsURL = FileManager.default.temporaryDirectory.appendingPathComponent("distill-stderr-\(UUID().uuidString)")
    guard FileManager.default.createFile(atPath: errorsURL.path, contents: nil) else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: errorsURL.path])
    }
    defer { try? FileManager.default.removeItem(at: errorsURL) }
    let errorsHandle = try FileHandle(forWritingTo: errorsURL)
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let currentDirectory { process.currentDirectoryURL = currentDirectory }
    if let environment { process.environment = environment }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = errorsHandle
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try errorsHandle.close()
    return ProcessResult(status: process.terminationStatus, output: String(decoding: output, as: UTF8.self),
                         errors: String(decoding: try Data(contentsOf: errorsURL), as: UTF8.self))
}
