/// What is wrong with a GGUF file, or with what was handed to the GGUF writer. Messages name the file and
/// the key or tensor.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    /// The file cannot be opened or mapped.
    case unreadable(file: String, reason: String)
    /// The file does not start with "GGUF".
    case notGGUF(file: String)
    /// A version this reader does not know.
    case unsupportedVersion(file: String, version: UInt32)
    /// The file ends in the middle of something.
    case truncated(file: String, reading: String, offset: Int)
    /// A metadata entry is malformed.
    case badMetadata(file: String, key: String, reason: String)
    /// A tensor description is malformed or its data lies outside the file.
    case badTensor(file: String, tensor: String, reason: String)
    /// No tensor of that name.
    case missingTensor(file: String, tensor: String)
    /// The tensor's ggml type cannot be read as floats.
    case unsupportedTensorType(file: String, tensor: String, type: UInt32)
    /// Metadata or tensors handed to the writer are inconsistent.
    case invalidInput(file: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let file, let reason):
            return "\(file): cannot read it: \(reason)"
        case .notGGUF(let file):
            return "\(file): does not start with \"GGUF\": it is not a GGUF file"
        case .unsupportedVersion(let file, let version):
            return "\(file): GGUF version \(version) is not supported (versions 2 and 3 are): convert it with a current llama.cpp"
        case .truncated(let file, let reading, let offset):
            return "\(file): the file ends at byte \(offset) while reading \(reading): it is truncated or damaged"
        case .badMetadata(let file, let key, let reason):
            return "\(file): metadata '\(key)': \(reason): the file is damaged"
        case .badTensor(let file, let tensor, let reason):
            return "\(file): tensor '\(tensor)': \(reason): the file is damaged or truncated"
        case .missingTensor(let file, let tensor):
            return "\(file): no tensor named '\(tensor)': check the name or the file"
        case .unsupportedTensorType(let file, let tensor, let type):
            return "\(file): tensor '\(tensor)' has ggml type \(type), which distill reads only as F32 (0), F16 (1), Q8_0 (8) or BF16 (30): dequantize the model first"
        case .invalidInput(let file, let reason):
            return "\(file): cannot write: \(reason)"
        }
    }
}
