#!/usr/bin/env python3
"""QMQP injection throughput: null clients (qmail-qmqpc, one process per
message, as qmail-inject runs it with QMAILQUEUE=qmail-qmqpc) handing
messages to a central queue host on 127.0.0.1 (issue #21).

    python3 bench/qmqp_bench.py --messages 2000 --clients 4,16

For each target and client count: a fresh queue (no engine: the messages stay
queued), the server started, then `--clients` threads each running
qmail-qmqpc once per message (about 2 KB, one recipient; message on fd 0,
envelope on fd 1) until `--messages` have been handed over; reports messages/s
from the first start to the last exit and checks that every qmail-qmqpc exited
0 and every message is in todo/. Targets:

* `daemon`: ours, `qmail-qmqpd --daemon` as nobody (who owns the queue),
  writing the queue in-process with shared flushes;
* `tcpserver`: ours under ucspi-tcp's tcpserver (one qmail-qmqpd per
  connection, as nobody), each message through our qmail-queue (QMAILQUEUE);
* `classic`: classic qmail's qmail-qmqpd (notqmail, `--classic` prefix) under
  the same tcpserver with the same QMAILQUEUE, so only the server differs.

Durability at the defaults (qmail-queue's and the daemon's fsyncs). Runs as
root; everything is bounded and removed at the end. Python 3 standard library only.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TCPSERVER = "/usr/bin/tcpserver"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def run_one(a, target, clients):
    d = tempfile.mkdtemp(prefix="qmqp_bench.", dir=a.base)
    os.chmod(d, 0o755)
    server = None
    try:
        q, ctl = d + "/queue", d + "/control"
        subprocess.run([a.bin + "/queue-fix", q], check=True, capture_output=True)
        subprocess.run(["chown", "-R", "65534:65534", q], check=True)
        os.makedirs(ctl)
        port = free_port()
        with open(ctl + "/qmqpservers", "w") as f:
            f.write("127.0.0.1\n")
        env = dict(os.environ, QMAILHOME=d, QUEUEDIR=q, CONTROLDIR=ctl, PORT_QMQP=str(port))
        for k in ("QMAILQUEUE", "NULLQUEUE"):
            env.pop(k, None)
        log = open(d + "/server.log", "w")
        if target == "daemon":
            server = subprocess.Popen([a.bin + "/qmail-qmqpd", "--daemon", "--listen", f"127.0.0.1:{port}", "--allow", "127.0.0.0/8",
                                       "--user", "nobody", "--max-connections", "200", "--max-per-ip", "200"],
                                      env=env, stdout=log, stderr=log)
        else:
            prog = a.bin + "/qmail-qmqpd" if target == "tcpserver" else a.classic + "/bin/qmail-qmqpd"
            senv = dict(env, QMAILQUEUE=a.bin + "/qmail-queue")
            server = subprocess.Popen([TCPSERVER, "-R", "-H", "-l", "bench.test", "-c", "200", "-u", "65534", "-g", "65534",
                                       "127.0.0.1", str(port), prog], env=senv, stdout=log, stderr=log)
        if not wait_port(port):
            raise SystemExit(f"qmqp_bench: {target} did not start: " + open(d + "/server.log").read())
        deadline = time.time() + 10
        while target == "daemon" and "listening on" not in open(d + "/server.log").read() and time.time() < deadline:
            time.sleep(0.02)
        if target == "daemon" and "in-process" not in open(d + "/server.log").read():
            raise SystemExit("qmqp_bench: the daemon did not take the in-process path")
        msg = d + "/message"
        with open(msg, "wb") as f:
            body = b"Subject: qmqp bench\n\n" + (b"x" * 70 + b"\n") * 28
            f.write(b"From: s@bench.test\nTo: r@bench.test\n" + body[: 2048 - 36])
        envelope = d + "/envelope"
        with open(envelope, "wb") as f:
            f.write(b"Fs@bench.test\0Tr@bench.test\0\0")
        counter = [0]
        failures = []
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    if counter[0] >= a.messages:
                        return
                    counter[0] += 1
                with open(msg, "rb") as m, open(envelope, "rb") as e:
                    r = subprocess.run([a.bin + "/qmail-qmqpc"], stdin=m, stdout=e, stderr=subprocess.PIPE, env=env)
                if r.returncode != 0:
                    with lock:
                        failures.append((r.returncode, r.stderr[-200:]))

        t0 = time.time()
        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(a.timeout)
        elapsed = time.time() - t0
        queued = sum(len(files) for _, _, files in os.walk(q + "/todo"))
        return elapsed, queued, failures
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGKILL)
            server.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--clients", default="4,16")
    ap.add_argument("--targets", default="daemon,tcpserver,classic")
    ap.add_argument("--bin", default=os.path.join(REPO, ".build/release"))
    ap.add_argument("--classic", default="/var/qmail-classic")
    ap.add_argument("--base", default=os.path.join(REPO, ".build/bench-tmp"))
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    if os.geteuid() != 0:
        raise SystemExit("qmqp_bench: run as root")
    targets = a.targets.split(",")
    if "classic" in targets and not os.access(a.classic + "/bin/qmail-qmqpd", os.X_OK):
        print(f"qmqp_bench: no classic qmail-qmqpd under {a.classic}: classic skipped", file=sys.stderr)
        targets.remove("classic")
    os.makedirs(a.base, exist_ok=True)
    print("| target | clients | messages | seconds | messages/s | all queued |")
    print("|---|---:|---:|---:|---:|---|")
    for clients in [int(x) for x in a.clients.split(",")]:
        for target in targets:
            elapsed, queued, failures = run_one(a, target, clients)
            ok = "yes" if queued == a.messages and not failures else f"no ({queued} queued, {len(failures)} failed: {failures[:2]})"
            print(f"| {target} | {clients} | {a.messages} | {elapsed:.2f} | {a.messages / elapsed:,.1f} | {ok} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
