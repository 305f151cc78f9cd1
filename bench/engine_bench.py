#!/usr/bin/env python3
"""Delivery-engine benchmark: local delivery end to end (ours vs Postfix) and
restart with a huge queue.

(A) local delivery, end to end
    N messages (--messages) are injected by P parallel clients (--parallel),
    each client spawning one submission program per message and waiting for
    it (closed loop), and delivered to a Maildir. Targets, alternated over
    --rounds rounds:

      ours     qmail-send (this package) with users/assign, injection with
               qmail-inject (which runs qmail-queue)
      postfix  a private Postfix instance (config directory made by the
               harness), injection with Postfix's sendmail (which runs postdrop)

    Same workload for both: message size (--size), one recipient per
    message, recipients benchuser-u0 .. benchuser-u9 @bench.local, all
    delivered into the one Maildir of the system user `benchuser`, the same
    local delivery concurrency (10: our concurrencylocal default; for Postfix
    local_destination_concurrency_limit, see --postfix-local-concurrency).

    Measured: end-to-end time (first injection start -> last delivery),
    msgs/s, latency injection -> delivery per message (X-Bench-Id header;
    the delivery time is when the harness sees the file appear in
    Maildir/new through inotify; the file's mtime is a cross-check), CPU
    seconds of the engine (every process of the engine, exited ones
    included: the engine runs under a supervisor process that is a child
    subreaper, so getrusage(RUSAGE_CHILDREN) of the supervisor covers the
    whole process tree), CPU of the submission clients, peak memory (VmHWM
    of the largest engine process; peak of the sum of RSS and of PSS over
    all engine processes, sampled every 0.25 s).

(B) restart with a huge queue (--restart-messages M)
    A queue of M messages is written directly in the qmail layout (mess,
    info, local; no todo), then:
      1. qmta-send -d with control/holdlocal: the engine indexes the queue
         into its LMDB schedule (lock/engine.lmdb); it is stopped when idle
      2. restart: holdlocal removed, qmail-send started; measured: time from
         spawn to the first "starting delivery" log line, peak memory, the
         drain rate over --restart-observe seconds, the time TERM takes
      3. restart without the schedule (engine.lmdb removed): the same, from
         a queue the engine has to rediscover (as after classic qmail)
    and the file-system space of the queue.

Python 3 standard library only; run as root (useradd, Postfix, delivery as
benchuser). The binaries are copied from --bin into the run's temp folder at
the start. Every phase is time-bounded; temp folders and every process of
the run are removed at the end, also on error or Ctrl-C.
"""

import argparse
import ctypes
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (POSTFIX, POSTFIX_SENDMAIL, cpu_breakdown, cpu_jiffies, descendants, describe_machine,  # noqa: E402
                    ensure_user, ext4_journal, field_kb, held_locks, install_postfix, interrupt_on_term, kill_child,
                    kill_workers, libc, make_postfix_instance, mount_of, new_process_group, pad_message, pdeathsig,
                    percentile, proc_table, read_text, report_error, report_result, sigkill, write_all, write_file)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, ".build/release")
DEFAULT_BASE = os.path.join(REPO, ".build/bench-tmp")
DOMAIN = "bench.local"
SENDER = "sender@bench.local"
NUSERS = 10
BENCH_USER = "benchuser"
OUR_PROGRAMS = ["qmail-send", "qmta-send", "qmail-queue", "qmail-inject", "queue-fix", "qmail-local"]
SPLIT = 23

PR_SET_CHILD_SUBREAPER = 36


class BenchError(Exception):
    pass


# ----------------------------------------------------------------------------
# small helpers

def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rmtree(path):
    if not path or not os.path.lexists(path):
        return
    # rm is much faster than shutil.rmtree on millions of files
    r = subprocess.run(["rm", "-rf", "--one-file-system", path], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0 and os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


SETTLE = {"seconds": 0.0, "since": 0.0}


def deleted_now():
    """Records a mass deletion (see settle_wait)."""
    SETTLE["since"] = time.time()


def settle_wait():
    """ext4 without a journal does not reuse a freed inode for 60 s, and for
    up to 6 minutes while its inode-table block is dirty; new inodes are
    searched past every such one, so creating files costs 2-3 times more
    system CPU after a mass deletion (bench/inject_bench.py measured it).
    Waits until --settle seconds have passed since the last one we know of."""
    wait = SETTLE["seconds"] - (time.time() - SETTLE["since"])
    if wait > 0:
        log(f"    waiting {wait:.0f} s for recently deleted inodes to age (--settle)")
        time.sleep(wait)


# ----------------------------------------------------------------------------
# machine

def machine_info(base):
    mp, fstype, source, opts = mount_of(base, tidy=False)
    pfv = "?"
    try:
        pfv = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True,
                             timeout=20).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        pass
    info = describe_machine(len(os.sched_getaffinity(0)), {
        "base": base,
        "fs": f"{fstype} on {source} mounted at {mp} ({opts})",
    })
    info["postfix_version"] = pfv
    return info


# ----------------------------------------------------------------------------
# /proc sampling

def status_fields(pid):
    r = {}
    for line in read_text(f"/proc/{pid}/status").splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "Name"):
            r[k] = v.strip().split()[0] if k != "Name" else v.strip()
    return r


def cpu_ticks(pid):
    s = read_text(f"/proc/{pid}/stat")
    if not s:
        return None
    f = s[s.rfind(")") + 2:].split()
    return int(f[11]) + int(f[12])


BUILD_COMMS = {"swift-build", "swift-frontend", "swiftc", "swift-driver", "swift-test", "clang", "ld", "ld.gold",
               "ld.lld"}
LOCK_NAME = "engine_bench.lock"      # held while we measure (other benchmarks wait for it)
RUN_LOCK_NAME = "engine_bench.run-lock"  # held for the whole run (one engine_bench at a time)
BASE = [DEFAULT_BASE]


def others_locked(base=None):
    """*.lock files in the bench folder that another benchmark holds (the
    protocol of bench/inject_bench.py: a benchmark holds <name>.lock with
    flock while it measures)."""
    return held_locks(base or BASE[0], LOCK_NAME)


def foreign_activity(table=None):
    """Other heavy work on the machine: builds, test runs, other benchmarks."""
    table = table or proc_table()
    out = set()
    for pid, (_, comm, _) in table.items():
        if comm in BUILD_COMMS:
            out.add(comm)
        elif comm.startswith("swiftqmailPack") or comm.endswith(".xctest"):
            out.add("xctest")
    out.update(others_locked())
    return sorted(out)


class MeasureLock:
    """engine_bench.lock: held only while measuring, released while waiting."""

    def __init__(self, base):
        import fcntl
        self.fcntl = fcntl
        self.f = open(os.path.join(base, LOCK_NAME), "w")
        self.held = False

    def acquire(self):
        try:
            self.fcntl.flock(self.f, self.fcntl.LOCK_EX | self.fcntl.LOCK_NB)
            self.held = True
        except OSError:
            self.held = False
        return self.held

    def release(self):
        if self.held:
            self.fcntl.flock(self.f, self.fcntl.LOCK_UN)
            self.held = False


MLOCK = []


def wait_quiet(limit):
    """Releases our lock and waits (at most `limit` s) until no build, test or
    other benchmark runs; then takes our lock again. Returns what was still
    busy when the limit was reached."""
    lock = MLOCK[0] if MLOCK else None
    if lock:
        lock.release()
    settle_wait()
    t0 = time.time()
    said = False
    while True:
        if lock:
            lock.release()
        busy = foreign_activity()
        if not busy and (lock is None or lock.acquire()):
            if not others_locked():
                if said:
                    log(f"    machine quiet after {time.time() - t0:.0f} s")
                return []
            busy = others_locked()
        if time.time() - t0 > limit:
            log(f"    still busy after {limit:.0f} s ({busy}); measuring anyway")
            if lock:
                lock.acquire()
            return busy
        if not said:
            log(f"    waiting for other work to finish: {busy}")
            said = True
        time.sleep(3 + (os.getpid() % 5))


