import XCTest
import QueueFormat

final class QueueClientTextTests: XCTestCase {
    func testEveryTableEntryHasItsExactText() {
        let table: [Int32: String] = [
            11: "Dqq envelope address too long (#5.1.3)", 115: "Dqq envelope address too long (#5.1.3)",
            31: "Dqq mail server permanently rejected message (#5.3.0)",
            32: "Dqq spam or junk mail threshold exceeded (#5.7.1)",
            33: "Dqq message contains virus (#5.7.1)",
            34: "Dqq message contains banned attachment (#5.7.1)",
            35: "Dqq private key file does not exist (#5.3.5)",
            41: "Zqq trouble duplicating file descriptors (#4.3.0)",
            50: "Zqq unable to get privilege to run virus scanner (#4.3.0)",
            51: "Zqq out of memory (#4.3.0)", 52: "Zqq timeout (#4.3.0)",
            53: "Zqq write error or disk full (#4.3.0)", 54: "Zqq read error (#4.3.0)",
            55: "Zqq unable to read configuration (#4.3.0)", 56: "Zqq trouble making network connection (#4.3.0)",
            57: "Zqq unable to open shared object/plugin (#4.3.0)",
            58: "Zqq unable to resolve symbol in shared object/plugin (#4.3.0)",
            59: "Zqq unable to close shared object/plugin (#4.3.0)",
            60: "Zqq trouble creating pipes/sockets (#4.3.0)", 61: "Zqq trouble in home directory (#4.3.0)",
            62: "Zqq unable to access mess file (#4.3.0)", 63: "Zqq trouble doing cd to root directory (#4.3.0)",
            64: "Zqq trouble syncing message to disk (#4.3.0)", 65: "Zqq trouble creating files in intd. (#4.3.0)",
            66: "Zqq trouble linking todofn to intdfn (#4.3.0)", 67: "Zqq trouble linking messfn to pidfn (#4.3.0)",
            68: "Zqq trouble creating temporary files (#4.3.0)", 69: "Zqq trouble syncing dir to disk (#4.3.0)",
            70: "Zqq trouble with pid file (#4.3.0)", 71: "Zqq mail server temporarily rejected message (#4.3.0)",
            72: "Zqq connection to mail server timed out (#4.4.1)", 73: "Zqq connection to mail server rejected (#4.4.1)",
            74: "Zqq communication with mail server failed (#4.4.2)", 75: "Zqq unable to exec (#4.3.0)",
            76: "Zqq temporary problem with SPAM filter (#4.3.0)", 77: "Zqq unable to run QHPSI scanner (#4.3.0)",
            78: "Zqq trouble getting uids/gids (#4.3.0)", 79: "Zqq envelope format error (#4.3.0)",
            80: "Zqq trouble removing intdfn", 81: "Zqq internal bug (#4.3.0)", 91: "Zqq internal bug (#4.3.0)",
            87: "Zqq mail system incorrectly configured. (#4.3.5)",
            82: "Zqq unable to exec qq (#4.3.0)", 120: "Zqq unable to exec qq (#4.3.0)",
            121: "Zqq unable to fork (#4.3.0)", 122: "Zqq waitpid surprise (#4.3.0)", 123: "Zqq crashed (#4.3.0)",
            // unknown codes
            12: "Dqq permanent problem (#5.3.0)", 40: "Dqq permanent problem (#5.3.0)",
            1: "Zqq temporary problem (#4.3.0)", 10: "Zqq temporary problem (#4.3.0)",
            83: "Zqq temporary problem (#4.3.0)", 100: "Zqq temporary problem (#4.3.0)",
            111: "Zqq temporary problem (#4.3.0)", 255: "Zqq temporary problem (#4.3.0)",
        ]
        for (code, text) in table {
            XCTAssertEqual(String(decoding: QueueClientText.text(for: .exited(code: code, customText: [])), as: UTF8.self), text, "exit \(code)")
        }
    }

    func testExit88UsesCustomTextOnlyWhenLongerThanTwoBytes() {
        XCTAssertEqual(QueueClientText.text(for: .exited(code: 88, customText: Array("Dno thanks".utf8))), Array("Dno thanks".utf8))
        XCTAssertEqual(QueueClientText.text(for: .exited(code: 88, customText: Array("Zx".utf8))), Array("Zqq temporary problem (#4.3.0)".utf8))
        XCTAssertEqual(QueueClientText.text(for: .exited(code: 88, customText: nil)), Array("Zqq temporary problem (#4.3.0)".utf8))
    }

    func testSuccessAndClientWriteErrorAndSignals() {
        XCTAssertEqual(QueueClientText.text(for: .exited(code: 0, customText: nil)), [])
        XCTAssertEqual(String(decoding: QueueClientText.text(for: .exited(code: 0, customText: nil), clientWriteError: true), as: UTF8.self), "Zqq read error (#4.3.0)")
        XCTAssertEqual(String(decoding: QueueClientText.text(for: .signaled(9)), as: UTF8.self), "Zqq crashed (#4.3.0)")
        XCTAssertEqual(String(decoding: QueueClientText.text(for: .waitSurprise), as: UTF8.self), "Zqq waitpid surprise (#4.3.0)")
    }

    func testPermanentCodes() {
        XCTAssertTrue(QueueClientText.isPermanent(exitCode: 11))
        XCTAssertTrue(QueueClientText.isPermanent(exitCode: 115))
        XCTAssertTrue(QueueClientText.isPermanent(exitCode: 40))
        XCTAssertFalse(QueueClientText.isPermanent(exitCode: 41))
        XCTAssertFalse(QueueClientText.isPermanent(exitCode: 88))
    }
}
