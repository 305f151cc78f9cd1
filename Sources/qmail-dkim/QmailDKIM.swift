#if canImport(Glibc)
import Glibc
#endif
import CShims
import CDKIM
import FrontEnds
import SystemIO
import ControlFiles

/// qmail-dkim: a queue front end that signs (DKIMSIGN) or verifies (DKIMVERIFY)
/// the message with DKIM through OpenDKIM's library, then becomes the next queue
/// program (its arguments, $DKIMQUEUE, $QUEUEPROG or qmail-queue).
@main
enum QmailDKIM {
    static let help = """
    usage: qmail-dkim [queue-program [arg ...]] < message 1< envelope

    A qmail-queue front end (put it in QMAILQUEUE). It reads the message on
    descriptor 0 and either signs it with DKIM (a DKIM-Signature: field is put
    before it) or verifies its signatures (DKIM-Status: and Authentication-Results:
    fields are put before it), then runs the next queue program with the changed
    message on descriptor 0 and the client's envelope, unread, on descriptor 1.
    DKIM comes from OpenDKIM's library: rsa-sha256, rsa-sha1, ed25519-sha256;
    simple and relaxed canonicalization.

    mode:
      DKIMSIGN set          sign with that private key file (% = the signing domain)
      else DKIMVERIFY set   verify; the letters it lists turn results into refusals
      else RELAYCLIENT or AUTHINFO set
                            sign with $DKIMKEY, else domainkeys/%/default
      else                  verify (status fields only)
      DKIMVERIFY with RELAYCLIENT/AUTHINFO and RELAYCLIENT_NODKIMVERIFY: pass as is

    signing environment:
      DKIMSIGN, DKIMKEY     key file, relative to CONTROLDIR unless absolute; every %
                            is replaced by the signing domain; when that file does
                            not exist the name with % removed is tried, and when
                            that is missing too the message is passed unsigned.
                            The selector is the file's base name.
      DKIMSIGNOPTIONS       -c r|s|t|u canonicalization (relaxed default), -l body
                            length tag, -h z= copied headers, -i identity|-,
                            -x seconds|- (expiry, default 604800), -z 1|2|3|4
                            (rsa-sha1, rsa-sha256, both, ed25519-sha256; default:
                            what the key is), -q -t -b accepted
      DKIMIDENTITY, DKIMEXPIRE   override -i and -x
      DKIMSIGNEXTRA, DKIMSIGNOPTIONSEXTRA   a second signature (say ed25519 beside rsa)
      EXCLUDE_DKIMSIGN      colon-separated header name prefixes never signed
                            (always excluded: X-* but X-Mailer, Received,
                            Return-Path, DKIM-Signature, Authentication-Results …)
      signing domain        Return-Path:, Sender:, From:, X-Bounced-Address: in that
                            order, else BOUNCEDOMAIN, else control bouncehost, else me
    verifying environment:
      DKIMVERIFY            result letters (A good … S no signatures … U body hash
                            mismatch, see the manual): upper case = refuse for good
                            (Dqmail-dkim: …), lower case = refuse for now (Z…)
      DNS_SERVER            ip[:port],… name servers for the key lookups (default:
                            /etc/resolv.conf)
      AUTHSERV_ID           the Authentication-Results: identifier (default: me)
    other environment:
      DKIMQUEUE, QUEUEPROG  the next queue program; CONTROLDIR, DEATH (86400 s),
      ERROR_FD (2; -1 = no custom error text), TMPDIR (/tmp)

    exit codes: the next queue program's; 52 timeout, 54 read error, 68 temporary
      file, 81 crash, 88 custom error (`Zqmail-dkim: unable to read private key.
      (#4.3.0)`, `Dqmail-dkim: Could not parse private key (#5.7.5)`, `Zqmail-dkim:
      Invalid DKIMSIGNOPTIONS (#4.3.0)`, verification refusals), 120 unable to run
      the next program

    """

    static let name = "qmail-dkim"

