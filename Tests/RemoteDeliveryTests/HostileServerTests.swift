import XCTest
import Workers
import RemoteDelivery
@testable import Engine
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Hostile and careless input as the SMTP client meets it (issue #16): addresses
/// with line breaks, servers that trickle, flood or drop. Each case gives a
/// clear report and never a wrong delivery. (The engine-level cases are in
/// EngineTests/HostileInputTests.swift.)
extension SMTPClientTests {
    /// A recipient holding CR LF cannot inject commands: it fails alone, and
    /// nothing of it reaches the server; the other recipient is delivered.
    func testLineBreakInARecipientNeverReachesTheServer() throws {
        let s = try server()
        let (o, reports) = deliver(try client(port: s.port), ["x@dest.example>\r\nDATA\r\n", "good@dest.example"])
        XCTAssertEqual(o.recipientReports.map { $0.first! }, [UInt8(ascii: "h"), UInt8(ascii: "r")])
        XCTAssertEqual(reports.map(\.kind), [.failure, .success])
        XCTAssertTrue(text(reports[0]).contains("holds a control character"), text(reports[0]))
        XCTAssertEqual(s.received.count, 1)
        XCTAssertEqual(s.received[0].env, ["s@src.example", "good@dest.example", "plain"])
        let log = s.sessionLog
        XCTAssertFalse(log.contains("x@dest.example"), log)
        XCTAssertEqual(log.components(separatedBy: "\nDATA").count - 1, 1, "one DATA only: \(log)")
    }

    /// With only bad recipients, or a bad sender, no connection is needed at all.
    func testLineBreakInTheSenderOrEveryRecipientFailsWithoutAConversation() throws {
        let s = try server()
        let c = try client(port: s.port)
        let bySender = c.deliver(domain: "dest.example", sender: Array("s@src.example\r\nRSET".utf8),
                                 recipients: [Array("u@dest.example".utf8)], message: message)
        let folded = ExternalRemoteWorker.fold(output: bySender.output(forRecipient: 0), status: .exited(0))
        XCTAssertEqual(folded.kind, .failure)
        XCTAssertTrue(text(folded).contains("envelope sender holds a control character"), text(folded))
        let (_, reports) = deliver(c, ["a@dest.example\nRSET", "b@dest.example\r"])
        XCTAssertEqual(reports.map(\.kind), [.failure, .failure])
        XCTAssertEqual(s.sessionLog, "", "no command was sent")
    }

    /// `timeoutremote` bounds each whole reply: a server sending its greeting a
    /// byte every 0.3 s (about 9 s for the line) is given up after 2 s.
    func testTricklingServerIsBoundedPerReplyNotPerRead() throws {
        let s = try server(["--trickle", "0.3"])
        let start = SMTPConnectionClock.now()
        let (_, reports) = deliver(try client(port: s.port, timeout: 2))
        let elapsed = SMTPConnectionClock.now() - start
        XCTAssertEqual(reports[0].kind, .deferral, text(reports[0]))
        XCTAssertEqual(s.received.count, 0)
        XCTAssertLessThan(elapsed, 4.0, "the reply took \(elapsed) s with a 2 s timeout")
        XCTAssertGreaterThanOrEqual(elapsed, 1.9)
    }

    /// A 10 MB greeting that never ends is refused once it passes 1 MB, not read whole.
    func testEndlessGreetingIsATemporaryFailure() throws {
        let s = try server(["--greeting-bytes", "10000000"])
        let (_, reports) = deliver(try client(port: s.port, timeout: 5))
        XCTAssertEqual(reports[0].kind, .deferral)
        XCTAssertEqual(text(reports[0]), "Connected to 127.0.0.1 but connection died. (#4.4.2)\n")
    }

    /// A server that closes the connection in the middle of DATA: a deferral, and nothing is lost.
    func testServerClosingDuringDataIsADeferral() throws {
        let big = Array(("Subject: big\n\n" + String(repeating: "line of text\n", count: 20_000)).utf8)
        let s = try server(["--drop-in-data"])
        let c = try client(port: s.port, timeout: 5)
        let o = c.deliver(domain: "dest.example", sender: Array("s@src.example".utf8), recipients: [Array("u@dest.example".utf8)], message: big)
        let r = ExternalRemoteWorker.fold(output: o.output(forRecipient: 0), status: .exited(0))
        XCTAssertEqual(r.kind, .deferral, text(r))
        XCTAssertEqual(s.received.count, 0)
    }

    /// The message is sent from its file in chunks: dot-stuffing and CRLF across
    /// chunk edges give the same bytes as the whole message at once.
    func testMessageFromAFileIsSentInChunksWithTheSameBytes() throws {
        // Lines that start with a dot and LF/CRLF pairs fall on the 64 KB chunk edges.
        var body: [UInt8] = Array("Subject: chunks\n\n".utf8)
        while body.count < 3 * MessageFile.chunkSize + 100 {
            body += Array(".dot\r\nplain\n".utf8)
            body += [UInt8](repeating: UInt8(ascii: "a"), count: 7)
            body.append(10)
        }
        body.append(contentsOf: Array("\n.\n..\n".utf8))
        let path = dir + "/message"
        try Sys.writeFile(path, body, mode: 0o600)
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let s = try server(["--extensions", "PIPELINING,SIZE 10000000"])
        let c = try client(port: s.port)
        let o = c.deliver(domain: "dest.example", sender: Array("s@src.example".utf8), recipients: [Array("u@dest.example".utf8)],
                          message: OutgoingMessage(prefix: Array("X-QQEH: one".utf8), file: try MessageFile(fd: fd)))
        XCTAssertEqual(ExternalRemoteWorker.fold(output: o.output(forRecipient: 0), status: .exited(0)).kind, .success)
        // What the server stores (dots undone) is the message with every bare LF made CRLF.
        var expected: [UInt8] = []
        var prev: UInt8 = 0
        for b in Array("X-QQEH: one\n".utf8) + body {
            if b == 10 && prev != 13 { expected.append(13) }
            expected.append(b)
            prev = b
        }
        XCTAssertEqual(s.received.count, 1)
        XCTAssertEqual(Array(s.received[0].body.utf8), expected)
        XCTAssertTrue(s.sessionLog.contains("SIZE=\(body.count + 12)"), s.sessionLog)
    }
}

/// Monotonic seconds for the timing checks above.
enum SMTPConnectionClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
