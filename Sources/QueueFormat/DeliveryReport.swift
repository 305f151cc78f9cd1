// The spawner protocol's report, shared by the scheduler, the engine and the
// delivery helpers (qmail-lspawn, qmail-rspawn).
/// What a delivery attempt said: qmail's K (success), Z (deferral), D (failure)
/// with the human text after the letter.
public struct DeliveryReport: Equatable, Sendable {
    public enum Kind: UInt8, Sendable { case success = 75, deferral = 90, failure = 68 }  // K Z D
    public var kind: Kind
    public var text: [UInt8]

    public init(_ kind: Kind, _ text: [UInt8]) { self.kind = kind; self.text = text }
    public init(_ kind: Kind, _ text: String) { self.init(kind, Array(text.utf8)) }

    /// Parses spawner-style bytes: letter + text. Anything else is mangled (nil).
    public init?(bytes: [UInt8]) {
        guard let first = bytes.first, let k = Kind(rawValue: first) else { return nil }
        self.init(k, Array(bytes.dropFirst()))
    }

    public var letter: Character { Character(UnicodeScalar(kind.rawValue)) }
}
