import XCTest
import QueueTools

/// qmail-qread's JSON strings: plain text is copied whole, everything JSON must
/// escape is escaped, valid UTF-8 is kept and any other byte is written as \u00XX.
final class JSONTests: XCTestCase {
    func string(_ b: [UInt8]) -> String {
        var out: [UInt8] = []
        JSON.put(b, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    func testPlainTextIsCopiedWhole() {
        XCTAssertEqual(string(Array("Connected to 192.0.2.1 but connection died. (#4.4.2)".utf8)),
                       "\"Connected to 192.0.2.1 but connection died. (#4.4.2)\"")
        XCTAssertEqual(string([]), "\"\"")
        XCTAssertEqual(string(Array(" ~".utf8)), "\" ~\"")
    }

    func testWhatMustBeEscapedIs() {
        XCTAssertEqual(string(Array("a\"b\\c".utf8)), "\"a\\\"b\\\\c\"")
        XCTAssertEqual(string([0x41, 8, 12, 10, 13, 9, 0x42]), "\"A\\b\\f\\n\\r\\tB\"")
        XCTAssertEqual(string([0x41, 0, 0x1f, 0x7f]), "\"A\\u0000\\u001f\\u007f\"")
    }

    func testUTF8IsKeptAndOtherBytesAreEscaped() {
        XCTAssertEqual(string(Array("jörg@x".utf8)), "\"jörg@x\"")
        XCTAssertEqual(string([0x6a, 0xf6, 0x72, 0x67]), "\"j\\u00f6rg\"")
    }

    /// Every string written parses back, as a JSON reader sees it, to the text.
    func testEveryByteRoundTrips() throws {
        for b in 0...255 {
            let bytes: [UInt8] = [0x61, UInt8(b), 0x7a]
            let json = "[" + string(bytes) + "]"
            let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String], json)
            let want = b < 0x80 ? String(decoding: bytes, as: UTF8.self) : "a" + String(UnicodeScalar(UInt8(b))) + "z"
            XCTAssertEqual(parsed, [want], json)
        }
    }
}
