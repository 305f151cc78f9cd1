import XCTest
import SystemIO
import QueueFormat
import TestSupport
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
        let d = try h.startDaemon("qmail-send", ["./Maildir/"])
        defer { _ = d.stop() }
        h.waitFor("start") { d.log.contains("status: local 0/10") }
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
        XCTAssertEqual(TestEnv.files(under: h.queue + "/info").count, 0, "no partial info file is left")
        unlink(filler)
        d.signal(SIGALRM)
        h.waitFor("delivery after ALRM", seconds: 10) { h.maildir("bob").count == 1 }
        h.waitFor("end msg") { d.log.contains("end msg ") }
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testQmailLocalExecutableWithClassicOperands() throws {
        let msgPath = h.dir + "/message"
        TestEnv.write(msgPath, "Subject: direct\n\nhello\n")
        let fd = open(msgPath, O_RDONLY)
        defer { close(fd) }
        let out = try Spawn.pipe()
        let pid = try Spawn.start(TestEnv.program("qmail-local"),
                                  arguments: ["qmail-local", "--", "bob", h.home("bob"), "bob", "", "", "example.test", "s@x.example", "./Maildir/", ""],
                                  fds: [.init(fd, at: 0), .init(out.write, at: 1), .init(out.write, at: 2)], keepStandard: false,
                                  credentials: .init(uid: h.uid, gid: h.gid))
        Sys.close(out.write)
        let text = String(decoding: try Sys.readAll(out.read), as: UTF8.self)
        Sys.close(out.read)
        XCTAssertEqual(try Spawn.wait(pid), .exited(0), text)
        XCTAssertEqual(text, "did 1+0+0\n")
        XCTAssertEqual(h.maildirMessages("bob").first, "Return-Path: <s@x.example>\nDelivered-To: bob@example.test\nSubject: direct\n\nhello\n")
        // As root it refuses, like qmail-local.
        let root = try TestEnv.run(TestEnv.program("qmail-local"), ["--", "bob", h.home("bob"), "bob", "", "", "example.test", "s", "./Maildir/"],
                                   input: Array("x".utf8))
        XCTAssertEqual(root.exitCode, 111)
    }
}
