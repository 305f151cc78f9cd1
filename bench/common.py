"""Helpers shared by the benchmark scripts in bench/ (inject_bench.py,
engine_bench.py, harness.py). Python 3 standard library only.

The scripts import it as `common` (their own folder is on sys.path)."""

import ctypes
import json
import math
import os
import pwd
import signal
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------------------
# files

def read_text(path):
    """The text of `path` ("" when it cannot be read); bytes that are not
    text in the locale's encoding are replaced, never an error."""
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def write_file(path, data, mode=0o644):
    """Writes `data` (bytes, or text written as UTF-8) to `path` with `mode`."""
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)


def write_all(fd, data):
    """os.write until all of `data` is written."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def field_kb(path, key):
    """The number after `key` (e.g. "VmHWM:") on the first line of `path` that
    starts with it, as in /proc/<pid>/status, smaps_rollup, io or
    /proc/meminfo; 0 when there is none."""
    for line in read_text(path).splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list; nan when empty."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


# ----------------------------------------------------------------------------
# machine and file system

def mount_of(path, tidy=True):
    """(mount point, fs type, source, options) of the file system holding
    `path`, from /proc/self/mountinfo. With `tidy`, an escaped space in the
    mount point is unescaped and the mount and super-block options are listed
    once each; without, both are as mountinfo has them."""
    path = os.path.realpath(path)
    best = None
    for line in read_text("/proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if len(lf) < 6 or len(rf) < 2:
            continue
        mp = lf[4].replace("\\040", " ") if tidy else lf[4]
        inside = path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/"
        if inside and (best is None or len(mp) >= len(best[0])):
            opts = lf[5] + ("," + rf[2] if len(rf) > 2 else "")
            if tidy:
                opts = ",".join(dict.fromkeys(opts.split(",")))
            best = (mp, rf[0], rf[1], opts)
    return best or ("?", "?", "?", "?")


def ext4_journal(source):
    """'yes', 'no' or '?' for an ext4 file system on `source`."""
    t = read_text(f"/sys/fs/ext4/{os.path.basename(source)}/journal_task").strip()
    if not t:
        return "?"
    return "no" if t == "<none>" else "yes"


def describe_machine(nproc, where):
    """The machine: `nproc` as given, memory, CPU model and kernel, then the
    items of `where` (the bench folder and its file system), then the load
    average and the Python version."""
    cpu = "?"
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    u = os.uname()
    info = {
        "nproc": nproc,
        "memory_gib": round(field_kb("/proc/meminfo", "MemTotal:") / 1048576, 1),
        "cpu_model": cpu,
        "kernel": f"{u.sysname} {u.release} {u.machine}",
    }
    info.update(where)
    info["loadavg_at_start"] = read_text("/proc/loadavg").split()[:3]
    info["python"] = sys.version.split()[0]
    return info


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_jiffies():
    """Jiffies of the whole machine by state, from the first line of /proc/stat."""
    f = read_text("/proc/stat").splitlines()[0].split()[1:1 + len(CPU_FIELDS)]
    return [int(x) for x in f] + [0] * (len(CPU_FIELDS) - len(f))


def cpu_breakdown(j0, j1):
    """Percent of the machine's CPU time per state between two cpu_jiffies()."""
    d = [b - a for a, b in zip(j0, j1)]
    total = max(sum(d), 1)
    return {k: round(100.0 * v / total, 1) for k, v in zip(CPU_FIELDS, d)}


# ----------------------------------------------------------------------------
# processes

def new_process_group():
    """Makes the calling (forked) process the leader of a process group of its
    own, so that killpg reaches it and what it starts. Best effort."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass


def pdeathsig(parent=None):
    """In a forked child: be killed (SIGKILL) when the parent dies, even of
    SIGKILL. With `parent` (the parent's pid, taken before the fork), exits at
    once if the parent is already gone. Best effort."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if parent is not None and os.getppid() != parent:
            os._exit(1)
    except (AttributeError, OSError):
        pass


def interrupt_on_term():
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so that the cleanup of a
    run happens as on Ctrl-C."""
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


def sigkill(pids):
    """SIGKILL to each pid; those already gone are skipped."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def kill_workers(pids):
    """Kills forked workers (each the leader of its own process group, else
    alone) and reaps them; each reaped pid is removed from the list `pids`."""
    for pid in list(pids):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            sigkill([pid])
    for pid in list(pids):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        pids.remove(pid)


def proc_table():
    """pid -> (ppid, comm, the fields of /proc/<pid>/stat after the comm)
    for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        s = read_text(f"/proc/{d}/stat")
        if not s:
            continue
        rp = s.rfind(")")
        f = s[rp + 2:].split()
        try:
            out[int(d)] = (int(f[1]), s[s.find("(") + 1:rp], f)
        except (IndexError, ValueError):
            pass
    return out


def _children(table):
    kids = {}
    for pid, entry in table.items():
        kids.setdefault(entry[0], []).append(pid)
    return kids


def process_tree(roots, table):
    """The `roots` that are in `table` (a proc_table()) and all their descendants."""
    kids = _children(table)
    out, todo = [], [r for r in roots if r in table]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def descendants(root, table):
    """Every descendant of `root` in `table` (a proc_table()), not `root` itself."""
    kids = _children(table)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def held_locks(base, own):
    """Names of the *.lock files in `base`, other than `own`, that another
    process holds with flock: the benchmarks hold <name>.lock while they
    measure and wait while another one does."""
    import fcntl
    out = []
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return out
    for name in names:
        path = os.path.join(base, name)
        if not name.endswith(".lock") or name == own or not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at once by close
        except BlockingIOError:
            out.append(name)
        except OSError:
            pass
    return out


def kill_child(pid):
    """SIGKILL to a child of this process (none if `pid` is 0), then reaps it."""
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def report_result(result_path, res):
    """In a forked worker: its result `res`, for the parent, as JSON in
    `result_path` (written whole, then renamed into place)."""
    with open(result_path + ".part", "w") as f:
        json.dump(res, f)
    os.rename(result_path + ".part", result_path)


def report_error(result_path, e):
    """In a forked worker that failed: its error, for the parent, in <result_path>.err."""
    try:
        with open(result_path + ".err", "w") as f:
            f.write(repr(e))
    except OSError:
        pass


# ----------------------------------------------------------------------------
# messages, users and Postfix

FILLER = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\n"


def pad_message(head, size):
    """The header `head` (bytes) and a body of filler lines: `size` bytes in
    all (at least the header and one byte), ending with a newline."""
    body = bytearray(head)
    while len(body) < size:
        body += FILLER
    body = body[:max(size, len(head) + 1)]
    body[-1:] = b"\n"
    return bytes(body)


def ensure_user(name, home, shell, error, quiet=False):
    """The system user `name` with home folder `home`, created (useradd) or
    moved (usermod) as needed; raises `error` if it has uid 0. `quiet`: the
    output of useradd and usermod is captured."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", shell, name],
                       check=True, capture_output=quiet)
        pw = pwd.getpwnam(name)
    if pw.pw_dir != home:
        subprocess.run(["usermod", "-d", home, name], check=True, capture_output=quiet)
        pw = pwd.getpwnam(name)
    if pw.pw_uid == 0:
        raise error(f"{name} has uid 0")
    return pw


