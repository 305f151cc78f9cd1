// Compiled twice: into QueueFormat, and (through a symbolic link) into the
// Embedded Swift build of qmail-queue. Keep it Embedded-clean.
/// The exit codes of qmail-queue and its front ends, and the exact text the
/// queue-client layer turns each into (indimail-mta `qmail.c`, engine.md §8.2).
/// The first byte of a text is `D` (permanent) or `Z` (temporary).
public enum QueueExitCode: Int32, Sendable, CaseIterable {
    case success = 0
    case addressTooLong = 11
    case permanentlyRejected = 31
    case spam = 32
    case virus = 33
    case bannedAttachment = 34
    case privateKeyMissing = 35
    case duplicatingDescriptors = 41
    case virusScannerPrivilege = 50
    case outOfMemory = 51
    case timeout = 52
    case writeErrorOrDiskFull = 53
    case readError = 54
    case configuration = 55
    case network = 56
    case pluginOpen = 57
    case pluginSymbol = 58
    case pluginClose = 59
    case pipes = 60
    case homeDirectory = 61
    case messFile = 62
    case cdRoot = 63
    case syncMessage = 64
    case intdCreate = 65
    case todoLink = 66
    case messLink = 67
    case temporaryFiles = 68
    case syncDirectory = 69
    case pidFile = 70
    case temporarilyRejected = 71
    case connectionTimedOut = 72
    case connectionRejected = 73
    case communication = 74
    case unableToExec = 75
    case spamFilterTemporary = 76
    case qhpsi = 77
    case uidsGids = 78
    case envelopeFormat = 79
    case removeIntd = 80
    case internalBug = 81
    case execQueue = 82
    case unlinkPid = 83
    case misconfigured = 87
    case customError = 88
    case internalBugClassic = 91
    case addressTooLongAlt = 115
    case execQueueClient = 120
    case fork = 121
    case waitpid = 122
    case crashed = 123
}

/// How a queue program ended, as the client layer saw it.
public enum QueueProgramOutcome: Equatable, Sendable {
    /// Exited with this code; `customText` is what it wrote on the error descriptor
    /// (nil when custom errors are disabled with `ERROR_FD=-1`).
    case exited(code: Int32, customText: [UInt8]?)
    /// Killed by a signal.
    case signaled(Int32)
    /// waitpid returned something unexpected.
    case waitSurprise
}

/// The queue-client text table.
public enum QueueClientText {
    public static let temporaryProblem = "Zqq temporary problem (#4.3.0)"
    public static let permanentProblem = "Dqq permanent problem (#5.3.0)"

    /// The text for one exit code, without the custom-error rule (exit 88) and
    /// without the "0 with client write error" rule.
    public static func text(forExitCode code: Int32) -> String {
        switch code {
        case 0: return ""
        case 54: return "Zqq read error (#4.3.0)"
        case 11, 115: return "Dqq envelope address too long (#5.1.3)"
        case 31: return "Dqq mail server permanently rejected message (#5.3.0)"
        case 32: return "Dqq spam or junk mail threshold exceeded (#5.7.1)"
        case 33: return "Dqq message contains virus (#5.7.1)"
        case 34: return "Dqq message contains banned attachment (#5.7.1)"
        case 35: return "Dqq private key file does not exist (#5.3.5)"
        case 41: return "Zqq trouble duplicating file descriptors (#4.3.0)"
        case 50: return "Zqq unable to get privilege to run virus scanner (#4.3.0)"
        case 51: return "Zqq out of memory (#4.3.0)"
        case 52: return "Zqq timeout (#4.3.0)"
        case 53: return "Zqq write error or disk full (#4.3.0)"
        case 55: return "Zqq unable to read configuration (#4.3.0)"
        case 56: return "Zqq trouble making network connection (#4.3.0)"
        case 57: return "Zqq unable to open shared object/plugin (#4.3.0)"
        case 58: return "Zqq unable to resolve symbol in shared object/plugin (#4.3.0)"
        case 59: return "Zqq unable to close shared object/plugin (#4.3.0)"
        case 60: return "Zqq trouble creating pipes/sockets (#4.3.0)"
        case 61: return "Zqq trouble in home directory (#4.3.0)"
        case 62: return "Zqq unable to access mess file (#4.3.0)"
        case 63: return "Zqq trouble doing cd to root directory (#4.3.0)"
        case 64: return "Zqq trouble syncing message to disk (#4.3.0)"
        case 65: return "Zqq trouble creating files in intd. (#4.3.0)"
        case 66: return "Zqq trouble linking todofn to intdfn (#4.3.0)"
        case 67: return "Zqq trouble linking messfn to pidfn (#4.3.0)"
        case 68: return "Zqq trouble creating temporary files (#4.3.0)"
        case 69: return "Zqq trouble syncing dir to disk (#4.3.0)"
        case 70: return "Zqq trouble with pid file (#4.3.0)"
        case 71: return "Zqq mail server temporarily rejected message (#4.3.0)"
        case 72: return "Zqq connection to mail server timed out (#4.4.1)"
        case 73: return "Zqq connection to mail server rejected (#4.4.1)"
        case 74: return "Zqq communication with mail server failed (#4.4.2)"
        case 75: return "Zqq unable to exec (#4.3.0)"
        case 76: return "Zqq temporary problem with SPAM filter (#4.3.0)"
        case 77: return "Zqq unable to run QHPSI scanner (#4.3.0)"
        case 78: return "Zqq trouble getting uids/gids (#4.3.0)"
        case 79: return "Zqq envelope format error (#4.3.0)"
        case 80: return "Zqq trouble removing intdfn"
        case 81, 91: return "Zqq internal bug (#4.3.0)"
        case 87: return "Zqq mail system incorrectly configured. (#4.3.5)"
        case 82, 120: return "Zqq unable to exec qq (#4.3.0)"
        case 121: return "Zqq unable to fork (#4.3.0)"
        case 122: return "Zqq waitpid surprise (#4.3.0)"
        case 123: return "Zqq crashed (#4.3.0)"
        case 88: return temporaryProblem
        case 11...40: return permanentProblem
        default: return temporaryProblem
        }
    }

    /// The full mapping `qmail_close` applies: "" means the message was queued.
    public static func text(for outcome: QueueProgramOutcome, clientWriteError: Bool = false) -> [UInt8] {
        switch outcome {
        case .signaled:
            return Array("Zqq crashed (#4.3.0)".utf8)
        case .waitSurprise:
            return Array("Zqq waitpid surprise (#4.3.0)".utf8)
        case let .exited(code, custom):
            if code == 0 {
                return clientWriteError ? Array("Zqq read error (#4.3.0)".utf8) : []
            }
            if code == 88 {
                if let custom, custom.count > 2 { return custom }
                return Array(temporaryProblem.utf8)
            }
            return Array(text(forExitCode: code).utf8)
        }
    }

    /// `perm_error()`: 115 and 11..40 are permanent.
    public static func isPermanent(exitCode code: Int32) -> Bool {
        code == 115 || (11...40).contains(code)
    }
}
