#!/usr/bin/env python3
"""Benchmark harness for the delivery engine: ours vs Postfix (and any qmail).

One command for the standard suite (as root, from the repository root):

    python3 bench/harness.py --suite standard

The aims' suite, ours beside Postfix and classic qmail (built from notqmail
and installed under a prefix of its own; docs/benchmarks.md says how):

    python3 bench/harness.py --suite aims --targets ours,postfix,classic \
        --classic /var/qmail-classic --sink smtp-sink

It generates a workload (message count, size distribution, recipients per
message, local/remote mix, shares of temporary and permanent failures,
parallel injectors), drives each target through its own injection interface
(ours: qmail-inject -> qmail-queue; Postfix: its sendmail -> postdrop;
classic: its qmail-inject -> qmail-queue, with qmail-send started by the
harness; a "qmail-compatible" target: a given qmail-queue binary spoken to
directly, with its qmail-send already running),
waits for the deliveries (Maildir files; a scripted SMTP sink on 127.0.0.1 for
remote recipients) and measures injection rate, delivery throughput, latency
injection -> delivery, queue backlog over time, CPU per message, peak memory
per process, device flushes per message and the machine's raw fsync rate.
Everything runs on loopback, under a temp folder, bounded in time, and is
stopped and removed at the end. Python 3 standard library, plus matplotlib for
the chart (installed on first use: Debian's python3-matplotlib, or pip for a
Python that does not see Debian's packages); run as root.
"""

import argparse
import csv
import fcntl
import grp
import ipaddress
import json
import os
import pwd
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import (POSTFIX, POSTFIX_SENDMAIL, describe_machine, ensure_matplotlib, ensure_user, ext4_journal,  # noqa: E402
                    field_kb, install_postfix, interrupt_on_term, make_postfix_instance, mount_of, new_process_group,
                    pad_message, proc_table, process_tree, read_text, report_error, report_result, sigkill, write_all,
                    write_file)

REPO = os.path.dirname(HERE)
DEFAULT_BIN = os.path.join(REPO, ".build/release")
DEFAULT_BASE = os.path.join(REPO, ".build/bench-tmp")
SMTPD_PY = os.path.join(REPO, "Tests/RemoteDeliveryTests/Support/smtpd.py")
DOMAIN = "bench.local"
RDOMAIN = "remote.test"
USER = "benchharness"
SENDER = f"{USER}-bounce@{DOMAIN}"
NUSERS = 10
SPLIT = 23
SMTP_SINK = "/usr/sbin/smtp-sink"
CONCURRENCY_LOCAL = 10    # control/concurrencylocal for ours and classic (both programs' default);
CONCURRENCY_REMOTE = 20   # control/concurrencyremote; Postfix: --postfix-local-concurrency, 20 remote
OUR_PROGRAMS = ["qmail-send", "qmta-send", "slowq-send", "qmail-queue", "qmail-inject", "queue-fix",
                "qmail-local", "qmail-lspawn", "qmail-remote", "qmail-rspawn", "qmail-clean"]


class HarnessError(Exception):
    pass


