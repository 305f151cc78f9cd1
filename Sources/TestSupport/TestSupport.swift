#if canImport(Glibc)
import Glibc
#endif
import SystemIO

/// Helpers for the tests: temporary folders, the built programs, running a
/// child with given input and capturing its output. Real processes and files.
public enum TestEnv {
    /// The build folder holding the test bundle and the executables.
    public static var buildDirectory: String {
        Sys.executableDirectory()!
    }

    /// A built program of this package.
    public static func program(_ name: String) -> String {
        buildDirectory + "/" + name
    }

    /// The package root, from this file's location.
    public static var packageRoot: String {
        var p = #filePath
        for _ in 0..<3 { p = String(p[..<p.lastIndex(of: "/")!]) }
        return p
    }

    /// The golden files of our own queue format (`queue-layout/fixtures`).
    public static var queueLayoutFixtures: String { packageRoot + "/queue-layout/fixtures" }

    /// Files written by a real classic qmail (`queue-layout/fixtures/classic-qmail`).
    public static var classicQmailFixtures: String { queueLayoutFixtures + "/classic-qmail" }

    /// Real third-party qmail and indimail-mta bounces (`queue-layout/fixtures/third-party-bounces`).
    public static var thirdPartyBounceFixtures: String { queueLayoutFixtures + "/third-party-bounces" }

    /// A missing or unreadable fixture: the test fails with this, naming the file.
    public struct MissingFixture: Error, CustomStringConvertible {
        public let path: String
        public var description: String {
            "missing test fixture: \(path) (the fixtures live in queue-layout/fixtures of this repository)"
        }
    }

    /// A fixture's path, checked: a missing fixture fails the test with a
    /// message naming the file, instead of a confusing parse error later.
    public static func fixture(_ path: String) throws -> String {
        guard (try? Sys.stat(path)) != nil else { throw MissingFixture(path: path) }
        return path
    }

    /// A fixture's bytes, or an error naming the missing file.
    public static func readFixture(_ path: String) throws -> [UInt8] {
        guard let bytes = (try? Sys.readFile(path)) ?? nil else { throw MissingFixture(path: path) }
        return bytes
    }

