#!/usr/bin/env python3
"""A DNS stub server for tests: UDP on 127.0.0.1, answers from a zone given
on the command line, stops by itself. Prints its port on the first line.

usage: dnsd.py [--lifetime S] RECORD ...
RECORD: name/MX/pref/exchange | name/A/1.2.3.4 | name/AAAA/::1 | name/NXDOMAIN | name/SERVFAIL
A name with no matching record of the asked type gets an empty NOERROR answer.
"""
import socket, struct, sys, time, ipaddress

args = sys.argv[1:]
lifetime = 60.0
if args and args[0] == "--lifetime":
    lifetime = float(args[1]); args = args[2:]
zone = {}
special = {}
for r in args:
    parts = r.split("/")
    name = parts[0].lower().rstrip(".")
    if parts[1] in ("NXDOMAIN", "SERVFAIL"):
        special[name] = parts[1]; continue
    zone.setdefault((name, parts[1]), []).append(parts[2:])

def encode(name):
    if name in (".", ""):
        return b"\0"     # the root: a null MX (RFC 7505) points there
    out = b""
    for l in name.rstrip(".").split("."):
        out += bytes([len(l)]) + l.encode()
    return out + b"\0"

def decode(m, i):
    labels = []
    while m[i]:
        labels.append(m[i + 1:i + 1 + m[i]].decode()); i += 1 + m[i]
    return ".".join(labels), i + 1

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(0.5)
deadline = time.time() + lifetime
types = {1: "A", 15: "MX", 28: "AAAA", 5: "CNAME"}
while time.time() < deadline:
    try:
        q, addr = s.recvfrom(4096)
    except socket.timeout:
        continue
    qid = q[:2]
    name, i = decode(q, 12)
    qtype, = struct.unpack(">H", q[i:i + 2])
    question = q[12:i + 4]
    lname = name.lower()
    rcode = 0
    answers = b""
    count = 0
    if special.get(lname) == "NXDOMAIN":
        rcode = 3
    elif special.get(lname) == "SERVFAIL":
        rcode = 2
    else:
        for rec in zone.get((lname, types.get(qtype, "?")), []):
            if qtype == 1:
                rdata = ipaddress.IPv4Address(rec[0]).packed
            elif qtype == 28:
                rdata = ipaddress.IPv6Address(rec[0]).packed
            elif qtype == 15:
                rdata = struct.pack(">H", int(rec[0])) + encode(rec[1])
            else:
                continue
            answers += b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 60, len(rdata)) + rdata
            count += 1
    header = qid + struct.pack(">BBHHHH", 0x81, 0x80 | rcode, 1, count, 0, 0)
    s.sendto(header + question + answers, addr)
