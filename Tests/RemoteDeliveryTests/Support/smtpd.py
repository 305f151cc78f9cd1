#!/usr/bin/env python3
"""A scripted SMTP server for tests, loopback only, that stops by itself.

usage: smtpd.py --dir DIR [--port N] [--lifetime SECONDS] [--tls CERT KEY]
                [--greeting "554 go away"] [--helo CODE] [--mail CODE]
                [--rcpt ADDR=CODE ...] [--rcpt-default CODE] [--data CODE]
                [--final CODE] [--drop-in-data] [--hang-at STAGE]
                [--trickle SECONDS] [--greeting-bytes N]
Prints the port on the first line of standard output. Every accepted message
is written to DIR/msg-N.eml with the envelope in DIR/msg-N.env and the
(hostile servers: --trickle sends every reply a byte at a time, SECONDS apart;
--greeting-bytes sends a greeting line of N bytes that never ends)
arrival time (float seconds) in DIR/msg-N.time. Every session's commands go
to DIR/session.log.
"""
import argparse, os, socket, ssl, sys, threading, time

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--port", type=int, default=0)
p.add_argument("--lifetime", type=float, default=60)
p.add_argument("--tls", nargs=2)
p.add_argument("--greeting", default="220 test.example ESMTP")
p.add_argument("--helo", type=int, default=250)
p.add_argument("--mail", type=int, default=250)
p.add_argument("--rcpt", action="append", default=[])
p.add_argument("--rcpt-default", type=int, default=250)
p.add_argument("--data", type=int, default=354)
p.add_argument("--final", type=int, default=250)
p.add_argument("--drop-in-data", action="store_true")
p.add_argument("--hang-at", default="")
p.add_argument("--extensions", default="PIPELINING,8BITMIME,SIZE 10000000")
p.add_argument("--trickle", type=float, default=0)
p.add_argument("--greeting-bytes", type=int, default=0)
a = p.parse_args()
rcpt_codes = dict(x.split("=", 1) for x in a.rcpt)
lock = threading.Lock()
counter = [0]
log = open(os.path.join(a.dir, "session.log"), "a", buffering=1)

def text(code):
    return {250: "ok", 354: "go ahead", 421: "try later", 450: "mailbox busy", 451: "local error",
            452: "too many", 550: "no such user here", 552: "too big", 553: "bad sender",
            554: "transaction failed", 501: "syntax"}.get(code, "reply")

def session(conn):
    conn.settimeout(30)
    f = conn.makefile("rb")
    def send(line):
        data = (line + "\r\n").encode()
        if a.trickle:
            for i in range(len(data)):
                conn.sendall(data[i:i + 1])
                time.sleep(a.trickle)
        else:
            conn.sendall(data)
    def hang():
        time.sleep(a.lifetime)
    if a.hang_at == "greeting":
        hang(); return
    if a.greeting_bytes:
        chunk = b"220-" + b"x" * 65532
        sent = 0
        try:
            while sent < a.greeting_bytes:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        hang(); return
    send(a.greeting)
    if not a.greeting.startswith("2"):
        return
    tls_active = False
    envelope = None
    rcpts = []
    while True:
        try:
            line = f.readline()
        except Exception:
            return
        if not line:
            return
        cmd = line.decode("latin-1").rstrip("\r\n")
        log.write(cmd + "\n")
        verb = cmd[:4].upper()
        if a.hang_at and verb.lower() == a.hang_at[:4].lower():
            hang(); return
        if verb in ("EHLO", "HELO"):
            if a.helo != 250:
                send("%d %s" % (a.helo, text(a.helo))); continue
            if verb == "EHLO":
                exts = [e for e in a.extensions.split(",") if e]
                if a.tls and not tls_active:
                    exts.append("STARTTLS")
                lines = ["test.example"] + exts
                for i, l in enumerate(lines):
                    send(("250-" if i < len(lines) - 1 else "250 ") + l)
            else:
                send("250 test.example")
        elif verb == "STAR" and a.tls:
            send("220 ready to start TLS")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(a.tls[0], a.tls[1])
            conn = ctx.wrap_socket(conn, server_side=True)
            f = conn.makefile("rb")
            tls_active = True
        elif verb == "MAIL":
            envelope = cmd[10:].split(">")[0].lstrip("<") if a.mail < 300 else None
            rcpts = []
            send("%d %s" % (a.mail, text(a.mail)))
        elif verb == "RCPT":
            if envelope is None:
                send("503 5.5.1 need MAIL command"); continue
            addr = cmd[8:].split(">")[0].lstrip("<")
            code = int(rcpt_codes.get(addr, a.rcpt_default))
            if code < 300:
                rcpts.append(addr)
            send("%d %s" % (code, text(code)))
        elif verb == "DATA":
            if not rcpts:
                send("554 5.5.1 no valid recipients"); continue
            if a.data != 354:
                send("%d %s" % (a.data, text(a.data))); continue
            send("354 go ahead")
            body = []
            while True:
                l = f.readline()
                if not l:
                    return
                if a.drop_in_data and len(body) > 2:
                    conn.close(); return
                if l == b".\r\n":
                    break
                body.append(l[1:] if l.startswith(b"..") else l)
            if a.hang_at == "final":
                hang(); return
            if a.final < 300:
                with lock:
                    counter[0] += 1
                    n = counter[0]
                base = os.path.join(a.dir, "msg-%d" % n)
                open(base + ".eml", "wb").write(b"".join(body))
                open(base + ".env", "w").write(envelope + "\n" + "\n".join(rcpts) + "\n" + ("tls" if tls_active else "plain") + "\n")
                open(base + ".time", "w").write("%.6f\n" % time.time())
            send("%d %s" % (a.final, text(a.final)))
        elif verb == "RSET":
            envelope = None; rcpts = []
            send("250 flushed")
        elif verb == "QUIT":
            send("221 bye"); return
        elif verb == "NOOP":
            send("250 ok")
        else:
            send("502 unknown")

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", a.port))
s.listen(64)
print(s.getsockname()[1], flush=True)
s.settimeout(0.5)
deadline = time.time() + a.lifetime
while time.time() < deadline:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=session, args=(c,), daemon=True).start()
