import XCTest
import SystemIO
import QueueFormat
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A temporary installation for running the built rrt and maildirserial: a
/// queue made by queue-fix, a control folder with `me`, and helpers to read what
/// was queued.
final class ReceiptsHarness {
    let dir: String
    var queue: String { dir + "/queue" }
    var control: String { dir + "/control" }
    private var counter = 0

    init() {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("receipts")
        chmod(dir, 0o755)
        let fix = try! TestEnv.run(TestEnv.program("queue-fix"), [queue])
        precondition(fix.exitCode == 0, fix.stderrText)
        mkdir(control, 0o755)
        TestEnv.write(control + "/me", "mx.example.test\n")
    }

    func cleanup() { TestEnv.remove(dir) }

    /// Our queue and controls; every variable rrt or the client layer looks at is cleared first.
    func environment(_ extra: [String: String?] = [:]) -> [String] {
        var e: [String: String?] = [
            "QUEUEDIR": queue, "CONTROLDIR": control, "QMAILHOME": dir, "HOME": dir,
            "QMAILQUEUE": nil, "NULLQUEUE": nil, "BOUNCEQUEUE": nil, "QUEUE_BASE": nil, "ERROR_FD": nil,
            "CONFSPLIT": nil, "BIGTODO": nil,
            "ONSUCCESS_REMOTE": nil, "ONFAILURE_REMOTE": nil, "ONTEMPORARY_REMOTE": nil,
            "SMTPTEXT": nil, "SMTPCODE": nil, "QMTPTEXT": nil, "QMTPCODE": nil,
        ]
        for (k, v) in extra { e[k] = v }
        return TestEnv.environment(e)
    }

    /// Runs rrt with `message` on a seekable descriptor 0 (a file), as qmail-remote does.
    func rrt(_ args: [String], message: String, env: [String: String?] = [:]) throws -> TestEnv.Output {
        counter += 1
        let path = dir + "/message.\(counter)"
        TestEnv.write(path, message)
        return try TestEnv.run("/bin/sh", ["-c", "f=$1; shift; exec \"$@\" < \"$f\"", "sh", path, TestEnv.program("rrt")] + args,
                               environment: environment(env))
    }

    /// One queued message: its envelope and its bytes without qmail-queue's Received line.
    struct Queued {
        var envelope: Envelope
        var message: [UInt8]
        var text: String { String(decoding: message, as: UTF8.self) }
    }

    func queued() throws -> [Queued] {
        let mess = TestEnv.files(under: queue + "/mess")
        return try TestEnv.files(under: queue + "/todo").map { (id: String) -> Queued in
            let env = try Envelope.parseQueueFile(TestEnv.read(queue + "/todo/" + id))
            let name = try XCTUnwrap(mess.first { $0.hasSuffix("/" + id) }, "no mess file for \(id)")
            return Queued(envelope: env, message: ReceiptsHarness.stripReceived(TestEnv.read(queue + "/mess/" + name)))
        }
    }

    /// The message without its first line and that line's continuations.
    static func stripReceived(_ mess: [UInt8]) -> [UInt8] {
        var i = 0
        repeat {
            while i < mess.count && mess[i] != 10 { i += 1 }
            i += 1
        } while i < mess.count && (mess[i] == 32 || mess[i] == 9)
        return Array(mess[min(i, mess.count)...])
    }

    /// Sets a file's access and modification times.
    static func setTimes(_ path: String, access: Int, modification: Int) {
        var times = [timespec(tv_sec: access, tv_nsec: 0), timespec(tv_sec: modification, tv_nsec: 0)]
        precondition(utimensat(AT_FDCWD, path, &times, 0) == 0, "utimensat \(path)")
    }
}

extension String {
    /// Every occurrence of `target` replaced (no Foundation here).
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstOccurrence(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    /// The first range of `target` (no Foundation here).
    func firstOccurrence(of target: String) -> Range<Index>? {
        let t = Array(target)
        guard !t.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            var j = i
            var k = 0
            while k < t.count && j < endIndex && self[j] == t[k] {
                j = index(after: j)
                k += 1
            }
            if k == t.count { return i..<j }
            i = index(after: i)
        }
        return nil
    }
}
