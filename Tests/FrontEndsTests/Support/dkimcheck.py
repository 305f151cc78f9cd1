#!/usr/bin/env python3
"""dkimpy (PyPI) as the independent DKIM implementation in qmail-dkim's tests.

  dkimcheck.py verify ZONEFILE < message     prints pass or fail (exit 0 / 1)
  dkimcheck.py sign KEYFILE SELECTOR DOMAIN rsa|ed25519 [simple|relaxed] < message
                                             prints the signed message

ZONEFILE lines are "name text" as txtdns.py reads them; the public keys are
given to dkimpy through its dnsfunc, so no DNS is involved. KEYFILE is a PEM
private key (for ed25519 the 32-byte seed is taken from the PKCS#8 form).
"""
import base64, sys
import dkim

def zone(path):
    records = {}
    for line in open(path):
        name, _, text = line.rstrip("\n").partition(" ")
        records[name.lower().rstrip(".")] = text.encode()
    return records

def main():
    message = sys.stdin.buffer.read()
    if sys.argv[1] == "verify":
        records = zone(sys.argv[2])
        def dnsfunc(name, timeout=5):
            if isinstance(name, bytes):
                name = name.decode()
            return records.get(name.lower().rstrip("."), b"")
        ok = dkim.verify(message, dnsfunc=dnsfunc)
        print("pass" if ok else "fail")
        sys.exit(0 if ok else 1)
    keyfile, selector, domain, alg = sys.argv[2:6]
    canon = (sys.argv[6] if len(sys.argv) > 6 else "relaxed").encode()
    pem = open(keyfile, "rb").read()
    if alg == "ed25519":
        der = base64.b64decode(b"".join(l for l in pem.splitlines() if not l.startswith(b"-----")))
        key = base64.b64encode(der[-32:])
        algorithm = b"ed25519-sha256"
    else:
        key = pem
        algorithm = b"rsa-sha256"
    sig = dkim.sign(message, selector.encode(), domain.encode(), key, canonicalize=(canon, canon),
                    signature_algorithm=algorithm, include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    sys.stdout.buffer.write(sig.replace(b"\r\n", b"\n") + message)

main()
