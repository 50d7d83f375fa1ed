import Foundation

/// JSON for reports printed by the command line. JSON has no NaN or infinity, and Foundation refuses
/// them with an opaque error; a model with non-finite weights does produce them, so they are written
/// as `null`.
public enum JSONOutput {
    /// `object` (dictionaries, arrays, strings, numbers, booleans, NSNull) as one line of JSON with
    /// sorted keys, non-finite numbers replaced by null.
    public static func data(_ object: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: finite(object), options: [.sortedKeys, .withoutEscapingSlashes])
    }

    /// The same value with every non-finite floating-point number replaced by NSNull.
    static func finite(_ value: Any) -> Any {
        switch value {
        case let dictionary as [String: Any]: return dictionary.mapValues(finite)
        case let array as [Any]: return array.map(finite)
        case let number as Double: return number.isFinite ? number : NSNull()
        case let number as Float: return number.isFinite ? number : NSNull()
        default: return value
        }
    }
}
