import XCTest
import SystemIO
import TestSupport

/// scripts/test links the programs started once per message with musl
/// (scripts/musl-link: glibc's start-up CPU detection cost 0.25 ms per start) and
/// says so in SWIFTQMAIL_MUSL_LINKED; every other test then runs those builds.
/// This one checks that the link really happened, so a broken musl-link cannot
/// quietly leave the glibc programs in place.
final class MuslLinkTests: XCTestCase {
    func testPerMessageProgramsAreLinkedWithMusl() throws {
        guard Sys.environment("SWIFTQMAIL_MUSL_LINKED") == "1" else {
            throw XCTSkip("the programs were not linked with musl by scripts/test (no musl-gcc, or swift test run directly)")
        }
        for name in ["qmail-queue", "qmail-nullqueue", "qmail-inject", "sendmail", "new-inject"] {
            let bytes = try XCTUnwrap(try Sys.readFile(TestEnv.program(name)), name)
            // glibc's static start-up reads GLIBC_TUNABLES; musl has no such string.
            XCTAssertNil(bytes.firstRange(of: Array("GLIBC_TUNABLES".utf8)), "\(name) is still linked with glibc")
            XCTAssertTrue(bytes.starts(with: [0x7f, 0x45, 0x4c, 0x46]), "\(name) is not an ELF file")
        }
    }
}

