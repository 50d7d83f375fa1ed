import Foundation

/// What a finished child process left: its exit status and what it wrote to each stream.
struct ProcessResult {
    var status: Int32
    var output: String
    var errors: String
    /// Standard output followed by standard error, for failure messages.
    var transcript: String { output + errors }
}

/// Runs `executable` with `arguments` (and `input` on its standard input) and waits for it. Standard error
/// goes to a temporary file, so a child that writes much to both streams cannot block on a full pipe.
func runProcess(_ executable: URL, _ arguments: [String], currentDirectory: URL? = nil,
                environment: [String: String]? = nil, input: String? = nil) throws -> ProcessResult {
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
    let pipe = Pipe(), stdin = Pipe()
    process.standardOutput = pipe
    process.standardError = errorsHandle
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try errorsHandle.close()
    return ProcessResult(status: process.terminationStatus, output: String(decoding: output, as: UTF8.self),
                         errors: String(decoding: try Data(contentsOf: errorsURL), as: UTF8.self))
}

/// Starts `executable` with `arguments` and returns at once, for tests that interrupt, kill or time a run:
/// standard output is discarded, standard error goes to `standardError` (discarded by default), and
/// standard input is empty.
func startProcess(_ executable: URL, _ arguments: [String], standardError: Any = FileHandle.nullDevice) throws -> Process {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = standardError
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return process
}