def log(msg):
    sys.stderr.write(f"[harness {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def percentile(vals, p):
    """Percentile of `vals` by linear interpolation between the closest ranks; None when empty."""
    if not vals:
        return None
    s = sorted(vals)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ----------------------------------------------------------------------------
# safety

def check_loopback(host):
    """Only 127.0.0.0/8, ::1 and localhost are allowed; anything else raises."""
    h = (host or "").strip().strip("[]")
    if h.lower() == "localhost":
        return h
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        raise HarnessError(f"refusing non-loopback address {host!r}: only 127.0.0.0/8, ::1 and localhost are allowed")
    if not ip.is_loopback:
        raise HarnessError(f"refusing non-loopback address {host!r}: only 127.0.0.0/8, ::1 and localhost are allowed")
    return h


class Tracker:
    """Every process group the harness starts, and the Postfix instances."""

    def __init__(self):
        self.pgids = set()
        self.postfix_confs = set()
        self.root = None

    def killall(self):
        for conf in list(self.postfix_confs):
            try:
                subprocess.run([POSTFIX, "-c", conf, "stop"], capture_output=True, timeout=60)
            except Exception:  # noqa: BLE001
                pass
            self.postfix_confs.discard(conf)
        for pg in list(self.pgids):
            try:
                os.killpg(pg, signal.SIGKILL)
            except OSError:
                pass
            try:
                while os.waitpid(-pg, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
            self.pgids.discard(pg)

    def leftovers(self):
        """Processes whose cmdline, cwd or exe lies under the run folder."""
        out = []
        if not self.root:
            return out
        root = os.path.realpath(self.root)
        me = os.getpid()
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == me:
                continue
            hit = False
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if root.encode() in f.read():
                        hit = True
            except OSError:
                continue
            for link in ("cwd", "exe"):
                try:
                    if os.readlink(f"/proc/{d}/{link}").startswith(root):
                        hit = True
                except OSError:
                    pass
            if hit:
                st = read_text(f"/proc/{d}/stat")
                if " Z " in st[st.rfind(")"):st.rfind(")") + 4]:
                    continue
                out.append((int(d), st[st.find("(") + 1:st.rfind(")")]))
        return out


TRACK = Tracker()


def spawn(argv, env=None, cwd=None, stdout=None, stderr=None):
    out = open(stdout, "ab") if stdout else subprocess.DEVNULL
    err = open(stderr, "ab") if stderr else subprocess.DEVNULL
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                         start_new_session=True)
    TRACK.pgids.add(p.pid)
    return p


def stop_proc(p, sig=signal.SIGTERM, timeout=60):
    if p is None:
        return None
    try:
        os.kill(p.pid, sig)
    except OSError:
        pass
    rc = None
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    if rc is None:
        rc = p.wait(10)
    TRACK.pgids.discard(p.pid)
    return rc


# ----------------------------------------------------------------------------
# /proc sampling

def vmhwm_kb(pid):
    return field_kb(f"/proc/{pid}/status", "VmHWM:")


def io_syscw(pid):
    return field_kb(f"/proc/{pid}/io", "syscw:")


def tree_cpu(pids, table):
    """utime+stime+cutime+cstime in seconds over the given live processes."""
    hz = os.sysconf("SC_CLK_TCK")
    t = 0
    for p in pids:
        f = table[p][2]
        t += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return t / hz


def device_flushes(path):
    """Completed flush requests of the block device holding path (kernel >= 5.5), or None."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for cand in (f"/sys/dev/block/{dev}/stat", f"/sys/dev/block/{dev}/../stat"):
        f = read_text(cand).split()
        if len(f) >= 17:
            return int(f[15])
    return None


def raw_fsync_rate(folder, seconds=2.0):
    d = tempfile.mkdtemp(prefix="fsync.", dir=folder)
    data = b"x" * 2048
    n = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            p = f"{d}/f{n}"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.unlink(p)
            n += 1
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return n / (time.monotonic() - t0)


# ----------------------------------------------------------------------------
# workload

def parse_sizes(spec):
    """'2048' or '1024:5,10240:3,102400:1' (size:weight) -> [(size, weight)]."""
    out = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        s, _, w = part.partition(":")
        out.append((int(s), float(w or 1)))
    if not out or any(s <= 0 or w < 0 for s, w in out):
        raise HarnessError(f"bad --sizes {spec!r}")
    return out


CLASSES = ("local", "local_perm", "local_temp", "remote", "remote_perm", "remote_temp")


def make_workload(a):
    rng = random.Random(a.seed)
    sizes = parse_sizes(a.sizes)
    msgs = []
    for i in range(a.messages):
        size = rng.choices([s for s, _ in sizes], [w for _, w in sizes])[0]
        rcpts = []
        for j in range(a.rcpts):
            remote = rng.random() < a.remote_share
            x = rng.random()
            if remote:
                cls = "remote_perm" if x < a.remote_perm else "remote_temp" if x < a.remote_perm + a.remote_temp else "remote"
            else:
                cls = "local_perm" if x < a.local_perm else "local_temp" if x < a.local_perm + a.local_temp else "local"
            addr = {"local": f"{USER}-u{(i + j) % NUSERS}@{DOMAIN}",
                    "local_perm": f"nomailbox{i}x{j}@{DOMAIN}",
                    "local_temp": f"{USER}-tmp{j}@{DOMAIN}",
                    "remote": f"u{i}x{j}@{RDOMAIN}",
                    "remote_perm": f"perm{j}@{RDOMAIN}",
                    "remote_temp": f"temp{j}@{RDOMAIN}"}[cls]
            if any(r[0] == addr for r in rcpts):
                addr = addr.replace("@", f"d{j}@") if cls == "local" else addr
            rcpts.append((addr, cls))
        msgs.append({"i": i, "size": size, "rcpts": rcpts})
    return msgs


def make_message(bid, rcpts, t, size):
    head = (f"From: {SENDER}\nTo: {', '.join(r for r, _ in rcpts)}\nSubject: harness {bid}\n"
            f"X-Bench-Id: {bid}\nX-Bench-Injected: {t:.6f}\n\n").encode()
    return pad_message(head, size)


def make_home(path, pw, forward=None):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    md = os.path.join(path, "Maildir")
    for d in ("", "/new", "/cur", "/tmp"):
        os.makedirs(md + d, exist_ok=True)
        os.chown(md + d, pw.pw_uid, pw.pw_gid)
        os.chmod(md + d, 0o700)
    return md


def own(path, pw, mode=0o644):
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)


# ----------------------------------------------------------------------------
# SMTP sink (scripted: per-message files with arrival time; or Postfix smtp-sink)

class Sink:
    def __init__(self, folder, host, rcpts, kind, lifetime):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        self.kind = kind
        self.host = check_loopback(host)
        bind = "127.0.0.1" if self.host == "localhost" else self.host
        if kind == "smtp-sink":
            import socket
            s = socket.socket()
            s.bind((bind, 0))
            self.port = s.getsockname()[1]
            s.close()
            os.chmod(os.path.dirname(folder), 0o755)  # smtp-sink writes as nobody
            nobody = pwd.getpwnam("nobody")
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
            self.proc = spawn([SMTP_SINK, "-u", "nobody", "-d", folder + "/%H%M%S.", "-h", "sink.test",
                               f"{bind}:{self.port}", "256"], stderr=folder + "/../sink.err")
            time.sleep(0.3)
        else:
            argv = [sys.executable, SMTPD_PY, "--dir", folder, "--lifetime", str(int(lifetime)),
                    "--rcpt-default", "250"]
            for j in range(rcpts):
                argv += ["--rcpt", f"perm{j}@{RDOMAIN}=550", "--rcpt", f"temp{j}@{RDOMAIN}=451"]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(folder + "/../sink.err", "ab"),
                                         start_new_session=True)
            TRACK.pgids.add(self.proc.pid)
            self.port = int(self.proc.stdout.readline().strip() or 0)
            if not self.port:
                raise HarnessError("the SMTP sink did not start")
        self.seen = set()

    def poll(self, now_cb):
        """-> list of (bench_id, n_rcpts, arrival_time) for new messages."""
        out = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for n in names:
            if n in self.seen:
                continue
            if self.kind == "scripted":
                if not n.endswith(".time"):
                    continue
                base = os.path.join(self.dir, n[:-5])
                t = read_text(base + ".time").strip()
                if not t:
                    continue
                env = read_text(base + ".env").splitlines()
                nr = max(0, len(env) - 2)
                head = read_text(base + ".eml")[:8192]
                arrival = float(t)
            else:
                p = os.path.join(self.dir, n)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                if time.time() - st.st_mtime < 0.2:
                    continue
                head = read_text(p)[:16384]
                nr = head.count("\nRCPT TO:") or head.count("RCPT") or 1
                arrival = st.st_mtime
            self.seen.add(n)
            bid = None
            k = head.find("X-Bench-Id: ")
            if k >= 0:
                bid = head[k + 12:head.find("\n", k)].strip()
            out.append((bid, nr, arrival))
        return out

    def stop(self):
        stop_proc(self.proc)


# ----------------------------------------------------------------------------
# targets

def assign_lines(a, pw, homes):
    """users/assign (qmail-users(5)) for the workload's local recipients; the same for ours and classic."""
    u, g = pw.pw_uid, pw.pw_gid
    assign = [f"={USER}-u{k}:{USER}:{u}:{g}:{homes['main']}:::\n" for k in range(NUSERS)]
    assign += [f"={USER}-u{k}d{j}:{USER}:{u}:{g}:{homes['main']}:::\n" for k in range(NUSERS) for j in range(a.rcpts)]
    assign += [f"={USER}-tmp{j}:{USER}:{u}:{g}:{homes['temp']}:::\n" for j in range(a.rcpts)]
    assign.append(f"={USER}-bounce:{USER}:{u}:{g}:{homes['bounce']}:::\n")
    # catch-all like ~alias with no .qmail-default: unknown local parts bounce (no mailbox)
    assign.append(f"+:{USER}:{u}:{g}:{homes['alias']}:-::\n")
    return "".join(assign) + ".\n"


class OursTarget:
    kind = "ours"

    def __init__(self, run, a, pw, engine="qmail-send", name=None, bin=None, one_process=False):
        # ours-1p: the same build in one root process (QMAIL_ONE_PROCESS=1) instead of
        # qmail's privilege split; ours-prev: another build (--prev-bin), as it starts.
        self.name = name or ("ours" if engine == "qmail-send" else f"ours-{engine}")
        self.engine = engine
        self.a = a
        self.bin = bin or run.bin
        self.one_process = one_process
        if not os.access(f"{self.bin}/{engine}", os.X_OK):
            raise HarnessError(f"{engine} not found in {a.bin}")
        self.dir = tempfile.mkdtemp(prefix=f"{self.name}.", dir=run.tmp)
        os.chmod(self.dir, 0o755)
        self.homes = run.homes(self.dir, pw)
        c = self.dir + "/control"
        os.makedirs(c)
        os.makedirs(self.dir + "/users")
        write_file(c + "/me", DOMAIN + "\n")
        write_file(c + "/locals", DOMAIN + "\n")
        if run.sink:
            write_file(c + "/smtproutes", f":{run.sink_host_for_routes}:{run.sink.port}\n")
        write_file(c + "/concurrencylocal", f"{CONCURRENCY_LOCAL}\n")
        write_file(c + "/concurrencyremote", f"{CONCURRENCY_REMOTE}\n")
        write_file(self.dir + "/users/assign", assign_lines(a, pw, self.homes))
        write_file(self.homes["temp"] + "/.qmail", "|exit 111\n")
        own(self.homes["temp"] + "/.qmail", pw)
        self.queue = self.dir + "/queue"
        r = subprocess.run([self.bin + "/queue-fix", self.queue], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise HarnessError(f"queue-fix: {r.stdout}{r.stderr}")
        self.env = {"PATH": "/usr/bin:/bin", "QMAILHOME": self.dir, "QUEUEDIR": self.queue,
                    "CONTROLDIR": c, "LANG": "C"}
        if self.one_process:
            self.env["QMAIL_ONE_PROCESS"] = "1"
        self.log = self.dir + "/send.log"
        self.proc = None

    def hold(self, on):
        p = self.dir + "/control/holdlocal"
        q = self.dir + "/control/holdremote"
        if on:
            write_file(p, "1\n")
            write_file(q, "1\n")
        else:
            for x in (p, q):
                try:
                    os.unlink(x)
                except OSError:
                    pass
            if self.proc:
                os.kill(self.proc.pid, signal.SIGHUP)
                time.sleep(0.2)
                os.kill(self.proc.pid, signal.SIGALRM)

    def start(self):
        argv = [f"{self.bin}/{self.engine}"]
        if self.engine == "qmta-send":
            argv.append("-d")
        argv.append("./Maildir/")
        self.proc = spawn(argv, env=self.env, cwd=self.dir, stdout=self.log, stderr=self.dir + "/send.stderr")
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise HarnessError(f"{self.engine} exited at start: {read_text(self.dir + '/send.stderr')[:300]}")

    def roots(self):
        return [self.proc.pid] if self.proc else []

    def client(self, rcpts):
        return [self.bin + "/qmail-inject", "-f", SENDER] + rcpts, None

    def backlog(self):
        todo = len(os.listdir(self.queue + "/todo"))
        info = sum(len(os.listdir(f"{self.queue}/info/{s}")) for s in range(SPLIT))
        return todo, info

    def stop(self):
        rc = stop_proc(self.proc, timeout=120)
        self.proc = None
        return rc


class QmailCompatTarget(OursTarget):
    """An installed qmail (classic, netqmail, indimail) given its qmail-queue, queue dir and log file.
    Messages are given to qmail-queue directly (fd 0 message, fd 1 envelope); the installed
    qmail-send must already run and deliver benchharness-*@<its locals> to ~benchharness/Maildir."""
    kind = "qmail-compat"

    def __init__(self, run, a, pw):
        self.name = "qmail-compat"
        self.a = a
        for x in (a.qmail_queue, a.qmail_queue_dir):
            if not x or not os.path.exists(x):
                raise HarnessError("qmail-compat needs --qmail-queue PATH and --qmail-queue-dir DIR")
        self.dir = tempfile.mkdtemp(prefix="qmail-compat.", dir=run.tmp)
        self.homes = run.homes(self.dir, pw)
        self.queue = a.qmail_queue_dir
        self.log = a.qmail_log
        self.env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
        self.proc = None

    def hold(self, on):
        pass

    def start(self):
        pass

    def client(self, rcpts):
        env = b"F" + SENDER.encode() + b"\0" + b"".join(b"T" + r.encode() + b"\0" for r in rcpts) + b"\0"
        return [self.a.qmail_queue], env

    def backlog(self):
        try:
            todo = sum(len(f) for _, _, f in os.walk(self.queue + "/todo"))
            info = sum(len(f) for _, _, f in os.walk(self.queue + "/info"))
            return todo, info
        except OSError:
            return 0, 0

    def stop(self):
        return None


CLASSIC_USERS = [("alias", "nofiles", "alias"), ("qmaild", "nofiles", ""), ("qmaill", "nofiles", ""),
                 ("qmailp", "nofiles", ""), ("qmailq", "qmail", ""), ("qmailr", "qmail", ""), ("qmails", "qmail", "")]
CLASSIC_OWNED = ("control", "users", "queue")   # the prefix's folders the classic target replaces for a run


def ensure_classic_users(prefix):
    """The groups nofiles and qmail and the seven qmail users, created (system accounts, no login,
    home PREFIX or PREFIX/alias) if missing. -> name -> pwd entry."""
    for g in ("nofiles", "qmail"):
        try:
            grp.getgrnam(g)
        except KeyError:
            subprocess.run(["groupadd", "-r", g], check=True, capture_output=True)
    out = {}
    for name, group, sub in CLASSIC_USERS:
        try:
            out[name] = pwd.getpwnam(name)
        except KeyError:
            home = os.path.join(prefix, sub) if sub else prefix
            subprocess.run(["useradd", "-r", "-M", "-g", group, "-d", home, "-s", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
            out[name] = pwd.getpwnam(name)
    return out


def make_classic_queue(q, split, users):
    """A fresh, empty queue in classic qmail's layout, owners and modes (as its installer makes it)."""
    gq = grp.getgrnam("qmail").gr_gid
    uq, us, ur = users["qmailq"].pw_uid, users["qmails"].pw_uid, users["qmailr"].pw_uid

    def d(path, uid, mode):
        os.makedirs(path, exist_ok=True)
        os.chown(path, uid, gq)
        os.chmod(path, mode)

    d(q, uq, 0o750)
    for sub, uid, mode in (("pid", uq, 0o700), ("intd", uq, 0o700), ("todo", uq, 0o750), ("bounce", us, 0o700),
                           ("lock", uq, 0o750)):
        d(f"{q}/{sub}", uid, mode)
    for sub, uid, mode in (("mess", uq, 0o750), ("info", us, 0o700), ("local", us, 0o700), ("remote", us, 0o700)):
        d(f"{q}/{sub}", uid, mode)
        for k in range(split):
            d(f"{q}/{sub}/{k}", uid, mode)
    for name, data, uid, mode in (("tcpto", b"\0" * 1024, ur, 0o644), ("sendmutex", b"", us, 0o600)):
        write_file(f"{q}/lock/{name}", data, mode)
        os.chown(f"{q}/lock/{name}", uid, gq)
    os.mkfifo(f"{q}/lock/trigger")
    os.chown(f"{q}/lock/trigger", us, gq)
    os.chmod(f"{q}/lock/trigger", 0o622)


class ClassicTarget:
    """Classic qmail (built from notqmail with conf-qmail = PREFIX, installed with its users), set up and
    started by the harness: its own control files, users/assign (compiled with qmail-newu) and a fresh queue
    for the run, all in the run folder, reached through symbolic links PREFIX/control, PREFIX/users and
    PREFIX/queue (classic qmail has its home compiled in; the installed folders are moved aside to
    NAME.install for the run and put back at the end). Started as `qmail-start ./Maildir/` (qmail-send,
    qmail-lspawn, qmail-rspawn, qmail-clean) with its log on a file; injected with its qmail-inject, one per
    message. Classic qmail has no hold switch: a held queue is one injected while qmail-send is not
    running, then released by starting it."""
    kind = "classic"
    name = "classic"

    def __init__(self, run, a, pw):
        self.a = a
        self.prefix = os.path.realpath(a.classic or "")
        self.bin = self.prefix + "/bin"
        for p in ("qmail-start", "qmail-send", "qmail-inject", "qmail-newu", "qmail-queue"):
            if not os.access(f"{self.bin}/{p}", os.X_OK):
                raise HarnessError(f"classic needs --classic PREFIX, a classic qmail installation: "
                                   f"{self.bin}/{p} not found")
        for pid, _ in self.running():
            raise HarnessError(f"a qmail-send of {self.prefix} is already running (pid {pid}): stop it first")
        self.users = ensure_classic_users(self.prefix)
        self.proc = None
        self.held = False
        self.wanted = False     # start() was called (while held: qmail-send starts at the release)
        self.lockf = open(self.prefix + "/.harness.lock", "w")
        try:
            fcntl.flock(self.lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lockf.close()
            raise HarnessError(f"{self.prefix} is in use by another harness run")
        try:
            self.setup(run, a, pw)
        except BaseException:
            self.give_back()
            raise

    def running(self):
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.readlink(f"/proc/{d}/exe") == self.bin + "/qmail-send":
                        out.append((int(d), "qmail-send"))
                except OSError:
                    pass
        return out

    def setup(self, run, a, pw):
        self.dir = tempfile.mkdtemp(prefix="classic.", dir=run.tmp)
        os.chmod(self.dir, 0o755)
        self.homes = run.homes(self.dir, pw)
        gq = grp.getgrnam("qmail").gr_gid
        c = self.dir + "/control"
        os.makedirs(c)
        os.makedirs(self.dir + "/users")
        for d in (c, self.dir + "/users"):
            os.chown(d, 0, gq)
            os.chmod(d, 0o755)
        write_file(c + "/me", DOMAIN + "\n")
        write_file(c + "/locals", DOMAIN + "\n")
        write_file(c + "/rcpthosts", DOMAIN + "\n")
        write_file(c + "/concurrencylocal", f"{CONCURRENCY_LOCAL}\n")
        write_file(c + "/concurrencyremote", f"{CONCURRENCY_REMOTE}\n")
        if run.sink:
            write_file(c + "/smtproutes", f":{run.sink_host_for_routes}:{run.sink.port}\n")
        write_file(self.dir + "/users/assign", assign_lines(a, pw, self.homes))
        write_file(self.homes["temp"] + "/.qmail", "|exit 111\n")
        own(self.homes["temp"] + "/.qmail", pw)
        # the split compiled into this build: as many mess/ folders as its installer made
        inst = self.prefix + "/queue.install/mess" if os.path.isdir(self.prefix + "/queue.install") \
            else self.prefix + "/queue/mess"
        try:
            split = len([x for x in os.listdir(inst) if x.isdigit()]) or SPLIT
        except OSError:
            split = SPLIT
        make_classic_queue(self.dir + "/queue", split, self.users)
        self.queue = self.dir + "/queue"
        for d in CLASSIC_OWNED:
            p, b = f"{self.prefix}/{d}", f"{self.prefix}/{d}.install"
            if os.path.islink(p):
                os.unlink(p)        # left by a harness run that was killed
            elif os.path.isdir(p):
                if os.path.lexists(b):
                    raise HarnessError(f"both {p} and {b} exist: move one of them away")
                os.rename(p, b)
            os.symlink(f"{self.dir}/{d}", p)
        r = subprocess.run([self.bin + "/qmail-newu"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise HarnessError(f"qmail-newu: {r.stdout}{r.stderr}")
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "LANG": "C"}
        self.log = self.dir + "/send.log"

    def give_back(self):
        """Removes the links and puts the installed control, users and queue folders back."""
        for d in CLASSIC_OWNED:
            p, b = f"{self.prefix}/{d}", f"{self.prefix}/{d}.install"
            if os.path.islink(p):
                os.unlink(p)
            if os.path.isdir(b) and not os.path.lexists(p):
                os.rename(b, p)
        if self.lockf:
            self.lockf.close()      # releases the flock
            self.lockf = None

    def hold(self, on):
        self.held = on
        if not on and self.proc is None and self.wanted:
            self.spawn()

    def spawn(self):
        self.proc = spawn([self.bin + "/qmail-start", "./Maildir/"], env=self.env, cwd=self.dir, stdout=self.log,
                          stderr=self.dir + "/send.stderr")

    def start(self):
        self.wanted = True
        if self.held:
            return                  # started by hold(False): the queue drain
        self.spawn()
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise HarnessError(f"qmail-start exited at start: {read_text(self.dir + '/send.stderr')[:300]}"
                               f"{read_text(self.log)[:300]}")

    def roots(self):
        return [self.proc.pid] if self.proc else []

    def client(self, rcpts):
        return [self.bin + "/qmail-inject", "-f", SENDER] + rcpts, None

    def backlog(self):
        def cnt(sub):
            return sum(len(f) for _, _, f in os.walk(f"{self.queue}/{sub}"))
        return cnt("todo"), cnt("info")

    def stop(self):
        try:
            rc = stop_proc(self.proc, timeout=120)   # TERM: qmail-send finishes the deliveries in progress
            self.proc = None
            return rc
        finally:
            self.give_back()


class PostfixTarget:
    kind = "postfix"
    name = "postfix"

    def __init__(self, run, a, pw):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="postfix.", dir=run.tmp)
        os.chmod(self.dir, 0o755)
        self.homes = run.homes(self.dir, pw)
        relay = f"[{run.sink_host_for_routes}]:{run.sink.port}" if run.sink else ""
        self.conf, self.queue, self.log = make_postfix_instance(
            self.dir, DOMAIN, a.postfix_local_concurrency,
            relay_lines=f"relayhost = {relay}\nsmtp_tls_security_level = none\nsmtp_dns_support_level = disabled\n",
            extra_lines="default_destination_concurrency_limit = 20\n")
        for j in range(a.rcpts):
            p = f"{self.homes['main']}/.forward-tmp{j}"
            write_file(p, '"|exit 75"\n')
            own(p, pw)
        p = f"{self.homes['main']}/.forward-bounce"
        write_file(p, self.homes["bounce"] + "/Maildir/\n")
        own(p, pw)
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        r = subprocess.run([POSTFIX, "-c", self.conf, "check"], capture_output=True, text=True, timeout=120, env=self.env)
        if r.returncode != 0:
            raise HarnessError(f"postfix check: {r.stdout}{r.stderr}{read_text(self.log)}")
        self.master = None

    def postconf(self, kv):
        subprocess.run(["/usr/sbin/postconf", "-c", self.conf, "-e", kv], capture_output=True, timeout=60, env=self.env)

    def hold(self, on):
        self.postconf("defer_transports = local, smtp, relay" if on else "defer_transports =")
        if not on:
            subprocess.run([POSTFIX, "-c", self.conf, "reload"], capture_output=True, timeout=60, env=self.env)
            time.sleep(0.5)
            subprocess.run(["/usr/sbin/postqueue", "-c", self.conf, "-f"], capture_output=True, timeout=60, env=self.env)

    def start(self):
        TRACK.postfix_confs.add(self.conf)
        r = subprocess.run([POSTFIX, "-c", self.conf, "start"], capture_output=True, text=True, timeout=120, env=self.env)
        if r.returncode != 0:
            raise HarnessError(f"postfix start: {r.stdout}{r.stderr}")
        for _ in range(100):
            t = read_text(self.queue + "/pid/master.pid").strip()
            if t:
                self.master = int(t)
                return
            time.sleep(0.1)
        raise HarnessError("postfix master did not start")

    def roots(self):
        return [self.master] if self.master else []

    def client(self, rcpts):
        return [POSTFIX_SENDMAIL, "-C", self.conf, "-f", SENDER, "-i"] + rcpts, None

    def backlog(self):
        def cnt(sub):
            return sum(len(f) for _, _, f in os.walk(f"{self.queue}/{sub}"))
        return cnt("maildrop") + cnt("incoming"), cnt("active") + cnt("deferred")

    def stop(self):
        subprocess.run([POSTFIX, "-c", self.conf, "stop"], capture_output=True, timeout=120, env=self.env)
        TRACK.postfix_confs.discard(self.conf)
        for _ in range(100):
            if self.master is None or not os.path.exists(f"/proc/{self.master}"):
                break
            time.sleep(0.1)
        self.master = None
        return 0


# ----------------------------------------------------------------------------
# injectors (forked; each its own process group)

def injector(wid, msgs, argv_fn, env, tag, go_r, result_path, deadline):
    code = 0
    new_process_group()
    try:
        nul = os.open(os.devnull, os.O_RDWR)
        errfd = os.open(result_path + ".stderr", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.read(go_r, 1)
        recs = []
        for m in msgs:
            if time.time() > deadline:
                break
            rc_list = [r for r, _ in m["rcpts"]]
            argv, envelope = argv_fn(rc_list)
            t0 = time.time()
            data = make_message(f"{tag}-{m['i']}", m["rcpts"], t0, m["size"])
            r, w = os.pipe()
            fa = [(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, errfd, 2)]
            if envelope is not None:
                er, ew = os.pipe()
                fa.append((os.POSIX_SPAWN_DUP2, er, 1))
            else:
                fa.append((os.POSIX_SPAWN_DUP2, nul, 1))
            pid = os.posix_spawn(argv[0], argv, env, file_actions=fa, setsigdef=(signal.SIGPIPE,))
            os.close(r)
            try:
                write_all(w, data)
            except BrokenPipeError:
                pass
            os.close(w)
            if envelope is not None:
                os.close(er)
                try:
                    os.write(ew, envelope)
                except BrokenPipeError:
                    pass
                os.close(ew)
            _, st = os.waitpid(pid, 0)
            recs.append((m["i"], t0, time.time(), os.waitstatus_to_exitcode(st)))
        tm = os.times()
        report_result(result_path, {"recs": recs, "cpu_clients": tm.children_user + tm.children_system,
                                    "cpu_self": tm.user + tm.system})
    except BaseException as e:  # noqa: BLE001
        code = 1
        report_error(result_path, e)
    os._exit(code)


# ----------------------------------------------------------------------------
# one run

class Run:
    def __init__(self, a):
        os.makedirs(a.base, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="harness.", dir=a.base)
        os.chmod(self.tmp, 0o755)
        # ext4 without a journal will not reuse an inode freed in the last minute (six while
        # its inode-table block is dirty) and walks past each such inode on every allocation:
        # a run whose files land where the previous run's Maildirs were just freed pays up to
        # 0.9 ms per new file (docs/benchmarks.md, Method, "Fresh block groups"). Folders made in a
        # folder marked +T ("top of a directory hierarchy") are each placed in a little used
        # block group chosen from a hash of their name, so with the run folder marked +T and
        # names used once (homes(): home.PID.N) no run starts among freed inodes. Where +T
        # cannot be set, the harness instead syncs and waits --settle seconds after a cleanup.
        self.spread = subprocess.run(["chattr", "+T", self.tmp], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL).returncode == 0
        self.settle = a.settle
        if self.settle is None:
            _, fstype, source, _ = mount_of(self.tmp)
            no_journal = fstype == "ext4" and ext4_journal(source) == "no"
            self.settle = 65.0 if no_journal and not self.spread else 0.0
        self.home_runs = 0   # homes() names each run's homes home.PID.<n>
        TRACK.root = self.tmp
        self.bin = self.tmp + "/bin"
        os.makedirs(self.bin)
        for p in OUR_PROGRAMS:
            src = os.path.join(a.bin, p)
            if os.path.exists(src):
                shutil.copy2(src, self.bin + "/" + p)
        self.notes = []
        if not os.path.exists(self.bin + "/qmail-remote"):
            # this release build's qmail-send runs qmail-remote for remote deliveries
            for cand in (a.qmail_remote, os.path.join(REPO, ".build/debug/qmail-remote")):
                if cand and os.access(cand, os.X_OK):
                    shutil.copy2(cand, self.bin + "/qmail-remote")
                    self.notes.append(f"qmail-remote taken from {cand} (not in {a.bin})")
                    break
        self.sink = None
        self.sink_host_for_routes = "127.0.0.1"

    def homes(self, target_dir, pw):
        base = self.tmp + "/home"
        h = {"main": base, "temp": base + "-temp", "bounce": base + "-bounce", "alias": base + "-alias"}
        deleted = 0
        for p in h.values():
            if os.path.islink(p):
                # The previous run's homes stay until the whole run folder is removed at the
                # end: deleting 10,000 Maildir files between runs meant 10,000 discards (the file
                # system is mounted with `discard`) just before the next run started injecting.
                os.unlink(p)
            elif os.path.exists(p):
                deleted += sum(len(files) for _, _, files in os.walk(p))
                shutil.rmtree(p)
        # Each run's homes get folder names of their own (the fixed paths are symbolic
        # links to them): ext4 places a folder made under a +T folder by a hash of its
        # name, so a reused name would land where the previous run's Maildirs were freed.
        self.home_runs += 1
        for p in h.values():
            real = f"{p}.{os.getpid()}.{self.home_runs}" if self.spread else p
            make_home(real, pw)
            if real != p:
                os.symlink(real, p)
        if deleted >= 1000 and self.settle > 0:
            os.sync()
            log(f"  {deleted} files of the previous run deleted: waiting {self.settle:g} s for the file system (--settle)")
            time.sleep(self.settle)
        return h


def scan_maildir(md, seen, out, tagpfx):
    d = md + "/new"
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        if n in seen:
            continue
        p = f"{d}/{n}"
        try:
            st = os.stat(p)
            with open(p, "rb") as f:
                head = f.read(8192).decode("latin-1")
        except OSError:
            continue
        seen.add(n)
        k = head.find("X-Bench-Id: ")
        bid = head[k + 12:head.find("\n", k)].strip() if k >= 0 else None
        out.append((bid, 1, st.st_mtime, n))


def run_one(run, a, make_target, pw, msgs, rnd, hold=False):
    tag = f"r{rnd}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    rundir = tempfile.mkdtemp(prefix=f"r{rnd}.", dir=run.tmp)
    need_sink = any(c.startswith("remote") for m in msgs for _, c in m["rcpts"])
    if need_sink:
        run.sink = Sink(rundir + "/sink", a.smtp_host, a.rcpts, a.sink, a.timeout + 60)
        run.sink_host_for_routes = "127.0.0.1" if a.smtp_host == "localhost" else a.smtp_host
    else:
        run.sink = None
    target = make_target()
    res = {"target": target.name, "round": rnd, "messages": len(msgs), "parallel": a.parallel, "ok": False,
           "hold_during_injection": hold}
    expect_local = sum(1 for m in msgs for _, c in m["rcpts"] if c == "local")
    expect_remote = sum(1 for m in msgs for _, c in m["rcpts"] if c == "remote")
    res["expected"] = {"local": expect_local, "remote": expect_remote}
    pids = []
    series = []
    deliveries = []  # (bid, n, time)
    try:
        res["raw_fsync_per_s"] = round(raw_fsync_rate(run.tmp, a.fsync_seconds), 1)
        if hold:
            target.hold(True)
        target.start()
        deadline = time.time() + a.timeout
        go_r, go_w = os.pipe()
        shares = [msgs[w::a.parallel] for w in range(a.parallel)]
        for w in range(a.parallel):
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                injector(w, shares[w], target.client, target.env, tag, go_r, f"{rundir}/inj{w}.json", deadline)
            pids.append(pid)
            TRACK.pgids.add(pid)
        os.close(go_r)
        fl0 = device_flushes(run.tmp)
        t_go = time.time()
        os.write(go_w, b"g" * a.parallel)
        os.close(go_w)
        seen = set()
        injected = 0
        hwm = {}
        last_sample = 0
        inj_done_at = None
        released = not hold
        released_at = t_go if not hold else None
        cpu_engine = 0.0
        syscw = 0
        last_progress_n, last_progress_t = 0, t_go
        done_local = done_remote = 0  # kept as running sums: the loop must not cost O(deliveries) per turn
        while True:
            now = time.time()
            new = []
            scan_maildir(target.homes["main"] + "/Maildir", seen, new, tag)
            for bid, n, t, _ in new:
                deliveries.append((bid, n, t, "local"))
                if bid and bid.startswith(tag):
                    done_local += n
            if run.sink:
                for bid, n, t in run.sink.poll(None):
                    deliveries.append((bid, n, t, "remote"))
                    if bid and bid.startswith(tag):
                        done_remote += n
            alive = [p for p in pids if os.waitpid(p, os.WNOHANG) == (0, 0)]
            for p in pids:
                if p not in alive:
                    TRACK.pgids.discard(p)
            pids = alive
            force = False
            if not pids and inj_done_at is None:
                inj_done_at = now
                force = True  # sample the backlog at the end of injection (before a held queue is released)
            if force or now - last_sample >= a.sample_interval or (inj_done_at and done_local >= expect_local and done_remote >= expect_remote):
                last_sample = now
                todo, queued = target.backlog()
                table = proc_table()
                procs = process_tree(target.roots(), table)
                for p in procs:
                    name = table[p][1]
                    hwm[name] = max(hwm.get(name, 0), vmhwm_kb(p))
                if procs:
                    cpu_engine = max(cpu_engine, tree_cpu(procs, table))
                    syscw = max(syscw, sum(io_syscw(p) for p in procs))
                delivered = done_local + done_remote
                series.append({"t": round(now - t_go, 3), "delivered": delivered, "todo": todo, "queued": queued})
                # progress on stderr
                rate = (delivered - last_progress_n) / max(1e-6, now - last_progress_t)
                last_progress_n, last_progress_t = delivered, now
                total = expect_local + expect_remote
                left = (total - delivered) / rate if rate > 0 else float("inf")
                if not a.quiet:
                    log(f"  {target.name} r{rnd}: injectors {'done' if inj_done_at else f'{len(pids)} running'}, "
                        f"delivered {delivered}/{total}, {rate:.0f}/s, todo {todo}, queued {queued}, "
                        f"left ~{left:.0f} s, timeout in {deadline - now:.0f} s")
            if inj_done_at and not released:
                released_at = time.time()
                target.hold(False)
                released = True
            if inj_done_at and done_local >= expect_local and done_remote >= expect_remote:
                res["ok"] = True
                break
            if now > deadline:
                res["error"] = f"timeout after {a.timeout} s"
                break
            if inj_done_at and series and now - inj_done_at > a.stall:
                recent = [s for s in series if s["t"] >= now - t_go - a.stall]
                if recent and recent[0]["delivered"] == recent[-1]["delivered"]:
                    res["error"] = f"stalled: nothing delivered for {a.stall} s"
                    break
            # Delivery times come from the files themselves (mtime, or the sink's arrival
            # stamp), so this wait changes no result; polling more often only costs CPU that
            # the measured system needs (listing a Maildir of 10,000 names 20 times a second
            # took a tenth of the machine).
            time.sleep(0.25)
        t_end = time.time()
        fl1 = device_flushes(run.tmp)
        # final CPU sample of the live tree, just before stopping
        table = proc_table()
        procs = process_tree(target.roots(), table)
        if procs:
            cpu_engine = max(cpu_engine, tree_cpu(procs, table))
            syscw = max(syscw, sum(io_syscw(p) for p in procs))
        # bounces (informational)
        bseen, bnew = set(), []
        scan_maildir(target.homes["bounce"] + "/Maildir", bseen, bnew, tag)
        res["bounces_received"] = len(bnew)
    finally:
        for p in pids:
            try:
                os.killpg(p, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(p, 0)
            except ChildProcessError:
                pass
            TRACK.pgids.discard(p)
        try:
            res["engine_exit"] = target.stop()
        except Exception as e:  # noqa: BLE001
            res["stop_error"] = str(e)
        if run.sink:
            run.sink.stop()
    # injection records
    recs, cpu_clients, inj_err = [], 0.0, []
    for w in range(a.parallel):
        p = f"{rundir}/inj{w}.json"
        if os.path.exists(p):
            j = json.load(open(p))
            recs += j["recs"]
            cpu_clients += j["cpu_clients"] + j["cpu_self"]
        elif os.path.exists(p + ".err"):
            inj_err.append(read_text(p + ".err"))
        e = read_text(p + ".stderr").strip()
        if e:
            inj_err.append(e[:300])
    recs.sort()
    inj_t = {f"{tag}-{i}": t0 for i, t0, _, _ in recs}
    failed = [r for r in recs if r[3] != 0]
    lat = []
    per_msg = {}
    for bid, n, t, kind in deliveries:
        if bid in inj_t:
            lat += [t - inj_t[bid]] * n
            per_msg.setdefault(bid, []).append([round(t, 6), n, kind])
    n = len(recs)
    first_inj = min((r[1] for r in recs), default=t_go)
    last_inj = max((r[2] for r in recs), default=t_go)
    last_del = max((d[2] for d in deliveries if d[0] in inj_t), default=None)
    delivered = len(lat)
    res.update({
        "tag": tag, "injected": n - len(failed), "injection_failures": len(failed),
        "injection_errors": inj_err[:5],
        "injection_seconds": round(last_inj - first_inj, 3),
        "injection_rate": round(n / max(1e-9, last_inj - first_inj), 1),
        "delivered": delivered,
        "e2e_seconds": round((last_del - first_inj), 3) if last_del else None,
        "throughput": round(delivered / max(1e-9, last_del - first_inj), 1) if last_del else 0,
        # burst: the queue drain alone, from the release of the held queue to the last delivery
        "drain_rate": (round(delivered / max(1e-9, last_del - released_at), 1)
                       if hold and last_del and released_at else None),
        "latency_ms": {k: (round(percentile(lat, q) * 1000, 1) if lat else None)
                       for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "engine_cpu_s": round(cpu_engine, 3),
        "engine_cpu_ms_per_msg": round(cpu_engine * 1000 / max(1, n), 3),
        "client_cpu_ms_per_msg": round(cpu_clients * 1000 / max(1, n), 3),
        "vmhwm_kb": hwm,
        "max_vmhwm_kb": max(hwm.values(), default=0),
        "engine_syscw_per_msg": round(syscw / max(1, n), 2),
        "fsyncs_per_msg": "n/a",
        "device_flushes_per_msg": round((fl1 - fl0) / max(1, n), 2) if fl0 is not None and fl1 is not None else "n/a",
        "released_at_s": round(released_at - t_go, 3) if hold and released_at else None,
        "max_todo": max((s["todo"] for s in series), default=0),
        "max_queued": max((s["queued"] for s in series), default=0),
        "series": series,
        "maildir": target.homes["main"] + "/Maildir",
        "per_message": [{"id": f"{tag}-{i}", "inject_start": round(t0, 6), "inject_end": round(t1, 6), "rc": rc,
                         "deliveries": per_msg.get(f"{tag}-{i}", [])} for i, t0, t1, rc in recs],
        "log": getattr(target, "log", None),
    })
    return res


# ----------------------------------------------------------------------------
# restart scenario

def build_queue(qdir, n, size):
    os.umask(0)
    t = int(time.time())
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
    recv = f"Received: (qmail {os.getpid()} invoked by uid 0); {date}\n".encode()
    info = b"F" + SENDER.encode() + b"\0"
    W = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for k in range(n):
        rc = f"{USER}-u{k % NUSERS}@{DOMAIN}"
        body = make_message(f"restart-{k}", [(rc, "local")], time.time(), size)
        name = f"{qdir}/pid/b.{k}"
        fd = os.open(name, W, 0o644)
        os.write(fd, recv + body)
        ino = os.fstat(fd).st_ino
        os.close(fd)
        s = ino % SPLIT
        os.link(name, f"{qdir}/mess/{s}/{ino}")
        os.unlink(name)
        for sub, data in (("info", info), ("local", b"T" + rc.encode() + b"\0")):
            fd = os.open(f"{qdir}/{sub}/{s}/{ino}", W, 0o600)
            os.write(fd, data)
            os.close(fd)


def run_restart(run, a, pw):
    t = OursTarget(run, a, pw, a.engine)
    res = {"scenario": "restart", "target": t.name, "messages": a.messages, "ok": False}
    t0 = time.time()
    build_queue(t.queue, a.messages, parse_sizes(a.sizes)[0][0])
    res["build_seconds"] = round(time.time() - t0, 2)
    md = t.homes["main"] + "/Maildir"
    seen, got = set(), []
    hwm = {}
    series = []
    try:
        ts = time.time()
        t.start()
        deadline = ts + a.timeout
        first = None
        last_s = 0
        while time.time() < deadline:
            new = []
            scan_maildir(md, seen, new, "")
            got += new
            now = time.time()
            if got and first is None:
                first = min(g[2] for g in got) - ts
            if now - last_s >= a.sample_interval:
                last_s = now
                table = proc_table()
                for p in process_tree(t.roots(), table):
                    hwm[table[p][1]] = max(hwm.get(table[p][1], 0), vmhwm_kb(p))
                todo, queued = t.backlog()
                series.append({"t": round(now - ts, 3), "delivered": len(got), "todo": todo, "queued": queued})
                if not a.quiet:
                    log(f"  restart: delivered {len(got)}/{a.messages}, queued {queued}, "
                        f"first delivery {'-' if first is None else f'{first:.2f} s'}")
            if len(got) >= a.messages:
                res["ok"] = True
                break
            time.sleep(0.1)
        res.update({"first_delivery_seconds": round(first, 3) if first is not None else None,
                    "drain_seconds": round(max(g[2] for g in got) - ts, 3) if got else None,
                    "delivered": len(got), "vmhwm_kb": hwm, "max_vmhwm_kb": max(hwm.values(), default=0),
                    "series": series})
        if got:
            res["drain_rate"] = round(len(got) / max(1e-9, res["drain_seconds"] - (first or 0)), 1)
    finally:
        t.stop()
    return res


# ----------------------------------------------------------------------------
# output: table, JSON, CSV, PNG chart

TARGET_COLORS = {"ours": "#1f77b4", "postfix": "#d62728", "classic": "#2ca02c", "qmail-compat": "#9467bd"}
WORKLOAD_TITLES = {"local": "local, end to end", "remote": "remote, end to end",
                   "local-drain": "local drain (held during injection, then released)",
                   "remote-drain": "remote drain (held during injection, then released)",
                   "mixed-failures": "mixed, with failures", "custom": "custom", "restart": "restart"}


def throughput_series(series):
    out = []
    for a_, b in zip(series, series[1:]):
        dt = b["t"] - a_["t"]
        if dt > 0:
            out.append((b["t"], (b["delivered"] - a_["delivered"]) / dt))
    return out


def chart_data(runs):
    """target -> {"throughput": points, "backlog": points, "released": s or None} from each target's first run."""
    d = {}
    for r in runs:
        if r["target"] in d or not r.get("series"):
            continue
        s = r["series"]
        d[r["target"]] = {"throughput": throughput_series(s), "backlog": [(x["t"], x["todo"] + x["queued"]) for x in s],
                          "released": r.get("released_at_s")}
    return d


def workload_title(name, wl):
    """'local, end to end: 10,000 × 2,048 B, 4 clients' from a workload entry of the results."""
    w = wl.get("workload") or {}
    t = WORKLOAD_TITLES.get(name, name)
    if w.get("burst"):
        t += "" if "drain" in t else " (held during injection, then released)"
    if w:
        t += f"\n{w.get('messages', 0):,} msgs × {w.get('sizes')} B, {w.get('rcpts')} rcpt, {w.get('parallel')} clients"
    return t


def write_chart(path, result, log_fn=None):
    """A PNG: delivered msgs/s (top row) and backlog (bottom row) over time, one column per workload,
    one line per target, drawn with matplotlib (Agg). Returns the path, or None without matplotlib."""
    try:
        plt = ensure_matplotlib(log_fn or log)
    except Exception as e:  # noqa: BLE001
        (log_fn or log)(f"no chart: matplotlib is not available ({e})")
        return None
    panels = [(wl["name"], workload_title(wl["name"], wl), chart_data(wl["runs"])) for wl in result.get("workloads", [])]
    if result.get("restart"):
        r = result["restart"]
        s = r.get("series", [])
        panels.append(("restart", f"restart: {r.get('messages', 0):,} queued messages",
                       {r.get("target", "ours"): {"throughput": throughput_series(s),
                                                  "backlog": [(x["t"], x["todo"] + x["queued"]) for x in s],
                                                  "released": None}}))
    panels = [p for p in panels if p[2]] or [("none", "no data", {})]
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n + 0.6, 6.4), dpi=80, squeeze=False)
    for k, (_name, title, data) in enumerate(panels):
        top, bottom = axes[0][k], axes[1][k]
        for target, v in data.items():
            c = TARGET_COLORS.get("ours" if target.startswith("ours") else target)
            for ax, key in ((top, "throughput"), (bottom, "backlog")):
                pts = v[key]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], label=target, color=c, linewidth=1.4)
            if v.get("released") is not None:
                for ax in (top, bottom):
                    ax.axvline(v["released"], color=c, linestyle=":", linewidth=1)
        top.set_title(title, fontsize=9)
        if data:
            top.legend(fontsize=8, loc="best")
        top.set_ylabel("delivered msgs/s")
        bottom.set_ylabel("backlog (queued msgs)")
        bottom.set_xlabel("seconds since the first injection")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
            ax.tick_params(labelsize=8)
    started = result.get("started", "")
    fig.suptitle(f"{result.get('title') or 'harness'}, {started}\nthroughput and backlog over time "
                 "(dotted line: release of a held queue)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def med(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    return round(statistics.median(vals), 3) if vals else None


METRICS = [("injection_rate", "inject/s"), ("throughput", "delivered/s"), ("drain_rate", "drain delivered/s (burst)"),
           ("e2e_seconds", "e2e s"),
           ("latency_ms.p50", "p50 ms"), ("latency_ms.p90", "p90 ms"), ("latency_ms.p99", "p99 ms"),
           ("latency_ms.max", "max ms"), ("engine_cpu_ms_per_msg", "engine CPU ms/msg"),
           ("client_cpu_ms_per_msg", "client CPU ms/msg"), ("max_vmhwm_kb", "max VmHWM KiB"),
           ("device_flushes_per_msg", "dev flushes/msg"), ("engine_syscw_per_msg", "write syscalls/msg"),
           ("max_todo", "max todo"), ("max_queued", "max queued"), ("raw_fsync_per_s", "raw fsync/s")]


def getm(r, key):
    v = r
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v


def summarize(runs):
    by = {}
    for r in runs:
        by.setdefault(r["target"], []).append(r)
    s = {}
    for t, rs in by.items():
        s[t] = {k: med([getm(r, k) for r in rs]) for k, _ in METRICS}
        s[t]["runs"] = len(rs)
        s[t]["ok_runs"] = sum(1 for r in rs if r.get("ok"))
        s[t]["delivered"] = med([r.get("delivered") for r in rs])
        s[t]["fsyncs_per_msg"] = "n/a"
    if "ours" in s or any(k.startswith("ours") for k in s):
        ours = next(k for k in s if k.startswith("ours"))
        for peer in [k for k in s if not k.startswith("ratio")]:
            if peer == ours:
                continue
            s[f"ratio {ours}/{peer}"] = {k: (round(s[ours][k] / s[peer][k], 3)
                                             if isinstance(s[ours][k], (int, float)) and s[peer][k] else None)
                                         for k, _ in METRICS}
    return s


def table(summary, title):
    cols = list(summary)
    lines = [f"### {title}", "", "| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for k, label in METRICS + [("fsyncs_per_msg", "fsyncs/msg"), ("ok_runs", "runs ok")]:
        row = []
        for c in cols:
            v = summary[c].get(k)
            row.append("-" if v is None else (f"{v:,.3f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)))
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_outputs(a, result):
    pre = a.out
    os.makedirs(os.path.dirname(os.path.abspath(pre)), exist_ok=True)
    with open(pre + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(pre + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "target", "round", "ok", "messages", "delivered"] + [k for k, _ in METRICS])
        for wl in result["workloads"]:
            for r in wl["runs"]:
                w.writerow([wl["name"], r["target"], r["round"], r.get("ok"), r.get("messages"), r.get("delivered")]
                           + [getm(r, k) for k, _ in METRICS])
            for t, s in wl["summary"].items():
                w.writerow([wl["name"], t, "median" if not t.startswith("ratio") else "ratio", "", "", s.get("delivered")]
                           + [s.get(k) for k, _ in METRICS])
    chart = write_chart(pre + ".png", result)
    return [pre + ".json", pre + ".csv"] + ([chart] if chart else [])


# ----------------------------------------------------------------------------
# main

def workloads_for(a):
    """[(name, settings)]: each workload's settings override the command line's for its runs."""
    base = dict(rcpts=1, remote_share=0.0, local_perm=0.0, local_temp=0.0, remote_perm=0.0, remote_temp=0.0,
                burst=False)
    if a.suite == "standard":
        return [("local", dict(base)),
                ("remote", dict(base, remote_share=1.0)),
                ("mixed-failures", dict(base, rcpts=2, remote_share=0.5, local_perm=0.05, local_temp=0.05,
                                        remote_perm=0.05, remote_temp=0.05))]
    if a.suite == "aims":
        return [("local", dict(base)),
                ("remote", dict(base, remote_share=1.0)),
                ("local-drain", dict(base, burst=True)),
                ("remote-drain", dict(base, remote_share=1.0, burst=True))]
    return [("custom", {"burst": a.scenario == "burst"})]


def machine_info(folder):
    """nproc, CPU model, memory, kernel, the run folder's file system and the load, for the results."""
    mp, fstype, source, opts = mount_of(folder)
    info = describe_machine(os.cpu_count(), {
        "run_folder": folder,
        "file_system": f"{fstype} on {source} at {mp} ({opts})"
                       + (f", journal: {ext4_journal(source)}" if fstype == "ext4" else ""),
    })
    info["load"] = os.getloadavg()
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=["standard", "aims"],
                    help="standard: local, remote and mixed-with-failures workloads; aims: local and remote end to "
                         "end, then local and remote drain (burst); ours vs postfix unless --targets")
    ap.add_argument("--scenario", choices=["restart", "burst"], help="scale scenarios (ours; burst also postfix)")
    ap.add_argument("--targets", default=None,
                    help="comma list: ours, ours-1p, ours-prev, postfix, classic, qmail-compat (default ours; suite: ours,postfix)")
    ap.add_argument("--classic", metavar="PREFIX",
                    help="classic: a classic qmail installation prefix (its conf-qmail, e.g. /var/qmail-classic), "
                         "built from notqmail; the harness sets up its control, users and a fresh queue, starts and stops it")
    ap.add_argument("--engine", default="qmail-send", choices=["qmail-send", "qmta-send", "slowq-send"],
                    help="our engine front end")
    ap.add_argument("--messages", type=int, default=None, help="messages per run (default 1000; suite 10000)")
    ap.add_argument("--sizes", default="2048", help="bytes: '2048' or weighted list '1024:5,10240:3,102400:1'")
    ap.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    ap.add_argument("--remote-share", type=float, default=0.0, help="share of recipients that are remote (0..1)")
    ap.add_argument("--local-perm", type=float, default=0.0, help="share of local recipients with no mailbox")
    ap.add_argument("--local-temp", type=float, default=0.0, help="share of local recipients whose .qmail is |exit 111")
    ap.add_argument("--remote-perm", type=float, default=0.0, help="share of remote recipients the sink answers 550")
    ap.add_argument("--remote-temp", type=float, default=0.0, help="share of remote recipients the sink answers 451")
    ap.add_argument("--parallel", type=int, default=4, help="parallel injectors")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; targets alternate; medians reported")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run (hard limit)")
    ap.add_argument("--stall", type=float, default=60, help="end a run when nothing was delivered this long after injection")
    ap.add_argument("--smtp-host", default="127.0.0.1", help="address of the SMTP sink (loopback only)")
    ap.add_argument("--sink", default="scripted", choices=["scripted", "smtp-sink"],
                    help="scripted = Tests/.../smtpd.py (failures, arrival times); smtp-sink = Postfix's (speed only)")
    ap.add_argument("--qmail-queue", help="qmail-compat: path of the installed qmail-queue")
    ap.add_argument("--qmail-queue-dir", help="qmail-compat: its queue folder")
    ap.add_argument("--qmail-log", help="qmail-compat: its qmail-send log file")
    ap.add_argument("--qmail-remote", help="qmail-remote for our engine when --bin has none (default: .build/debug's)")
    ap.add_argument("--postfix-local-concurrency", type=int, default=10)
    ap.add_argument("--sample-interval", type=float, default=1.0, help="seconds between backlog/memory samples")
    ap.add_argument("--fsync-seconds", type=float, default=2.0, help="length of the raw fsync measurement")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--prev-bin", help="another build of ours (e.g. the one before a change), run as target ours-prev")
    ap.add_argument("--base", default=DEFAULT_BASE)
    ap.add_argument("--out", default=None, help="output prefix for .json .csv .svg .png (default <base>/harness-<time>)")
    ap.add_argument("--keep", action="store_true", help="keep the run folder (Maildirs, logs)")
    ap.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                    help="after deleting 1,000 or more files of the previous run, sync and wait this long "
                         "(default 65 on ext4 without a journal, whose inode allocator slows down after "
                         "deletions, unless the run folder could be marked +T so each run's folders go to "
                         "fresh block groups; else 0)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    a = ap.parse_args(argv)

    try:
        check_loopback(a.smtp_host)
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("harness: must run as root", file=sys.stderr)
        return 2
    if a.messages is None:
        a.messages = 10000 if a.suite else 1000
    if a.targets is None:
        a.targets = "ours,postfix" if a.suite else "ours"
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in targets:
        if t not in ("ours", "ours-1p", "ours-prev", "postfix", "classic", "qmail-compat"):
            print(f"harness: unknown target {t}", file=sys.stderr)
            return 2
    if "ours-prev" in targets and not a.prev_bin:
        print("harness: target ours-prev needs --prev-bin DIR", file=sys.stderr)
        return 2
    if "classic" in targets and not a.classic:
        print("harness: target classic needs --classic PREFIX", file=sys.stderr)
        return 2
    if a.out is None:
        a.out = os.path.join(a.base, time.strftime("harness-%Y%m%d-%H%M%S"))
    if "postfix" in targets and not a.scenario == "restart":
        install_postfix(log)
    try:
        ensure_matplotlib(log)      # for the chart; installed now rather than after the measurements
    except Exception as e:  # noqa: BLE001
        log(f"note: matplotlib could not be installed ({e}); there will be no chart")

    interrupt_on_term()

    os.makedirs(a.base, exist_ok=True)
    run = Run(a)
    pw = ensure_user(USER, run.tmp + "/home", "/bin/sh", HarnessError, quiet=True)
    result = {"command": " ".join([sys.executable] + sys.argv), "args": vars(a), "run_dir": run.tmp,
              "title": f"{a.suite or a.scenario or 'custom'}: {', '.join(targets)}",
              "machine": machine_info(run.tmp),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "workloads": [], "restart": None}
    status = 0
    # hard bound on the whole run
    nruns = len(workloads_for(a)) * max(1, a.rounds) * max(1, len(targets))
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("overall time limit")))
    signal.alarm(int(nruns * (a.timeout + 180) + 300))
    log(f"run folder {run.tmp}")
    for n in run.notes:
        log("note: " + n)
    result["notes"] = run.notes
    try:
        if a.scenario == "restart":
            r = run_restart(run, a, pw)
            result["restart"] = r
            status = 0 if r["ok"] else 1
        else:
            for wname, over in workloads_for(a):
                for k, v in over.items():
                    setattr(a, k, v)
                msgs = make_workload(a)
                burst = bool(getattr(a, "burst", False))
                wl = {"name": wname, "workload": {k: getattr(a, k) for k in (
                    "messages", "sizes", "rcpts", "remote_share", "local_perm", "local_temp", "remote_perm",
                    "remote_temp", "parallel", "burst")}, "runs": []}
                result["workloads"].append(wl)
                for rnd in range(1, a.rounds + 1):
                    order = targets if rnd % 2 == 1 else list(reversed(targets))
                    for t in order:
                        mk = {"ours": lambda: OursTarget(run, a, pw, a.engine),
                              "ours-1p": lambda: OursTarget(run, a, pw, a.engine, name="ours-1p", one_process=True),
                              "ours-prev": lambda: OursTarget(run, a, pw, a.engine, name="ours-prev", bin=a.prev_bin),
                              "postfix": lambda: PostfixTarget(run, a, pw),
                              "classic": lambda: ClassicTarget(run, a, pw),
                              "qmail-compat": lambda: QmailCompatTarget(run, a, pw)}[t]
                        log(f"{wname}: round {rnd}, {t}, {a.messages} messages, {a.parallel} injectors"
                            + (", held during injection" if burst else ""))
                        try:
                            r = run_one(run, a, mk, pw, msgs, rnd, hold=burst)
                        except HarnessError as e:
                            r = {"target": t, "round": rnd, "ok": False, "error": str(e)}
                        if not r.get("ok"):
                            status = 1
                            log(f"  {t}: FAILED: {r.get('error')}")
                        else:
                            log(f"  {t}: {r['delivered']} delivered, {r['throughput']}/s, inject {r['injection_rate']}/s, "
                                f"p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms, max todo {r['max_todo']}")
                        wl["runs"].append(r)
                wl["summary"] = summarize(wl["runs"])
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        status = 130
    finally:
        signal.alarm(0)
        TRACK.killall()
        left = TRACK.leftovers()
        sigkill(pid for pid, _ in left)
        if left:
            log(f"leftover processes killed: {left}")
        result["leftover_processes"] = left
        if not a.keep:
            shutil.rmtree(run.tmp, ignore_errors=True)
        result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        for wl in result["workloads"]:
            wl.setdefault("summary", summarize(wl["runs"]))
        files = write_outputs(a, result)
    for wl in result["workloads"]:
        print(table(wl["summary"], f"{wl['name']}: {wl['workload']}"))
        print()
    if result["restart"]:
        r = result["restart"]
        print(f"### restart: {r['messages']} queued messages ({r['target']})\n")
        for k in ("build_seconds", "first_delivery_seconds", "drain_seconds", "drain_rate", "delivered", "max_vmhwm_kb"):
            print(f"- {k}: {r.get(k)}")
        print(f"- VmHWM per process (KiB): {r.get('vmhwm_kb')}")
        print()
    print("outputs: " + " ".join(files))
    return status


if __name__ == "__main__":
    sys.exit(main())
