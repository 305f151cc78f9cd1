// swift-tools-version:6.0
import PackageDescription
import Foundation

/// Programs started once per message are linked statically: a static Swift
/// binary starts in under 1 ms, a dynamic one in 2.5–6 ms (see docs/benchmarks.md).
let staticExe: [LinkerSetting] = [.unsafeFlags(["-static-executable"])]

/// The programs started once per message (qmail-queue, qmail-inject, sendmail,
/// qmail-nullqueue) are built with Embedded Swift: no runtime start-up, no type
/// metadata instantiated at run time, all generics specialized. They then start as
/// fast as C programs (docs/benchmarks.md). Their sources may only import C modules;
/// the Swift files they share with the library modules are symbolic links to files
/// kept Embedded-clean (typed throws, no existentials; each says so at its top).
let embedded: [SwiftSetting] = [.enableExperimentalFeature("Embedded"), .unsafeFlags(["-wmo"])]
/// qmail-inject and sendmail compare and lower-case strings: Embedded Swift keeps
/// the Unicode tables for that in a library of its own.
/// The library lives in the toolchain: `<toolchain>/usr/lib/swift/embedded/<arch>-unknown-linux-gnu`.
/// Found from `$SWIFT_EMBEDDED_LIB_DIR` if set; else from the program running this manifest
/// (swift-build, in the toolchain's `bin`); else from `swiftc` on PATH. (The architecture is
/// the build machine's: cross-compiling these programs is not supported.)
let embeddedLibraryDirectory: String = {
    #if arch(arm64)
    let triple = "aarch64-unknown-linux-gnu"
    #else
    let triple = "x86_64-unknown-linux-gnu"
    #endif
    let env = ProcessInfo.processInfo.environment
    if let d = env["SWIFT_EMBEDDED_LIB_DIR"], !d.isEmpty { return d }
    func library(besideBinary bin: URL) -> String? {
        let lib = bin.resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("../lib/swift/embedded/\(triple)").standardizedFileURL.path
        return FileManager.default.fileExists(atPath: lib + "/libswiftUnicodeDataTables.a") ? lib : nil
    }
    if let parent = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(getppid())/exe"),
       let lib = library(besideBinary: URL(fileURLWithPath: parent)) { return lib }
    for dir in (env["PATH"] ?? "/usr/bin").split(separator: ":") {
        let swiftc = URL(fileURLWithPath: String(dir)).appendingPathComponent("swiftc")
        if FileManager.default.isExecutableFile(atPath: swiftc.path), let lib = library(besideBinary: swiftc) { return lib }
    }
    return "/usr/lib/swift/embedded/\(triple)"
}()
let embeddedWithUnicode: [LinkerSetting] = staticExe + [
    .unsafeFlags(["-L", embeddedLibraryDirectory]), .linkedLibrary("swiftUnicodeDataTables"), .linkedLibrary("m"),
]

