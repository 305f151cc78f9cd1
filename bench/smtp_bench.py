#!/usr/bin/env python3
"""Mail in over SMTP, out to Maildir or to an SMTP sink: ours beside Postfix (issue #17).

One command (as root, from the repository root):

    python3 bench/smtp_bench.py --sessions 4,16 --workloads inject,local,remote \
        --targets ours-daemon,ours-tcpserver,postfix,classic --classic /var/qmail-classic \
        --messages 10000 --bin /tmp/bench-bin

Postfix's `smtp-source` sends `--messages` messages of `--size` bytes (2,048: a
pre-formatted header and body given with `-F`, one recipient each, a new
connection for every message, as smtp-source does without `-d`) over
`--sessions` parallel sessions, to one of these front doors on 127.0.0.1:

  ours-daemon     `qmail-smtpd --daemon` serving as qmailq, who owns the queue,
                  so it writes the queue in-process with shared flushes (the
                  start-up log must say "in-process", else the run fails);
                  `--relay 127.0.0.0/8`.
  ours-tcpserver  `tcpserver -H -R -u qmailq` (ucspi-tcp) running our
                  `qmail-smtpd` once per connection, which runs our
                  `qmail-queue` once per message; `RELAYCLIENT=""`. (On a real
                  host qmail-smtpd serves as qmaild and qmail-queue is setuid
                  qmailq; this build's qmail-queue is not installed setuid, so
                  both run as qmailq: the same work without the setuid exec.)
  postfix         a private Postfix instance (bench/common.py) with one `smtpd`
                  listener on 127.0.0.1:PORT added to its master.cf; `mynetworks`
                  127.0.0.0/8 may relay. Nothing that changes its durability is
                  set: its cleanup fsyncs each queue file before smtpd says 250.
  classic         classic qmail's `qmail-smtpd` under the same tcpserver as
                  qmaild, with its setuid `qmail-queue` (the installation under
                  --classic, set up for the run as bench/harness.py does).

and, behind each, the target's own engine: ours `qmail-send` (the harness's
OursTarget: its queue-fix'd queue, control files, users/assign), Postfix's
qmgr/local/smtp, classic qmail's `qmail-start`. Durability is left at every
program's default (ours: fsync of files and folders, the daemon's syncfs).

Workloads, each run for every session count and target (targets alternate
between rounds):

  inject  injection alone: the front door and its queue, no delivery (ours and
          classic: qmail-send not started; Postfix: its smtpd_data_restrictions
          say HOLD, so cleanup writes each message, fsynced as always, into
          hold/, which qmgr leaves alone), so the messages stay queued; the
          count in the queue is checked.
  local   end to end to a local Maildir (bench.local, one user).
  remote  end to end to Postfix's `smtp-sink` on 127.0.0.1 (`remote.test`, routed
          by control/smtproutes for ours and classic, relayhost for Postfix);
          the sink writes its dump files to tmpfs (--sink-base, /dev/shm): a
          real remote host is another machine, and on the queues' file system
          they would be written back by every flush of it during the run.

Measured per run:

  * injection rate: messages / (smtp-source's start .. its exit);
  * end-to-end throughput: messages / (smtp-source's start .. the last delivery,
    by the Maildir files' and sink dump files' mtimes);
  * the parallel fsync ceiling, right before each `inject` run
    (--ceiling-workloads), on the same file system: as many writer processes
    as sessions, each looping create a new file, write `--size` bytes, fsync,
    close, for `--fsync-seconds`; files per second in total. The files stay
    until the end of the invocation (deleting them would free inodes the next
    files walk past, and on this machine's ext4, mounted `discard` without a
    journal, each deleted file waits for a discard; at the end the run folder
    is removed by 16 threads at once, which overlaps them). A front door that
    made each message durable with one fsync of its own, sharing nothing,
    could reach it (qmail-queue's protocol takes four: mess, intd, and the two
    folders); group commit can pass it. The aim: injection alone >= 80 % of it;
  * latency SMTP-in -> Maildir with a paced probe: a separate process sends one
    message every `--probe-interval` seconds (default 0.05: 20/s, on top of
    smtp-source's load, the same pace for every target) while smtp-source runs,
    each on a new connection, with its id and send time in its header; its
    latency is the delivered file's mtime minus the time the probe started
    connecting (the whole SMTP session is inside). Also the SMTP session
    alone (connect .. the reply to QUIT, so it includes the 250 after the dot). smtp-source's own messages cannot carry a
    timestamp, so the probe is the latency measure; its messages are not
    counted in the throughput figures (they are waited for). Before
    smtp-source starts, `--idle-probes` probes one after another on the same
    pace give the latency of the unloaded system;
  * the backlog once a second during end-to-end runs (files in mess/ for ours
    and classic: each message stays there until it is delivered, whether or
    not the engine keeps info/ files; maildrop+incoming+active+deferred for
    Postfix), its largest value;
  * CPU ms per message of the target's process trees (front door + engine,
    utime+stime+cutime+cstime just before they are stopped), smtp-source's CPU,
    the machine's CPU split while injecting, the block device's flush requests
    per message.

Outputs: PREFIX.json (all runs), a Markdown table per workload and session
count, ratios and the issue's aims (met / not met) on stdout. `--chart PNG
--chart-from A.json,B.json;A2.json,B2.json` draws the rates of earlier
outputs as bars (the first run) and dots (the others), with matplotlib. Everything runs on
127.0.0.1, in a run folder under --base that is removed at the end; every
process is started in a process group of its own and killed at the end, the
Postfix instances stopped, the classic installation's folders put back. Python 3
standard library only; reuses bench/harness.py's targets, sink and Maildir scan.
"""