    static func main() {
        let args = Sys.arguments()
        if args.count > 1 && (args[1] == "--help" || args[1] == "-h") {
            _ = try? Sys.write(1, help)
            exit(0)
        }
        qs_crash_exit(QueueHandOff.Exit.internalBug)
        qs_death_alarm(Sys.environment("DEATH").flatMap { UInt32($0) } ?? 86400, QueueHandOff.Exit.timeout)
        qs_ignore_sigpipe()

        var dkimsign = Sys.environment("DKIMSIGN")
        let dkimverify = Sys.environment("DKIMVERIFY")
        let relay = Sys.environment("RELAYCLIENT") != nil || Sys.environment("AUTHINFO") != nil
        let next = QueueHandOff.nextProgram(arguments: args, variable: "DKIMQUEUE")
        if dkimsign == nil && dkimverify != nil && relay && Sys.environment("RELAYCLIENT_NODKIMVERIFY") != nil {
            QueueHandOff.execProgram(next)
        }
        if dkimsign == nil && dkimverify == nil && relay {
            dkimsign = Sys.environment("DKIMKEY") ?? "domainkeys/%/default"
        }
        let message = QueueHandOff.readMessage()
        if let dkimsign {
            let fields = Signer.sign(message, keyTemplate: dkimsign)
            QueueHandOff.execQueue(next, message: [fields, message])
        }
        let fields = Verifier.verify(message, letters: dkimverify ?? "")
        QueueHandOff.execQueue(next, message: [fields, message])
    }

    static func fail(_ kind: Character, _ text: String, _ code: String) -> Never {
        QueueHandOff.customError(kind, program: name, text: text, code: code)
    }
}

/// Bytes handed to libopendkim: header fields and body with CRLF line ends (the
/// form DKIM is computed over), the queue's LF-only text converted.
enum Wire {
    static func crlf(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + bytes.count / 32 + 2)
        var previous: UInt8 = 0
        for b in bytes {
            if b == 0x0A && previous != 0x0D { out.append(0x0D) }
            out.append(b)
            previous = b
        }
        return out
    }

    /// Feeds header, end of header and body into a signing or verifying handle.
    static func feed(_ dkim: OpaquePointer, _ message: [UInt8], _ header: MessageHeader) -> DKIM_STAT {
        for f in header.fields {
            var h = crlf(message[f.range])
            let st = h.withUnsafeMutableBufferPointer { dkim_header(dkim, $0.baseAddress, $0.count) }
            if st != DKIM_STAT_OK { return st }
        }
        let eoh = dkim_eoh(dkim)
        if eoh != DKIM_STAT_OK { return eoh }
        var body = crlf(message[header.bodyOffset...])
        if !body.isEmpty {
            let st = body.withUnsafeMutableBufferPointer { dkim_body(dkim, $0.baseAddress, $0.count) }
            if st != DKIM_STAT_OK { return st }
        }
        return DKIM_STAT_OK
    }

    static func cString(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }
}

enum Signer {
    /// The DKIM-Signature: fields (LF line ends) to put before the message, or
    /// nothing when a `%` key is missing for the domain. Refusals exit 88.
    static func sign(_ message: [UInt8], keyTemplate: String) -> [UInt8] {
        let header = MessageHeader.parse(message)
        let control = ControlDirectory.fromEnvironment()
        var options: DKIMSignOptions
        do throws(DKIMSignOptions.Invalid) { options = try DKIMSignOptions.parse(Sys.environment("DKIMSIGNOPTIONS") ?? "") } catch {
            QmailDKIM.fail("Z", "Invalid DKIMSIGNOPTIONS", "X.3.0")
        }
        if let id = Sys.environment("DKIMIDENTITY"), !id.isEmpty { options.identity = id }
        if let x = Sys.environment("DKIMEXPIRE") { options.expireSeconds = Int(x).flatMap { $0 > 0 ? $0 : nil } }
        var jobs = [(keyTemplate, options)]
        if let extra = Sys.environment("DKIMSIGNEXTRA"), !extra.isEmpty {
            var o2 = options
            if let text = Sys.environment("DKIMSIGNOPTIONSEXTRA") {
                do throws(DKIMSignOptions.Invalid) { o2 = try DKIMSignOptions.parse(text) } catch {
                    QmailDKIM.fail("Z", "Invalid DKIMSIGNOPTIONS", "X.3.0")
                }
            }
            jobs.append((extra, o2))
        }
        let domain = signingDomain(message, header, control)
        let excludes = (Sys.environment("EXCLUDE_DKIMSIGN") ?? "").split(separator: ":").map(String.init)
        let names = DKIMPolicy.signedHeaderNames(header, excludePrefixes: excludes)
        var out: [UInt8] = []
        for (template, opts) in jobs {
            guard let (key, selector) = readKey(template: template, domain: domain, control: control) else { continue }
            let type = key.withUnsafeBufferPointer { cdkim_key_type($0.baseAddress, $0.count) }
            if type == 0 { QmailDKIM.fail("D", "Could not parse private key", "X.7.5") }
            let algorithms = opts.algorithms ?? (type == 2 ? [.ed25519SHA256] : [.rsaSHA256])
            for algorithm in algorithms {
                if (algorithm == .ed25519SHA256) != (type == 2) {
                    QmailDKIM.fail("D", "private key type does not match DKIMSIGNOPTIONS -z", "X.7.5")
                }
                out += signature(message, header, names: names, key: key, selector: selector, domain: domain,
                                 algorithm: algorithm, options: opts)
            }
        }
        return out
    }

