import XCTest
import Foundation
import SystemIO
import QueueFormat
import TestSupport
import CShims
@testable import LocalDelivery
#if canImport(Glibc)
import Glibc
#endif

/// qmail-local's semantics through the engine: .qmail files, Maildir, mbox,
/// programs, forwards, extensions, loops, identity.
final class LocalDeliveryTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    func deliver(_ message: String, _ args: [String]) throws -> String {
        try h.inject(message, args)
        let out = try h.qmtaSend(["./Maildir/"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return out.stdoutText
    }

    func testMboxWithFromQuotingAndRecipientOwnership() throws {
        h.writeHomeFile("bob", ".qmail", "./Mailbox\n")
        let log = try deliver("Subject: mbox\n\nFrom the start\n>From quoted\nplain\n", ["-f", "x@y.example", "bob@example.test"])
        XCTAssertTrue(log.contains("success: did_1+0+0/"), log)
        let mbox = String(decoding: TestEnv.read(h.home("bob") + "/Mailbox"), as: UTF8.self)
        XCTAssertTrue(mbox.hasPrefix("From x@y.example "), mbox)
        XCTAssertTrue(mbox.contains("\nReturn-Path: <x@y.example>\nDelivered-To: bob@example.test\n"), mbox)
        XCTAssertTrue(mbox.contains("\n>From the start\n>>From quoted\nplain\n\n"), mbox)
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(h.home("bob") + "/Mailbox")).st_uid, h.uid)
    }

    func testProgramRunsAsTheUserWithQmailsEnvironment() throws {
        h.writeHomeFile("bob", ".qmail-list-default", "|echo \"$SENDER|$RECIPIENT|$LOCAL|$HOST|$EXT|$EXT2|$DEFAULT|$USER|$HOME|$HOST2\" > out.txt; id -u >> out.txt; cat > msg.txt\n")
        let log = try deliver("Subject: prog\n\nbody\n", ["-f", "s@x.example", "bob-list-tech@example.test"])
        XCTAssertTrue(log.contains("success: did_0+0+1/"), log)
        let out = String(decoding: TestEnv.read(h.home("bob") + "/out.txt"), as: UTF8.self)
        XCTAssertEqual(out, "s@x.example|bob-list-tech@example.test|bob-list-tech|example.test|list-tech|tech|tech|bob|\(h.home("bob"))|example\n\(h.uid)\n")
        // The program reads the message as queued (no Delivered-To added).
        let msg = String(decoding: TestEnv.read(h.home("bob") + "/msg.txt"), as: UTF8.self)
        XCTAssertTrue(msg.hasPrefix("Received: indimail-mta queue "), msg)
    }

    func testProgramExitCodes() throws {
        h.writeHomeFile("bob", ".qmail-perm", "|echo refused; exit 100\n")
        h.writeHomeFile("bob", ".qmail-stop", "|exit 99\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-temp", "|echo busy; exit 75\n")
        h.writeHomeFile("bob", ".qmail-weird", "|exit 65\n")
        let log = try deliver("\nx\n", ["bob-perm@example.test", "bob-stop@example.test", "bob-temp@example.test", "bob-weird@example.test"])
        XCTAssertTrue(log.contains("to local bob-perm@example.test"), log)
        XCTAssertTrue(log.contains(": failure: refused/"), log)
        XCTAssertTrue(log.contains(": success: did_0+0+1/"), log)       // 99: stop, nothing else
        XCTAssertTrue(log.contains(": deferral: busy/"), log)
        XCTAssertTrue(log.contains(": failure: Program_refused_the_message._(#5.2.0)/"), log)
        XCTAssertEqual(h.maildir("bob").count, 0, "exit 99 skips the Maildir line")
    }

    func testExtensionsDefaultsAndNoMailbox() throws {
        h.writeHomeFile("bob", ".qmail-news", "./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-lists-default", "./Maildir/\n")
        let log = try deliver("\nx\n", ["bob-news@example.test", "bob-lists-swift@example.test", "bob-nothing@example.test"])
        XCTAssertEqual(h.maildir("bob").count, 2, log)
        XCTAssertTrue(log.contains(": failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/"), log)
        let delivered = h.maildirMessages("bob").joined()
        XCTAssertTrue(delivered.contains("Delivered-To: bob-news@example.test\n"), delivered)
        XCTAssertTrue(delivered.contains("Delivered-To: bob-lists-swift@example.test\n"), delivered)
    }

    func testForwardRequeuesWithDeliveredToAndLoopsAreStopped() throws {
        h.writeHomeFile("alice", ".qmail", "&bob@example.test\n./Maildir/\n")
        var log = try deliver("Subject: fwd\n\nx\n", ["-f", "s@x.example", "alice@example.test"])
        XCTAssertTrue(log.contains("success: did_1+1+0/qp_"), log)
        // The forwarded copy is a new message; deliver it.
        log = try h.qmtaSend(["./Maildir/"]).stdoutText
        let bob = h.maildirMessages("bob")
        XCTAssertEqual(bob.count, 1, log)
        XCTAssertTrue(bob[0].hasPrefix("Return-Path: <s@x.example>\nDelivered-To: bob@example.test\nReceived: indimail-mta queue "), bob[0])
        XCTAssertTrue(bob[0].contains("\nDelivered-To: alice@example.test\n"), bob[0])
        // A loop: joe forwards to himself.
        h.writeHomeFile("joe", ".qmail", "&joe@example.test\n")
        let loopLog = try deliver("Subject: loop\n\nx\n", ["-f", "", "joe@example.test"]) + h.qmtaSend(["./Maildir/"]).stdoutText
        XCTAssertTrue(loopLog.contains("failure: This_message_is_looping:_it_already_has_my_Delivered-To_line._(#5.4.6)/"), loopLog)
    }

    func testUnsafeDotQmailIsADeferral() throws {
        h.writeHomeFile("bob", ".qmail", "./Maildir/\n", mode: 0o666)
        let log = try deliver("\nx\n", ["bob@example.test"])
        XCTAssertTrue(log.contains("deferral: Uh-oh:_.qmail_file_is_writable._(#4.7.0)/"), log)
    }

    func testUnreachableOrMissingHomeIsADeferralWithTheReason() throws {
        let home = h.home("bob")
        // Searchable by root (the engine) but not by bob, who delivers: qmail-local's chdir fails.
        XCTAssertEqual(chown(home, 0, 0), 0)
        XCTAssertEqual(chmod(home, 0o700), 0)
        var log = try deliver("\nx\n", ["bob@example.test"])
        XCTAssertTrue(log.contains("deferral: Unable_to_switch_to_\(home):_access_denied._(#4.3.0)/"), log)
        XCTAssertEqual(rename(home, home + ".gone"), 0)
        log = try deliver("\nsecond\n", ["bob@example.test"])   // a new message is due at once
        XCTAssertTrue(log.contains("deferral: Unable_to_switch_to_\(home):_file_does_not_exist._(#4.3.0)/"), log)
    }

    /// A full disk under the Maildir: a deferral that names the cause, no partial
    /// file left in tmp/, the message kept; once there is room, ALRM delivers it.
    func testFullMaildirDiskIsADeferralAndTheMessageWaits() throws {
        let maildir = h.home("bob") + "/Maildir"
        let mount = try TestEnv.run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", maildir])
        XCTAssertEqual(mount.exitCode, 0, "mount failed (the tests run as root): \(mount.stderrText)")
        defer { _ = try? TestEnv.run("/bin/umount", ["-l", maildir]) }
        h.makeMaildirHome(h.home("bob"))    // new/ cur/ tmp/ inside the small file system, owned by bob
        let d = try h.startSend()
        defer { _ = d.stop() }
        let body = String(repeating: "0123456789abcdef\n", count: 16 * 1024)   // 272 KiB, more than the 64 KiB there is
        try h.inject("To: bob@example.test\nSubject: big\n\n" + body)
        h.waitFor("the deferral") { d.log.contains(": deferral: ") }
        XCTAssertTrue(d.log.contains(":_disk_full._(#4.3.0)/"), d.log)
        XCTAssertEqual((try Sys.listDirectory(maildir + "/tmp")).count, 0, "the partial file is removed")
        XCTAssertEqual(h.maildir("bob").count, 0)
        XCTAssertFalse(d.log.contains("end msg "), d.log)
        XCTAssertFalse(h.queueFiles().isEmpty, "the message stays queued")
        // Room again; ALRM retries at once.
        XCTAssertEqual(try TestEnv.run("/bin/mount", ["-o", "remount,size=2m", maildir]).exitCode, 0)
        d.signal(SIGALRM)
        h.waitFor("delivery after ALRM") { h.maildir("bob").count == 1 }
        h.waitFor("end msg") { d.log.contains("end msg ") }
        XCTAssertEqual(h.maildirMessages("bob").first?.hasSuffix(body), true)
    }

    /// The queue's own file system full when the engine preprocesses: a warning,
    /// todo/ kept, nothing lost; once there is room, ALRM gets it through at once.
    func testFullQueueDiskKeepsTheTodoEntryUntilThereIsRoom() throws {
        let mount = try TestEnv.run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", h.queue])
        XCTAssertEqual(mount.exitCode, 0, "mount failed (the tests run as root): \(mount.stderrText)")
        defer { _ = try? TestEnv.run("/bin/umount", ["-l", h.queue]) }
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), ["-s", "23", h.queue]).exitCode, 0)
        let first = try h.startDaemon("qmail-send", ["./Maildir/"])
        h.waitFor("start") { first.log.contains("status: local 0/10") }
        XCTAssertEqual(first.stop(), .exited(0))    // the schedule database exists now
        try h.inject("To: bob@example.test\nSubject: waits\n\nhello\n")
        // Fill what is left of the file system.
        let filler = h.queue + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT, 0o600)
        let chunk = [UInt8](repeating: 0, count: 4096)
        while write(fd, chunk, chunk.count) > 0 {}
        close(fd)
        let d = try h.startDaemon("qmail-send", ["./Maildir/"])
        defer { _ = d.stop() }
        h.waitFor("the warning") { d.log.contains("warning: trouble with todo/") }
        XCTAssertTrue(d.log.contains("; will try again later"), d.log)
        XCTAssertFalse(d.log.contains("new msg "), d.log)
        XCTAssertEqual(TestEnv.files(under: h.queue + "/todo").count, 1, "the todo entry stays")
        XCTAssertEqual(TestEnv.files(under: h.queue + "/info").filter { !$0.hasPrefix("spare.") }.count, 0, "no partial info file is left")
        unlink(filler)
        d.signal(SIGALRM)
        h.waitFor("delivery after ALRM", seconds: 10) { h.maildir("bob").count == 1 }
        h.waitFor("end msg") { d.log.contains("end msg ") }
        XCTAssertEqual(h.queueFiles(), [])
    }

    /// qmail-lspawn's per-delivery environment: MESSID and one variable per
    /// envheaders line (the info file's `h` record).
    /// With the engine's spare files (SpareFiles) at work, 150 messages to two
    /// recipients each (one local file, one info file per message, reused from
    /// the pool after the first few dozen) are each delivered once, byte for
    /// byte; and the spares are unlinked once the engine has been idle a moment.
    func testSpareFilesCarryEveryMessageOnceAndAreRemovedWhenIdle() throws {
        let d = try h.startDaemon("qmail-send", ["./Maildir/"])
        defer { _ = d.stop() }
        h.waitFor("start") { d.log.contains("status: local 0/10") }
        let count = 150
        for i in 0..<count {
            try h.inject("Subject: spare \(i)\n\nbody \(i)\n", ["-f", "s\(i)@x.example", "bob@example.test", "alice@example.test"])
        }
        h.waitFor("every delivery", seconds: 60) { h.maildir("bob").count == count && h.maildir("alice").count == count }
        for user in ["bob", "alice"] {
            let subjects = h.maildirMessages(user).compactMap { m in
                m.split(separator: "\n").first { $0.hasPrefix("Subject: ") }.map(String.init)
            }
            XCTAssertEqual(Set(subjects), Set((0..<count).map { "Subject: spare \($0)" }), user)
            for m in h.maildirMessages(user) {
                let n = m.split(separator: "\n").first { $0.hasPrefix("Subject: spare ") }!.dropFirst("Subject: spare ".count)
                XCTAssertTrue(m.contains("Return-Path: <s\(n)@x.example>\n"), "message \(n) has its own sender: \(m)")
                XCTAssertTrue(m.hasSuffix("\nbody \(n)\n"), m)
            }
        }
        h.waitFor("an empty queue", seconds: 30) { h.queueFiles().isEmpty }
        h.waitFor("the spares unlinked while idle", seconds: 10) { h.spareFiles().isEmpty }
        XCTAssertEqual(d.stop(), .exited(0))
        XCTAssertEqual(h.spareFiles(), [])
        XCTAssertEqual(TestEnv.files(under: h.queue + "/info"), [])
    }

    func testProgramsGetMessidAndEnvheaders() throws {
        h.writeHomeFile("bob", ".qmail", "|env > env.txt\n")
        try h.inject("Subject: envh\n\nx\n", ["bob@example.test"])
        let todo = try XCTUnwrap(TestEnv.files(under: h.queue + "/todo").first)
        let id = try XCTUnwrap(UInt64(todo.split(separator: "/").last ?? ""))
        TestEnv.write(h.queue + "/todo/" + todo, "u0\0p1\0Fs@x.example\0hX-Spam-Score: 5\nList-Id:  abc\n\0Tbob@example.test\0")
        let log = try h.qmtaSend(["./Maildir/"]).stdoutText
        XCTAssertTrue(log.contains("success: did_0+0+1/"), log)
        let env = String(decoding: TestEnv.read(h.home("bob") + "/env.txt"), as: UTF8.self).split(separator: "\n").map(String.init)
        XCTAssertTrue(env.contains("MESSID=\(id % 23)/\(id)"), env.joined(separator: "\n"))
        XCTAssertTrue(env.contains("X_SPAM_SCORE=5"), env.joined(separator: "\n"))
        XCTAssertTrue(env.contains("LIST_ID=abc"), env.joined(separator: "\n"))
    }

    /// The delivering thread gives up CAP_SYS_RESOURCE with the user's identity (so
    /// disk quotas and reserved blocks apply to the files it writes for the user)
    /// and gets it back with its own. The switch is qs_thread_capability, checked
    /// here on CAP_SYS_NICE: this machine's root has no CAP_SYS_RESOURCE at all.
    func testDeliveringThreadCapabilitiesAreDroppedAndRestored() throws {
        func effective() -> UInt64 {
            let status = String(decoding: TestEnv.read("/proc/thread-self/status"), as: UTF8.self)
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
                  let hex = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).last else { return 0 }
            return UInt64(hex, radix: 16) ?? 0
        }
        let before = effective()
        let nice: UInt64 = 1 << 23, resource: UInt64 = 1 << 24
        XCTAssertNotEqual(before & nice, 0, "the tests run as root")
        XCTAssertEqual(qs_thread_capability(23, 0), 0)
        XCTAssertEqual(effective(), before & ~nice)
        XCTAssertEqual(qs_thread_capability(23, 1), 0)
        XCTAssertEqual(effective(), before)
        // The identity switch: no CAP_SYS_RESOURCE under the user's uid, the rest as before.
        XCTAssertEqual(qs_thread_identity(h.uid, h.gid), 0)
        let asUser = effective()
        XCTAssertEqual(qs_thread_identity(geteuid(), getegid()), 0)
        XCTAssertEqual(asUser & resource, 0)
        XCTAssertEqual(asUser & nice, nice)
        XCTAssertEqual(effective(), before)
    }

    func testQmailLocalExecutableWithClassicOperands() throws {
        let r = try runQmailLocal(operands())
        XCTAssertEqual(r.status, .exited(0), r.text)
        XCTAssertEqual(r.text, "did 1+0+0\n")
        XCTAssertEqual(h.maildirMessages("bob").first, "Return-Path: <s@x.example>\nDelivered-To: bob@example.test\nSubject: direct\n\nhello\n")
        // As root it refuses, like qmail-local.
        let root = try TestEnv.run(TestEnv.program("qmail-local"), ["--", "bob", h.home("bob"), "bob", "", "", "example.test", "s", "./Maildir/"],
                                   input: Array("x".utf8))
        XCTAssertEqual(root.exitCode, 111)
    }

    // MARK: qmail-local.c, line by line

    /// The operands of qmail-local for `local`@`domain` delivered as bob.
    func operands(local: String = "bob", dash: String = "", ext: String = "", domain: String = "example.test",
                  sender: String = "s@x.example", defaultDelivery: String = "./Maildir/", qqeh: String = "") -> [String] {
        ["bob", h.home("bob"), local, dash, ext, domain, sender, defaultDelivery, qqeh]
    }

    /// Runs the built qmail-local as bob's uid with `message` (a file) on descriptor 0 and
    /// descriptors 1 and 2 on one pipe. `wrapper` is put in front of it (the seccomp helper).
    func runQmailLocal(_ operands: [String], options: [String] = ["--"], message: String = "Subject: direct\n\nhello\n",
                       wrapper: [String] = []) throws -> (status: ExitStatus, text: String) {
        let msgPath = h.dir + "/message"
        TestEnv.write(msgPath, message)
        let fd = open(msgPath, O_RDONLY)
        defer { close(fd) }
        let out = try Spawn.pipe()
        let argv = wrapper + [TestEnv.program("qmail-local")] + options + operands
        let pid = try Spawn.start(wrapper.isEmpty ? argv[0] : "/usr/bin/python3",
                                  arguments: wrapper.isEmpty ? ["qmail-local"] + Array(argv.dropFirst()) : ["python3"] + argv,
                                  environment: h.environment,
                                  fds: [.init(fd, at: 0), .init(out.write, at: 1), .init(out.write, at: 2)], keepStandard: false,
                                  credentials: .init(uid: h.uid, gid: h.gid))
        Sys.close(out.write)
        let text = String(decoding: try Sys.readAll(out.read), as: UTF8.self)
        Sys.close(out.read)
        return (try Spawn.wait(pid), text)
    }

    /// A seccomp filter in front of qmail-local: the system call `call` on a descriptor
    /// of 3 or more fails with `errno` (what a full quota or a lock-less NFS would say).
    func failing(_ call: String, with code: Int32) throws -> [String] {
        #if arch(x86_64)
        let numbers = ["write": 1, "flock": 73]
        #elseif arch(arm64)
        let numbers = ["write": 64, "flock": 32]
        #else
        throw XCTSkip("no system call numbers for this architecture")
        #endif
        let script = h.dir + "/seccomp.py"
        TestEnv.write(script, """
        import ctypes, os, struct, sys
        nr, err = int(sys.argv[1]), int(sys.argv[2])
        def op(code, k, jt=0, jf=0): return struct.pack("HBBI", code, jt, jf, k)
        prog = b"".join([op(0x20, 0), op(0x15, nr, 0, 3), op(0x20, 16), op(0x35, 3, 0, 1),
                         op(0x06, 0x00050000 | err), op(0x06, 0x7fff0000)])
        buf = ctypes.create_string_buffer(prog, len(prog))
        class Fprog(ctypes.Structure): _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        fp = Fprog(len(prog) // 8, ctypes.addressof(buf))
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fp), 0, 0) != 0:
            sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
        os.execv(sys.argv[3], sys.argv[3:])

        """)
        return [script, "\(numbers[call]!)", "\(code)"]
    }

    /// qmail's myctime() for the seconds around now: UTC, zero-padded, a newline.
    func ctimes(around t: time_t) -> [String] {
        (t - 5...t + 1).map { s in
            var v = s
            var tm = tm()
            gmtime_r(&v, &tm)
            let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
            let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            func two(_ n: Int32) -> String { String(format: "%02d", n) }
            return "\(days[Int(tm.tm_wday)]) \(months[Int(tm.tm_mon)]) \(two(tm.tm_mday)) \(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) \(1900 + Int(tm.tm_year))\n"
        }
    }

    func testQqehFollowsDeliveredToInMaildirMboxProgramsAndForwards() throws {
        h.writeHomeFile("alice", ".qmail", "./Maildir/\n./Mailbox\n|printf '%s' \"$QQEH\" > qqeh.txt\n&bob@example.test\n")
        h.extraEnv["QQEH"] = "X-QQEH: tag\n"
        try h.inject("Subject: qqeh\n\nbody\n", ["-f", "s@x.example", "alice@example.test"])
        h.extraEnv["QQEH"] = nil
        let log = try h.qmtaSend(["./Maildir/"]).stdoutText
        XCTAssertTrue(log.contains("success: did_2+1+1/qp_"), log)
        let maildir = try XCTUnwrap(h.maildirMessages("alice").first)
        XCTAssertTrue(maildir.hasPrefix("Return-Path: <s@x.example>\nDelivered-To: alice@example.test\nX-QQEH: tag\nReceived: "), maildir)
        let mbox = String(decoding: TestEnv.read(h.home("alice") + "/Mailbox"), as: UTF8.self)
        let now = time(nil)
        XCTAssertTrue(ctimes(around: now).contains { mbox.hasPrefix("From s@x.example " + $0 + "Return-Path: <s@x.example>\nDelivered-To: alice@example.test\nX-QQEH: tag\nReceived: ") }, mbox)
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("alice") + "/qqeh.txt"), as: UTF8.self), "X-QQEH: tag\n")
        // The forward: Delivered-To, then the QQEH text, then the message; and QQEH for qmail-queue.
        _ = try h.qmtaSend(["./Maildir/"])
        let bob = try XCTUnwrap(h.maildirMessages("bob").first)
        XCTAssertTrue(bob.hasPrefix("Return-Path: <s@x.example>\nDelivered-To: bob@example.test\nX-QQEH: tag\nReceived: "), bob)
        XCTAssertTrue(bob.contains(" +0000\nDelivered-To: alice@example.test\nX-QQEH: tag\nReceived: "), bob)
    }

    func testReturnPathIsQuotedDeliveredToHasNoNewlineAndFromLineIsUTC() throws {
        h.writeHomeFile("bob", ".qmail", "./Mailbox\n|printf '%s%s' \"$RPLINE\" \"$UFLINE\" > lines.txt\n")
        let now = time(nil)
        var r = try runQmailLocal(operands(local: "bob\nx", sender: "a b\"c\td\ne@x.example"))
        XCTAssertEqual(r.status, .exited(0), r.text)
        let mbox = String(decoding: TestEnv.read(h.home("bob") + "/Mailbox"), as: UTF8.self)
        let ufline = ctimes(around: now).map { "From a-b\"c-d-e@x.example " + $0 }
        let rpline = "Return-Path: <\"a b\\\"c\td\\_e\"@x.example>\n"
        XCTAssertTrue(ufline.contains { mbox.hasPrefix($0 + rpline + "Delivered-To: bob_x@example.test\nSubject: direct\n") }, mbox)
        let lines = String(decoding: TestEnv.read(h.home("bob") + "/lines.txt"), as: UTF8.self)
        XCTAssertTrue(ufline.contains { lines == rpline + $0 }, lines)
        // Quoting only where RFC 821 needs it, the local part only, at the last @.
        for (sender, quoted) in [("plain.box@x", "plain.box@x"), (".dot@x", "\".dot\"@x"), ("a..b@x", "\"a..b\"@x"),
                                 ("a@b@x", "\"a@b\"@x"), ("@x", "\"\"@x"), ("no-at", "no-at"), ("(c)", "\"(c)\""),
                                 ("", ""), ("#@[]", "#@[]")] {
            XCTAssertEqual(String(decoding: QmailLocal.returnPathLine(sender), as: UTF8.self), "Return-Path: <\(quoted)>\n", sender)
        }
        // An empty sender: MAILER-DAEMON on the From_ line.
        r = try runQmailLocal(operands(sender: ""))
        XCTAssertEqual(r.status, .exited(0), r.text)
        let second = String(decoding: TestEnv.read(h.home("bob") + "/Mailbox"), as: UTF8.self).components(separatedBy: "\n\nFrom ").last ?? ""
        XCTAssertTrue(ctimes(around: now).contains { second.hasPrefix("MAILER-DAEMON " + $0 + "Return-Path: <>\n") }, second)
    }

    func testDotQmailModeBitsAndForwardOnlyFiles() throws {
        h.writeHomeFile("bob", ".qmail-group", "./Maildir/\n", mode: 0o664)          // group-writable is fine
        h.writeHomeFile("bob", ".qmail-world", "./Maildir/\n", mode: 0o646)
        h.writeHomeFile("bob", ".qmail-xfile", "./Maildir/\n", mode: 0o744)
        h.writeHomeFile("bob", ".qmail-xprog", "|true\n", mode: 0o744)
        h.writeHomeFile("bob", ".qmail-xfwd", "&joe@example.test\n", mode: 0o744)
        h.writeHomeFile("bob", ".qmail-xempty", "", mode: 0o744)                     // default delivery: never forward-only
        h.writeHomeFile("bob", ".qmail-list", "+list\n&joe@example.test\n|true\n")
        h.writeHomeFile("bob", ".qmail-branch", "+list\n?label true\n")
        h.writeHomeFile("bob", ".qmail-plus", "+lists\n+\n./Maildir/\n")             // other + lines: ignored
        let log = try deliver("\nx\n", ["bob-group@example.test", "bob-world@example.test", "bob-xfile@example.test", "bob-xprog@example.test",
                                        "bob-xfwd@example.test", "bob-xempty@example.test", "bob-list@example.test", "bob-branch@example.test",
                                        "bob-plus@example.test"])
        func report(_ rcpt: String) -> String {
            let lines = log.split(separator: "\n").map(String.init)
            guard let start = lines.first(where: { $0.hasSuffix("to local \(rcpt)") }),
                  let n = start.split(separator: " ").dropFirst(2).first?.dropLast() else { return "" }
            return lines.first { $0.hasPrefix("delivery \(n): ") }.map { String($0.dropFirst("delivery \(n): ".count)) } ?? ""
        }
        XCTAssertEqual(report("bob-group@example.test"), "success: did_1+0+0/", log)
        XCTAssertEqual(report("bob-world@example.test"), "deferral: Uh-oh:_.qmail_file_is_writable._(#4.7.0)/", log)
        XCTAssertEqual(report("bob-xfile@example.test"), "deferral: Uh-oh:_.qmail_has_file_delivery_but_has_x_bit_set._(#4.7.0)/", log)
        XCTAssertEqual(report("bob-xprog@example.test"), "deferral: Uh-oh:_.qmail_has_prog_delivery_but_has_x_bit_set._(#4.7.0)/", log)
        XCTAssertTrue(report("bob-xfwd@example.test").hasPrefix("success: did_0+1+0/qp_"), log)
        XCTAssertEqual(report("bob-xempty@example.test"), "success: did_1+0+0/", log)
        XCTAssertEqual(report("bob-list@example.test"), "deferral: Uh-oh:_.qmail_has_prog_delivery_but_has_x_bit_set._(#4.7.0)/", log)
        XCTAssertEqual(report("bob-branch@example.test"), "deferral: Uh-oh:_.qmail_has_prog_delivery_but_has_x_bit_set._(#4.7.0)/", log)
        XCTAssertEqual(report("bob-plus@example.test"), "success: did_1+0+0/", log)
        XCTAssertEqual(h.maildir("bob").count, 3, log)
    }

    func testLinesBlankLinesLabelsAndBranches() throws {
        // Trailing spaces and tabs are cut (else "./Maildir/ " would be an mbox); later blank lines are skipped.
        h.writeHomeFile("bob", ".qmail-trail", "./Maildir/ \t\n\n  \n\t\n# note\n:a label\n&joe@example.test  \n")
        h.writeHomeFile("bob", ".qmail-blank", "\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-spaces", " \t\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-branch", """
            ?skip exit 99   \t
            |echo one >> log
            :skip
            |echo two >> log
            ?end
            |echo three >> log
            :end trailing words
            ?next exit 0
            |echo four >> log
            :next
            |echo five >> log

            """)
        h.writeHomeFile("bob", ".qmail-nowhere", "|echo six >> log\n?missing\n|echo seven >> log\n")
        // qmail compares the target's length only: ":ab" catches "?abc".
        h.writeHomeFile("bob", ".qmail-prefix", "?abc\n|echo eight >> log\n:ab\n|echo nine >> log\n")
        let log = try deliver("\nx\n", ["bob-trail@example.test", "bob-blank@example.test", "bob-spaces@example.test"])
        XCTAssertTrue(log.contains("success: did_1+1+0/qp_"), log)
        XCTAssertEqual(log.components(separatedBy: "deferral: Uh-oh:_first_line_of_.qmail_file_is_blank._(#4.2.1)/").count, 3, log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.home("bob") + "/Maildir/ \t"), "no mbox named with the spaces")

        for ext in ["branch", "nowhere", "prefix"] {
            let r = try runQmailLocal(operands(local: "bob-" + ext, dash: "-", ext: ext))
            XCTAssertEqual(r.status, .exited(0), r.text)
            XCTAssertEqual(r.text, ["branch": "did 0+0+5\n", "nowhere": "did 0+0+1\n", "prefix": "did 0+0+1\n"][ext], ext)
        }
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("bob") + "/log"), as: UTF8.self), "two\nfour\nfive\nsix\nnine\n")
    }

    func testNoMailboxNeedsADashAndUnreadableDotQmailFilesDefer() throws {
        h.writeHomeFile("bob", ".qmail-secret", "./Maildir/\n", mode: 0o600)
        XCTAssertEqual(chown(h.home("bob") + "/.qmail-secret", 0, 0), 0)
        var log = try deliver("\nx\n", ["bob-@example.test", "bob-secret@example.test"])
        // bob-@ has the dash and an empty extension: .qmail- and .qmail-default only.
        XCTAssertTrue(log.contains("failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/"), log)
        XCTAssertTrue(log.contains("deferral: Unable_to_open_.qmail-secret:_access_denied._(#4.3.0)/"), log)
        // A -default file that cannot be opened defers too: bob-other@ would find it.
        h.writeHomeFile("bob", ".qmail-default", "./Maildir/\n", mode: 0o600)
        XCTAssertEqual(chown(h.home("bob") + "/.qmail-default", 0, 0), 0)
        log = try deliver("\ny\n", ["bob-other@example.test"])
        XCTAssertTrue(log.contains("deferral: Unable_to_open_.qmail-default:_access_denied._(#4.3.0)/"), log)
        XCTAssertEqual(h.maildir("bob").count, 0)
        // No dash: an extension without a file is the default delivery, not "no mailbox".
        let r = try runQmailLocal(operands(ext: "foo"))
        XCTAssertEqual(r.status, .exited(0), r.text)
        XCTAssertEqual(r.text, "did 1+0+0\n")
    }

    func testProgramsRunWithUmask077() throws {
        h.writeHomeFile("bob", ".qmail", "|umask > umask.txt\n")
        var log = try deliver("\nx\n", ["bob@example.test"])
        XCTAssertTrue(log.contains("success: did_0+0+1/"), log)
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("bob") + "/umask.txt"), as: UTF8.self), "0077\n")
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(h.home("bob") + "/umask.txt")).st_mode & 0o777, 0o600)
        // Through qmail-lspawn, and qmail-local on its own.
        unlink(h.home("bob") + "/umask.txt")
        try h.inject("\ny\n", ["bob@example.test"])
        log = try h.qmtaSend(["-l", "./Maildir/"]).stdoutText
        XCTAssertTrue(log.contains("success: did_0+0+1/"), log)
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("bob") + "/umask.txt"), as: UTF8.self), "0077\n")
        unlink(h.home("bob") + "/umask.txt")
        let r = try runQmailLocal(operands())
        XCTAssertEqual(r.status, .exited(0), r.text)
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("bob") + "/umask.txt"), as: UTF8.self), "0077\n")
    }

    func testHostPartsAndListOwnerSenders() throws {
        h.writeHomeFile("bob", ".qmail", "|echo \"$HOST2|$HOST3|$HOST4\" >> hosts.txt\n")
        for domain in ["example.com", "localhost", "a.b.c.d", "mail.example.com"] {
            let r = try runQmailLocal(operands(domain: domain))
            XCTAssertEqual(r.status, .exited(0), r.text)
        }
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("bob") + "/hosts.txt"), as: UTF8.self),
                       "example|example|example\nlocalhost|localhost|localhost\na.b.c|a.b|a\nmail.example|mail|mail\n")

        // -owner: forwards and $NEWSENDER get the list owner; the extension is looked up lower-cased.
        h.writeHomeFile("alice", ".qmail-list", "|echo \"$SENDER|$NEWSENDER\" >> ns.txt\n&joe@example.test\n")
        h.writeHomeFile("alice", ".qmail-list-owner", "./Maildir/\n")
        var log = try deliver("\nx\n", ["-f", "s@x.example", "alice-List@example.test"])
        XCTAssertTrue(log.contains("success: did_0+1+1/qp_"), log)
        _ = try h.qmtaSend(["./Maildir/"])
        var joe = h.maildirMessages("joe")
        XCTAssertTrue(joe.first?.hasPrefix("Return-Path: <alice-List-owner@example.test>\n") == true, joe.description)
        // With -owner-default as well: the VERP form, which the engine expands per recipient.
        h.writeHomeFile("alice", ".qmail-list-owner-default", "./Maildir/\n")
        log = try deliver("\ny\n", ["-f", "s@x.example", "alice-list@example.test"])
        _ = try h.qmtaSend(["./Maildir/"])
        joe = h.maildirMessages("joe")
        XCTAssertEqual(joe.count, 2, log)
        XCTAssertTrue(joe.contains { $0.hasPrefix("Return-Path: <alice-list-owner-joe=example.test@example.test>\n") }, joe.description)
        // Bounces ("" and "#@[]") keep their sender.
        for sender in ["", "#@[]"] { _ = try deliver("\nz\n", ["-f", sender, "alice-list@example.test"]) }
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("alice") + "/ns.txt"), as: UTF8.self),
                       "s@x.example|alice-List-owner@example.test\ns@x.example|alice-list-owner-@example.test-@[]\n|\n#@[]|#@[]\n")
    }

    func testLoopDetectionComparesWholeHeaderLinesExactly() throws {
        for (message, loops) in [("Delivered-To: bob@example.test\nSubject: a\n\nx\n", true),
                                 ("delivered-to: bob@example.test\nSubject: b\n\nx\n", false),      // case matters
                                 ("Delivered-To: Bob@example.test\nSubject: c\n\nx\n", false),
                                 ("Delivered-To: bob@example.test \nSubject: d\n\nx\n", false),
                                 ("Subject: e\n\nDelivered-To: bob@example.test\n", false),         // the body is not looked at
                                 ("Subject: f\nDelivered-To: bob@example.test", false)] {            // nor a last line without a newline
            let r = try runQmailLocal(operands(), message: message)
            if loops {
                XCTAssertEqual(r.status, .exited(100), message)
                XCTAssertEqual(r.text, "This message is looping: it already has my Delivered-To line. (#5.4.6)\n")
            } else {
                XCTAssertEqual(r.status, .exited(0), message + r.text)
            }
        }
        XCTAssertEqual(h.maildir("bob").count, 5)
    }

    func testCrashedProgramQuotaAndWriteErrors() throws {
        h.writeHomeFile("bob", ".qmail-crash", "|echo before; kill -9 $$\n")
        h.writeHomeFile("bob", ".qmail-mbox", "./Mailbox\n")
        var r = try runQmailLocal(operands(local: "bob-crash", dash: "-", ext: "crash"))
        XCTAssertEqual(r.status, .exited(111))
        XCTAssertEqual(r.text, "before\nAack, child crashed. (#4.3.0)\n")

        // A full quota (EDQUOT) is permanent, for a Maildir and an mbox; nothing is left behind.
        r = try runQmailLocal(operands(), wrapper: failing("write", with: EDQUOT))
        XCTAssertEqual(r.status, .exited(100), r.text)
        XCTAssertEqual(r.text, "Recipient's mailbox is full, message returned to sender. (#5.2.2)\n")
        XCTAssertEqual(try Sys.listDirectory(h.home("bob") + "/Maildir/tmp").count, 0)
        XCTAssertEqual(h.maildir("bob").count, 0)
        r = try runQmailLocal(operands(local: "bob-mbox", dash: "-", ext: "mbox"), wrapper: failing("write", with: EDQUOT))
        XCTAssertEqual(r.status, .exited(100), r.text)
        XCTAssertEqual(r.text, "Recipient's mailbox is full, message returned to sender. (#5.2.2)\n")
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(h.home("bob") + "/Mailbox")).st_size, 0)
        // Any other write error on an mbox: temporary, named as error_str names it.
        r = try runQmailLocal(operands(local: "bob-mbox", dash: "-", ext: "mbox"), wrapper: failing("write", with: EIO))
        XCTAssertEqual(r.status, .exited(111), r.text)
        XCTAssertEqual(r.text, "Unable to write ./Mailbox: input/output error. (#4.3.0)\n")
        // A lock that cannot be taken for another reason than "busy": delivered without it.
        r = try runQmailLocal(operands(local: "bob-mbox", dash: "-", ext: "mbox"), wrapper: failing("flock", with: ENOLCK))
        XCTAssertEqual(r.status, .exited(0), r.text)
        XCTAssertTrue(String(decoding: TestEnv.read(h.home("bob") + "/Mailbox"), as: UTF8.self).hasPrefix("From s@x.example "))
    }

    /// Takes 30 seconds: qmail-local waits that long for an mbox lock.
    func testMboxLockedForThirtySecondsIsADeferral() throws {
        h.writeHomeFile("bob", ".qmail", "./Mailbox\n")
        h.writeHomeFile("bob", "Mailbox", "", mode: 0o600)
        let out = try Spawn.pipe()
        let null = open("/dev/null", O_RDONLY)
        defer { close(null) }
        let holder = try Spawn.start("/usr/bin/python3", arguments: ["python3", "-c", """
            import fcntl, sys, time
            f = open(sys.argv[1], "a"); fcntl.flock(f, fcntl.LOCK_EX); sys.stdout.write("locked\\n"); sys.stdout.flush(); time.sleep(60)
            """, h.home("bob") + "/Mailbox"], fds: [.init(null, at: 0), .init(out.write, at: 1)])
        // The pipe stays open until the holder is killed: with PYTHONUNBUFFERED a late
        // write into a closed pipe would end it early, and with it the lock.
        defer { kill(holder, SIGKILL); _ = try? Spawn.wait(holder); Sys.close(out.read) }
        Sys.close(out.write)
        var got: [UInt8] = []
        var b: UInt8 = 0
        while got.last != 10 && read(out.read, &b, 1) == 1 { got.append(b) }
        XCTAssertEqual(got, Array("locked\n".utf8))
        let start = time(nil)
        let r = try runQmailLocal(operands())
        XCTAssertEqual(r.status, .exited(111), r.text)
        XCTAssertEqual(r.text, "File has been locked for 30 seconds straight. (#4.3.0)\n")
        XCTAssertGreaterThanOrEqual(time(nil) - start, 29)
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(h.home("bob") + "/Mailbox")).st_size, 0)
    }

    func testPrintOnlyListsTheInstructionsAndDeliversNothing() throws {
        h.writeHomeFile("bob", ".qmail", "./Maildir/\n./Mailbox  \n# c\n|echo hi > ran.txt\n&joe@example.test\nalice@example.test\n?l true\n:l\n")
        let looping = "Delivered-To: bob@example.test\n\nx\n"     // -n does not look for loops
        var r = try runQmailLocal(operands(), options: ["-n", "--"], message: looping)
        XCTAssertEqual(r.status, .exited(0), r.text)
        let listing = "maildir ./Maildir/\nmbox ./Mailbox\nprogram echo hi > ran.txt\nforward joe@example.test\nforward alice@example.test\nprogram true\ndid 2+2+2\n"
        XCTAssertEqual(r.text, listing)
        XCTAssertEqual(h.maildir("bob").count, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.home("bob") + "/Mailbox"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.home("bob") + "/ran.txt"))
        XCTAssertEqual(h.queueFiles(), [], "no forward is queued")
        // A sticky home is only a warning with -n (on descriptor 2, first).
        XCTAssertEqual(chmod(h.home("bob"), 0o1755), 0)
        r = try runQmailLocal(operands(), options: ["-n"])
        XCTAssertEqual(r.status, .exited(0), r.text)
        XCTAssertEqual(r.text, "Warning: home directory is sticky.\n" + listing)
        r = try runQmailLocal(operands(), options: ["-nN"])
        XCTAssertEqual(r.status, .exited(111), r.text)
        XCTAssertEqual(r.text, "Home directory is sticky: user is editing his .qmail file. (#4.2.1)\n")
        XCTAssertEqual(chmod(h.home("bob"), 0o755), 0)
        // Checks that do not need the message still apply.
        h.writeHomeFile("bob", ".qmail", "./Maildir/\n", mode: 0o744)
        r = try runQmailLocal(operands(), options: ["-n"])
        XCTAssertEqual(r.status, .exited(111), r.text)
        XCTAssertEqual(r.text, "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)\n")
        r = try runQmailLocal(operands(), options: ["-x", "--"])
        XCTAssertEqual(r.status, .exited(100), r.text)
    }
}