import argparse
import json
import os
import pwd
import grp
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as H  # noqa: E402
from common import (cpu_breakdown, cpu_jiffies, install_postfix, interrupt_on_term, new_process_group,  # noqa: E402
                    pad_message, read_text, report_error, report_result, sigkill, write_file)

SMTP_SOURCE = "/usr/sbin/smtp-source"
TCPSERVER = "/usr/bin/tcpserver"
TARGETS = ("ours-daemon", "ours-tcpserver", "postfix", "classic")
WORKLOADS = ("inject", "local", "remote")
LOCAL_RCPT = f"{H.USER}-u0@{H.DOMAIN}"
PROBE_LOCAL_RCPT = f"{H.USER}-u1@{H.DOMAIN}"
REMOTE_RCPT = f"bulk@{H.RDOMAIN}"
PROBE_REMOTE_RCPT = f"probe@{H.RDOMAIN}"
QUEUE_USER = "qmailq"      # owns our queue's mess/ intd/ todo/ pid/ (queue-fix, as root)
log = H.log


class BenchError(Exception):
    pass


# ----------------------------------------------------------------------------
# pure helpers (tested in bench/tests/test_smtp_bench.py)

def postfix_master_cf(text, port):
    """The private instance's master.cf (no inet listener) with one smtpd listener on 127.0.0.1:port."""
    out = [line for line in text.splitlines() if not line.startswith(f"127.0.0.1:{port} ")]
    out.append(f"127.0.0.1:{port}  inet  n  -  n  -  -  smtpd")
    return "\n".join(out) + "\n"


def smtp_data(msg):
    """A message (bytes, LF or CRLF line ends) as SMTP DATA: CRLF line ends, a dot
    doubled at the start of a line, ending with CRLF . CRLF."""
    lines = msg.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


def probe_message(bid, t):
    """A probe message: its id and send time in the header, about 1 KB."""
    head = (f"From: {H.SENDER}\nTo: probe\nSubject: latency probe {bid}\n"
            f"X-Bench-Id: {bid}\nX-Bench-Injected: {t:.6f}\n\n").encode()
    return pad_message(head, 1024)


def pct(vals, p):
    v = H.percentile(vals, p)
    return None if v is None else round(v, 2)


