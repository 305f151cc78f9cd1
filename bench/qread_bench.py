#!/usr/bin/env python3
"""qmail-qread on a large queue: wall time and peak memory (issue #20: --json on
1,000,000 messages in under 10 s with bounded memory).

    bench/qread_bench.py --bin .build/release --count 1000000 [--dir /var/tmp/qread-bench] [--keep]
                         [--schedule]

Makes a queue with queue-fix, fills it with bench/make_queue.py --preprocessed
(each message: mess, info and one remote recipient, as the engine leaves a
backlog; about 12 KB of disk per message, 3 inodes), unless --dir already holds
one with --count messages; with --schedule, bench/make_schedule.py then writes
the engine's LMDB schedule for it (every message's next attempt and a stored
deferral, as a running engine holds them for a deferred backlog; needs the
PyPI package lmdb), so --json makes its look-ups. Then it runs, each with the
page cache warm (a run first to warm it):

    qmail-qread --json -q QUEUE > /dev/null
    qmail-qread -c -s -q QUEUE
    qmail-qstat -q QUEUE

under /usr/bin/time, and prints wall seconds and maximum resident memory of
each. Python 3 standard library only (--schedule: and lmdb)."""

import argparse
import os
import shutil
import subprocess
import sys
import time


def timed(cmd, out=subprocess.DEVNULL):
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    rss_kb = int(p.stderr.strip().split("\n")[-1])
    return wall, rss_kb, p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--count", type=int, default=1000000)
    ap.add_argument("--dir", default="/var/tmp/qread-bench")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--schedule", action="store_true", help="write the engine's LMDB schedule for the queue too")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    q = os.path.join(a.dir, "queue")
    made = False
    if not os.path.isdir(q):
        os.makedirs(a.dir, exist_ok=True)
        subprocess.run([os.path.join(a.bin, "queue-fix"), q], check=True, stdout=subprocess.DEVNULL)
        t0 = time.monotonic()
        subprocess.run([sys.executable, os.path.join(here, "make_queue.py"), q, str(a.count), "--preprocessed", "--quiet",
                        "--to", "bob@remote.test"], check=True)
        print(f"queue of {a.count} messages written in {time.monotonic() - t0:.1f} s")
        made = True
    if a.schedule and not os.path.exists(os.path.join(q, "lock", "engine.lmdb")):
        subprocess.run([sys.executable, os.path.join(here, "make_schedule.py"), q], check=True)
    env = dict(os.environ, CONFSPLIT="23", BIGTODO="0")
    os.environ.update(env)
    qread = os.path.join(a.bin, "qmail-qread")
    timed([qread, "--json", "-q", q])                       # warm the caches
    for name, cmd in [("qmail-qread --json", [qread, "--json", "-q", q]),
                      ("qmail-qread -c -s", [qread, "-c", "-s", "-q", q]),
                      ("qmail-qstat", [os.path.join(a.bin, "qmail-qstat"), "-q", q])]:
        wall, rss, rc = timed(cmd)
        print(f"{name:20s} {wall:7.2f} s  max RSS {rss / 1024:6.1f} MiB  exit {rc}")
    if made and not a.keep:
        shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