class Sampler:
    """Memory of the process tree under `root` (the supervisor, not counted)."""

    def __init__(self, root):
        self.root = root
        self.peak_sum_rss = 0
        self.peak_sum_pss = 0
        self.hwm = {}       # pid -> (VmHWM kB, name)
        self.samples = 0
        self.max_procs = 0
        self.foreign = set()

    def sample(self, pss=True):
        table = proc_table()
        mine = descendants(self.root, table)
        s_rss = s_pss = 0
        for pid in mine:
            st = status_fields(pid)
            if "VmRSS" not in st:
                continue   # a zombie or kernel thread
            s_rss += int(st["VmRSS"])
            if pss:
                s_pss += field_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
            h = int(st.get("VmHWM", 0))
            if h >= self.hwm.get(pid, (0, ""))[0]:
                self.hwm[pid] = (h, st.get("Name", "?"))
        self.peak_sum_rss = max(self.peak_sum_rss, s_rss)
        self.peak_sum_pss = max(self.peak_sum_pss, s_pss)
        self.max_procs = max(self.max_procs, len(mine))
        self.samples += 1
        if self.samples % 8 == 1:
            self.foreign.update(foreign_activity(table))

    def result(self):
        top = max(self.hwm.values(), default=(0, "-"))
        by_name = {}
        for h, n in self.hwm.values():
            by_name[n] = max(by_name.get(n, 0), h)
        return {"max_vmhwm_kb": top[0], "max_vmhwm_process": top[1], "peak_sum_rss_kb": self.peak_sum_rss,
                "peak_sum_pss_kb": self.peak_sum_pss, "max_processes": self.max_procs,
                "vmhwm_by_name_kb": by_name, "samples": self.samples,
                "foreign_activity_seen": sorted(self.foreign)}


def processes_referencing(path, exclude=()):
    """Processes whose cwd or command line mentions `path`."""
    out = []
    pb = path.encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        if pid == os.getpid() or pid in exclude:
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            cwd = ""
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            cmd = b""
        if cwd == path or cwd.startswith(path + "/") or pb in cmd:
            out.append((pid, cmd.replace(b"\0", b" ").decode(errors="replace").strip()))
    return out


def kill_referencing(path):
    """Kills (SIGKILL) the processes_referencing(path); returns them."""
    left = processes_referencing(path)
    sigkill(pid for pid, _ in left)
    return left


# ----------------------------------------------------------------------------
# inotify (ctypes)

IN_MOVED_TO, IN_CREATE, IN_Q_OVERFLOW = 0x80, 0x100, 0x4000


class Inotify:
    def __init__(self, path):
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise BenchError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        if libc.inotify_add_watch(self.fd, path.encode(), IN_CREATE | IN_MOVED_TO) < 0:
            raise BenchError(f"inotify_add_watch {path}: {os.strerror(ctypes.get_errno())}")
        self.overflow = False

    def read(self):
        now = time.time()
        out = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not buf:
                break
            i = 0
            while i + 16 <= len(buf):
                _wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + ln].rstrip(b"\0").decode(errors="replace")
                i += 16 + ln
                if mask & IN_Q_OVERFLOW:
                    self.overflow = True
                elif name:
                    out.append((name, now))
        return out

    def close(self):
        os.close(self.fd)


# ----------------------------------------------------------------------------
# the supervisor: runs an engine as a subreaper and accounts its whole tree

def _spawn(argv, env, cwd, stdout_path, stderr_path, new_session=False):
    out = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    nul = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(nul, 0)
                os.dup2(out, 1)
                os.dup2(err, 2)
                if cwd:
                    os.chdir(cwd)
                if new_session:
                    os.setsid()
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                os.execve(argv[0], argv, env)
            except BaseException:
                pass
            os._exit(127)
        return pid
    finally:
        os.close(out)
        os.close(err)
        os.close(nul)


def _ru_cpu(ru):
    return ru.ru_utime + ru.ru_stime


def supervisor_main(spec, cmd_r, ev_w):
    """Forked child. Never returns."""
    code = 0
    new_process_group()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def emit(**kw):
        try:
            write_all(ev_w, (json.dumps(kw) + "\n").encode())
        except OSError:
            pass

    reaped = {}        # pid -> (status, cpu seconds)
    subtract = 0.0     # CPU of the start/stop commands (not the engine's)
    engine_pid = None

    def reap_nohang():
        while True:
            try:
                pid, st, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            reaped[pid] = (st, _ru_cpu(ru))
            if pid == engine_pid:
                emit(event="exited", pid=pid, status=os.waitstatus_to_exitcode(st), t=time.time())

    def run_cmd(argv, timeout):
        nonlocal subtract
        t0 = time.time()
        pid = _spawn(argv, spec["env"], spec.get("cwd"), spec["stdout"], spec["stderr"])
        deadline = t0 + timeout
        while True:
            p, st, ru = os.wait4(pid, os.WNOHANG)
            if p:
                subtract += _ru_cpu(ru)
                return os.waitstatus_to_exitcode(st), time.time() - t0
            if time.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, st, ru = os.wait4(pid, 0)
                subtract += _ru_cpu(ru)
                return "timeout", time.time() - t0
            time.sleep(0.02)

    try:
        t_spawn = time.time()
        if spec["mode"] == "daemon":
            engine_pid = _spawn(spec["argv"], spec["env"], spec.get("cwd"), spec["stdout"], spec["stderr"])
        else:
            rc, dt = run_cmd(spec["start"], 120)
            if rc != 0:
                emit(event="failed", why=f"{' '.join(spec['start'])}: exit {rc}")
                raise SystemExit
            pidtext = read_text(spec["pidfile"]).strip()
            engine_pid = int(pidtext) if pidtext.isdigit() else None
        emit(event="spawned", pid=engine_pid, t=t_spawn)
        ready = spec.get("ready_log")
        if ready:
            deadline = time.time() + 30
            while not (os.path.exists(ready) and os.path.getsize(ready) > 0):
                if time.time() > deadline or engine_pid in reaped:
                    break
                reap_nohang()
                time.sleep(0.002)
        emit(event="started", pid=engine_pid, t=time.time(), t_spawn=t_spawn)

        while True:
            r, _, _ = select.select([cmd_r], [], [], 0.2)
            reap_nohang()
            if r:
                data = os.read(cmd_r, 64)
                if not data or b"stop" in data:
                    break
        # stop
        t0 = time.time()
        how = "term"
        if spec["mode"] == "daemon":
            if engine_pid not in reaped:
                os.kill(engine_pid, signal.SIGTERM)
            deadline = t0 + spec.get("stop_timeout", 120)
            grace = spec.get("term_grace")
            held = None
            while engine_pid not in reaped and time.time() < deadline:
                reap_nohang()
                time.sleep(0.005)
                if grace and held is None and time.time() > t0 + grace and spec.get("hold_file"):
                    # TERM alone did not stop it: hold local deliveries and
                    # reread the controls, so that it can finish
                    with open(spec["hold_file"], "w") as f:
                        f.write("1\n")
                    os.kill(engine_pid, signal.SIGHUP)
                    held = time.time() - t0
                    how = f"TERM did not stop it within {grace:.0f} s; holdlocal + HUP sent"
            if engine_pid not in reaped:
                how = "killed after timeout"
                os.kill(engine_pid, signal.SIGKILL)
                while engine_pid not in reaped:
                    if not reap_nohang():
                        break
                    time.sleep(0.01)
            t_stop = time.time() - t0
        else:
            rc, _ = run_cmd(spec["stop"], 120)
            how = f"stop command exit {rc}"
            t_stop = time.time() - t0
        # everything left in our tree: wait, then kill
        deadline = time.time() + 30
        while reap_nohang() and time.time() < deadline:
            time.sleep(0.02)
        leftovers = [p for p, (pp, _, _) in proc_table().items() if pp == os.getpid()]
        sigkill(leftovers)
        while reap_nohang():
            time.sleep(0.01)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        est = reaped.get(engine_pid)
        emit(event="stopped", how=how, stop_seconds=t_stop, term_only=(how == "term"),
             engine_status=os.waitstatus_to_exitcode(est[0]) if est else None,
             cpu_user=ru.ru_utime, cpu_sys=ru.ru_stime, cpu_cmds=subtract,
             cpu_engine=ru.ru_utime + ru.ru_stime - subtract,
             cpu_engine_main=est[1] if est else None, maxrss_kb=ru.ru_maxrss,
             leftovers_killed=len(leftovers))
    except SystemExit:
        code = 1
    except BaseException as e:  # noqa: BLE001
        code = 1
        emit(event="failed", why=repr(e))
        try:
            if engine_pid:
                os.kill(engine_pid, signal.SIGKILL)
        except OSError:
            pass
        if spec["mode"] != "daemon":
            try:
                run_cmd(spec["stop"], 60)
            except BaseException:  # noqa: BLE001
                pass
        sigkill([p for p, (pp, _, _) in proc_table().items() if pp == os.getpid()])
        while reap_nohang():
            time.sleep(0.01)
    os._exit(code)