def med(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    return round(statistics.median(vals), 3) if vals else None


def summarize(runs):
    """{(workload, sessions): {target: {metric: median over the ok runs}}}."""
    by = {}
    for r in runs:
        by.setdefault((r["workload"], r["sessions"]), {}).setdefault(r["target"], []).append(r)
    out = {}
    for key, targets in by.items():
        out[key] = {}
        for t, rs in targets.items():
            ok = [r for r in rs if r.get("ok")]
            s = {k: med([H.getm(r, k) for r in ok]) for k, _ in METRICS}
            s["runs"], s["ok_runs"] = len(rs), len(ok)
            out[key][t] = s
    return out


METRICS = [("injection_rate", "injected msgs/s"), ("throughput", "end to end msgs/s"),
           ("e2e_seconds", "end to end s"), ("fsync_ceiling", "fsync ceiling/s"),
           ("inject_vs_ceiling", "injection / ceiling"),
           ("probe_ms.p50", "probe SMTP-in -> delivery p50 ms"), ("probe_ms.p90", "probe p90 ms"),
           ("probe_ms.p99", "probe p99 ms"), ("probe_smtp_ms.p50", "probe SMTP session (connect .. QUIT answered) p50 ms"),
           ("max_backlog", "largest backlog (messages in the queue, sampled once a second)"), ("probes", "probes delivered"), ("idle_probe_ms.p50", "unloaded probe p50 ms (before smtp-source)"), ("server_cpu_ms_per_msg", "front door + engine CPU ms/msg"),
           ("client_cpu_ms_per_msg", "smtp-source CPU ms/msg"), ("cpu_idle_pct", "machine idle % (injecting)"),
           ("cpu_iowait_pct", "machine iowait % (injecting)"),
           ("device_flushes_per_msg", "device flushes/msg")]


def evaluate_aims(summary, ours="ours-daemon"):
    """The aims of issue #17 from a summary(): [(aim, what was measured, True/False/None)]."""
    out = []
    for (wl, n), t in sorted(summary.items(), key=lambda kv: (WORKLOADS.index(kv[0][0]), kv[0][1])):
        o = t.get(ours, {})
        if wl in ("local", "remote"):
            for peer, factor in (("postfix", 2.0), ("classic", 4.0)):
                a, b = o.get("throughput"), t.get(peer, {}).get("throughput")
                if a and b:
                    out.append((f"{wl}, {n} sessions: end to end >= {factor:g}x {peer}",
                                f"{a:,.1f} / {b:,.1f} = {a / b:.2f}x", a >= factor * b))
            if wl == "local":
                p = o.get("probe_ms.p50")
                if p is not None:
                    out.append((f"local, {n} sessions: p50 SMTP-in -> Maildir < 10 ms", f"{p:,.1f} ms", p < 10.0))
        elif wl == "inject":
            v, c = o.get("injection_rate"), o.get("fsync_ceiling")
            if v and c:
                out.append((f"injection alone, {n} sessions: >= 80 % of the parallel fsync ceiling",
                            f"{v:,.1f} / {c:,.1f} = {100 * v / c:.1f} %", v >= 0.8 * c))
    return out


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def tables(summary, targets):
    out = []
    for (wl, n), t in sorted(summary.items(), key=lambda kv: (WORKLOADS.index(kv[0][0]), kv[0][1])):
        cols = [x for x in targets if x in t]
        out += [f"### {wl}, {n} sessions", "", "| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for k, label in METRICS + [("ok_runs", "runs ok")]:
            vals = [t[c].get(k) for c in cols]
            if all(v is None for v in vals):
                continue
            out.append(f"| {label} | " + " | ".join(fmt(v) for v in vals) + " |")
        out.append("")
    return "\n".join(out)


def remove_tree(path, threads=16):
    """shutil.rmtree, with the files unlinked by `threads` threads first: on ext4 mounted `discard`
    without a journal each unlink waits for its own discard (about 3 ms here: 300 files/s one after
    another), and many at once overlap (135,000 files in 8 s)."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]

    def unlink(part):
        for f in part:
            try:
                os.unlink(f)
            except OSError:
                pass
    ts = [threading.Thread(target=unlink, args=(files[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------
# the parallel fsync ceiling

def _ceiling_writer(folder, w, data, go_r, seconds, result_path):
    code = 0
    try:
        new_process_group()
        os.read(go_r, 1)
        n = 0
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            fd = os.open(f"{folder}/w{w}.{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            n += 1
        report_result(result_path, {"n": n, "seconds": time.monotonic() - t0})
    except BaseException as e:  # noqa: BLE001
        code = 1
        report_error(result_path, e)
    os._exit(code)


def parallel_fsync_ceiling(folder, writers, seconds, size=2048):
    """Files per second that `writers` processes together create, write (`size` bytes), fsync and
    close in `folder` (made here; the files stay) during `seconds`."""
    os.makedirs(folder)
    data = b"x" * size
    go_r, go_w = os.pipe()
    pids = []
    for w in range(writers):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            _ceiling_writer(folder, w, data, go_r, seconds, f"{folder}/.r{w}")
        pids.append(pid)
        H.TRACK.pgids.add(pid)
    os.close(go_r)
    os.write(go_w, b"g" * writers)
    os.close(go_w)
    for pid in pids:
        os.waitpid(pid, 0)
        H.TRACK.pgids.discard(pid)
    total, longest = 0, 0.0
    for w in range(writers):
        p = f"{folder}/.r{w}"
        if not os.path.exists(p):
            raise BenchError(f"fsync ceiling writer {w} failed: {read_text(p + '.err')}")
        j = json.load(open(p))
        total += j["n"]
        longest = max(longest, j["seconds"])
    return total / max(longest, 1e-9)


# ----------------------------------------------------------------------------
# SMTP: the probe client

def smtp_send(port, sender, rcpt, msg, timeout=60.0):
    """One message over a new connection to 127.0.0.1:port (EHLO, MAIL, RCPT, DATA, QUIT);
    -> the reply code after the dot."""
    s = socket.create_connection(("127.0.0.1", port), timeout)
    try:
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline(4096)
                if len(line) < 4:
                    raise BenchError(f"connection closed or short reply: {line!r}")
                if line[3:4] != b"-":
                    return int(line[:3])

        def cmd(text, want):
            s.sendall(text)
            c = reply()
            if c != want:
                raise BenchError(f"{text.split()[0].decode()}: {c}")

        if reply() != 220:
            raise BenchError("no greeting")
        cmd(b"EHLO probe.test\r\n", 250)
        cmd(f"MAIL FROM:<{sender}>\r\n".encode(), 250)
        cmd(f"RCPT TO:<{rcpt}>\r\n".encode(), 250)
        cmd(b"DATA\r\n", 354)
        s.sendall(smtp_data(msg))
        code = reply()
        try:
            s.sendall(b"QUIT\r\n")
            reply()
        except (OSError, BenchError):
            pass
        return code
    finally:
        s.close()


def probe_loop(port, rcpt, tag, interval, stop_r, result_path, deadline):
    """Forked: a probe message every `interval` seconds until `stop_r` reads EOF."""
    code = 0
    try:
        new_process_group()
        recs = []
        k = 0
        nxt = time.time()
        while time.time() < deadline:
            wait = nxt - time.time()
            if select.select([stop_r], [], [], max(0.0, wait))[0]:
                break
            bid = f"{tag}-probe-{k}"
            t0 = time.time()
            try:
                rc = smtp_send(port, H.SENDER, rcpt, probe_message(bid, t0))
            except (OSError, BenchError) as e:
                rc = str(e)[:100]
            recs.append((bid, t0, time.time(), rc))
            k += 1
            nxt = max(nxt + interval, time.time())
        report_result(result_path, {"recs": recs})
    except BaseException as e:  # noqa: BLE001
        code = 1
        report_error(result_path, e)
    os._exit(code)


# ----------------------------------------------------------------------------
# front doors (each wraps one of the harness's targets)

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_greeting(port, proc, timeout=20.0):
    """Waits until 127.0.0.1:port answers 220 (then says QUIT)."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"the front door exited ({proc.returncode}) before it answered")
        try:
            with socket.create_connection(("127.0.0.1", port), 2) as s:
                line = s.makefile("rb").readline(512)
                s.sendall(b"QUIT\r\n")
                if line.startswith(b"220"):
                    return
                last = line
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise BenchError(f"nothing answered 220 on 127.0.0.1:{port} ({last!r})")


def delivered_names(md, sink):
    """Files in the Maildir's new/ plus the sink's dump folder: a count only (no file is read)."""
    n = 0
    for d in [md + "/new"] + ([sink.dir] if sink else []):
        try:
            n += len(os.listdir(d))
        except OSError:
            pass
    return n


def count_files(path):
    return sum(len(f) for _, _, f in os.walk(path))


def tcpserver_argv(user, port, program):
    pw = pwd.getpwnam(user)
    return [TCPSERVER, "-q", "-H", "-R", "-l", H.DOMAIN, "-c", "200", "-b", "128",
            "-u", str(pw.pw_uid), "-g", str(pw.pw_gid), "127.0.0.1", str(port), program]


class OursDoor:
    def __init__(self, run, a, pw, door):
        self.name = f"ours-{door}"
        self.door = door
        self.t = H.OursTarget(run, a, pw, "qmail-send")
        self.homes = self.t.homes
        write_file(self.t.dir + "/control/rcpthosts", H.DOMAIN + "\n")
        if a.flowwindow is not None:
            write_file(self.t.dir + "/control/flowwindow", f"{a.flowwindow}\n")
        self.port = free_port()
        self.proc = None
        self.log = self.t.dir + "/smtpd.log"

    def start_engine(self):
        self.t.start()

    def start_door(self):
        env = dict(self.t.env)
        if self.door == "daemon":
            argv = [self.t.bin + "/qmail-smtpd", "--daemon", "--listen", f"127.0.0.1:{self.port}", "--user", QUEUE_USER,
                    "--max-connections", "200", "--max-per-ip", "200", "--relay", "127.0.0.0/8"]
        else:
            env["RELAYCLIENT"] = ""
            argv = tcpserver_argv(QUEUE_USER, self.port, self.t.bin + "/qmail-smtpd")
        self.proc = H.spawn(argv, env=env, cwd=self.t.dir, stdout=self.log, stderr=self.log)
        wait_greeting(self.port, self.proc)
        if self.door == "daemon" and "in-process" not in read_text(self.log):
            raise BenchError(f"qmail-smtpd --daemon does not write the queue in-process: {read_text(self.log)[:300]}")

    def roots(self):
        return self.t.roots() + ([self.proc.pid] if self.proc else [])

    def queued(self):
        return count_files(self.t.queue + "/todo")

    def backlog(self):
        return (count_files(self.t.queue + "/mess"),)    # every message until it is delivered and cleaned

    def stop(self):
        H.stop_proc(self.proc)
        self.proc = None
        return self.t.stop()


class PostfixDoor(H.PostfixTarget):
    def __init__(self, run, a, pw, engine):
        super().__init__(run, a, pw)
        self.port = free_port()
        mc = self.conf + "/master.cf"
        write_file(mc, postfix_master_cf(read_text(mc), self.port))
        if not engine:
            # injection alone: cleanup puts each message on hold/ (written and fsynced as in incoming/),
            # where qmgr does not look; qmgr itself keeps running (without it cleanup waits on its trigger)
            self.postconf("smtpd_data_restrictions = check_client_access static:HOLD")

    def start_engine(self):
        pass            # the whole instance starts with its listener

    def start_door(self):
        self.start()
        wait_greeting(self.port, None)

    def queued(self):
        return sum(count_files(f"{self.queue}/{d}") for d in ("incoming", "active", "deferred", "hold"))


class ClassicDoor:
    name = "classic"

    def __init__(self, run, a, pw):
        self.t = H.ClassicTarget(run, a, pw)
        self.homes = self.t.homes
        self.port = free_port()
        self.proc = None
        self.log = self.t.dir + "/smtpd.log"

    def start_engine(self):
        self.t.start()

    def start_door(self):
        env = {"PATH": f"{self.t.bin}:/usr/bin:/bin", "LANG": "C", "RELAYCLIENT": ""}
        self.proc = H.spawn(tcpserver_argv("qmaild", self.port, self.t.bin + "/qmail-smtpd"), env=env,
                            cwd=self.t.dir, stdout=self.log, stderr=self.log)
        wait_greeting(self.port, self.proc)

    def roots(self):
        return self.t.roots() + ([self.proc.pid] if self.proc else [])

    def queued(self):
        return count_files(self.t.queue + "/todo")

    def backlog(self):
        return (count_files(self.t.queue + "/mess"),)    # every message until it is delivered and cleaned

    def stop(self):
        try:
            H.stop_proc(self.proc)
            self.proc = None
        finally:
            return self.t.stop()


def make_door(run, a, pw, target, deliver):
    if target in ("ours-daemon", "ours-tcpserver"):
        return OursDoor(run, a, pw, target.split("-", 1)[1])
    if target == "postfix":
        return PostfixDoor(run, a, pw, engine=deliver)
    if target == "classic":
        return ClassicDoor(run, a, pw)
    raise BenchError(f"unknown target {target}")


# ----------------------------------------------------------------------------
# one run

def run_one(run, a, pw, target, workload, sessions, rnd, msgfile):
    deliver = workload != "inject"
    remote = workload == "remote"
    tag = f"r{rnd}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    rundir = tempfile.mkdtemp(prefix=f"{target}.{workload}.{sessions}.", dir=run.tmp)
    os.chmod(rundir, 0o755)
    res = {"target": target, "workload": workload, "sessions": sessions, "round": rnd, "messages": a.messages,
           "ok": False}
    sinkdir = None
    if remote:
        # the sink's dump files go to tmpfs: a real remote host is another machine, and they would
        # otherwise be written back by any syncfs or flush of the queues' file system during the run
        sinkdir = tempfile.mkdtemp(prefix="sink.", dir=a.sink_base)
        os.chmod(sinkdir, 0o755)
        run.sink = H.Sink(sinkdir + "/sink", "127.0.0.1", 1, "smtp-sink", a.timeout + 60)
    else:
        run.sink = None
    run.sink_host_for_routes = "127.0.0.1"
    door = None
    src = None
    probe_pid = None
    stop_w = None
    try:
        door = make_door(run, a, pw, target, deliver)
        if workload in a.ceiling_workloads.split(","):
            res["fsync_ceiling"] = round(parallel_fsync_ceiling(run.tmp + f"/ceiling.{os.path.basename(rundir)}",
                                                                sessions, a.fsync_seconds, a.size), 1)
        if deliver:
            door.start_engine()
        door.start_door()
        md = door.homes["main"] + "/Maildir"
        rcpt, prcpt = (REMOTE_RCPT, PROBE_REMOTE_RCPT) if remote else (LOCAL_RCPT, PROBE_LOCAL_RCPT)
        argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(a.messages), "-F", msgfile, "-M", "client.test",
                "-f", H.SENDER, "-t", rcpt, f"127.0.0.1:{door.port}"]
        res["smtp_source"] = " ".join(argv)
        mark = {}
        deadline = time.time() + a.timeout
        idle = []
        if deliver:
            # unloaded latency first: --idle-probes paced probes before smtp-source starts
            for k in range(a.idle_probes):
                bid = f"{tag}-idle-{k}"
                ts = time.time()
                try:
                    rc = smtp_send(door.port, H.SENDER, prcpt, probe_message(bid, ts))
                except (OSError, BenchError) as e:
                    rc = str(e)[:100]
                idle.append((bid, ts, time.time(), rc))
                time.sleep(max(0.0, ts + max(a.probe_interval, 0.05) - time.time()))
        if deliver and a.probe_interval > 0:
            # forked before the waiter thread exists; it starts probing at once, as smtp-source starts
            stop_r, stop_w = os.pipe()
            probe_pid = os.fork()
            if probe_pid == 0:
                os.close(stop_w)
                probe_loop(door.port, prcpt, tag, a.probe_interval, stop_r, rundir + "/probe.json", deadline)
            os.close(stop_r)
            H.TRACK.pgids.add(probe_pid)
        fl0 = H.device_flushes(run.tmp)
        j0 = cpu_jiffies()
        t0 = time.time()
        src = H.spawn(argv, stdout=rundir + "/source.out", stderr=rundir + "/source.out")

        def reap():
            _, st, ru = os.wait4(src.pid, 0)
            mark["jiffies"] = cpu_jiffies()
            mark["rc"] = os.waitstatus_to_exitcode(st)
            mark["cpu"] = ru.ru_utime + ru.ru_stime
            src.returncode = mark["rc"]
            mark["t"] = time.time()
        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        seen, deliveries = set(), []
        probes = None
        last_note = 0
        last_sample = 0
        backlog = []        # (seconds since the start, messages waiting: todo + queued) once a second
        # While mail flows the loop only counts the delivered files' names (one listdir); it reads
        # them (stat, the header for the probe ids) once the count says everything may be there.
        # Reading every file as it came cost the harness about a tenth of the machine's busy CPU in
        # a 16-session run, taken from whichever target was measured.
        counted, count_changed = -1, time.time()
        idle_ok = sum(1 for r in idle if r[3] == 250)
        while True:
            now = time.time()
            if deliver:
                c = delivered_names(md, run.sink)
                if c != counted:
                    counted, count_changed = c, now
                if "t" in mark and c >= a.messages + idle_ok:
                    new = []
                    H.scan_maildir(md, seen, new, tag)
                    deliveries += [(bid, t) for bid, _, t, _ in new]
                    if run.sink:
                        deliveries += [(bid, t) for bid, _, t in run.sink.poll(None)]
            if "t" in mark and stop_w is not None:
                os.close(stop_w)          # the probe ends after its current message
                stop_w = None
            if "t" in mark and probe_pid is not None and probes is None:
                if os.waitpid(probe_pid, os.WNOHANG)[0]:
                    H.TRACK.pgids.discard(probe_pid)
                    p = rundir + "/probe.json"
                    probes = json.load(open(p))["recs"] if os.path.exists(p) else []
                    if not os.path.exists(p):
                        res["probe_error"] = read_text(p + ".err")
                    probe_pid = None
            if "t" in mark and mark["rc"] != 0:
                res["error"] = f"smtp-source exited {mark['rc']}: {read_text(rundir + '/source.out')[-300:]}"
                break
            if "t" in mark and not deliver:
                res["ok"] = True
                break
            if "t" in mark and probe_pid is None:
                want = a.messages + sum(1 for r in (probes or []) + idle if r[3] == 250)
                if len(deliveries) >= want:
                    res["ok"] = True
                    break
            if now > deadline:
                res["error"] = f"timeout after {a.timeout} s"
                break
            if deliver and "t" in mark and now - mark["t"] > a.stall and count_changed < now - a.stall:
                res["error"] = f"stalled: nothing delivered for {a.stall} s"
                break
            if deliver and now - last_sample >= 1.0:
                last_sample = now
                try:
                    backlog.append((round(now - t0, 2), sum(door.backlog())))
                except OSError:
                    pass
            if not a.quiet and now - last_note >= 5:
                last_note = now
                log(f"  {target} {workload} s{sessions}: {'injected' if 't' in mark else 'injecting'}, "
                    f"delivered {max(counted, len(deliveries))}, queued {door.queued() if not deliver else '-'}")
            time.sleep(0.25)
        t_end = time.time()
        table = H.proc_table()
        res["server_cpu_s"] = round(H.tree_cpu(H.process_tree(door.roots(), table), table), 3)
        fl1 = H.device_flushes(run.tmp)
        if not deliver and res["ok"]:
            q = door.queued()
            res["queued_after"] = q
            if q != a.messages:
                res["ok"] = False
                res["error"] = f"{q} messages queued, {a.messages} sent"
    finally:
        if stop_w is not None:
            os.close(stop_w)
        if probe_pid is not None:
            H.sigkill([probe_pid])
            try:
                os.waitpid(probe_pid, 0)
            except ChildProcessError:
                pass
            H.TRACK.pgids.discard(probe_pid)
        if src is not None:
            if src.returncode is None:
                try:
                    os.killpg(src.pid, signal.SIGKILL)
                except OSError:
                    pass
                waiter.join(10)
            H.TRACK.pgids.discard(src.pid)
        if door is not None:
            try:
                res["engine_exit"] = door.stop()
            except Exception as e:  # noqa: BLE001
                res["stop_error"] = str(e)
        if run.sink:
            run.sink.stop()
            run.sink = None
        if sinkdir:
            shutil.rmtree(sinkdir, ignore_errors=True)
    if "t" not in mark:
        return res
    inj = mark["t"] - t0
    n = a.messages
    res.update({
        "injection_seconds": round(inj, 3),
        "injection_rate": round(n / max(inj, 1e-9), 1),
        "inject_vs_ceiling": round(n / max(inj, 1e-9) / res["fsync_ceiling"], 3) if res.get("fsync_ceiling") else None,
        "client_cpu_ms_per_msg": round(mark["cpu"] * 1000 / n, 3),
        "server_cpu_ms_per_msg": round(res["server_cpu_s"] * 1000 / n, 3),
        "device_flushes_per_msg": round((fl1 - fl0) / n, 2) if fl0 is not None and fl1 is not None else None,
    })
    br = cpu_breakdown(j0, mark["jiffies"])
    res["cpu_injecting_pct"] = br
    res["cpu_idle_pct"], res["cpu_iowait_pct"], res["cpu_nice_pct"] = br["idle"], br["iowait"], br["nice"]
    if deliver and deliveries:
        # The last of smtp-source's messages: the probes' (ids starting with the run's tag) are not
        # counted in the rate, and the last probe is sent after smtp-source ends.
        last = max((t for bid, t in deliveries if not (bid or "").startswith(tag)), default=0) or \
            max(t for _, t in deliveries)
        res["e2e_seconds"] = round(last - t0, 3)
        res["throughput"] = round(n / max(last - t0, 1e-9), 1)
        res["delivered"] = len(deliveries)
        sent = {r[0]: r for r in (probes or []) if r[3] == 250}
        lat = [(t - sent[bid][1]) * 1000 for bid, t in deliveries if bid in sent]
        isent = {r[0]: r for r in idle if r[3] == 250}
        ilat = [(t - isent[bid][1]) * 1000 for bid, t in deliveries if bid in isent]
        res["idle_probe_ms"] = {k: pct(ilat, q) for k, q in (("p50", 50), ("p90", 90), ("max", 100))}
        res["idle_probes"] = len(ilat)
        res["idle_probe_smtp_ms"] = {"p50": pct([(r[2] - r[1]) * 1000 for r in isent.values()], 50)}
        res["backlog"] = backlog
        res["max_backlog"] = max((b for _, b in backlog), default=None)
        res["delivered_bulk"] = sum(1 for bid, _ in deliveries if bid not in sent and bid not in isent)
        res["probes"] = len(lat)
        res["probes_sent"] = len(probes or [])
        res["probe_failures"] = [r for r in (probes or []) if r[3] != 250][:5]
        res["probe_ms"] = {k: pct(lat, q) for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
        smtp = [(r[2] - r[1]) * 1000 for r in sent.values()]
        res["probe_smtp_ms"] = {k: pct(smtp, q) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))}
    res["run_seconds"] = round(t_end - t0, 3)
    return res


