#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import ControlFiles
import QueueClient
import Receipts

/// What every `.qmail` helper shares: its name in messages, libqmail's
/// `strerr_die` texts (`<prog>: fatal: …` on descriptor 2, which qmail-local
/// makes the delivery report), environment checks, indimail's
/// `set_environment()`, and `--help`.
public struct Tool: Sendable {
    public let name: String

    public init(_ name: String) {
        self.name = name
    }

    /// `<prog>: fatal: text` and exit.
    public func fatal(_ code: Int32, _ text: String) -> Never {
        printError(name + ": fatal: " + text)
        exit(code)
    }

    /// A text as it is (usage lines, `bouncesaying`'s message) and exit.
    public func quit(_ code: Int32, _ text: String) -> Never {
        if !text.isEmpty { printError(text) }
        exit(code)
    }

    public func warn(_ text: String) { printError(name + ": warn: " + text) }

    public func env(_ name: String) -> String? { Sys.environment(name) }

    /// A variable qmail-local sets; missing → 100 `<prog>: fatal: NAME not set`.
    public func required(_ variable: String, code: Int32 = 100) -> String {
        guard let v = env(variable) else { fatal(code, variable + " not set") }
        return v
    }

    /// `--help` as the first argument: the text on standard output, exit 0.
    public func helpIfAsked(_ args: [String], _ text: String) {
        if args.first == "--help" {
            printOut(text.hasSuffix("\n") ? text : text + "\n")
            exit(0)
        }
    }

    /// indimail's `set_environment()` with the root flag 0 (toolbox.md §0.4):
    /// `$HOME/.defaultqueue` (not for root), then `control/defaultqueue` unless
    /// `QUEUE_BASE` is set. A problem with the first is a warning, with the
    /// second fatal (111).
    public func setEnvironment() {
        do {
            for w in try DefaultQueue.setEnvironment(rootAllowed: false, control: ControlDirectory.fromEnvironment()) {
                warn(w)
            }
        } catch {
            fatal(111, "\(error)")
        }
    }
}

/// qmail's `error_temp()`: errno values that mean "try again later".
public func isTemporaryError(_ e: Int32) -> Bool {
    [EINTR, ENOMEM, ETXTBSY, EIO, ETIMEDOUT, EWOULDBLOCK, EAGAIN, EDEADLK, ENFILE, EMFILE, EFBIG, ENOSPC,
     ENETDOWN, ENETUNREACH, ENETRESET, ECONNABORTED, ECONNRESET, ENOBUFS, ETOOMANYREFS, ECONNREFUSED,
     EHOSTDOWN, EHOSTUNREACH, EUSERS, EDQUOT, ESTALE, ENOLCK].contains(e)
}

/// `error_str()`: qmail's short error texts.
public func errorText(_ e: Int32) -> String { QmailErrorText.text(e) }