class Engine:
    """Main-side handle of one supervised engine."""
    LIVE = []

    def __init__(self, spec):
        cr, cw = os.pipe()
        er, ew = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(cw)
            os.close(er)
            supervisor_main(spec, cr, ew)
        os.close(cr)
        os.close(ew)
        os.set_blocking(er, False)
        self.pid, self.cmd_w, self.ev_r = pid, cw, er
        self.buf = b""
        self.events = []
        self.engine_pid = None
        self.exited = None
        Engine.LIVE.append(self)

    def poll_events(self):
        while True:
            try:
                d = os.read(self.ev_r, 65536)
            except BlockingIOError:
                break
            if not d:
                break
            self.buf += d
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            ev = json.loads(line)
            self.events.append(ev)
            if ev["event"] in ("spawned", "started") and ev.get("pid"):
                self.engine_pid = ev["pid"]
            if ev["event"] == "exited":
                self.exited = ev
            if ev["event"] == "failed":
                raise BenchError(f"engine supervisor: {ev['why']}")
        return self.events

    def wait_event(self, name, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.poll_events()
            for ev in self.events:
                if ev["event"] == name:
                    return ev
            select.select([self.ev_r], [], [], 0.05)
        raise BenchError(f"engine: no '{name}' event within {timeout} s")

    def stop(self, timeout=180):
        try:
            write_all(self.cmd_w, b"stop\n")
        except OSError:
            pass
        ev = self.wait_event("stopped", timeout)
        self.reap()
        return ev

    def reap(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            p, _ = os.waitpid(self.pid, os.WNOHANG)
            if p:
                break
            time.sleep(0.02)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        try:
            os.close(self.cmd_w)
            os.close(self.ev_r)
        except OSError:
            pass
        if self in Engine.LIVE:
            Engine.LIVE.remove(self)

    @classmethod
    def emergency_stop_all(cls):
        for e in list(cls.LIVE):
            try:
                os.close(e.cmd_w)        # EOF: the supervisor stops its engine
            except OSError:
                pass
            deadline = time.time() + 90
            while time.time() < deadline:
                try:
                    p, _ = os.waitpid(e.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if p:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(e.pid, signal.SIGKILL)
                    os.waitpid(e.pid, 0)
                except OSError:
                    pass
            if e in cls.LIVE:
                cls.LIVE.remove(e)


# ----------------------------------------------------------------------------
# benchuser and the Maildir

TRASH = []


def fresh_maildir(home, pw):
    # moved aside, deleted at the end of the run (a deletion now would slow
    # down the next measurement, see settle_wait)
    if os.path.lexists(home):
        if TRASH:
            os.rename(home, os.path.join(TRASH[0], f"home.{time.monotonic_ns()}"))
        else:
            rmtree(home)
            deleted_now()
    os.makedirs(home, exist_ok=True)
    os.chmod(home, 0o755)
    md = os.path.join(home, "Maildir")
    for d in ("", "new", "cur", "tmp"):
        os.makedirs(os.path.join(md, d), exist_ok=True)
    for root in (home, md, md + "/new", md + "/cur", md + "/tmp"):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o700 if root != home else 0o755)
    return md


def make_message(bid, rcpt, t, size):
    head = (f"From: {SENDER}\nTo: {rcpt}\nSubject: engine_bench {bid}\n"
            f"X-Bench-Id: {bid}\nX-Bench-Injected: {t:.6f}\n\n").encode()
    return pad_message(head, size)


# ----------------------------------------------------------------------------
# injection workers

def injector_main(ctx, go_r, result_path):
    """Forked child: injects its share of the messages. Never returns."""
    code = 0
    new_process_group()
    pdeathsig()
    child = 0
    try:
        errfd = os.open(ctx["errlog"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        nul = os.open(os.devnull, os.O_RDWR)
        os.read(go_r, 1)
        os.close(go_r)
        recs = []
        first_err = None
        t_start = time.monotonic()
        for i in range(ctx["wid"], ctx["n"], ctx["p"]):
            if time.time() > ctx["deadline"]:
                break
            bid = f"{ctx['tag']}-{i}"
            rcpt = f"{BENCH_USER}-u{i % NUSERS}@{DOMAIN}"
            t0 = time.time()
            msg = make_message(bid, rcpt, t0, ctx["size"])
            argv = ctx["argv"] + [rcpt]
            r, w = os.pipe()
            try:
                child = os.posix_spawn(argv[0], argv, ctx["env"],
                                       file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, nul, 1),
                                                     (os.POSIX_SPAWN_DUP2, errfd, 2)],
                                       setsigdef=(signal.SIGPIPE,))
            finally:
                os.close(r)
            try:
                write_all(w, msg)
            except BrokenPipeError:
                pass
            finally:
                os.close(w)
            _, st = os.waitpid(child, 0)
            child = 0
            c = os.waitstatus_to_exitcode(st)
            if c != 0 and first_err is None:
                first_err = f"{os.path.basename(argv[0])} exit {c}"
            recs.append((i, t0, time.time(), c))
        tm = os.times()
        res = {"recs": recs, "first_error": first_err, "seconds": time.monotonic() - t_start,
               "cpu_self": tm.user + tm.system, "cpu_clients": tm.children_user + tm.children_system}
        report_result(result_path, res)
    except BaseException as e:  # noqa: BLE001
        code = 1
        report_error(result_path, e)
    finally:
        kill_child(child)
    os._exit(code)


WORKERS = []  # forked injector and queue-builder pids, for kill_workers(WORKERS)


# ----------------------------------------------------------------------------
# targets for (A)

class OursTarget:
    name = "ours"

    def __init__(self, run, args, pw, home):
        self.dir = tempfile.mkdtemp(prefix="ours.", dir=run.tmp)
        self.bin = run.bin
        self.home = home
        os.makedirs(self.dir + "/control")
        os.makedirs(self.dir + "/users")
        write_file(self.dir + "/control/me", DOMAIN + "\n")
        write_file(self.dir + "/control/locals", DOMAIN + "\n")
        assign = "".join(f"={BENCH_USER}-u{k}:{BENCH_USER}:{pw.pw_uid}:{pw.pw_gid}:{home}:::\n" for k in range(NUSERS))
        write_file(self.dir + "/users/assign", assign + ".\n")
        r = subprocess.run([self.bin + "/queue-fix", self.dir + "/queue"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise BenchError(f"queue-fix: {r.stdout}{r.stderr}")
        self.env = {"PATH": "/usr/bin:/bin", "QMAILHOME": self.dir, "QUEUEDIR": self.dir + "/queue",
                    "CONTROLDIR": self.dir + "/control", "LANG": "C"}
        self.log = self.dir + "/send.log"

    def spec(self):
        return {"mode": "daemon", "argv": [self.bin + "/qmail-send", "./Maildir/"], "env": self.env, "cwd": self.dir,
                "stdout": self.log, "stderr": self.dir + "/send.stderr", "ready_log": self.log, "stop_timeout": 120}

    def client_argv(self):
        return [self.bin + "/qmail-inject", "-f", SENDER]

    def queue_files(self):
        n = 0
        q = self.dir + "/queue"
        for sub in ("mess", "info", "local", "remote"):
            for s in range(SPLIT):
                try:
                    n += len(os.listdir(f"{q}/{sub}/{s}"))
                except OSError:
                    pass
        for sub in ("todo", "intd", "bounce", "pid"):
            try:
                n += len(os.listdir(f"{q}/{sub}"))
            except OSError:
                pass
        return n

    def analyse_log(self, n):
        text = read_text(self.log)
        pats = {
            "new msg": r"^new msg \d+$", "info msg": r"^info msg \d+: ", "starting delivery": r"^starting delivery \d+: ",
            "success": r"^delivery \d+: success: ", "deferral": r"^delivery \d+: deferral: ",
            "failure": r"^delivery \d+: failure: ", "end msg": r"^end msg \d+$", "status": r"^status: ",
            "bounce": r"^bounce msg ", "warning": r"^warning: ", "alert": r"^alert: ",
        }
        counts = {k: 0 for k in pats}
        counts["other"] = 0
        examples = []
        comp = {k: re.compile(v) for k, v in pats.items()}
        for line in text.splitlines():
            for k, rx in comp.items():
                if rx.search(line):
                    counts[k] += 1
                    if k in ("deferral", "failure", "warning", "alert", "bounce") and len(examples) < 10:
                        examples.append(line)
                    break
            else:
                counts["other"] += 1
                if len(examples) < 10:
                    examples.append(line)
        anomalies = []
        for k in ("new msg", "starting delivery", "success", "end msg"):
            if counts[k] != n:
                anomalies.append(f"{counts[k]} '{k}' lines for {n} messages")
        for k in ("deferral", "failure", "warning", "alert", "bounce", "other"):
            if counts[k]:
                anomalies.append(f"{counts[k]} '{k}' lines")
        err = read_text(self.dir + "/send.stderr").strip()
        if err:
            anomalies.append("stderr: " + err[:300])
        return {"counts": counts, "anomalies": anomalies, "examples": examples}

    def cleanup(self):
        pass   # the run folder is removed at the end of the run


class PostfixTarget:
    name = "postfix"

    def __init__(self, run, args, pw, home):
        self.dir = tempfile.mkdtemp(prefix="postfix.", dir=run.tmp)
        os.chmod(self.dir, 0o755)
        self.conf, self.queue, self.log = make_postfix_instance(self.dir, DOMAIN, args.postfix_local_concurrency)
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        r = subprocess.run([POSTFIX, "-c", self.conf, "check"], capture_output=True, text=True, timeout=120,
                           env=self.env)
        if r.returncode != 0:
            raise BenchError(f"postfix check: {r.stdout}{r.stderr}{read_text(self.log)}")

    def spec(self):
        return {"mode": "service", "start": [POSTFIX, "-c", self.conf, "start"],
                "stop": [POSTFIX, "-c", self.conf, "stop"], "pidfile": self.queue + "/pid/master.pid",
                "env": self.env, "cwd": self.dir, "stdout": self.dir + "/postfix.out",
                "stderr": self.dir + "/postfix.out"}

    def client_argv(self):
        return [POSTFIX_SENDMAIL, "-C", self.conf, "-f", SENDER, "-i"]

    def queue_files(self):
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "defer", "bounce", "hold", "corrupt"):
            for _root, _dirs, files in os.walk(f"{self.queue}/{sub}"):
                n += len(files)
        return n

    def analyse_log(self, n):
        text = read_text(self.log)
        counts = {"status=sent": 0, "status=deferred": 0, "status=bounced": 0, "warning": 0, "error": 0,
                  "fatal": 0, "panic": 0}
        examples = []
        for line in text.splitlines():
            for k in counts:
                key = k if k.startswith("status") else f" {k}: "
                if key in line:
                    counts[k] += 1
                    if not k.startswith("status=sent") and len(examples) < 10:
                        examples.append(line)
        anomalies = []
        if counts["status=sent"] != n:
            anomalies.append(f"{counts['status=sent']} status=sent lines for {n} messages")
        for k in ("status=deferred", "status=bounced", "warning", "error", "fatal", "panic"):
            if counts[k]:
                anomalies.append(f"{counts[k]} '{k}' lines")
        return {"counts": counts, "anomalies": anomalies, "examples": examples}

    def cleanup(self):
        # belt and braces: the supervisor already ran `postfix stop`
        if os.path.exists(self.queue + "/pid/master.pid"):
            subprocess.run([POSTFIX, "-c", self.conf, "stop"], capture_output=True, timeout=60, env=self.env)
        # the run folder is removed at the end of the run


# ----------------------------------------------------------------------------
# one (A) run

def run_delivery(run, args, target_cls, pw, home, rnd):
    tag = f"r{rnd}{target_cls.name[0]}{os.getpid()}"
    target = target_cls(run, args, pw, home)
    md = fresh_maildir(home, pw)
    newdir = md + "/new"
    res = {"target": target.name, "round": rnd, "messages": args.messages, "parallel": args.parallel,
           "size": args.size, "ok": False}
    engine = None
    ino = None
    try:
        os.sync()
        engine = Engine(target.spec())
        engine.wait_event("started", 150)
        sampler = Sampler(engine.pid)
        sampler.sample()
        ino = Inotify(newdir)
        deliveries = {}

        # workers
        deadline = time.time() + args.timeout
        go_r, go_w = os.pipe()
        rdir = tempfile.mkdtemp(prefix=f"res.{target.name}.", dir=run.tmp)
        pids = []
        for wid in range(args.parallel):
            ctx = {"wid": wid, "n": args.messages, "p": args.parallel, "tag": tag, "size": args.size,
                   "argv": target.client_argv(), "env": target.env, "deadline": deadline,
                   "errlog": f"{target.dir}/inject.stderr"}
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                injector_main(ctx, go_r, f"{rdir}/w{wid}.json")
            pids.append(pid)
            WORKERS.append(pid)
        os.close(go_r)
        j0 = cpu_jiffies()
        t_go = time.time()
        os.write(go_w, b"g" * args.parallel)
        os.close(go_w)

        workers_left = set(pids)
        results = []
        expected = args.messages
        last_sample = 0.0
        timed_out = stalled = False
        last_progress = time.time()
        while True:
            r, _, _ = select.select([ino.fd], [], [], 0.05)
            now = time.time()
            for name, t in ino.read():
                deliveries.setdefault(name, t)
                last_progress = now
            if now - last_sample >= 0.25:
                sampler.sample(pss=True)
                last_sample = now
                engine.poll_events()
                if engine.exited:
                    raise BenchError(f"engine exited during the run: {engine.exited}")
            for pid in list(workers_left):
                p, st = os.waitpid(pid, os.WNOHANG)
                if p:
                    workers_left.discard(pid)
                    WORKERS.remove(pid)
            if not workers_left and not results:
                for wid in range(args.parallel):
                    path = f"{rdir}/w{wid}.json"
                    if not os.path.exists(path):
                        raise BenchError(f"injector {wid} failed: {read_text(path + '.err')}")
                    with open(path) as f:
                        results.append(json.load(f))
                expected = sum(1 for w in results for rec in w["recs"] if rec[3] == 0)
            if results and len(deliveries) >= expected:
                break
            if results and now - last_progress > args.stall:
                stalled = True
                break
            if now > deadline:
                timed_out = True
                break
        j1 = cpu_jiffies()
        t_done = time.time()
        # queue drained (the engine removes its files after the delivery)
        drain_deadline = time.time() + 30
        while target.queue_files() > 0 and time.time() < drain_deadline and not (timed_out or stalled):
            time.sleep(0.02)
            sampler.sample(pss=False)
        t_drained = time.time()
        sampler.sample(pss=True)
        mem = sampler.result()
        stop = engine.stop()
        engine = None
        for name, t in ino.read():
            deliveries.setdefault(name, t)
        leftover_queue = target.queue_files()

        # match the delivered files
        files = os.listdir(newdir)
        ids = {}
        dup = 0
        lat, lat_end, lat_mtime = [], [], []
        inject = {}
        for w in results:
            for i, t0, t1, c in w["recs"]:
                inject[f"{tag}-{i}"] = (t0, t1, c)
        last = 0.0
        for name in files:
            with open(os.path.join(newdir, name), "rb") as f:
                head = f.read(8192)
            m = re.search(rb"\nX-Bench-Id: (\S+)", head)
            if not m:
                continue
            bid = m.group(1).decode()
            if bid in ids:
                dup += 1
                continue
            ids[bid] = name
            t_del = deliveries.get(name)
            mt = os.stat(os.path.join(newdir, name)).st_mtime
            if t_del is None:
                t_del = mt
            last = max(last, t_del)
            if bid in inject:
                lat.append(t_del - inject[bid][0])
                lat_end.append(t_del - inject[bid][1])
                lat_mtime.append(mt - inject[bid][0])
        injected_ok = [b for b, v in inject.items() if v[2] == 0]
        lost = [b for b in injected_ok if b not in ids]
        failed = [b for b, v in inject.items() if v[2] != 0]
        first = min((v[0] for v in inject.values()), default=t_go)
        inj_end = max((v[1] for v in inject.values()), default=t_go)
        lat.sort()
        lat_end.sort()
        lat_mtime.sort()
        client_lat = sorted(v[1] - v[0] for v in inject.values())
        n_del = len(ids)
        e2e = (last - first) if n_del else float("nan")
        cpu_clients = sum(w["cpu_clients"] for w in results)
        res.update({
            "ok": (not timed_out and not stalled and not lost and not failed and dup == 0 and stop.get("engine_status") in (0, None, -signal.SIGTERM)
                   and n_del == args.messages),
            "timed_out": timed_out, "stalled": stalled,
            "injected": len(inject), "injection_failures": len(failed),
            "first_injection_error": next((w["first_error"] for w in results if w["first_error"]), None),
            "delivered": n_del, "lost": len(lost), "lost_examples": lost[:5], "duplicates": dup,
            "extra_files": len(files) - n_del - dup,
            "e2e_seconds": round(e2e, 3),
            "msgs_per_s": round(n_del / e2e, 1) if n_del and e2e > 0 else 0,
            "inject_seconds": round(inj_end - first, 3),
            "inject_msgs_per_s": round(len(inject) / (inj_end - first), 1) if inj_end > first else 0,
            "client_p50_ms": round(percentile(client_lat, 50) * 1000, 1),
            "latency_ms": {p: round(percentile(lat, q) * 1000, 1) for p, q in
                           (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
            "latency_from_client_exit_ms": {p: round(percentile(lat_end, q) * 1000, 1) for p, q in
                                            (("p50", 50), ("p99", 99))},
            "latency_mtime_ms": {p: round(percentile(lat_mtime, q) * 1000, 1) for p, q in
                                 (("p50", 50), ("p99", 99))},
            "inotify_overflow": ino.overflow,
            "drain_after_last_delivery_s": round(t_drained - t_done, 3),
            "queue_files_left_after_stop": leftover_queue,
            "engine_cpu_s": round(stop["cpu_engine"], 3),
            "engine_cpu_ms_per_msg": round(1000 * stop["cpu_engine"] / max(n_del, 1), 3),
            "engine_cpu_user_s": round(stop["cpu_user"], 3), "engine_cpu_sys_s": round(stop["cpu_sys"], 3),
            "engine_cmds_cpu_s": round(stop["cpu_cmds"], 3),
            "client_cpu_s": round(cpu_clients, 3),
            "client_cpu_ms_per_msg": round(1000 * cpu_clients / max(len(inject), 1), 3),
            "harness_worker_cpu_s": round(sum(w["cpu_self"] for w in results), 3),
            "machine_cpu_percent": cpu_breakdown(j0, j1),
            "memory": mem,
            "stop": {k: stop.get(k) for k in ("how", "stop_seconds", "engine_status", "leftovers_killed")},
            "log": target.analyse_log(args.messages),
        })
        inj_err = read_text(f"{target.dir}/inject.stderr").strip()
        if inj_err:
            res["inject_stderr"] = inj_err[:500]
        return res
    finally:
        if ino:
            ino.close()
        kill_workers(WORKERS)
        if engine is not None:
            try:
                engine.stop(120)
            except BaseException:  # noqa: BLE001
                Engine.emergency_stop_all()
        if args.keep:
            log(f"kept {target.dir}")
        else:
            target.cleanup()
        left = kill_referencing(target.dir)
        if left:
            res["leftover_processes"] = left


def summarize_a(runs):
    out = {}
    for tname in ("ours", "postfix"):
        rs = [r for r in runs if r["target"] == tname and r.get("delivered")]
        if not rs:
            continue

        def med(f):
            v = [f(r) for r in rs]
            v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
            return round(statistics.median(v), 3) if v else None
        out[tname] = {
            "runs": len(rs),
            "all_ok": all(r["ok"] for r in rs),
            "msgs_per_s": med(lambda r: r["msgs_per_s"]),
            "msgs_per_s_all": [r["msgs_per_s"] for r in rs],
            "e2e_seconds": med(lambda r: r["e2e_seconds"]),
            "inject_msgs_per_s": med(lambda r: r["inject_msgs_per_s"]),
            "p50_ms": med(lambda r: r["latency_ms"]["p50"]),
            "p90_ms": med(lambda r: r["latency_ms"]["p90"]),
            "p99_ms": med(lambda r: r["latency_ms"]["p99"]),
            "max_ms": med(lambda r: r["latency_ms"]["max"]),
            "engine_cpu_ms_per_msg": med(lambda r: r["engine_cpu_ms_per_msg"]),
            "client_cpu_ms_per_msg": med(lambda r: r["client_cpu_ms_per_msg"]),
            "total_cpu_ms_per_msg": med(lambda r: r["engine_cpu_ms_per_msg"] + r["client_cpu_ms_per_msg"]),
            "max_vmhwm_kb": med(lambda r: r["memory"]["max_vmhwm_kb"]),
            "peak_sum_rss_kb": med(lambda r: r["memory"]["peak_sum_rss_kb"]),
            "peak_sum_pss_kb": med(lambda r: r["memory"]["peak_sum_pss_kb"]),
            "iowait_pct": med(lambda r: r["machine_cpu_percent"]["iowait"]),
            "idle_pct": med(lambda r: r["machine_cpu_percent"]["idle"]),
            "lost": sum(r["lost"] for r in rs), "duplicates": sum(r["duplicates"] for r in rs),
        }
    if "ours" in out and "postfix" in out:
        o, p = out["ours"], out["postfix"]
        out["ratio_ours_over_postfix"] = {
            k: (round(o[k] / p[k], 2) if o.get(k) and p.get(k) else None)
            for k in ("msgs_per_s", "p50_ms", "p99_ms", "engine_cpu_ms_per_msg", "total_cpu_ms_per_msg",
                      "peak_sum_pss_kb")}
    return out


# ----------------------------------------------------------------------------
# (B) restart with a huge queue

def build_worker(qdir, start, end, size, wid, result_path):
    code = 0
    pdeathsig()
    try:
        os.chdir(qdir)
        os.umask(0)
        t = int(time.time())
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
        recv = f"Received: (qmail {os.getpid()} invoked by uid 0); {date}\n".encode()
        body = make_message("restart", f"u1@{DOMAIN}", time.time(), size)
        info = b"F" + SENDER.encode() + b"\0"
        local = b"Tu1@" + DOMAIN.encode() + b"\0"
        W, C, E = os.O_WRONLY | os.O_CREAT | os.O_EXCL, os.close, os.write
        for k in range(start, end):
            name = f"pid/b{wid}.{k}"
            fd = os.open(name, W, 0o644)
            E(fd, recv + b"X-Bench-Seq: %d\n" % k + body)
            ino = os.fstat(fd).st_ino
            C(fd)
            s = ino % SPLIT
            os.link(name, f"mess/{s}/{ino}")
            os.unlink(name)
            fd = os.open(f"info/{s}/{ino}", W, 0o600)
            E(fd, info)
            C(fd)
            fd = os.open(f"local/{s}/{ino}", W, 0o600)
            E(fd, local)
            C(fd)
        with open(result_path, "w") as f:
            f.write("ok")
    except BaseException as e:  # noqa: BLE001
        code = 1
        report_error(result_path, e)
    os._exit(code)


def fs_usage(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree


def file_size(path):
    try:
        st = os.stat(path)
        return st.st_size, st.st_blocks * 512
    except OSError:
        return 0, 0


def count_log(path, rx):
    return sum(1 for line in read_text(path).splitlines() if re.search(rx, line))


def restart_stage(name, spec, logpath, newdir, observe, first_timeout, args):
    """Starts qmail-send on the big queue; times the first delivery; observes; stops."""
    st = {"stage": name}
    os.sync()
    ino = Inotify(newdir)
    engine = Engine(spec)
    try:
        ev = engine.wait_event("spawned", 60)
        t_spawn = ev["t"]
        sampler = Sampler(engine.pid)
        t_status = t_first = t_file = None
        deadline = time.time() + first_timeout
        seen = 0
        buf = b""
        last_sample = 0.0
        while time.time() < deadline:
            try:
                with open(logpath, "rb") as f:
                    f.seek(seen)
                    chunk = f.read()
            except OSError:
                chunk = b""
            now = time.time()
            if t_file is None and ino.read():
                t_file = now
            if chunk:
                seen += len(chunk)
                buf += chunk
                if t_status is None and b"status:" in buf:
                    t_status = now
                if t_first is None and b"starting delivery" in buf:
                    t_first = now
                buf = buf[-64:]
            if t_first is not None and t_file is not None:
                break
            if now - last_sample > 0.25:
                sampler.sample(pss=False)
                last_sample = now
                engine.poll_events()
                if engine.exited:
                    raise BenchError(f"{name}: engine exited: {engine.exited}")
            time.sleep(0.001)
        st["seconds_to_status_line"] = round(t_status - t_spawn, 3) if t_status else None
        st["seconds_to_first_delivery"] = round(t_first - t_spawn, 3) if t_first else None
        st["seconds_to_first_maildir_file"] = round(t_file - t_spawn, 3) if t_file else None
        # observe
        t0 = time.time()
        n0 = len(os.listdir(newdir))
        rate_points = []
        while time.time() < t0 + observe:
            time.sleep(0.5)
            sampler.sample(pss=True)
            engine.poll_events()
            if engine.exited:
                raise BenchError(f"{name}: engine exited: {engine.exited}")
            rate_points.append((time.time() - t0, len(os.listdir(newdir)) - n0))
        delivered = len(os.listdir(newdir)) - n0
        st["observe_seconds"] = observe
        st["delivered_over_time"] = [(round(t, 1), n) for t, n in rate_points[1::2]]
        st["delivered_while_observed"] = delivered
        st["drain_msgs_per_s"] = round(delivered / observe, 1)
        half = [p for p in rate_points if p[0] >= observe / 2]
        if half and len(half) > 1:
            st["drain_msgs_per_s_second_half"] = round((half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]), 1)
        st["memory"] = sampler.result()
        st["cpu_s_engine_until_stop"] = None
        stop = engine.stop(600)
        engine = None
        st["stop"] = {k: stop.get(k) for k in ("how", "stop_seconds", "engine_status", "term_only")}
        st["cpu_s_engine"] = round(stop["cpu_engine"], 2)
        text = read_text(logpath)
        k = text.find("got TERM")
        st["deliveries_started_after_term"] = text[k:].count("starting delivery") if k >= 0 else None
        st["log_counts"] = {
            "starting delivery": count_log(logpath, r"^starting delivery "),
            "success": count_log(logpath, r"^delivery \d+: success"),
            "deferral": count_log(logpath, r"^delivery \d+: deferral"),
            "failure": count_log(logpath, r"^delivery \d+: failure"),
            "warning/alert": count_log(logpath, r"^(warning|alert):"),
            "end msg": count_log(logpath, r"^end msg "),
        }
        st["log_examples"] = [line for line in read_text(logpath).splitlines()
                              if re.search(r"^(warning|alert)|deferral|failure", line)][:8]
        return st
    finally:
        ino.close()
        if engine is not None:
            try:
                engine.stop(600)
            except BaseException:  # noqa: BLE001
                Engine.emergency_stop_all()


def run_restart(run, args, pw, home):
    m = args.restart_messages
    d = tempfile.mkdtemp(prefix="restart.", dir=run.tmp)
    res = {"messages": m, "size": args.size, "ok": False}
    try:
        os.makedirs(d + "/control")
        os.makedirs(d + "/users")
        write_file(d + "/control/me", DOMAIN + "\n")
        write_file(d + "/control/locals", DOMAIN + "\n")
        write_file(d + "/control/holdlocal", "1\n")
        write_file(d + "/users/assign", f"=u1:{BENCH_USER}:{pw.pw_uid}:{pw.pw_gid}:{home}:::\n.\n")
        q = d + "/queue"
        r = subprocess.run([run.bin + "/queue-fix", q], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise BenchError(f"queue-fix: {r.stdout}{r.stderr}")
        md = fresh_maildir(home, pw)
        env = {"PATH": "/usr/bin:/bin", "QMAILHOME": d, "QUEUEDIR": q, "CONTROLDIR": d + "/control", "LANG": "C"}

        # build
        os.sync()
        used0, inodes0 = fs_usage(q)
        procs = max(1, min(args.build_procs, m))
        t0 = time.time()
        pids = []
        per = (m + procs - 1) // procs
        for w in range(procs):
            s, e = w * per, min(m, (w + 1) * per)
            pid = os.fork()
            if pid == 0:
                build_worker(q, s, e, args.size, w, f"{d}/build{w}.ok")
            pids.append(pid)
            WORKERS.append(pid)
        deadline = t0 + args.build_timeout
        for pid in pids:
            while True:
                p, _ = os.waitpid(pid, os.WNOHANG)
                if p:
                    WORKERS.remove(pid)
                    break
                if time.time() > deadline:
                    raise BenchError("building the queue timed out")
                time.sleep(0.2)
        for w in range(procs):
            if not os.path.exists(f"{d}/build{w}.ok"):
                raise BenchError(f"build worker {w}: {read_text(f'{d}/build{w}.ok.err')}")
        t_built = time.time()
        os.sync()
        t_synced = time.time()
        used1, inodes1 = fs_usage(q)
        res["build_seconds"] = round(t_built - t0, 1)
        res["build_sync_seconds"] = round(t_synced - t_built, 1)
        res["build_msgs_per_s"] = round(m / (t_built - t0), 0)
        res["fs_bytes_used_by_queue_files"] = used1 - used0
        res["fs_inodes_used"] = inodes1 - inodes0
        try:
            du = subprocess.run(["du", "-sk", q], capture_output=True, text=True, timeout=900).stdout.split()[0]
            res["du_queue_kib"] = int(du)
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            pass
        n_mess = sum(len(os.listdir(f"{q}/mess/{s}")) for s in range(SPLIT))
        res["mess_files"] = n_mess
        if n_mess != m:
            raise BenchError(f"built {n_mess} mess files, wanted {m}")
        log(f"(B) built {m} messages in {t_built - t0:.1f} s (+{t_synced - t_built:.1f} s sync), "
            f"{(used1 - used0) / 2**30:.2f} GiB, {inodes1 - inodes0} inodes")

        # stage 1: index the queue, held
        log1 = d + "/stage1.log"
        spec = {"mode": "daemon", "argv": [run.bin + "/qmta-send", "-d", "./Maildir/"], "env": env, "cwd": d,
                "stdout": log1, "stderr": d + "/stage1.stderr", "stop_timeout": 600}
        engine = Engine(spec)
        try:
            ev = engine.wait_event("spawned", 60)
            t_spawn = ev["t"]
            sampler = Sampler(engine.pid)
            lm = q + "/lock/engine.lmdb"
            last_cpu, last_change, last_size = None, time.time(), -1
            t_idle = None
            deadline = time.time() + args.index_timeout
            while time.time() < deadline:
                time.sleep(0.5)
                sampler.sample(pss=False)
                engine.poll_events()
                if engine.exited:
                    raise BenchError(f"stage 1: engine exited: {engine.exited}")
                c = cpu_ticks(engine.engine_pid)
                size = file_size(lm)[0]
                if c != last_cpu or size != last_size:
                    last_cpu, last_size, last_change = c, size, time.time()
                elif time.time() - last_change >= 3.0:
                    t_idle = last_change
                    break
            sampler.sample(pss=True)
            s1 = {"stage": "index (held, qmta-send -d)",
                  "seconds_until_idle": round(t_idle - t_spawn, 1) if t_idle else None,
                  "memory": sampler.result(), "lmdb_bytes": file_size(lm)}
            if t_idle is None:
                s1["note"] = f"did not become idle within {args.index_timeout} s"
            stop = engine.stop(900)
            engine = None
            s1["stop"] = {k: stop.get(k) for k in ("how", "stop_seconds", "engine_status")}
            s1["cpu_s_engine"] = round(stop["cpu_engine"], 2)
            s1["log_tail"] = read_text(log1).splitlines()[-5:]
            s1["stderr"] = read_text(d + "/stage1.stderr")[:300]
        finally:
            if engine is not None:
                try:
                    engine.stop(900)
                except BaseException:  # noqa: BLE001
                    Engine.emergency_stop_all()
        res["stage1"] = s1
        res["lmdb_bytes"] = file_size(q + "/lock/engine.lmdb")
        log(f"(B) stage 1 (index): idle after {s1['seconds_until_idle']} s, VmHWM "
            f"{s1['memory']['max_vmhwm_kb'] / 1024:.0f} MiB, stop {s1['stop']['stop_seconds']:.1f} s")

        # stage 2: restart with the schedule
        os.unlink(d + "/control/holdlocal")
        dropped = False
        if args.cold:
            try:
                os.sync()
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
                dropped = True
            except OSError as e:
                res["drop_caches_error"] = str(e)
        res["cold_cache"] = dropped
        log2 = d + "/stage2.log"
        spec = {"mode": "daemon", "argv": [run.bin + "/qmail-send", "./Maildir/"], "env": env, "cwd": d,
                "stdout": log2, "stderr": d + "/stage2.stderr", "stop_timeout": 900,
                "term_grace": args.term_grace, "hold_file": d + "/control/holdlocal"}
        s2 = restart_stage("restart (schedule in LMDB)", spec, log2, md + "/new", args.restart_observe, 120, args)
        s2["stderr"] = read_text(d + "/stage2.stderr")[:300]
        res["stage2"] = s2
        log(f"(B) stage 2 (restart): first delivery after {s2['seconds_to_first_delivery']} s (first file "
            f"{s2['seconds_to_first_maildir_file']} s), "
            f"VmHWM {s2['memory']['max_vmhwm_kb'] / 1024:.0f} MiB, {s2['drain_msgs_per_s']} msgs/s, "
            f"stop {s2['stop']['stop_seconds']:.1f} s")

        # stage 3: restart without the schedule
        left = sum(len(os.listdir(f"{q}/mess/{s}")) for s in range(SPLIT))
        res["mess_files_after_stage2"] = left
        if left == 0:
            res["stage3_skipped"] = "the queue was empty after stage 2"
        if not args.no_stage3 and left > 0:
            for suffix in ("", "-lock"):
                try:
                    os.unlink(q + "/lock/engine.lmdb" + suffix)
                except FileNotFoundError:
                    pass
            try:
                os.unlink(d + "/control/holdlocal")
            except FileNotFoundError:
                pass
            log3 = d + "/stage3.log"
            spec = dict(spec, stdout=log3, stderr=d + "/stage3.stderr")
            s3 = restart_stage("restart without schedule (engine.lmdb removed)", spec, log3, md + "/new",
                               args.stage3_observe, 120, args)
            s3["stderr"] = read_text(d + "/stage3.stderr")[:300]
            res["stage3"] = s3
            log(f"(B) stage 3 (no schedule): first delivery after {s3['seconds_to_first_delivery']} s (first file "
                f"{s3['seconds_to_first_maildir_file']} s), "
                f"VmHWM {s3['memory']['max_vmhwm_kb'] / 1024:.0f} MiB, stop {s3['stop']['stop_seconds']:.1f} s")
        res["mess_files_left"] = sum(len(os.listdir(f"{q}/mess/{s}")) for s in range(SPLIT))
        res["ok"] = True
        return res
    finally:
        kill_workers(WORKERS)
        if args.keep:
            log(f"kept {d}")
        else:
            t = time.time()
            rmtree(d)
            os.sync()
            deleted_now()
            res["cleanup_seconds"] = round(time.time() - t, 1)
        left = kill_referencing(d)
        if left:
            res["leftover_processes"] = left


# ----------------------------------------------------------------------------
# report

def kb_mib(kb):
    return f"{kb / 1024:.1f}" if kb else "-"


def markdown_a(summary, runs):
    lines = []
    if not summary:
        return "(no results)"
    lines.append("| | ours | Postfix | ours/Postfix |")
    lines.append("|---|---:|---:|---:|")
    o, p = summary.get("ours", {}), summary.get("postfix", {})
    ratio = summary.get("ratio_ours_over_postfix", {})

    def row(label, key, fmt=lambda v: f"{v}"):
        ov, pv = o.get(key), p.get(key)
        rv = ratio.get(key)
        if rv is None and ov and pv:
            rv = round(ov / pv, 2)
        lines.append(f"| {label} | {fmt(ov) if ov is not None else '-'} | {fmt(pv) if pv is not None else '-'} | "
                     f"{rv if rv is not None else '-'} |")
    row("throughput, msgs/s (median)", "msgs_per_s")
    row("end to end, s", "e2e_seconds")
    row("injection rate, msgs/s", "inject_msgs_per_s")
    row("latency p50, ms", "p50_ms")
    row("latency p90, ms", "p90_ms")
    row("latency p99, ms", "p99_ms")
    row("latency max, ms", "max_ms")
    row("engine CPU, ms/msg", "engine_cpu_ms_per_msg")
    row("client CPU, ms/msg", "client_cpu_ms_per_msg")
    row("engine+client CPU, ms/msg", "total_cpu_ms_per_msg")
    row("largest process VmHWM, MiB", "max_vmhwm_kb", kb_mib)
    row("peak sum RSS (all engine processes), MiB", "peak_sum_rss_kb", kb_mib)
    row("peak sum PSS (all engine processes), MiB", "peak_sum_pss_kb", kb_mib)
    row("machine iowait, %", "iowait_pct")
    row("machine idle, %", "idle_pct")
    lines.append("")
    lines.append("| run | target | msgs/s | e2e s | p50 ms | p99 ms | engine CPU ms/msg | VmHWM MiB | ok |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        if not r.get("delivered"):
            lines.append(f"| {r['round']} | {r['target']} | failed: {r.get('error', '?')} | | | | | | no |")
            continue
        lines.append(f"| {r['round']} | {r['target']} | {r['msgs_per_s']} | {r['e2e_seconds']} | "
                     f"{r['latency_ms']['p50']} | {r['latency_ms']['p99']} | {r['engine_cpu_ms_per_msg']} | "
                     f"{kb_mib(r['memory']['max_vmhwm_kb'])} | {'yes' if r['ok'] else 'NO'}"
                     f"{' (machine busy: ' + ', '.join(r['memory']['foreign_activity_seen']) + ')' if r['memory']['foreign_activity_seen'] else ''} |")
    return "\n".join(lines)


def markdown_b(b):
    if not b:
        return "(no results)"
    lines = [f"queue: {b['messages']} messages of ~{b['size']} bytes, built in {b.get('build_seconds')} s "
             f"(+{b.get('build_sync_seconds')} s sync); file-system space {b.get('fs_bytes_used_by_queue_files', 0) / 2**30:.2f} GiB, "
             f"{b.get('fs_inodes_used')} inodes; du {b.get('du_queue_kib', 0) / 2**20:.2f} GiB; "
             f"LMDB schedule {b.get('lmdb_bytes', [0, 0])[0] / 2**20:.1f} MiB apparent / "
             f"{b.get('lmdb_bytes', [0, 0])[1] / 2**20:.1f} MiB allocated", ""]
    lines.append("| stage | to status line s | to 'starting delivery' logged s | to first Maildir file s | VmHWM MiB | "
                 "drain msgs/s | stop (TERM) s | deliveries started after TERM | engine CPU s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    s1 = b.get("stage1")
    if s1:
        lines.append(f"| {s1['stage']} | - | (held) idle after {s1['seconds_until_idle']} s | - | "
                     f"{kb_mib(s1['memory']['max_vmhwm_kb'])} | - | {s1['stop']['stop_seconds']:.2f} | - | {s1['cpu_s_engine']} |")
    for k in ("stage2", "stage3"):
        s = b.get(k)
        if s:
            lines.append(f"| {s['stage']} | {s['seconds_to_status_line']} | {s['seconds_to_first_delivery']} | "
                         f"{s.get('seconds_to_first_maildir_file')} | "
                         f"{kb_mib(s['memory']['max_vmhwm_kb'])} | {s['drain_msgs_per_s']} | "
                         f"{s['stop']['stop_seconds']:.2f}{'' if s['stop'].get('term_only') else ' (needed holdlocal+HUP)'} | "
                         f"{s.get('deliveries_started_after_term')} | {s['cpu_s_engine']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# main

class Run:
    def __init__(self, args):
        os.makedirs(args.base, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="engine_bench.", dir=args.base)
        os.chmod(self.tmp, 0o755)
        self.bin = self.tmp + "/bin"
        os.makedirs(self.bin)
        TRASH.append(self.tmp + "/trash")
        os.makedirs(TRASH[0])
        for p in OUR_PROGRAMS:
            src = os.path.join(args.bin, p)
            if os.path.exists(src):
                shutil.copy2(src, self.bin + "/" + p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=DEFAULT_BIN, help="folder with our binaries (copied at start)")
    ap.add_argument("--base", default=DEFAULT_BASE, help="folder for the run's temp folder")
    ap.add_argument("--messages", type=int, default=10000, help="(A) messages per run; 0 skips (A)")
    ap.add_argument("--parallel", type=int, default=4, help="(A) parallel injecting clients")
    ap.add_argument("--size", type=int, default=2048, help="message size in bytes (A and B)")
    ap.add_argument("--rounds", type=int, default=1, help="(A) rounds; targets alternate")
    ap.add_argument("--targets", default="ours,postfix", help="(A) comma-separated: ours, postfix")
    ap.add_argument("--timeout", type=float, default=600, help="(A) seconds per target run")
    ap.add_argument("--stall", type=float, default=60,
                    help="(A) give up when injection is over and nothing was delivered for this many seconds")
    ap.add_argument("--postfix-local-concurrency", type=int, default=10,
                    help="(A) Postfix local_destination_concurrency_limit (stock 2; 10 = our concurrencylocal)")
    ap.add_argument("--restart-messages", type=int, default=1000000, help="(B) queue size; 0 skips (B)")
    ap.add_argument("--restart-observe", type=float, default=20, help="(B) seconds to run after the restart")
    ap.add_argument("--stage3-observe", type=float, default=5, help="(B) seconds to run in stage 3")
    ap.add_argument("--no-stage3", action="store_true", help="(B) skip the restart without schedule")
    ap.add_argument("--build-procs", type=int, default=len(os.sched_getaffinity(0)), help="(B) builder processes")
    ap.add_argument("--build-timeout", type=float, default=3600, help="(B) seconds to build the queue")
    ap.add_argument("--index-timeout", type=float, default=1800, help="(B) seconds for stage 1")
    ap.add_argument("--term-grace", type=float, default=60,
                    help="(B) seconds TERM may take before the harness holds local deliveries (holdlocal + HUP)")
    ap.add_argument("--cold", action="store_true", help="(B) drop the page cache before the restart")
    ap.add_argument("--wait-quiet", type=float, default=3600,
                    help="seconds to wait for builds/tests/other benchmarks to end before each measurement")
    ap.add_argument("--busy-retries", type=int, default=3,
                    help="(A) repeat a run when a build, test or other benchmark ran during it (at most this often)")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to wait after a mass deletion before measuring (default 360 on ext4 "
                         "without a journal, else 0)")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--keep", action="store_true", help="keep temp folders (debugging)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("engine_bench: must run as root (benchuser, Postfix, deliveries as benchuser)")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in ("ours", "postfix"):
            sys.exit(f"engine_bench: unknown target {t}")
    for p in ("qmail-send", "qmta-send", "qmail-queue", "qmail-inject", "queue-fix"):
        if not os.access(os.path.join(args.bin, p), os.X_OK):
            sys.exit(f"engine_bench: {args.bin}/{p} missing")

    interrupt_on_term()

    os.makedirs(args.base, exist_ok=True)
    import fcntl
    BASE[0] = args.base
    lockf = open(os.path.join(args.base, RUN_LOCK_NAME), "w")
    try:
        fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit("engine_bench: another engine_bench run holds " + lockf.name)
    MLOCK.append(MeasureLock(args.base))

    _, fstype, source, _ = mount_of(args.base, tidy=False)
    if args.settle is None:
        args.settle = 360.0 if fstype == "ext4" and ext4_journal(source) == "no" else 0.0
    SETTLE["seconds"] = args.settle
    SETTLE["since"] = os.stat(args.base).st_mtime   # a previous run's cleanup (as inject_bench does)
    if args.messages and "postfix" in targets:
        install_postfix(log, stop_system=True)   # no system instance: stop it if the package started one
    home = os.path.join(os.path.realpath(args.base), "engine_bench-home")
    pw = ensure_user(BENCH_USER, home, "/usr/sbin/nologin", BenchError)
    run = Run(args)
    out = {"machine": machine_info(args.base), "args": vars(args), "a_runs": [], "a_discarded": [], "a_summary": {}, "b": None}
    log(f"run folder {run.tmp}; machine {out['machine']['nproc']} CPUs, {out['machine']['memory_gib']} GiB, "
        f"{out['machine']['fs']}; load {out['machine']['loadavg_at_start']}")
    status = 0
    try:
        if args.messages > 0:
            classes = {"ours": OursTarget, "postfix": PostfixTarget}
            for rnd in range(1, args.rounds + 1):
                order = targets if rnd % 2 == 1 else list(reversed(targets))
                for t in order:
                    for attempt in range(args.busy_retries + 1):
                        log(f"(A) round {rnd}: {t}, {args.messages} messages, {args.parallel} clients"
                            + (f" (attempt {attempt + 1})" if attempt else ""))
                        busy = wait_quiet(args.wait_quiet)
                        try:
                            r = run_delivery(run, args, classes[t], pw, home, rnd)
                        except BenchError as e:
                            r = {"target": t, "round": rnd, "ok": False, "error": str(e)}
                        r["busy_at_start"] = busy
                        seen = r.get("memory", {}).get("foreign_activity_seen")
                        if seen and attempt < args.busy_retries:
                            log(f"    {t}: other work ran during the measurement ({seen}); discarded, "
                                f"{r.get('msgs_per_s')} msgs/s")
                            out["a_discarded"].append(r)
                            continue
                        break
                    if not r.get("ok"):
                        status = 1
                    out["a_runs"].append(r)
                    if r.get("delivered"):
                        log(f"    {t}: {r['delivered']}/{args.messages} delivered, {r['msgs_per_s']} msgs/s, "
                            f"e2e {r['e2e_seconds']} s, p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms, "
                            f"engine CPU {r['engine_cpu_ms_per_msg']} ms/msg, VmHWM "
                            f"{kb_mib(r['memory']['max_vmhwm_kb'])} MiB ({r['memory']['max_vmhwm_process']}), "
                            f"ok={r['ok']}")
                        if r["log"]["anomalies"]:
                            log(f"    {t} log anomalies: {r['log']['anomalies']}")
                    else:
                        log(f"    {t}: FAILED: {r.get('error')}")
                    if r.get("leftover_processes"):
                        log(f"    {t}: leftover processes killed: {r['leftover_processes']}")
            out["a_summary"] = summarize_a(out["a_runs"])
        if args.restart_messages > 0:
            log(f"(B) restart with {args.restart_messages} queued messages")
            busy = wait_quiet(args.wait_quiet)
            try:
                out["b"] = run_restart(run, args, pw, home)
                out["b"]["busy_at_start"] = busy
            except BenchError as e:
                out["b"] = {"ok": False, "error": str(e)}
                status = 1
                log(f"(B) FAILED: {e}")
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        status = 130
    finally:
        kill_workers(WORKERS)
        Engine.emergency_stop_all()
        if out["a_runs"] and not out["a_summary"]:
            out["a_summary"] = summarize_a(out["a_runs"])
        if not args.keep:
            rmtree(run.tmp)
            rmtree(home)
            # the folder's mtime tells the next benchmark when this cleanup
            # happened; writing the freed inode tables shortens the wait
            os.utime(args.base)
            os.sync()
        left = kill_referencing(run.tmp)
        if left:
            log(f"leftover processes (killed): {left}")
        out["leftover_processes_at_end"] = left
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    if out["a_runs"]:
        print()
        print(markdown_a(out["a_summary"], out["a_runs"]))
    if out["b"] and out["b"].get("ok"):
        print()
        print(markdown_b(out["b"]))
    return status


if __name__ == "__main__":
    sys.exit(main())
