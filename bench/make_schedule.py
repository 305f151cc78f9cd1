#!/usr/bin/env python3
"""Writes the engine's LMDB schedule (QUEUE/lock/engine.lmdb) for a queue that
bench/make_queue.py --preprocessed filled, as a running engine would hold it for
a backlog of deferred remote mail: for every message in remote/<n>/ its next
attempt in `schedule` and, with --reports, the last deferral of its recipient
in `reports` (layout: Sources/Scheduler/ScheduleSchema.swift). The empty
`held`, `tcpto` and `warned` databases are made too. Nothing else in the queue
is touched.

    bench/make_schedule.py QUEUE [--reports FRACTION] [--held N]

Needs the PyPI package `lmdb` (pip install lmdb); a benchmark tool, not part of
the mail system."""

import argparse
import os
import struct
import time

import lmdb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("queue")
    ap.add_argument("--reports", type=float, default=1.0,
                    help="the fraction of messages with a stored deferral (default 1: every one)")
    ap.add_argument("--held", type=int, default=0, help="hold the first N messages found")
    a = ap.parse_args()
    path = os.path.join(a.queue, "lock", "engine.lmdb")
    env = lmdb.open(path, subdir=False, max_dbs=16, map_size=4 << 30, sync=False, mode=0o600)
    schedule = env.open_db(b"schedule")
    reports = env.open_db(b"reports")
    held = env.open_db(b"held")
    env.open_db(b"tcpto")
    env.open_db(b"warned")
    now = int(time.time())
    text = b"Connected to 192.0.2.1 but connection died. (#4.4.2)"
    ids = []
    remote = os.path.join(a.queue, "remote")
    for sub in os.listdir(remote):
        for name in os.listdir(os.path.join(remote, sub)):
            if name.isdigit():
                ids.append(int(name))
    ids.sort()
    every = int(round(1 / a.reports)) if a.reports > 0 else 0
    with env.begin(write=True) as txn:
        for n, i in enumerate(ids):
            key = struct.pack(">QB", i, 1)
            txn.put(key, struct.pack(">q", now + 60 + n % 3600), db=schedule)
            if every and n % every == 0:
                txn.put(key + struct.pack(">I", 0), struct.pack(">q", now - 600) + b"Z" + text, db=reports)
            if n < a.held:
                txn.put(struct.pack(">q", i), b"1", db=held)
    env.sync(True)
    env.close()
    print(f"schedule for {len(ids)} messages written to {path}")


if __name__ == "__main__":
    main()