let package = Package(
    name: "swiftqmail",
    products: [
        .executable(name: "qmail-queue", targets: ["qmail-queue"]),
        .executable(name: "qmail-nullqueue", targets: ["qmail-nullqueue"]),
        .executable(name: "queue-fix", targets: ["queue-fix"]),
        .executable(name: "qmail-clean", targets: ["qmail-clean"]),
        .executable(name: "qmail-inject", targets: ["qmail-inject"]),
        .executable(name: "sendmail", targets: ["sendmail"]),
        .executable(name: "new-inject", targets: ["new-inject"]),
        .executable(name: "qmail-send", targets: ["qmail-send"]),
        .executable(name: "qmta-send", targets: ["qmta-send"]),
        .executable(name: "slowq-send", targets: ["slowq-send"]),
        .executable(name: "drate", targets: ["drate"]),
        .executable(name: "qmail-local", targets: ["qmail-local"]),
        .executable(name: "qmail-lspawn", targets: ["qmail-lspawn"]),
        .executable(name: "qmail-remote", targets: ["qmail-remote"]),
        .executable(name: "qmail-rspawn", targets: ["qmail-rspawn"]),
        .executable(name: "rrt", targets: ["rrt"]),
        .executable(name: "maildirserial", targets: ["maildirserial"]),
        .executable(name: "qmail-smtpd", targets: ["qmail-smtpd"]),
        .executable(name: "qmail-newmrh", targets: ["qmail-newmrh"]),
        .executable(name: "qmail-qmtpd", targets: ["qmail-qmtpd"]),
        .executable(name: "qmail-qmqpd", targets: ["qmail-qmqpd"]),
        .executable(name: "qmail-qmqpc", targets: ["qmail-qmqpc"]),
        .library(name: "QueueFormat", targets: ["QueueFormat"]),
        .library(name: "QueueClient", targets: ["QueueClient"]),
        .library(name: "LMDB", targets: ["LMDB"]),
        // Queue front ends (#22).
        .executable(name: "qmail-dkim", targets: ["qmail-dkim"]),
        .executable(name: "qmail-spamfilter", targets: ["qmail-spamfilter"]),
        .executable(name: "qmail-multi", targets: ["qmail-multi"]),
        // Operators' tools (#20).
        .executable(name: "qmail-qread", targets: ["qmail-qread"]),
        .executable(name: "qmail-qstat", targets: ["qmail-qstat"]),
        .executable(name: "qmail-qshape", targets: ["qmail-qshape"]),
        .executable(name: "qmail-tcpto", targets: ["qmail-tcpto"]),
        .executable(name: "qmail-tcpok", targets: ["qmail-tcpok"]),
        .executable(name: "qmail-showctl", targets: ["qmail-showctl"]),
        .executable(name: "qmail-rm", targets: ["qmail-rm"]),
        .executable(name: "qmail-qctl", targets: ["qmail-qctl"]),
    ],
    targets: [
        // C shims: posix_spawn with exact fd control, wait-status macros, signal-safe alarms.
        .target(name: "CShims", cSettings: [.define("_GNU_SOURCE")]),
        // Sockets with timeouts and a TLS client over OpenSSL (Debian's libssl-dev).
        .target(name: "CNet", cSettings: [.define("_GNU_SOURCE")],
                linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        // cdb files through Debian's tinycdb (libcdb-dev), behind two small wrappers.
        .target(name: "CCDB", linkerSettings: [.linkedLibrary("cdb")]),
        // Thin typed wrapper over LMDB.
        .target(name: "LMDB", dependencies: ["CLMDB"]),
        // Pure formats: envelope records, file naming, dates, exit codes. No I/O.
        .target(name: "QueueFormat"),
        // Glibc-level file and process helpers with errno-carrying errors.
        .target(name: "SystemIO", dependencies: ["CShims"]),
        // Control files ($CONTROLDIR) and program/path discovery.
        .target(name: "ControlFiles", dependencies: ["SystemIO"]),
        // The on-disk queue: layout, queue-fix, the sync policy, the injection protocol
        // (Injection.swift, pid -> mess -> intd -> todo, compiled into qmail-queue too through
        // a symbolic link), the daemon's group-commit writer (QueueWriter), and the engine's
        // state transitions.
        .target(name: "QueueStore", dependencies: ["CShims", "QueueFormat", "SystemIO", "ControlFiles"]),
        // The queue-client layer every injecting program goes through.
        .target(name: "QueueClient", dependencies: ["QueueFormat", "SystemIO", "ControlFiles"]),
        // The pure scheduling core: retry schedule, lifetimes, concurrency.
        .target(name: "Scheduler", dependencies: ["RateControl", "QueueFormat"]),
        // What carries deliveries out, without the scheduler: the spawner protocol (both
        // ends' bytes, the spawner's loop), the worker thread pool, local delivery
        // (LocalWorker), the in-process SMTP client's worker and the external
        // qmail-remote's. qmail-lspawn and qmail-rspawn link this, not the engine.
        .target(name: "Workers", dependencies: ["CShims", "SystemIO", "QueueFormat", "LocalDelivery", "RemoteDelivery"]),
        // qmail-local's semantics: users, .qmail files, Maildir, mbox, programs, forwards.
        .target(name: "LocalDelivery", dependencies: ["CShims", "CCDB", "SystemIO", "ControlFiles", "QueueClient", "QueueFormat"]),
        // Bounce messages (QSBMF in indimail-mta's MIME layout) and DSNs.
        .target(name: "Bounce", dependencies: ["QueueFormat"]),
        // The delivery engine: inotify, todo processing, workers, LMDB schedule, logging, signals.
        .target(name: "Engine", dependencies: ["CShims", "SystemIO", "QueueFormat", "QueueStore", "QueueClient",
                                               "ControlFiles", "Scheduler", "LocalDelivery", "Bounce", "LMDB", "RemoteDelivery", "RateControl", "Workers"]),
        // Remote delivery: DNS, smtproutes, the SMTP client with STARTTLS and connection reuse.
        .target(name: "RemoteDelivery", dependencies: ["CNet", "SystemIO", "ControlFiles", "QueueFormat"]),
        // Per-domain delivery rate control: drate definitions, the expression language, limiters.
        .target(name: "RateControl", dependencies: ["SystemIO", "ControlFiles", "QueueFormat"]),
        // qmail-inject's header processing.
        // qmail-inject's header processing, and new-inject's (host rewriting rules,
        // address lists parsed and written again, dates).
        .target(name: "Inject", dependencies: ["QueueFormat", "QueueClient", "ControlFiles", "SystemIO"]),
        // Return receipts (rrt) and maildirserial's bounces, client protocol and maildir scan.
        .target(name: "Receipts", dependencies: ["QueueFormat", "ControlFiles", "SystemIO", "Bounce"]),

        // The network receivers: qmail-smtpd (tcpserver and daemon modes), its protocol,
        // DATA reader, Received line, rcpthosts/morercpthosts.cdb, STARTTLS and AUTH.
        .target(name: "Receivers", dependencies: ["CNet", "CShims", "CCDB", "SystemIO", "ControlFiles", "QueueFormat",
                                                  "QueueClient", "QueueStore", "RemoteDelivery"]),

        // Shared helpers for the test targets (temporary folders, running the built programs).
        .target(name: "TestSupport", dependencies: ["SystemIO"]),

        .executableTarget(name: "qmail-queue", dependencies: ["CShims"], swiftSettings: embedded, linkerSettings: staticExe),
        .executableTarget(name: "qmail-nullqueue", dependencies: ["CShims"], swiftSettings: embedded, linkerSettings: staticExe),
        .executableTarget(name: "queue-fix", dependencies: ["QueueStore"]),
        .executableTarget(name: "qmail-clean", dependencies: ["QueueStore", "QueueFormat", "SystemIO"], linkerSettings: staticExe),
        .executableTarget(name: "qmail-inject", dependencies: ["CShims"], swiftSettings: embedded, linkerSettings: embeddedWithUnicode),
        .executableTarget(name: "sendmail", dependencies: ["CShims"], swiftSettings: embedded, linkerSettings: embeddedWithUnicode),
        // The mess822-style injector (#19): started once per message like qmail-inject, so built the same way.
        .executableTarget(name: "new-inject", dependencies: ["CShims"], swiftSettings: embedded, linkerSettings: embeddedWithUnicode),

        .executableTarget(name: "qmail-send", dependencies: ["Engine"]),
        .executableTarget(name: "qmta-send", dependencies: ["Engine"]),
        .executableTarget(name: "slowq-send", dependencies: ["Engine"]),
        .executableTarget(name: "drate", dependencies: ["RateControl", "LMDB", "SystemIO", "ControlFiles"]),
        .executableTarget(name: "qmail-lspawn", dependencies: ["Workers", "LocalDelivery", "SystemIO", "ControlFiles"]),
        .executableTarget(name: "qmail-remote", dependencies: ["RemoteDelivery"], linkerSettings: staticExe),
        .executableTarget(name: "qmail-rspawn", dependencies: ["Workers", "RemoteDelivery", "SystemIO", "ControlFiles", "QueueFormat"]),
        .executableTarget(name: "qmail-local", dependencies: ["LocalDelivery"], linkerSettings: staticExe),
        .executableTarget(name: "rrt", dependencies: ["Receipts", "QueueClient", "QueueFormat", "ControlFiles", "SystemIO"], linkerSettings: staticExe),
        .executableTarget(name: "qmail-smtpd", dependencies: ["Receivers"], linkerSettings: staticExe),   // started per connection under tcpserver: no dynamic loader
        .executableTarget(name: "qmail-newmrh", dependencies: ["Receivers"]),
        // QMTP and QMQP (#21): the servers start once per connection under tcpserver, the
        // client once per message (it is the null client's qmail-queue): all static.
        .executableTarget(name: "qmail-qmtpd", dependencies: ["Receivers"], linkerSettings: staticExe),
        .executableTarget(name: "qmail-qmqpd", dependencies: ["Receivers"], linkerSettings: staticExe),
        .executableTarget(name: "qmail-qmqpc", dependencies: ["CNet", "SystemIO", "ControlFiles", "QueueFormat"], linkerSettings: staticExe),
        .executableTarget(name: "maildirserial", dependencies: ["Receipts", "QueueClient", "QueueFormat", "ControlFiles", "SystemIO"]),

        // The .qmail toolbox (issue #19), sharing the library module Toolbox: the programs
        // a .qmail line starts once per message are linked statically; the ones run by
        // hand (qmail-newu, newaliases, setforward, printforward) are not.
        .target(name: "CHMAC", linkerSettings: [.linkedLibrary("crypto")]),   // HMAC-SHA1 for SRS, from OpenSSL
        .target(name: "Toolbox", dependencies: ["CShims", "CCDB", "CHMAC", "SystemIO", "ControlFiles", "QueueClient", "Receipts"]),
        .executableTarget(name: "forward", dependencies: ["Toolbox", "SystemIO"], linkerSettings: staticExe),
        .executableTarget(name: "condredirect", dependencies: ["Toolbox", "SystemIO"], linkerSettings: staticExe),
        .executableTarget(name: "bouncesaying", dependencies: ["Toolbox", "SystemIO"], linkerSettings: staticExe),
        .executableTarget(name: "except", dependencies: ["Toolbox", "SystemIO"], linkerSettings: staticExe),
        .executableTarget(name: "preline", dependencies: ["Toolbox", "SystemIO", "CShims"], linkerSettings: staticExe),
        .executableTarget(name: "filterto", dependencies: ["Toolbox", "SystemIO", "CShims"], linkerSettings: staticExe),
        .executableTarget(name: "qmail-newu", dependencies: ["Toolbox", "SystemIO", "ControlFiles"]),
        .executableTarget(name: "rrforward", dependencies: ["Toolbox", "SystemIO", "CShims"], linkerSettings: staticExe),
        .executableTarget(name: "srsfilter", dependencies: ["Toolbox", "SystemIO", "ControlFiles"], linkerSettings: staticExe),
        .executableTarget(name: "qreceipt", dependencies: ["Toolbox", "SystemIO", "QueueFormat"], linkerSettings: staticExe),
        .executableTarget(name: "replier", dependencies: ["Toolbox", "SystemIO", "CShims"], linkerSettings: staticExe),
        .executableTarget(name: "dot-forward", dependencies: ["Toolbox", "SystemIO", "ControlFiles", "CShims"], linkerSettings: staticExe),
        .executableTarget(name: "newaliases", dependencies: ["Toolbox", "SystemIO", "ControlFiles"]),
        .executableTarget(name: "qnotify", dependencies: ["Toolbox", "SystemIO", "QueueFormat"], linkerSettings: staticExe),
        .executableTarget(name: "fastforward", dependencies: ["Toolbox", "SystemIO", "ControlFiles", "CShims"], linkerSettings: staticExe),
        .executableTarget(name: "setforward", dependencies: ["Toolbox", "SystemIO"]),
        .executableTarget(name: "printforward", dependencies: ["Toolbox", "SystemIO"]),

        .testTarget(name: "EngineTests", dependencies: ["Engine", "Scheduler", "QueueStore", "QueueFormat", "LocalDelivery", "Bounce", "ControlFiles", "SystemIO", "TestSupport", "CShims",
                                                    "RemoteDelivery", "RateControl", "Inject"]),
        .testTarget(name: "RemoteDeliveryTests", dependencies: ["RemoteDelivery", "Engine", "Workers", "LMDB", "Scheduler", "SystemIO", "TestSupport"],
                    exclude: ["Support"]),   // the Python SMTP and DNS test servers, run by path
        .testTarget(name: "RateControlTests", dependencies: ["RateControl", "Scheduler", "SystemIO", "TestSupport"]),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "RateControl"]),
        .testTarget(name: "QueueFormatTests", dependencies: ["QueueFormat", "TestSupport", "SystemIO"]),
        .testTarget(name: "LMDBTests", dependencies: ["LMDB", "TestSupport"]),
        .testTarget(name: "QueueStoreTests", dependencies: ["QueueStore", "QueueClient", "QueueFormat", "SystemIO", "TestSupport"]),
        .testTarget(name: "QueueClientTests", dependencies: ["QueueClient", "QueueFormat", "SystemIO", "TestSupport"]),
        .testTarget(name: "InjectTests", dependencies: ["Inject", "QueueFormat", "SystemIO", "TestSupport"]),
        .testTarget(name: "ReceiptsTests", dependencies: ["Receipts", "QueueFormat", "SystemIO", "TestSupport"]),
        .testTarget(name: "InstallTests", dependencies: ["SystemIO", "TestSupport"]),
        .testTarget(name: "ReceiversTests", dependencies: ["Receivers", "QueueStore", "QueueFormat", "SystemIO", "TestSupport"]),

        // Queue front ends (#22): qmail-dkim (OpenDKIM's library, Debian libopendkim-dev),
        // qmail-spamfilter, qmail-multi. FrontEnds holds what they share: the option
        // and header parsers (fuzzed), the hand-off to the next queue program.
        .target(name: "CDKIM", linkerSettings: [.linkedLibrary("opendkim"), .linkedLibrary("ssl"), .linkedLibrary("crypto"),
                                                .linkedLibrary("db"), .linkedLibrary("bsd"), .linkedLibrary("md"),
                                                .linkedLibrary("resolv"), .linkedLibrary("pthread")]),
        .target(name: "FrontEnds", dependencies: ["CShims", "SystemIO", "ControlFiles"]),
        .executableTarget(name: "qmail-dkim", dependencies: ["CDKIM", "FrontEnds", "CShims", "SystemIO", "ControlFiles"],
                          linkerSettings: staticExe),   // started once per message: no dynamic loader
        .executableTarget(name: "qmail-spamfilter", dependencies: ["FrontEnds", "CShims", "SystemIO", "ControlFiles"],
                          linkerSettings: staticExe),
        .executableTarget(name: "qmail-multi", dependencies: ["FrontEnds", "CShims", "SystemIO", "ControlFiles"],
                          linkerSettings: staticExe),
        .testTarget(name: "FrontEndsTests", dependencies: ["FrontEnds", "SystemIO", "TestSupport"], exclude: ["Support"]),
        // Operators' tools (#20): reading the queues and the engine's schedule beside a running engine.
        .target(name: "QueueTools", dependencies: ["CShims", "SystemIO", "QueueFormat", "ControlFiles", "LMDB", "Scheduler"]),
        .executableTarget(name: "qmail-qread", dependencies: ["QueueTools"]),
        .executableTarget(name: "qmail-qstat", dependencies: ["QueueTools"]),
        .executableTarget(name: "qmail-qshape", dependencies: ["QueueTools"]),
        .executableTarget(name: "qmail-tcpto", dependencies: ["QueueTools"]),
        .executableTarget(name: "qmail-tcpok", dependencies: ["QueueTools"]),
        .executableTarget(name: "qmail-showctl", dependencies: ["QueueTools", "ControlFiles", "RemoteDelivery", "SystemIO"]),
        .executableTarget(name: "qmail-rm", dependencies: ["QueueTools"]),
        .executableTarget(name: "qmail-qctl", dependencies: ["QueueTools"]),
        .testTarget(name: "QueueToolsTests", dependencies: ["QueueTools", "QueueFormat", "Scheduler", "LMDB", "SystemIO", "TestSupport"]),
    ]
)
