#!/usr/bin/env python3
"""A DNS stub for qmail-dkim's tests: answers TXT queries from a zone file over
UDP and TCP, stops by itself. Prints its port on the first line.

usage: txtdns.py [--address A] [--port P] [--lifetime S] ZONEFILE
ZONEFILE lines: "name TXT-text" (the text split into 255-byte strings), or
"name SERVFAIL". Names not listed get NXDOMAIN.
"""
import socket, struct, sys, time, threading

args = sys.argv[1:]
address, port, lifetime = "127.0.0.1", 0, 60.0
while args and args[0].startswith("--"):
    if args[0] == "--address": address = args[1]
    elif args[0] == "--port": port = int(args[1])
    elif args[0] == "--lifetime": lifetime = float(args[1])
    args = args[2:]
zone, servfail = {}, set()
for line in open(args[0]):
    line = line.rstrip("\n")
    if not line.strip():
        continue
    name, _, text = line.partition(" ")
    name = name.lower().rstrip(".")
    if text == "SERVFAIL":
        servfail.add(name)
    else:
        zone.setdefault(name, []).append(text.encode())

def decode(m, i):
    labels = []
    while m[i]:
        labels.append(m[i + 1:i + 1 + m[i]].decode()); i += 1 + m[i]
    return ".".join(labels), i + 1

def answer(q):
    name, i = decode(q, 12)
    qtype, = struct.unpack(">H", q[i:i + 2])
    question = q[12:i + 4]
    lname = name.lower()
    rcode, answers, count = 0, b"", 0
    if lname in servfail:
        rcode = 2
    elif lname not in zone:
        rcode = 3
    elif qtype in (16, 255):
        for text in zone[lname]:
            chunks = [text[k:k + 255] for k in range(0, len(text), 255)] or [b""]
            rdata = b"".join(bytes([len(c)]) + c for c in chunks)
            answers += b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 60, len(rdata)) + rdata
            count += 1
    flags = 0x8180 | rcode | (q[2] & 1) << 8
    return q[:2] + struct.pack(">HHHHH", flags, 1, count, 0, 0) + question + answers

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((address, port))
port = udp.getsockname()[1]
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((address, port))
tcp.listen(8)
print(port, flush=True)
deadline = time.time() + lifetime

def serve_tcp():
    while time.time() < deadline:
        tcp.settimeout(max(0.1, deadline - time.time()))
        try:
            c, _ = tcp.accept()
        except OSError:
            continue
        try:
            c.settimeout(5)
            n, = struct.unpack(">H", c.recv(2))
            q = b""
            while len(q) < n:
                q += c.recv(n - len(q))
            a = answer(q)
            c.sendall(struct.pack(">H", len(a)) + a)
        except Exception:
            pass
        finally:
            c.close()

threading.Thread(target=serve_tcp, daemon=True).start()
while time.time() < deadline:
    udp.settimeout(max(0.1, deadline - time.time()))
    try:
        q, peer = udp.recvfrom(4096)
    except OSError:
        continue
    try:
        udp.sendto(answer(q), peer)
    except Exception:
        pass
