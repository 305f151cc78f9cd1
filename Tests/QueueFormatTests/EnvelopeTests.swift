import XCTest
import QueueFormat
import SystemIO
import TestSupport

final class EnvelopeTests: XCTestCase {
    func testQueueFileRoundTrip() throws {
        let env = Envelope(sender: Array("a@b".utf8), recipients: [Array("c@d".utf8), Array("e@f".utf8)],
                           uid: Array("0".utf8), pid: Array("42".utf8), qqeh: Array("X-A: 1\n".utf8))
        let bytes = env.queueFileBytes()
        XCTAssertEqual(bytes, Array("u0\0p42\0Fa@b\0Tc@d\0Te@f\0eX-A: 1\n\0".utf8))
        XCTAssertEqual(try Envelope.parseQueueFile(bytes), env)
    }

    func testClientStreamEndsWithExtraNul() {
        let env = Envelope(sender: "", recipients: ["x@y"])
        XCTAssertEqual(env.clientStreamBytes(), Array("F\0Tx@y\0\0".utf8))
    }

    func testUnknownRecordTypeIsRejected() {
        XCTAssertThrowsError(try Envelope.parseQueueFile(Array("Fa\0Xb\0".utf8))) { error in
            XCTAssertEqual(error as? Envelope.ParseError, .unknownRecordType(UInt8(ascii: "X"), offset: 3))
        }
        XCTAssertThrowsError(try Envelope.parseQueueFile(Array("Fa\0Tb".utf8)))
        XCTAssertThrowsError(try Envelope.parseQueueFile(Array("Tb\0".utf8)))
    }

    /// Classic qmail's todo files (queue-layout/fixtures/classic-qmail/queue-s4-queued) parse.
    func testReadsClassicQmailTodoFiles() throws {
        let dir = try TestEnv.fixture(TestEnv.classicQmailFixtures + "/queue-s4-queued/todo")
        let expected: [String: (String, [String])] = [
            "16229927": ("alice@fixture.example", ["bob@fixture.example", "carol@remote.example"]),
            "16229929": ("", ["postmaster@fixture.example"]),
            "16229931": ("alice@fixture.example", ["dave"]),
            "16229933": ("alice@fixture.example", ["info@virt.example", "nosuchuser@fixture.example"]),
        ]
        let names = try Sys.listDirectory(dir).sorted()
        XCTAssertEqual(names, expected.keys.sorted())
        for name in names {
            let env = try Envelope.parseQueueFile(try TestEnv.readFixture(dir + "/" + name))
            XCTAssertEqual(String(decoding: env.sender, as: UTF8.self), expected[name]!.0)
            XCTAssertEqual(env.recipients.map { String(decoding: $0, as: UTF8.self) }, expected[name]!.1)
            XCTAssertEqual(env.uid, Array("0".utf8))
            XCTAssertNotNil(env.pid)
        }
    }

    /// Classic qmail's channel files and the truncated S3 leftover.
    func testReadsClassicChannelFilesAndSpotsTheTruncatedLeftover() throws {
        let base = try TestEnv.fixture(TestEnv.classicQmailFixtures)
        let local = try RecipientRecord.parseChannelFile(try TestEnv.readFixture(base + "/queue-s5-preprocessed/local/6/16229933"))
        XCTAssertEqual(local.map { String(decoding: $0.address, as: UTF8.self) }, ["joe-info@virt.example", "nosuchuser@fixture.example"])
        XCTAssertEqual(local.map(\.offset), [0, 23])
        XCTAssertFalse(local.contains { $0.done })
        let info = try Envelope.parseQueueFile(try TestEnv.readFixture(base + "/queue-s5-preprocessed/info/0/16229927"))
        XCTAssertEqual(String(decoding: info.sender, as: UTF8.self), "alice@fixture.example")
        // intd of the truncated injection has no final NUL: it is not a complete envelope.
        let leftover = try TestEnv.readFixture(base + "/queue-s3-leftover/intd/16229935")
        XCTAssertThrowsError(try Envelope.parseQueueFile(leftover))
    }

    func testDoneRecordsAreRecognised() throws {
        let recs = try RecipientRecord.parseChannelFile(Array("Da@b\0Tc@d\0".utf8))
        XCTAssertEqual(recs, [RecipientRecord(done: true, address: Array("a@b".utf8), offset: 0),
                              RecipientRecord(done: false, address: Array("c@d".utf8), offset: 5)])
    }

    func testSplitNaming() {
        let classic = QueueNames()
        XCTAssertEqual(classic.path(.mess, 16229931), "mess/4/16229931")
        XCTAssertEqual(classic.path(.todo, 16229931), "todo/16229931")
        XCTAssertEqual(classic.path(.bounce, 16229931), "bounce/16229931")
        let big = QueueNames(split: 151, bigTodo: true)
        XCTAssertEqual(big.path(.intd, 16229931), "intd/\(16229931 % 151)/16229931")
        XCTAssertEqual(big.path(.pid, 7), "pid/7")
    }

    func testQueueFileNamesAsMessageIDs() {
        func id(_ s: String) -> UInt64? { QueueNames.parseID(s.utf8) }
        XCTAssertEqual(id("16229931"), 16229931)
        XCTAssertEqual(id("0"), 0)
        XCTAssertEqual(id("18446744073709551615"), UInt64.max)
        // Names qmail never writes (%lu of an inode) are not ids.
        for bad in ["", "0123", "+5", "-5", "12a", " 12", "18446744073709551616", "123456789012345678901", "1.2"] {
            XCTAssertNil(id(bad), bad)
        }
    }
}