POSTFIX = "/usr/sbin/postfix"
POSTFIX_SENDMAIL = "/usr/sbin/sendmail"


def install_postfix(log, stop_system=False):
    """Installs the Debian package postfix unless it is there. `stop_system`:
    then stops the system instance if the package started one."""
    if os.path.exists(POSTFIX) and os.path.exists(POSTFIX_SENDMAIL):
        return
    log("installing postfix (Debian package)")
    subprocess.run(["debconf-set-selections"], input="postfix postfix/main_mailer_type select No configuration\n",
                   text=True, check=True)
    subprocess.run(["apt-get", "install", "-y", "postfix"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                   check=True, timeout=900)
    if stop_system and os.path.exists("/etc/postfix/main.cf"):
        subprocess.run([POSTFIX, "stop"], capture_output=True, timeout=60)


def ensure_matplotlib(log):
    """Imports matplotlib with its Agg backend (no display), installing it
    when missing: Debian's python3-matplotlib when this is the system's
    Python (/usr/bin/python3), else `python3 -m pip install matplotlib` with
    the interpreter running (a pyenv or venv Python does not see Debian's
    packages). Returns matplotlib.pyplot."""
    import importlib

    def try_import():
        importlib.invalidate_caches()
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            return plt
        except ImportError:
            return None

    plt = try_import()
    if plt:
        return plt
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if os.path.realpath(sys.executable).startswith("/usr/bin/") and sys.prefix == "/usr":
        log("installing python3-matplotlib (Debian package)")
        r = subprocess.run(["apt-get", "install", "-y", "python3-matplotlib"], env=env, timeout=900,
                           capture_output=True, text=True)
        if r.returncode != 0:
            log(f"apt-get install python3-matplotlib failed: {r.stderr.strip()[-300:]}")
        plt = try_import()
        if plt:
            return plt
    log(f"installing matplotlib with {sys.executable} -m pip (apt's python3-matplotlib is not importable by it)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"], env=env, timeout=900,
                   check=True)
    plt = try_import()
    if not plt:
        raise ImportError("matplotlib is still not importable after installing it")
    return plt


def make_postfix_instance(folder, domain, local_concurrency, relay_lines="relayhost =\n", extra_lines=""):
    """Config, queue and data folders of a private Postfix instance under
    `folder`: main.cf for `domain` (local delivery to ~/Maildir/, loopback
    only, its own log file), with `relay_lines` for the relay host and
    `extra_lines` at the end; master.cf: the system's, with no chroot (the
    private queue has no chroot files) and the SMTP listener off (no network
    service at all). Returns (config folder, queue folder, log file)."""
    conf = folder + "/conf"
    queue = folder + "/queue"
    data = folder + "/data"
    for d in (conf, queue, data):
        os.makedirs(d)
    pf = pwd.getpwnam("postfix")
    os.chown(data, pf.pw_uid, pf.pw_gid)
    os.chmod(data, 0o700)
    log = folder + "/maillog"
    main = f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = {domain}
mydomain = {domain}
myorigin = {domain}
mydestination = {domain}
mynetworks = 127.0.0.0/8
{relay_lines}home_mailbox = Maildir/
local_recipient_maps = unix:passwd.byname
alias_maps =
alias_database =
recipient_delimiter = -
mailbox_size_limit = 0
message_size_limit = 0
biff = no
maillog_file_prefixes = /var, /dev/stdout, {folder}
maillog_file = {log}
local_destination_concurrency_limit = {local_concurrency}
{extra_lines}"""
    write_file(conf + "/main.cf", main)
    out = []
    for line in read_text("/etc/postfix/master.cf").splitlines():
        if line and line[0].isalnum():
            f = line.split()
            if len(f) >= 8 and f[1] == "inet":
                out.append("#" + line)
                continue
            if len(f) >= 8:
                f[4] = "n"
                out.append("  ".join(f))
                continue
        out.append(line)
    write_file(conf + "/master.cf", "\n".join(out) + "\n")
    return conf, queue, log
