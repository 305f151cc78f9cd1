import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// users/cdb (issue #19): qmail-newu compiles users/assign with tinycdb; local
/// delivery reads users/cdb when it exists, with the same results as assign;
/// files are exchanged with Debian's `cdb` command both ways.
final class UsersCDBTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    var users: String { h.dir + "/users" }

    func newu(_ args: [String] = []) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program("qmail-newu"), args.isEmpty ? [users] : args, environment: h.environment)
    }

    /// cdbmake/cdbdump text: `+klen,dlen:key->data\n`, a blank line at the end.
    func dumpText(_ records: [([UInt8], [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        for (k, d) in records { out += Array("+\(k.count),\(d.count):".utf8) + k + Array("->".utf8) + d + [10] }
        return out + [10]
    }

    func record(_ key: String, _ fields: [String]) -> ([UInt8], [UInt8]) {
        var d: [UInt8] = []
        for (i, f) in fields.enumerated() { if i > 0 { d.append(0) }; d += Array(f.utf8) }
        return (Array(key.utf8), d)
    }

    func testQmailNewuWritesWhatDebiansCdbReads() throws {
        TestEnv.write(users + "/assign", "=Alice:alice:65534:65534:/h/alice:::\n+bob-:bob:65534:65534:/h/bob:-::\n+:alias:7:8:/h/alias:-::\n.\n")
        let out = try newu()
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertFalse(Sys.exists(users + "/cdb.tmp"))
        let dump = try TestEnv.run("/usr/bin/cdb", ["-d", users + "/cdb"])
        XCTAssertEqual(dump.exitCode, 0, dump.stderrText)
        var expected = [record("!alice\0", ["alice", "65534", "65534", "/h/alice", "", ""]),
                        record("!bob-", ["bob", "65534", "65534", "/h/bob", "-", ""]),
                        record("!", ["alias", "7", "8", "/h/alias", "-", ""])]
        expected.append(([], Array("-".utf8)))
        XCTAssertEqual(dump.stdout, dumpText(expected))
    }

    /// The same deliveries from users/assign and from qmail-newu's users/cdb
    /// (exact entries, wildcard entries with extensions, unknown users).
    func testUsersCdbGivesTheSameDeliveriesAsAssign() throws {
        h.writeHomeFile("bob", ".qmail-news", "./Maildir/\n")
        let rcpts = ["alice@example.test", "Bob-News@example.test", "bob-nothing@example.test", "joe@example.test"]
        func round() throws -> [String] {
            try h.inject("Subject: u\n\nx\n", ["-f", "", ] + rcpts)
            let log = try h.qmtaSend(["./Maildir/"]).stdoutText
            return log.split(separator: "\n").compactMap { line -> String? in
                guard let r = line.range(of: ": success: ") ?? line.range(of: ": failure: ") ?? line.range(of: ": deferral: ") else { return nil }
                return String(line[r.lowerBound...])
            }.sorted()
        }
        let fromAssign = try round()
        XCTAssertEqual(fromAssign.count, 5, "\(fromAssign)")   // with the double bounce of the empty sender
        XCTAssertEqual(try newu().exitCode, 0)
        // Make sure the cdb is what is read: the text table now says nothing.
        TestEnv.write(users + "/assign", ".\n")
        let fromCdb = try round()
        XCTAssertEqual(fromCdb, fromAssign)
        XCTAssertEqual(h.maildir("alice").count, 2)
        XCTAssertEqual(h.maildir("bob").count, 2)
        XCTAssertTrue(h.maildirMessages("bob").allSatisfy { $0.contains("Delivered-To: Bob-News@example.test\n") })
    }

    /// A users/cdb made by Debian's `cdb -c` is read by local delivery.
    func testUsersCdbWrittenByDebiansCdbIsRead() throws {
        let carolHome = h.dir + "/home/carol"
        h.makeMaildirHome(carolHome)
        let input = dumpText([record("!carol\0", ["carol", "\(h.uid)", "\(h.gid)", carolHome, "", ""]),
                              record("!list-", ["carol", "\(h.uid)", "\(h.gid)", carolHome, "-", "l-"]),
                              ([], Array("-".utf8))])
        let made = try TestEnv.run("/usr/bin/cdb", ["-c", users + "/cdb"], input: input)
        XCTAssertEqual(made.exitCode, 0, made.stderrText)
        TestEnv.write(carolHome + "/.qmail-l-x", "./Maildir/\n")
        chown(carolHome + "/.qmail-l-x", h.uid, h.gid)
        try h.inject("Subject: c\n\nx\n", ["-f", "", "carol@example.test", "list-x@example.test"])
        let log = try h.qmtaSend(["./Maildir/"]).stdoutText
        XCTAssertEqual(((try? Sys.listDirectory(carolHome + "/Maildir/new")) ?? []).count, 2, log)
        // alice is in users/assign only: with a users/cdb present, assign is not read.
        XCTAssertFalse(log.contains("to local alice"))
    }

    /// A users/cdb cut short: deliveries wait with a clear text, nothing is lost,
    /// and they go through once qmail-newu has written a whole one.
    func testUsersCdbCutShortDefersAndLosesNothing() throws {
        XCTAssertEqual(try newu().exitCode, 0)
        let whole = TestEnv.read(users + "/cdb")
        for size in [100, whole.count - 10] {
            try Sys.writeFile(users + "/cdb", Array(whole.prefix(size)))
            try h.inject("Subject: cut\n\nx\n", ["-f", "", "alice@example.test"])
            let log = try h.qmtaSend(["./Maildir/"]).stdoutText
            XCTAssertTrue(log.contains("deferral: Trouble_reading_users/cdb_in_qmail-lspawn./"), log)
            XCTAssertEqual(h.maildir("alice").count, 0)
        }
        XCTAssertEqual(h.queueFiles().filter { $0.hasPrefix("local/") }.count, 2, "both wait in the queue")
        XCTAssertEqual(try newu().exitCode, 0)
        // A whole table again: the retry (ALRM: now) delivers both.
        let d = try h.startSend()
        d.signal(SIGALRM)
        h.waitFor("both delivered") { h.maildir("alice").count == 2 }
        _ = d.stop()
        XCTAssertEqual(h.maildir("alice").count, 2, d.log)
    }

    func testQmailNewuRefusesBadInputAndKeepsTheOldTable() throws {
        XCTAssertEqual(try newu().exitCode, 0)
        let before = TestEnv.read(users + "/cdb")
        for bad in ["=alice:alice:1:1:/h:::\n",                // no "." line
                    "=alice:alice:1:1:/h::\n.\n",               // too few colons
                    ":alice:1:1:/h:::\n.\n",                    // leading colon
                    "=alice\n.\n",                              // no colon
                    "=al\0ice:alice:1:1:/h:::\n.\n"] {          // NUL
            TestEnv.write(users + "/assign", bad)
            let out = try newu()
            XCTAssertEqual(out.exitCode, 111, bad)
            XCTAssertEqual(out.stderrText, "qmail-newu: fatal: bad format in users/assign\n", bad)
            XCTAssertEqual(TestEnv.read(users + "/cdb"), before)
        }
        let out = try newu([h.dir + "/nonexistent"])
        XCTAssertEqual(out.exitCode, 111)
        XCTAssertTrue(out.stderrText.hasPrefix("qmail-newu: fatal: unable to chdir to \(h.dir)/nonexistent: "), out.stderrText)
    }
}