    /// A fresh temporary folder.
    public static func temporaryDirectory(_ tag: String = "t") -> String {
        var template = Array("/tmp/swiftqmail-\(tag)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(p != nil, "mkdtemp failed")
        return String(cString: p!)
    }

    /// rm -rf.
    public static func remove(_ path: String) {
        _ = try? run("/bin/rm", ["-rf", path])
    }

    /// The environment with some variables set (value) or removed (nil).
    public static func environment(_ changes: [String: String?]) -> [String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        // The engines started as root by tests run in one process unless a test asks
        // for qmail's privilege split (by setting QMAIL_ONE_PROCESS to nil).
        env["QMAIL_ONE_PROCESS"] = "1"
        for (k, v) in changes { env[k] = v }
        return env.map { "\($0.key)=\($0.value)" }.sorted()
    }

    public struct Output {
        public var status: ExitStatus
        public var stdout: [UInt8]
        public var stderr: [UInt8]
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
        public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
        public var exitCode: Int32? { if case let .exited(c) = status { return c }; return nil }
    }

    /// Runs a program with `input` on fd 0 and (optionally) `fd1Input` fed on
    /// fd 1 — qmail-queue reads its envelope from descriptor 1. Output is
    /// collected from fd 1 (when not used for input) and fd 2.
    public static func run(_ path: String, _ args: [String] = [], input: [UInt8] = [], fd1Input: [UInt8]? = nil,
                           environment: [String]? = nil, directory: String? = nil) throws -> Output {
        let inPipe = try Spawn.pipe()
        let outPipe = try Spawn.pipe()
        let errPipe = try Spawn.pipe()
        // fd 1 is either the child's output or, for qmail-queue, its envelope input.
        let fd1 = fd1Input == nil ? outPipe.write : outPipe.read
        let pid = try Spawn.start(path, arguments: [path] + args, environment: environment,
                                  fds: [.init(inPipe.read, at: 0), .init(fd1, at: 1), .init(errPipe.write, at: 2)],
                                  keepStandard: false, directory: directory)
        Sys.close(inPipe.read); Sys.close(errPipe.write)
        if fd1Input == nil { Sys.close(outPipe.write) } else { Sys.close(outPipe.read) }
        // Feed inputs and drain outputs on threads so nothing deadlocks.
        let feeder = Thread { _ = try? Sys.write(inPipe.write, input); Sys.close(inPipe.write) }
        var feeder1: Thread? = nil
        if let fd1Input { feeder1 = Thread { _ = try? Sys.write(outPipe.write, fd1Input); Sys.close(outPipe.write) } }
        var out: [UInt8] = []
        let reader = fd1Input == nil ? Thread { out = (try? Sys.readAll(outPipe.read)) ?? []; Sys.close(outPipe.read) } : nil
        let err = (try? Sys.readAll(errPipe.read)) ?? []
        Sys.close(errPipe.read)
        feeder.join(); feeder1?.join(); reader?.join()
        let status = try Spawn.wait(pid)
        return Output(status: status, stdout: out, stderr: err)
    }

    /// A file's bytes (fails the caller with an empty array when absent).
    public static func read(_ path: String) -> [UInt8] {
        ((try? Sys.readFile(path)) ?? nil) ?? []
    }

    public static func write(_ path: String, _ text: String, mode: mode_t = 0o644) {
        try! Sys.writeFile(path, Array(text.utf8), mode: mode)
        try! Sys.chmod(path, mode)
    }

    /// Every regular file below `dir`, relative paths, sorted.
    public static func files(under dir: String) -> [String] {
        var out: [String] = []
        func walk(_ rel: String) {
            let full = rel.isEmpty ? dir : dir + "/" + rel
            guard let names = try? Sys.listDirectory(full) else { return }
            for n in names {
                let r = rel.isEmpty ? n : rel + "/" + n
                guard let st = try? Sys.lstat(dir + "/" + r) else { continue }
                if (st.st_mode & S_IFMT) == S_IFDIR { walk(r) } else if (st.st_mode & S_IFMT) == S_IFREG { out.append(r) }
            }
        }
        walk("")
        return out.sorted()
    }
}

/// A minimal joinable thread over pthreads (Foundation stays out of the tests' hot path).
public final class Thread: @unchecked Sendable {
    private var tid = pthread_t()
    private let body: () -> Void

    public init(_ body: @escaping () -> Void) {
        self.body = body
        let unmanaged = Unmanaged.passRetained(self)
        pthread_create(&tid, nil, { arg in
            let me = Unmanaged<Thread>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, unmanaged.toOpaque())
    }

    public func join() { pthread_join(tid, nil) }
}

/// A seeded random number generator for the tests that use random numbers
/// (the crash tests): the seed comes from `SWIFTQMAIL_TEST_SEED` when set,
/// else from the system, and is printed, so a failing run can be repeated
/// with `SWIFTQMAIL_TEST_SEED=<seed> swift test --filter <test>`.
/// SplitMix64: small, fast, and the same sequence on every machine.
public struct SeededGenerator: RandomNumberGenerator {
    public let seed: UInt64
    private var state: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    /// The seed from the environment, or a fresh one; printed with the test's name.
    public init(for test: String) {
        var s: UInt64
        if let text = Sys.environment("SWIFTQMAIL_TEST_SEED"), let v = UInt64(text) {
            s = v
        } else {
            var g = SystemRandomNumberGenerator()
            s = g.next()
        }
        self.init(seed: s)
        print("\(test): random seed \(s) (repeat with SWIFTQMAIL_TEST_SEED=\(s))")
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
