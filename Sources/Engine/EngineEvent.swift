import Scheduler
import QueueStore

/// What a worker thread hands back to the engine's loop.
public enum EngineEvent: Sendable {
    case preprocessed(UInt64, Result<QueueFiles.Preprocessed, QueueFiles.TodoError>)
    /// A group of todo entries preprocessed together (one flush, one exchange with qmail-clean).
    case preprocessedMany([(UInt64, Result<QueueFiles.Preprocessed, QueueFiles.TodoError>)])
    case delivered(number: Int, report: DeliveryReport)
    /// One SMTP transaction for several recipients of a message.
    case deliveredBatch([(Int, DeliveryReport)])
    case bounced(UInt64, BounceOutcome)
    /// A delay warning was sent (or not).
    case warned(UInt64, BounceOutcome)
}

/// How injecting one bounce went.
public enum BounceOutcome: Sendable {
    /// Queued with this qp; the bounce file can go.
    case queued(qp: Int32)
    /// Nothing to send (triple bounce, blank doublebounceto): log line, then drop the file.
    case discarded(String)
    /// No bounce file: nothing was due.
    case none
    /// Failed; retry later. The warning to log.
    case failed(String)
}
