import XCTest
import QueueFormat

final class ReceivedLineTests: XCTestCase {
    func testIndimailStyle() {
        let r = ReceivedLine(pid: 1234, host: "mx.example", invoker: .uid(0, network: false, ip: nil), date: "Wed, 7 Aug 2025 08:49:18 +0530")
        XCTAssertEqual(String(decoding: r.bytes(), as: UTF8.self),
                       "Received: indimail-mta queue 1234 by host mx.example\n (invoked by uid 0); Wed, 7 Aug 2025 08:49:18 +0530\n")
    }

    func testHiddenHostHasNoSpaceBeforeParenthesis() {
        let r = ReceivedLine(pid: 9, host: nil, invoker: .uid(5, network: true, ip: "1.2.3.4"), date: "D")
        XCTAssertEqual(String(decoding: r.bytes(), as: UTF8.self), "Received: indimail-mta queue 9(invoked from network, by uid 5); D\n")
    }

    func testNetworkAliasAndBounce() {
        let n = ReceivedLine(pid: 9, host: "h", invoker: .uid(5, network: true, ip: "1.2.3.4"), date: "D")
        XCTAssertEqual(String(decoding: n.bytes(), as: UTF8.self), "Received: indimail-mta queue 9 by host h\n (invoked from network 1.2.3.4, by uid 5); D\n")
        let a = ReceivedLine(pid: 9, host: "h", invoker: .alias, date: "D")
        XCTAssertEqual(String(decoding: a.bytes(), as: UTF8.self), "Received: indimail-mta queue 9 by host h\n (invoked by alias); D\n")
        let b = ReceivedLine(pid: 9, host: "h", invoker: .bounce, date: "D")
        XCTAssertEqual(String(decoding: b.bytes(), as: UTF8.self), "Received: indimail-mta queue 9 by host h\n (invoked for bounce); D\n")
    }

    func testDateFormats() {
        // 2025-08-07 03:19:18 UTC
        XCTAssertEqual(Date822.classicUTC(1754536758), "7 Aug 2025 03:19:18 -0000")
        setenv("TZ", "Asia/Kolkata", 1)
        tzset()
        XCTAssertEqual(Date822.local(1754536758), "Thu, 7 Aug 2025 08:49:18 +0530")
        setenv("TZ", "UTC", 1)
        tzset()
        XCTAssertEqual(Date822.local(1754536758), "Thu, 7 Aug 2025 03:19:18 +0000")
    }
}