    static func signingDomain(_ message: [UInt8], _ header: MessageHeader, _ control: ControlDirectory) -> String {
        for name in ["Return-Path", "Sender", "From", "X-Bounced-Address"] {
            if let v = header.first(name, in: message), let d = MessageHeader.addressDomain(v) { return d }
        }
        if let d = Sys.environment("BOUNCEDOMAIN"), !d.isEmpty { return d }
        do throws(ControlError) {
            if let d = try control.readLine("bouncehost"), !d.isEmpty { return d }
            if let d = try control.readLine("me"), !d.isEmpty { return d }
        } catch {
            QmailDKIM.fail("Z", "unable to read bouncehost.", "X.3.0")
        }
        return "localhost"
    }

    /// The key's PEM text (NUL-terminated) and selector; nil = sign nothing (a `%`
    /// key absent for this domain). A key that should be there and is not: exit 88.
    static func readKey(template: String, domain: String, control: ControlDirectory) -> ([UInt8], String)? {
        let paths = DKIMPolicy.keyPaths(template: template, domain: domain, controlDirectory: control.path)
        var path = paths.first
        if let fallback = paths.withoutDomain, access(path, F_OK) != 0 {
            if errno != ENOENT && errno != ENOTDIR { QmailDKIM.fail("Z", "unable to read private key.", "X.3.0") }
            path = fallback
        }
        let bytes: [UInt8]?
        do throws(SystemError) { bytes = try Sys.readFile(path) } catch {
            if error.errno == EISDIR && paths.withoutDomain != nil { return nil }
            QmailDKIM.fail("Z", "unable to read private key.", "X.3.0")
        }
        guard let key = bytes else {
            if paths.withoutDomain != nil { return nil }
            QmailDKIM.fail("Z", "unable to read private key.", "X.3.0")
        }
        // A selector of "%" (the domain itself) takes the file name after replacement.
        return (key.filter { $0 != 0 } + [0], DKIMPolicy.selector(ofKeyPath: path))
    }

