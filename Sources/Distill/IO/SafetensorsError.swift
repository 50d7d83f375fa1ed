/// What is wrong with a safetensors file or with tensors about to be written to one. Every message names
/// the file and, where there is one, the tensor.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    /// The file cannot be opened or mapped.
    case unreadable(file: String, reason: String)
    /// Fewer than the 8 bytes of the header length.
    case tooShort(file: String, size: Int)
    /// The header length points past the end of the file.
    case headerBeyondFile(file: String, headerLength: UInt64, fileSize: Int)
    /// The header is not a JSON object of the expected form.
    case badHeader(file: String, reason: String)
    /// A tensor's header entry lacks a field or has one of the wrong form.
    case badEntry(file: String, tensor: String, reason: String)
    /// A dtype the format does not define.
    case unknownDType(file: String, tensor: String, dtype: String)
    /// `data_offsets` reach outside the data that follows the header.
    case outsideData(file: String, tensor: String, begin: Int, end: Int, dataSize: Int)
    /// `data_offsets` span a different number of bytes than the shape and dtype need.
    case sizeMismatch(file: String, tensor: String, claimedBytes: Int, shape: [Int], dtype: String, neededBytes: Int)
    /// Two tensors share bytes.
    case overlap(file: String, first: String, second: String)
    /// No tensor of that name.
    case missingTensor(file: String, tensor: String, known: Int)
    /// The tensor's dtype cannot be read as the kind of value asked for.
    case wrongDType(file: String, tensor: String, dtype: String, wanted: String)
    /// An integer tensor holds a value the requested integer type cannot represent.
    case valueOutOfRange(file: String, tensor: String, value: String, wanted: String)
    /// A tensor handed to the writer is inconsistent (name, shape or number of values).
    case invalidTensor(file: String, tensor: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let file, let reason):
            return "\(file): cannot read it: \(reason)"
        case .tooShort(let file, let size):
            return "\(file): \(size) bytes is too short for a safetensors file (it starts with an 8-byte header length): the file is damaged or not safetensors"
        case .headerBeyondFile(let file, let headerLength, let fileSize):
            return "\(file): the header claims \(headerLength) bytes but only \(fileSize - 8) follow the 8-byte length: the file is damaged, truncated or not safetensors"
        case .badHeader(let file, let reason):
            return "\(file): bad header: \(reason): the file is damaged or not safetensors"
        case .badEntry(let file, let tensor, let reason):
            return "\(file): tensor '\(tensor)': \(reason): the file is damaged or was written by a broken tool"
        case .unknownDType(let file, let tensor, let dtype):
            return "\(file): tensor '\(tensor)' has dtype '\(dtype)', which safetensors does not define (known: \(SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", "))): the file is damaged or from a newer format"
        case .outsideData(let file, let tensor, let begin, let end, let dataSize):
            return "\(file): tensor '\(tensor)' claims bytes \(begin)..<\(end) but the data after the header has only \(dataSize) bytes: the file is damaged or truncated"
        case .sizeMismatch(let file, let tensor, let claimedBytes, let shape, let dtype, let neededBytes):
            return "\(file): tensor '\(tensor)' claims \(claimedBytes) bytes but its shape \(shape) of \(dtype) needs \(neededBytes): the file is damaged or truncated"
        case .overlap(let file, let first, let second):
            return "\(file): tensors '\(first)' and '\(second)' claim overlapping bytes: the file is damaged"
        case .missingTensor(let file, let tensor, let known):
            return "\(file): no tensor named '\(tensor)' (the file has \(known)): check the name or the file"
        case .wrongDType(let file, let tensor, let dtype, let wanted):
            return "\(file): tensor '\(tensor)' is \(dtype), which cannot be read as \(wanted): convert the file (e.g. to F32 or F16) first"
        case .valueOutOfRange(let file, let tensor, let value, let wanted):
            return "\(file): tensor '\(tensor)' holds \(value), which does not fit in \(wanted)"
        case .invalidTensor(let file, let tensor, let reason):
            return "\(file): cannot write tensor '\(tensor)': \(reason)"
        }
    }
}
