import XCTest
@testable import FrontEnds

final class DKIMSignOptionsTests: XCTestCase {
    func testDefaults() throws {
        let o = try DKIMSignOptions.parse("")
        XCTAssertEqual(o.headerCanon, .relaxed)
        XCTAssertEqual(o.bodyCanon, .relaxed)
        XCTAssertEqual(o.expireSeconds, 604800)
        XCTAssertNil(o.algorithms)
        XCTAssertNil(o.identity)
    }

    func testLettersAndValues() throws {
        let o = try DKIMSignOptions.parse("-c s -z4 -x - -i - -l -h -q -t -b 2048")
        XCTAssertEqual(o.headerCanon, .simple)
        XCTAssertEqual(o.bodyCanon, .simple)
        XCTAssertEqual(o.algorithms, [.ed25519SHA256])
        XCTAssertNil(o.expireSeconds)
        XCTAssertTrue(o.bodyLengthTag && o.copiedHeaders && o.queryMethodTag && o.timestampTag)
        let t = try DKIMSignOptions.parse("-ct -z 3 -x 3600 -i postmaster@example.com")
        XCTAssertEqual(t.headerCanon, .relaxed)
        XCTAssertEqual(t.bodyCanon, .simple)
        XCTAssertEqual(t.algorithms, [.rsaSHA1, .rsaSHA256])
        XCTAssertEqual(t.expireSeconds, 3600)
        XCTAssertEqual(t.identity, "postmaster@example.com")
        let u = try DKIMSignOptions.parse("-lh -cu")
        XCTAssertEqual(u.headerCanon, .simple)
        XCTAssertEqual(u.bodyCanon, .relaxed)
        XCTAssertTrue(u.bodyLengthTag && u.copiedHeaders)
    }

    func testInvalid() {
        for bad in ["-c x", "-z 9", "-y", "-x soon", "-x", "plain", "-i nobody", "-c", "-z 2 extra"] {
            XCTAssertThrowsError(try DKIMSignOptions.parse(bad), bad)
        }
    }

    func testHeaderParsing() {
        let m = Array("From: A <a@Example.COM>\nSubject: hi\n there\nX-Test: 1\nReceived: x\n\nbody\n".utf8)
        let h = MessageHeader.parse(m)
        XCTAssertTrue(h.hasSeparator)
        XCTAssertEqual(h.fields.map(\.name), ["From", "Subject", "X-Test", "Received"])
        XCTAssertEqual(String(decoding: m[h.fields[1].range], as: UTF8.self), "Subject: hi\n there")
        XCTAssertEqual(String(decoding: m[h.bodyOffset...], as: UTF8.self), "body\n")
        XCTAssertEqual(h.first("from", in: m).flatMap(MessageHeader.addressDomain), "example.com")
        XCTAssertEqual(DKIMPolicy.signedHeaderNames(h, excludePrefixes: []), ["from", "subject"])
        XCTAssertEqual(DKIMPolicy.signedHeaderNames(h, excludePrefixes: ["Subj"]), ["from"])
        let noBlank = MessageHeader.parse(Array("From: a@b\nnot a header line\n".utf8))
        XCTAssertFalse(noBlank.hasSeparator)
        XCTAssertEqual(noBlank.bodyOffset, 10)
    }

    func testKeyPaths() {
        let p = DKIMPolicy.keyPaths(template: "domainkeys/%/default", domain: "example.com", controlDirectory: "/c")
        XCTAssertEqual(p.first, "/c/domainkeys/example.com/default")
        XCTAssertEqual(p.withoutDomain, "/c/domainkeys/default")
        XCTAssertEqual(DKIMPolicy.keyPaths(template: "/k/sel", domain: "x", controlDirectory: "/c").first, "/k/sel")
        XCTAssertNil(DKIMPolicy.keyPaths(template: "/k/sel", domain: "x", controlDirectory: "/c").withoutDomain)
        XCTAssertEqual(DKIMPolicy.selector(ofKeyPath: "/c/domainkeys/example.com/default"), "default")
        XCTAssertEqual(DKIMPolicy.keyPaths(template: "/k/%", domain: "ex.org", controlDirectory: "/c").first, "/k/ex.org")
    }

    func testVerdictLetters() {
        XCTAssertEqual(DKIMPolicy.Verdict(code: 0).letter, "A")
        XCTAssertEqual(DKIMPolicy.Verdict(code: -13).letter, "S")
        XCTAssertEqual(DKIMPolicy.Verdict(code: -15).letter, "U")
        XCTAssertEqual(DKIMPolicy.Verdict(code: -1).letter, "G")
        XCTAssertEqual(DKIMPolicy.Verdict(code: -15).action(dkimverify: "FGHIJKLMNPQRSTUVWX"), "D")
        XCTAssertEqual(DKIMPolicy.Verdict(code: -15).action(dkimverify: "u"), "Z")
        XCTAssertNil(DKIMPolicy.Verdict(code: 0).action(dkimverify: "FGHIJKLMNPQRSTUVWX"))
        XCTAssertEqual(DKIMPolicy.verdictCode(sigError: 28, bodyHashMismatch: false, testKey: false), -3)
        XCTAssertEqual(DKIMPolicy.verdictCode(sigError: 0, bodyHashMismatch: true, testKey: false), -15)
    }
}
