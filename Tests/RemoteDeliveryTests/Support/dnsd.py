#!/usr/bin/env python3
"""A DNS stub server for tests: UDP on 127.0.0.1, answers from a zone given
on the command line, stops by itself. Prints its port on the first line.

usage: dnsd.py [--lifetime S] RECORD ...
RECORD: name/MX/pref/exchange | name/A/1.2.3.4 | name/AAAA/::1 | name/NXDOMAIN | name/SERVFAIL
        | name/TRUNCATE (over UDP: an empty answer with the TC bit; over TCP: the records)
A name with no matching record of the asked type gets an empty NOERROR answer.
The same port also answers over TCP.
"""
import socket, struct, sys, time, ipaddress, threading

args = sys.argv[1:]
lifetime = 60.0
if args and args[0] == "--lifetime":
    lifetime = float(args[1]); args = args[2:]
zone = {}
special = {}
for r in args:
    parts = r.split("/")
    name = parts[0].lower().rstrip(".")
    if parts[1] in ("NXDOMAIN", "SERVFAIL", "TRUNCATE"):
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

types = {1: "A", 15: "MX", 28: "AAAA", 5: "CNAME"}

def answer(q, tcp):
    qid = q[:2]
    name, i = decode(q, 12)
    qtype, = struct.unpack(">H", q[i:i + 2])
    question = q[12:i + 4]
    lname = name.lower()
    rcode = 0
    flags = 0x81
    answers = b""
    count = 0
    if special.get(lname) == "NXDOMAIN":
        rcode = 3
    elif special.get(lname) == "SERVFAIL":
        rcode = 2
    elif special.get(lname) == "TRUNCATE" and not tcp:
        flags = 0x83
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
    header = qid + struct.pack(">BBHHHH", flags, 0x80 | rcode, 1, count, 0, 0)
    return header + question + answers

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", port))
t.listen(16)
t.settimeout(0.5)
print(port, flush=True)
deadline = time.time() + lifetime

def tcp_loop():
    while time.time() < deadline:
        try:
            c, _ = t.accept()
        except socket.timeout:
            continue
        try:
            c.settimeout(5)
            f = c.makefile("rb")
            n, = struct.unpack(">H", f.read(2))
            reply = answer(f.read(n), True)
            c.sendall(struct.pack(">H", len(reply)) + reply)
        except Exception:
            pass
        finally:
            c.close()

threading.Thread(target=tcp_loop, daemon=True).start()
s.settimeout(0.5)
while time.time() < deadline:
    try:
        q, addr = s.recvfrom(4096)
    except socket.timeout:
        continue
    s.sendto(answer(q, False), addr)