    static func signature(_ message: [UInt8], _ header: MessageHeader, names: [String], key: [UInt8], selector: String,
                          domain: String, algorithm: DKIMSignOptions.Algorithm, options: DKIMSignOptions) -> [UInt8] {
        guard let lib = dkim_init(nil, nil) else { QmailDKIM.fail("Z", "dkim initialization failed", "X.3.0") }
        defer { dkim_close(lib) }
        var flags: UInt32 = 0
        if options.copiedHeaders { flags |= UInt32(DKIM_LIBFLAGS_ZTAGS) }
        if options.bodyLengthTag { flags |= UInt32(DKIM_LIBFLAGS_SIGNLEN) }
        if cdkim_set_flags(lib, flags) != 0 || cdkim_set_uint64(lib, DKIM_OPTS_SIGNATURETTL, UInt64(options.expireSeconds ?? 0)) != 0 {
            QmailDKIM.fail("Z", "dkim initialization failed", "X.3.0")
        }
        // The header names to sign; libopendkim adds From itself.
        var cnames: [UnsafePointer<CChar>?] = names.map { UnsafePointer(strdup($0)) }
        cnames.append(nil)
        defer { for p in cnames { free(UnsafeMutablePointer(mutating: p)) } }
        if cnames.withUnsafeMutableBufferPointer({ cdkim_set_sign_headers(lib, $0.baseAddress) }) != 0 {
            QmailDKIM.fail("Z", "dkim initialization failed", "X.3.0")
        }
        let alg: dkim_alg_t
        switch algorithm {
        case .rsaSHA1: alg = DKIM_SIGN_RSASHA1
        case .rsaSHA256: alg = DKIM_SIGN_RSASHA256
        case .ed25519SHA256: alg = DKIM_SIGN_ED25519SHA256
        }
        let hc: dkim_canon_t = options.headerCanon == .relaxed ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE
        let bc: dkim_canon_t = options.bodyCanon == .relaxed ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE
        var status: DKIM_STAT = 0
        var k = key
        let id = Wire.cString("qmail-dkim"), sel = Wire.cString(selector), dom = Wire.cString(domain)
        let handle = k.withUnsafeMutableBufferPointer { kp in
            dkim_sign(lib, id, nil, kp.baseAddress, sel, dom, hc, bc, alg, -1, &status)
        }
        guard let dkim = handle else { QmailDKIM.fail("Z", "dkim initialization failed", "X.3.0") }
        defer { dkim_free(dkim) }
        if algorithm == .ed25519SHA256 {
            // libopendkim 2.11.0~beta2 folds an ed25519 DKIM-Signature field it hands
            // out differently from the one it signed: with simple header
            // canonicalization no verifier accepted it (dkimpy, opendkim-testmsg).
            // Unfolded (one line, well under 998 bytes), the two are the same.
            _ = dkim_set_margin(dkim, 0)
        }
        if let identity = options.identity {
            if dkim_set_signer(dkim, Wire.cString(identity)) != DKIM_STAT_OK { QmailDKIM.fail("Z", "Invalid DKIMSIGNOPTIONS", "X.3.0") }
        }
        var st = Wire.feed(dkim, message, header)
        if st == DKIM_STAT_OK { st = dkim_eom(dkim, nil) }
        if st != DKIM_STAT_OK { failure(dkim, st) }
        var buf: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        let prefix = "DKIM-Signature: "
        if dkim_getsighdr_d(dkim, prefix.utf8.count, &buf, &len) != DKIM_STAT_OK || buf == nil {
            failure(dkim, DKIM_STAT_INTERNAL)
        }
        var text = Array(prefix.utf8)
        for b in UnsafeBufferPointer(start: buf, count: len) where b != 0x0D { text.append(b) }
        text.append(0x0A)
        return text
    }

    static func failure(_ dkim: OpaquePointer, _ status: DKIM_STAT) -> Never {
        let detail = dkim_geterror(dkim).map { String(cString: $0) } ?? ""
        let what = String(cString: dkim_getresultstr(status))
        if detail.contains("key") || status == DKIM_STAT_NORESOURCE && detail.isEmpty {
            QmailDKIM.fail("D", "Could not parse private key", "X.7.5")
        }
        QmailDKIM.fail("Z", "signing failed: \(what)\(detail.isEmpty ? "" : ": " + detail)", "X.3.0")
    }
}