# ----------------------------------------------------------------------------
# chart

CHART_COLORS = {"ours-daemon": "#1f77b4", "ours-tcpserver": "#9ecae1", "postfix": "#d62728", "classic": "#2ca02c"}


def write_chart(path, runs_by_invocation, title):
    """A PNG of messages/s (injection alone; end to end local and remote), one group of bars per
    workload and session count, one bar per target: the first set of runs as bars, the others as
    black dots on them. `runs_by_invocation`: lists of runs (the "runs" of this script's JSON)."""
    plt = H.ensure_matplotlib(log)
    sums = [summarize(r) for r in runs_by_invocation]
    keys = sorted({k for s in sums for k in s}, key=lambda k: (WORKLOADS.index(k[0]), k[1]))
    names = [t for t in TARGETS if any(t in s.get(k, {}) for s in sums for k in keys)]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(10, 4.6), dpi=80)
    for j, t in enumerate(names):
        for i, k in enumerate(keys):
            metric = "injection_rate" if k[0] == "inject" else "throughput"
            vals = [s.get(k, {}).get(t, {}).get(metric) for s in sums]
            x = i + (j - (len(names) - 1) / 2) * width
            if vals[0]:
                ax.bar(x, vals[0], width, color=CHART_COLORS[t], label=t if i == 0 else None)
            for v in vals[1:]:
                if v:
                    ax.plot(x, v, "k.", markersize=6)
    labels = {"inject": "injection alone", "local": "local, end to end", "remote": "remote, end to end"}
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{labels[w]}\n{n} sessions" for w, n in keys], fontsize=8)
    ax.set_ylabel("messages/s")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------
