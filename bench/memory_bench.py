#!/usr/bin/env python3
"""The delivery engine's resident memory with large messages (issue #16).

One run, as root, from the repository root:

    python3 bench/memory_bench.py --megabytes 270

It makes a throw-away installation under .build/bench-tmp (a queue, three
local users with Maildirs, a loopback smtp-sink for a remote domain), starts
qmail-send (release build by default), queues one message of the given size
for the three local users at once, waits for the three deliveries, then one
for a remote recipient, and reports the engine's peak resident memory
(VmHWM from /proc) after each phase, beside the message size. Bounded: each
phase has a time limit; everything started is stopped and the folder removed
at the end. Python 3 standard library only.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UID = GID = 65534


def vmhwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def wait_for(what, cond, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise SystemExit(f"memory_bench: timed out waiting for {what}")


def make_message(path, megabytes):
    line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n"
    with open(path, "wb") as f:
        f.write(b"Subject: big\n\n")
        block = line * (1 << 14)
        left = megabytes << 20
        while left > 0:
            f.write(block[:left])
            left -= len(block)
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--megabytes", type=int, default=270)
    ap.add_argument("--bin", default=os.path.join(REPO, ".build/release"))
    ap.add_argument("--base", default=os.path.join(REPO, ".build/bench-tmp"))
    ap.add_argument("--timeout", type=int, default=600, help="seconds each phase may take")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("memory_bench: run as root (deliveries switch to the users' identity)")
    os.makedirs(a.base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="memory_bench.", dir=a.base)
    os.chmod(d, 0o755)
    procs = []
    try:
        q, ctl = d + "/queue", d + "/control"
        subprocess.run([a.bin + "/queue-fix", q], check=True, capture_output=True)
        os.makedirs(ctl)
        os.makedirs(d + "/users")
        assign = ""
        for u in ("alice", "bob", "joe"):
            home = f"{d}/home/{u}"
            for sub in ("cur", "new", "tmp"):
                os.makedirs(f"{home}/Maildir/{sub}")
            subprocess.run(["chown", "-R", f"{UID}:{GID}", home], check=True)
            assign += f"={u}:{u}:{UID}:{GID}:{home}:::\n"
        with open(d + "/users/assign", "w") as f:
            f.write(assign + ".\n")
        sink_dir = d + "/sink"
        os.makedirs(sink_dir)
        os.chmod(sink_dir, 0o777)
        port = 20000 + os.getpid() % 20000
        sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-d", sink_dir + "/%M.", f"127.0.0.1:{port}", "100"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sink)
        for name, text in (("me", "bench.test"), ("smtproutes", f"remote.test:127.0.0.1:{port}"), ("timeoutremote", "600")):
            with open(f"{ctl}/{name}", "w") as f:
                f.write(text + "\n")
        env = dict(os.environ, QMAILHOME=d, QUEUEDIR=q, CONTROLDIR=ctl)
        for k in ("QMAILQUEUE", "NULLQUEUE", "QMAILREMOTE"):
            env.pop(k, None)
        msg = d + "/message"
        size = make_message(msg, a.megabytes)
        log = open(d + "/send.log", "w")
        send = subprocess.Popen([a.bin + "/qmail-send", "./Maildir/"], env=env, stdout=log, stderr=log)
        procs.append(send)
        wait_for("qmail-send to start", lambda: "status:" in open(d + "/send.log").read(), 30)
        base = vmhwm_kb(send.pid)
        with open(msg, "rb") as m:
            subprocess.run([a.bin + "/qmail-inject", "-f", "s@bench.test", "alice@bench.test", "bob@bench.test", "joe@bench.test"],
                           stdin=m, env=env, check=True)
        t0 = time.time()
        wait_for("three local deliveries", lambda: all(os.listdir(f"{d}/home/{u}/Maildir/new") for u in ("alice", "bob", "joe")), a.timeout)
        local_s = time.time() - t0
        local = vmhwm_kb(send.pid)
        with open(msg, "rb") as m:
            subprocess.run([a.bin + "/qmail-inject", "-f", "s@bench.test", "r@remote.test"], stdin=m, env=env, check=True)
        t0 = time.time()
        def remote_done():
            log = open(d + "/send.log").read()
            if "to remote r@remote.test" not in log:
                return False
            number = log.split("to remote r@remote.test")[0].rsplit("starting delivery ", 1)[-1].split(":")[0]
            return f"delivery {number}: success: " in log or f"delivery {number}: failure: " in log or f"delivery {number}: deferral: " in log
        wait_for("the remote delivery", remote_done, a.timeout)
        log = open(d + "/send.log").read()
        if "accepted_message" not in log:
            raise SystemExit("memory_bench: the remote delivery did not succeed:\n" + log[-2000:])
        remote_s = time.time() - t0
        remote = vmhwm_kb(send.pid)
        print(f"message: {size} bytes ({size / 1048576:.1f} MiB)")
        print(f"qmail-send peak resident memory (VmHWM): at start {base / 1024:.1f} MiB; "
              f"after 3 concurrent local deliveries {local / 1024:.1f} MiB ({local_s:.1f} s); "
              f"after 1 remote delivery to smtp-sink {remote / 1024:.1f} MiB ({remote_s:.1f} s)")
        return 0 if max(local, remote) < 64 * 1024 else 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
