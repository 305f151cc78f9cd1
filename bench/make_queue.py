#!/usr/bin/env python3
"""Writes N messages straight into a queue made by queue-fix, as qmail-queue would
leave them (queue-layout/README.md §4.2-4.3, §5.3): for each message a file in pid/,
its inode number as the id, the link to mess/<id % split>/<id>, the message bytes,
intd/[n/]<id> with the envelope (u, p, F, T records) and its link todo/[n/]<id>.
Nothing is synced (a benchmark or test queue, not mail anyone waits for).

    bench/make_queue.py QUEUE N [--split 23] [--bigtodo] [--to alice@example.test]
                        [--sender s@example.test] [--preprocessed]

With --preprocessed the messages are written as the engine leaves them after
preprocessing instead (info/<n>/<id> with F, remote/<n>/<id> with one T record
and its mtime as the retry time; no todo/intd), which is how a large backlog
looks; every recipient is then treated as remote.

Prints one line per message: "<id> <index>" (the index is also the Subject).
Python 3 standard library only."""

import argparse
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("queue")
    ap.add_argument("count", type=int)
    ap.add_argument("--split", type=int, default=23)
    ap.add_argument("--bigtodo", action="store_true")
    ap.add_argument("--to", default="alice@example.test")
    ap.add_argument("--sender", default="s@example.test")
    ap.add_argument("--preprocessed", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    q = a.queue
    out = sys.stdout
    pid = os.getpid()
    for i in range(a.count):
        tmp = f"{q}/pid/{pid}.{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        ino = os.fstat(fd).st_ino
        sub = ino % a.split
        mess = f"{q}/mess/{sub}/{ino}"
        os.link(tmp, mess)
        os.unlink(tmp)
        body = (f"Received: indimail-mta queue {pid} by host bench\n (invoked by uid 0); "
                f"Mon, 7 Dec 2026 00:00:00 +0000\nSubject: m{i}\n\nmessage {i}\n").encode()
        os.write(fd, body)
        os.close(fd)
        if a.preprocessed:
            with open(f"{q}/info/{sub}/{ino}", "wb") as f:
                f.write(b"F" + a.sender.encode() + b"\0")
            with open(f"{q}/remote/{sub}/{ino}", "wb") as f:
                f.write(b"T" + a.to.encode() + b"\0")
        else:
            d = f"/{sub}" if a.bigtodo else ""
            env = b"u0\0p" + str(pid).encode() + b"\0F" + a.sender.encode() + b"\0T" + a.to.encode() + b"\0"
            with open(f"{q}/intd{d}/{ino}", "wb") as f:
                f.write(env)
            os.link(f"{q}/intd{d}/{ino}", f"{q}/todo{d}/{ino}")
        if not a.quiet:
            out.write(f"{ino} {i}\n")
    out.flush()


if __name__ == "__main__":
    main()