# main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="ours-daemon,ours-tcpserver,postfix",
                    help="comma list of " + ", ".join(TARGETS) + " (classic needs --classic)")
    ap.add_argument("--workloads", default="inject,local,remote", help="comma list of " + ", ".join(WORKLOADS))
    ap.add_argument("--sessions", default="4,16", help="comma list of smtp-source session counts")
    ap.add_argument("--messages", type=int, default=10000, help="messages per run (smtp-source -m)")
    ap.add_argument("--size", type=int, default=2048, help="bytes per message, header and body (smtp-source -F)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; targets alternate; medians reported")
    ap.add_argument("--classic", metavar="PREFIX", help="classic qmail's installation (for the classic target)")
    ap.add_argument("--probe-interval", type=float, default=0.05,
                    help="seconds between latency probe messages during end-to-end runs (0: no probe)")
    ap.add_argument("--idle-probes", type=int, default=20,
                    help="probe messages sent (paced, one at a time) before smtp-source starts: unloaded latency")
    ap.add_argument("--flowwindow", type=int, default=None,
                    help="control/flowwindow for ours (default: the programs' default)")
    ap.add_argument("--fsync-seconds", type=float, default=1.0, help="length of the parallel fsync ceiling measurement")
    ap.add_argument("--ceiling-workloads", default="inject",
                    help="workloads whose runs are each preceded by the fsync ceiling measurement (its files stay "
                         "until the end: on this file system every deleted file costs a synchronous discard)")
    ap.add_argument("--sink-base", default="/dev/shm", help="where smtp-sink's dump folders go (a tmpfs)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per run (hard limit)")
    ap.add_argument("--stall", type=float, default=60, help="end a run when nothing was delivered this long after injection")
    ap.add_argument("--postfix-local-concurrency", type=int, default=H.CONCURRENCY_LOCAL)
    ap.add_argument("--bin", default=H.DEFAULT_BIN)
    ap.add_argument("--qmail-remote", help="qmail-remote when --bin has none")
    ap.add_argument("--base", default=H.DEFAULT_BASE)
    ap.add_argument("--settle", type=float, default=None, help="as bench/harness.py's --settle")
    ap.add_argument("--out", default=None, help="output prefix for .json (default <base>/smtp-bench-<time>)")
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--chart", metavar="PNG", help="only draw a chart from --chart-from's JSON outputs, and exit")
    ap.add_argument("--chart-from", metavar="JSON[,JSON][;JSON...]",
                    help="outputs of earlier invocations: ',' joins the parts of one run, ';' separates runs "
                         "(the first run's figures are bars, the others dots)")
    ap.add_argument("--chart-title", default="mail over SMTP: smtp-source, 10,000 messages of 2,048 bytes")
    a = ap.parse_args(argv)
    if a.chart:
        runs = [[r for f in group.split(",") for r in json.load(open(f))["runs"]]
                for group in (a.chart_from or "").split(";") if group]
        print(write_chart(a.chart, runs, a.chart_title))
        return 0
    a.rcpts = 1                  # what the harness's targets read from the arguments
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    sessions = [int(x) for x in a.sessions.split(",") if x.strip()]
    bad = [t for t in targets if t not in TARGETS] + [w for w in workloads if w not in WORKLOADS]
    if bad or not targets or not workloads or not sessions:
        print(f"smtp_bench: unknown or missing targets/workloads: {bad}", file=sys.stderr)
        return 2
    if "classic" in targets and not a.classic:
        print("smtp_bench: target classic needs --classic PREFIX", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("smtp_bench: must run as root", file=sys.stderr)
        return 2
    for p in (SMTP_SOURCE, H.SMTP_SINK, TCPSERVER):
        if not os.access(p, os.X_OK):
            print(f"smtp_bench: {p} is missing (Debian packages postfix and ucspi-tcp)", file=sys.stderr)
            return 2
    for p in ("qmail-smtpd", "qmail-queue", "qmail-send", "queue-fix"):
        if not os.access(f"{a.bin}/{p}", os.X_OK):
            print(f"smtp_bench: {a.bin}/{p} is missing", file=sys.stderr)
            return 2
    try:
        pwd.getpwnam(QUEUE_USER)
        grp.getgrnam("qmail")
    except KeyError:
        print(f"smtp_bench: the users of a qmail queue ({QUEUE_USER}, group qmail) are missing "
              "(docs/benchmarks.md, the classic qmail peer, creates them)", file=sys.stderr)
        return 2
    if a.out is None:
        a.out = os.path.join(a.base, time.strftime("smtp-bench-%Y%m%d-%H%M%S"))
    install_postfix(log)
    interrupt_on_term()
    run = H.Run(a)
    shutil.copy2(f"{a.bin}/qmail-smtpd", run.bin + "/qmail-smtpd")
    pw = H.ensure_user(H.USER, run.tmp + "/home", "/bin/sh", BenchError, quiet=True)
    msgfile = run.tmp + "/message"
    write_file(msgfile, pad_message((f"From: {H.SENDER}\nSubject: smtp-source bench\n"
                                     "X-Bench: smtp-source\n\n").encode(), a.size))
    result = {"command": " ".join([sys.executable] + sys.argv), "args": vars(a), "run_dir": run.tmp,
              "machine": H.machine_info(run.tmp), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "notes": run.notes, "runs": []}
    nruns = len(targets) * len(workloads) * len(sessions) * max(1, a.rounds)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("overall time limit")))
    signal.alarm(int(nruns * (a.timeout + 120) + 300))
    log(f"run folder {run.tmp}; {nruns} runs")
    status = 0
    try:
        for wl in workloads:
            for n in sessions:
                for rnd in range(1, a.rounds + 1):
                    order = targets if rnd % 2 == 1 else list(reversed(targets))
                    for t in order:
                        log(f"{wl}, {n} sessions, round {rnd}: {t}, {a.messages} messages")
                        try:
                            r = run_one(run, a, pw, t, wl, n, rnd, msgfile)
                        except (BenchError, H.HarnessError) as e:
                            r = {"target": t, "workload": wl, "sessions": n, "round": rnd, "ok": False, "error": str(e)}
                        result["runs"].append(r)
                        if not r.get("ok"):
                            status = 1
                            log(f"  {t}: FAILED: {r.get('error')}")
                        else:
                            log(f"  {t}: injected {r['injection_rate']}/s"
                                + (f" (fsync ceiling {r['fsync_ceiling']}/s)" if r.get("fsync_ceiling") else "")
                                + (f", end to end {r.get('throughput')}/s, probe p50 {H.getm(r, 'probe_ms.p50')} ms"
                                   if wl != "inject" else ""))
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        status = 130
    finally:
        signal.alarm(0)
        H.TRACK.killall()
        left = H.TRACK.leftovers()
        sigkill(pid for pid, _ in left)
        if left:
            log(f"leftover processes killed: {left}")
        result["leftover_processes"] = left
        result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        summary = summarize(result["runs"])
        result["summary"] = {f"{wl}/{n}": v for (wl, n), v in summary.items()}
        result["aims"] = evaluate_aims(summary)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".json", "w") as f:
            json.dump(result, f, indent=1)
        if not a.keep:
            log(f"removing {run.tmp}")
            remove_tree(run.tmp)
    print(tables(summary, targets))
    print("### aims (ours = ours-daemon)\n")
    for aim, got, met in result["aims"]:
        print(f"- {aim}: {got}: {'met' if met else 'NOT met'}")
    print(f"\noutputs: {a.out}.json")
    return status


if __name__ == "__main__":
    sys.exit(main())
