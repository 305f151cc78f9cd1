#if canImport(Glibc)
import Glibc
#endif
import SystemIO

/// qmail-send's activity record, in the classic style that qmailanalog's
/// matchup parses: `new msg 123`, `info msg 123: bytes …`, `starting delivery 1:
/// msg 123 to local a@b`, `delivery 1: success: did_1+0+0/`, `status: local
/// 1/10 remote 0/20`, `bounce msg 123 qp 456`, `end msg 123`. Lines are
/// collected per loop turn and written in one call.
public final class EngineLog: @unchecked Sendable {
    let fd: Int32
    var buffer: [UInt8] = []

    public init(fd: Int32 = 1) { self.fd = fd }

    /// `logsafe`: `\n` → `/`; `%`, bytes below 0x21 and above 0x7e → `_`.
    public static func safe(_ bytes: some Collection<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for b in bytes {
            if b == 10 { out.append(UInt8(ascii: "/")) }
            else if b == UInt8(ascii: "%") || b < 0x21 || b > 0x7e { out.append(UInt8(ascii: "_")) }
            else { out.append(b) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func safe(_ s: String) -> String { safe(Array(s.utf8)) }

    /// For warnings: one line (`\n` → `/`), spaces kept.
    public static func lineSafe(_ s: String) -> String {
        var t = s
        while t.hasSuffix("\n") { t.removeLast() }
        return String(t.map { $0 == "\n" ? "/" : $0 })
    }

    public func line(_ s: String) {
        buffer += Array(s.utf8)
        buffer.append(10)
    }

    public func flush() {
        if buffer.isEmpty { return }
        try? Sys.write(fd, buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}