enum Verifier {
    /// The status fields to put before the message; exits 88 when DKIMVERIFY asks
    /// for a refusal of this result.
    static func verify(_ message: [UInt8], letters: String) -> [UInt8] {
        let header = MessageHeader.parse(message)
        guard let lib = dkim_init(nil, nil) else { QmailDKIM.fail("Z", "dkim initialization failed", "X.3.0") }
        defer { dkim_close(lib) }
        if cdkim_set_resolver(lib, Sys.environment("DNS_SERVER"), 5) != 0 {
            QmailDKIM.fail("Z", "unable to initialise the resolver", "X.3.0")
        }
        var status: DKIM_STAT = 0
        guard let dkim = dkim_verify(lib, Wire.cString("qmail-dkim"), nil, &status) else {
            QmailDKIM.fail("Z", "dkim initialization failed", "X.3.0")
        }
        defer { dkim_free(dkim) }
        var st = Wire.feed(dkim, message, header)
        if st == DKIM_STAT_OK { st = dkim_eom(dkim, nil) }

        struct Result { var code: Int; var domain: String; var selector: String; var algorithm: String }
        var results: [Result] = []
        if st != DKIM_STAT_NOSIG {
            var sigs: UnsafeMutablePointer<OpaquePointer?>? = nil
            var count: Int32 = 0
            if dkim_getsiglist(dkim, &sigs, &count) == DKIM_STAT_OK, let sigs {
                for i in 0..<Int(count) {
                    guard let sig = sigs[i] else { continue }
                    let flags = dkim_sig_getflags(sig)
                    if flags & UInt32(DKIM_SIGFLAG_IGNORE) != 0 { continue }
                    var code: Int
                    let err = Int(dkim_sig_geterror(sig))
                    let passed = flags & UInt32(DKIM_SIGFLAG_PASSED) != 0
                    let bh = dkim_sig_getbh(sig)
                    if err == 0 && passed && bh == DKIM_SIGBH_MATCH { code = 0 } else {
                        code = DKIMPolicy.verdictCode(sigError: err, bodyHashMismatch: bh == DKIM_SIGBH_MISMATCH,
                                                      testKey: flags & UInt32(DKIM_SIGFLAG_TESTKEY) != 0)
                        if code == 0 { code = -1 }   // processed, no error recorded, not passed
                    }
                    var alg: dkim_alg_t = -1
                    _ = dkim_sig_getsignalg(sig, &alg)
                    let algName = alg == DKIM_SIGN_RSASHA1 ? "rsa-sha1" : alg == DKIM_SIGN_RSASHA256 ? "rsa-sha256"
                        : alg == DKIM_SIGN_ED25519SHA256 ? "ed25519-sha256" : "unknown"
                    let d = dkim_sig_getdomain(sig).map { String(cString: $0) } ?? ""
                    let s = dkim_sig_getselector(sig).map { String(cString: $0) } ?? ""
                    results.append(Result(code: code, domain: d, selector: s, algorithm: algName))
                }
            }
        }
        let overall: Int
        if results.isEmpty {
            // A DKIM-Signature: field too malformed to be a signature: H; none at all: S.
            overall = st == DKIM_STAT_NOSIG || st == DKIM_STAT_OK ? -13
                : st == DKIM_STAT_SYNTAX ? -2 : (st == DKIM_STAT_CANTVRFY ? -10 : -14)
        } else if results.contains(where: { $0.code >= 0 }) {
            overall = 0
        } else {
            overall = results[0].code
        }
        let verdict = DKIMPolicy.Verdict(code: overall)
        if let kind = verdict.action(dkimverify: letters) {
            QmailDKIM.fail(kind, verdict.text, verdict.statusCode)
        }
        var authserv = Sys.environment("AUTHSERV_ID") ?? ""
        if authserv.isEmpty {
            authserv = (try? ControlDirectory.fromEnvironment().readLine("me")).flatMap { $0 } ?? "localhost"
        }
        var out = "DKIM-Status: \(verdict.text)\n"
        out += "Authentication-Results: \(authserv)"
        if results.isEmpty {
            out += overall == -13 ? "; dkim=none"
                : "; dkim=\(DKIMPolicy.authenticationResult(code: overall)) (\(verdict.text))"
        } else {
            for r in results {
                let word = DKIMPolicy.authenticationResult(code: r.code)
                out += ";\n\tdkim=\(word)"
                if r.code != 0 { out += " (\(DKIMPolicy.Verdict(code: r.code).text))" }
                out += " header.d=\(r.domain) header.s=\(r.selector) header.a=\(r.algorithm)"
            }
        }
        out += "\n"
        return Array(out.utf8)
    }
}
