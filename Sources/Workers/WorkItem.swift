/// One delivery as the helpers that carry deliveries out see it (the engine's
/// threads in one-process mode, qmail-lspawn and qmail-rspawn): which message,
/// which recipient, and the envelope around it. The scheduler's `Delivery`
/// becomes one of these; the helpers never link the scheduler.
public struct WorkItem: Sendable, Equatable {
    /// The delivery number (the engine's, or the spawner protocol's slot).
    public var number: Int
    public var messageID: UInt64
    public var recipient: [UInt8]
    public var sender: [UInt8]
    public var qqeh: [UInt8]
    public var envHeaders: [UInt8]

    public init(number: Int, messageID: UInt64, recipient: [UInt8], sender: [UInt8], qqeh: [UInt8], envHeaders: [UInt8]) {
        self.number = number
        self.messageID = messageID
        self.recipient = recipient
        self.sender = sender
        self.qqeh = qqeh
        self.envHeaders = envHeaders
    }
}
