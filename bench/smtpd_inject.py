#!/usr/bin/env python3
"""Injection over SMTP into qmail-smtpd's daemon: the in-process writer with
shared flushes against one qmail-queue per message, in the same invocation.

    python3 bench/smtpd_inject.py --messages 10000 --sessions 4,16

For each mode and session count it makes a fresh queue (no engine runs: the
messages stay queued), starts `qmail-smtpd --daemon` on 127.0.0.1 as nobody
(who owns the queue), sends the messages with Postfix's smtp-source (about
2 KB each, one recipient), and reports messages/s from the first connection to
the last reply, checking that every message is in todo/. Modes: `in-process`
(the default when the queue is writable) and `qmail-queue` (QMAILQUEUE set to
qmail-queue, so each message is a process and its own fsyncs). Runs as root;
everything is bounded and removed at the end. Python 3 standard library only.
Postfix's smtpd beside it, qmail-smtpd under tcpserver, delivery end to end,
latency and the parallel fsync ceiling: bench/smtp_bench.py (issue #17).
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMTP_SOURCE = "/usr/sbin/smtp-source"


def run_one(a, mode, sessions):
    d = tempfile.mkdtemp(prefix="smtpd_inject.", dir=a.base)
    os.chmod(d, 0o755)
    daemon = None
    try:
        q, ctl = d + "/queue", d + "/control"
        subprocess.run([a.bin + "/queue-fix", q], check=True, capture_output=True)
        subprocess.run(["chown", "-R", "65534:65534", q], check=True)
        os.makedirs(ctl)
        for name, text in (("me", "bench.test"), ("rcpthosts", "bench.test")):
            with open(f"{ctl}/{name}", "w") as f:
                f.write(text + "\n")
        env = dict(os.environ, QMAILHOME=d, QUEUEDIR=q, CONTROLDIR=ctl)
        for k in ("QMAILQUEUE", "NULLQUEUE"):
            env.pop(k, None)
        if mode == "qmail-queue":
            env["QMAILQUEUE"] = a.bin + "/qmail-queue"
        log = d + "/daemon.log"
        with open(log, "w") as lf:
            daemon = subprocess.Popen([a.bin + "/qmail-smtpd", "--daemon", "--listen", "127.0.0.1:0", "--user", "nobody",
                                       "--max-connections", "200", "--max-per-ip", "200"], env=env, stdout=lf, stderr=lf)
        port = 0
        for _ in range(200):
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(log).read())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.02)
        if not port:
            raise SystemExit("smtpd_inject: the daemon did not start: " + open(log).read())
        t0 = time.time()
        subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(a.messages), "-l", "2048", "-f", "s@bench.test",
                        "-t", "r@bench.test", f"127.0.0.1:{port}"], check=True, timeout=a.timeout)
        elapsed = time.time() - t0
        queued = sum(len(files) for _, _, files in os.walk(q + "/todo"))
        inproc = "in-process" in open(log).read()
        return elapsed, queued, inproc
    finally:
        if daemon and daemon.poll() is None:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--sessions", default="4,16")
    ap.add_argument("--bin", default=os.path.join(REPO, ".build/release"))
    ap.add_argument("--base", default=os.path.join(REPO, ".build/bench-tmp"))
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("smtpd_inject: run as root")
    if not os.path.exists(SMTP_SOURCE):
        raise SystemExit("smtpd_inject: Postfix's smtp-source is missing (scripts/ensure-deps installs postfix)")
    os.makedirs(a.base, exist_ok=True)
    print("| mode | sessions | messages | seconds | messages/s | all queued |")
    print("|---|---:|---:|---:|---:|---|")
    for sessions in [int(x) for x in a.sessions.split(",")]:
        for mode in ("in-process", "qmail-queue"):
            elapsed, queued, inproc = run_one(a, mode, sessions)
            if (mode == "in-process") != inproc:
                raise SystemExit(f"smtpd_inject: the daemon did not take the {mode} path")
            print(f"| {mode} | {sessions} | {a.messages} | {elapsed:.2f} | {a.messages / elapsed:,.1f} | {'yes' if queued == a.messages else f'no ({queued})'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
