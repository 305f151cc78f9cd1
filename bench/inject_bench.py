#!/usr/bin/env python3
"""qmail-queue injection throughput, next to this machine's own fsync ceiling.

Measures, on one file system and with the same parallelism, in alternating
rounds:

  raw      each worker loops: create file, write SIZE bytes, fsync, close, unlink
  pattern  each worker loops the physical minimum work of one durable
           injection: file A (SIZE bytes) + fsync, file B (60 bytes) + fsync,
           fsync A's folder, link B into a second folder, fsync that folder,
           unlink all.
           Its rate is the "fsync-bound rate".
  inject   each worker spawns qmail-queue sequentially (os.posix_spawn,
           message on fd 0, envelope on fd 1, waitpid), default durability
           (fsync mess and intd, fsync mess/ and todo/: 4 fsyncs per message).

and, unless --no-analysis, where the rest of the time goes:

  inject-nosync  qmail-queue with USE_FSYNC=0 USE_SYNCDIR=0 (same files, no fsync)
  nullqueue      qmail-nullqueue (same protocol and process start, no files)
  spawn-true     /bin/true spawned and waited for (bare process spawn)

Python 3 standard library only. Every run is bounded (duration limit plus a
hard kill deadline), removes its temp folder and leaves no child processes.
The binaries are copied from --bin into the run's temp folder first, so a
rebuild during the run does not disturb it.

Fairness on a shared machine:
  * each measurement gets a fresh folder, spread to a block group of its own
    (chattr +T on the run's temp folder), and the queues are deleted only at
    the end of the run: on ext4 without a journal, inodes deleted in the last
    1 to 6 minutes are skipped one by one when a new inode is allocated, which
    can make file creation 2-3 times slower after a mass deletion;
  * for the same reason a run first waits (--settle, default 360 s on ext4
    without a journal, else 0) until that long has passed since the parent
    folder last changed (the previous run's cleanup);
  * a run holds <parent>/inject_bench.lock and waits while another benchmark
    holds a *.lock there (bench/engine_bench.py holds engine_bench.lock).
The parent folder (default .build/bench-tmp) and the lock file stay.

Example:  python3 bench/inject_bench.py --seconds 5 --rounds 3 --markdown
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (cpu_breakdown, cpu_jiffies, describe_machine, ext4_journal, held_locks,  # noqa: E402
                    interrupt_on_term, kill_child, kill_workers, mount_of, new_process_group, pad_message, pdeathsig,
                    percentile, read_text, report_error, report_result, write_all)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, ".build/release")
DEFAULT_BASE = os.path.join(REPO, ".build/bench-tmp")
ENVELOPE = b"Fsender@example.org\0Trcpt@example.net\0\0"
HARD_GRACE = 30.0  # seconds a phase may overrun before its workers are killed


# ----------------------------------------------------------------------------
# machine and file system

def statfs_type(path):
    try:
        return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def write_cache(source):
    dev = os.path.basename(source)
    for cand in (dev, dev.rstrip("0123456789"), dev.rsplit("p", 1)[0]):
        t = read_text(f"/sys/block/{cand}/queue/write_cache").strip()
        if t:
            rot = read_text(f"/sys/block/{cand}/queue/rotational").strip()
            return f"{cand}: write_cache={t}, rotational={rot}"
    return "?"


def machine_info(bench_dir):
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = str(len(os.sched_getaffinity(0)))
    mp, fstype, source, opts = mount_of(bench_dir)
    return describe_machine(nproc, {
        "bench_dir": bench_dir,
        "fs_type": fstype,
        "fs_statfs_type": statfs_type(bench_dir),
        "fs_mount": mp,
        "fs_source": source,
        "fs_options": opts,
        "block_device": write_cache(source),
        "ext4_journal": ext4_journal(source) if fstype == "ext4" else "-",
    })


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def set_topdir(path):
    """Marks `path` as a top of a directory hierarchy (chattr +T) so that ext2/3/4
    spread its sub-folders over block groups like top-level folders. Each
    measurement then allocates inodes in a group of its own. Best effort."""
    import array
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        a = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, a)
        a[0] |= FS_TOPDIR_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, a)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, a)
        return bool(a[0] & FS_TOPDIR_FL)
    except OSError:
        return False
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------
# the operations one worker repeats

def make_message(size):
    head = (b"From: sender@example.org\nTo: rcpt@example.net\n"
            b"Subject: inject_bench\nMessage-ID: <bench@example.org>\n\n")
    return pad_message(head, size)


class SpawnError(Exception):
    pass


def create_fsync(path, data):
    """Creates `path` (it must not exist), writes `data` (one write) and fsyncs it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def op_raw(ctx, i):
    path = f"{ctx['dir']}/w{ctx['wid']}.{i}"
    create_fsync(path, ctx["data"])
    os.unlink(path)


def op_pattern(ctx, i):
    d, name = ctx["dir"], f"w{ctx['wid']}.{i}"
    a, b, t = f"{d}/mess/{name}", f"{d}/intd/{name}", f"{d}/todo/{name}"
    create_fsync(a, ctx["data"])
    create_fsync(b, ctx["small"])
    fsync_dir(f"{d}/mess")      # A's directory entry, as qmail-queue syncs mess/ before the todo link
    os.link(b, t)
    fsync_dir(f"{d}/todo")
    os.unlink(a)
    os.unlink(b)
    os.unlink(t)


def op_spawn(ctx, i):
    prog, env, errfd = ctx["prog"], ctx["env"], ctx["errfd"]
    if not ctx["pipes"]:
        actions = [(os.POSIX_SPAWN_DUP2, ctx["nullfd"], 0), (os.POSIX_SPAWN_DUP2, ctx["nullfd"], 1),
                   (os.POSIX_SPAWN_DUP2, errfd, 2)]
        pid = os.posix_spawn(prog, [prog], env, file_actions=actions, setsigdef=(signal.SIGPIPE,))
        ctx["child"] = pid
        _, status = os.waitpid(pid, 0)
        ctx["child"] = 0
    else:
        mr, mw = os.pipe()
        er, ew = os.pipe()
        try:
            actions = [(os.POSIX_SPAWN_DUP2, mr, 0), (os.POSIX_SPAWN_DUP2, er, 1),
                       (os.POSIX_SPAWN_DUP2, errfd, 2)]
            pid = os.posix_spawn(prog, [prog], env, file_actions=actions, setsigdef=(signal.SIGPIPE,))
            ctx["child"] = pid
        finally:
            os.close(mr)
            os.close(er)
        broken = False
        try:
            try:
                write_all(mw, ctx["data"])
            except BrokenPipeError:
                broken = True
            finally:
                os.close(mw)
            try:
                write_all(ew, ENVELOPE)
            except BrokenPipeError:
                broken = True
            finally:
                os.close(ew)
        finally:
            _, status = os.waitpid(pid, 0)
            ctx["child"] = 0
        if broken and status == 0:
            raise SpawnError("exit 0 but the message or envelope was not read completely (EPIPE)")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SpawnError(f"{os.path.basename(prog)} exit {code}")


OPS = {"raw": op_raw, "pattern": op_pattern, "spawn": op_spawn}


def worker_main(ctx, go_fd, result_path):
    """Runs in a forked child (its own process group). Never returns."""
    code = 0
    new_process_group()
    pdeathsig(ctx["parent"])  # die with the parent even if it is killed with SIGKILL
    try:
        ctx["errfd"] = os.open(f"{ctx['tmp']}/stderr.{ctx['phase']}.{ctx['wid']}",
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        ctx["nullfd"] = os.open(os.devnull, os.O_RDWR)
        ctx["child"] = 0
        op = OPS[ctx["op"]]
        os.read(go_fd, 1)
        os.close(go_fd)
        lat, errors, first_error = [], 0, None
        ops = 0
        ru0s = os.times()
        t0 = time.monotonic()
        deadline = t0 + ctx["seconds"]
        quota = ctx["quota"]
        i = 0
        while True:
            if quota is not None and i >= quota:
                break
            if time.monotonic() >= deadline:
                break
            s = time.perf_counter_ns()
            try:
                op(ctx, i)
                lat.append(time.perf_counter_ns() - s)
                ops += 1
            except (OSError, SpawnError) as e:
                errors += 1
                if first_error is None:
                    first_error = str(e)
                if errors >= 100 and ops == 0:
                    break
            i += 1
        t1 = time.monotonic()
        ru1s = os.times()
        res = {
            "ops": ops, "errors": errors, "first_error": first_error,
            "t0": t0, "t1": t1, "lat_ns": lat,
            "cpu_self": (ru1s.user - ru0s.user) + (ru1s.system - ru0s.system),
            "cpu_children": (ru1s.children_user - ru0s.children_user)
                            + (ru1s.children_system - ru0s.children_system),
        }
        report_result(result_path, res)
    except BaseException as e:  # noqa: BLE001 - report anything, then exit
        code = 1
        report_error(result_path, e)
    finally:
        kill_child(ctx.get("child") or 0)
        os._exit(code)


# ----------------------------------------------------------------------------
# one phase: N workers in parallel

ACTIVE = []  # worker pids of the running phase, for the emergency cleanup


def run_phase(name, base_ctx, args, tmp):
    """Runs one measurement; returns its result dict."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.sync()  # start from a clean page cache / journal state
    go_r, go_w = os.pipe()
    pids, results = [], []
    quota = None
    if args.count:
        quota = -(-args.count // args.parallel)
    seconds = args.seconds if not args.count else args.max_seconds
    jif0 = cpu_jiffies()
    try:
        for wid in range(args.parallel):
            ctx = dict(base_ctx, wid=wid, phase=name, tmp=tmp, seconds=seconds, quota=quota, parent=os.getpid())
            rpath = f"{tmp}/result.{name}.{wid}"
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                worker_main(ctx, go_r, rpath)
            pids.append(pid)
            ACTIVE.append(pid)
        os.close(go_r)
        go_r = -1
        os.write(go_w, b"g" * args.parallel)
        hard = time.monotonic() + seconds + HARD_GRACE
        left = set(pids)
        while left and time.monotonic() < hard:
            for pid in list(left):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    left.discard(pid)
            if left:
                time.sleep(0.02)
        if left:
            print(f"  {name}: {len(left)} worker(s) overran the hard limit, killed", file=sys.stderr)
            kill_workers(list(left))
        jif1 = cpu_jiffies()
        for wid in range(args.parallel):
            rpath = f"{tmp}/result.{name}.{wid}"
            try:
                with open(rpath) as f:
                    results.append(json.load(f))
                os.unlink(rpath)
            except (OSError, ValueError):
                err = read_text(rpath + ".err")
                raise RuntimeError(f"{name}: worker {wid} gave no result {err}")
    finally:
        if go_r != -1:
            os.close(go_r)
        os.close(go_w)
        kill_workers([p for p in pids if p in ACTIVE and not pid_reaped(p)])
        for p in pids:
            if p in ACTIVE:
                ACTIVE.remove(p)
    ops = sum(r["ops"] for r in results)
    errors = sum(r["errors"] for r in results)
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    elapsed = max(t1 - t0, 1e-9)
    lat = sorted(x for r in results for x in r["lat_ns"])
    first_error = next((r["first_error"] for r in results if r["first_error"]), None)
    stderr_text = ""
    for wid in range(args.parallel):
        p = f"{tmp}/stderr.{name}.{wid}"
        stderr_text += read_text(p)
        try:
            os.unlink(p)
        except OSError:
            pass
    cpu_prog = sum(r["cpu_children"] for r in results)
    cpu_driver = sum(r["cpu_self"] for r in results)
    ncpu = len(os.sched_getaffinity(0))
    cpu = cpu_breakdown(jif0, jif1)
    return {
        "phase": name, "ops": ops, "errors": errors, "first_error": first_error,
        "stderr": stderr_text[-2000:], "seconds": round(elapsed, 3),
        "rate": ops / elapsed,
        "p50_ms": percentile(lat, 50) / 1e6, "p90_ms": percentile(lat, 90) / 1e6,
        "p99_ms": percentile(lat, 99) / 1e6, "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
        "cpu_prog_ms_per_op": 1000.0 * cpu_prog / ops if ops else float("nan"),
        "cpu_driver_ms_per_op": 1000.0 * cpu_driver / ops if ops else float("nan"),
        "machine_cpu_busy_pct": round(100.0 - cpu["idle"] - cpu["iowait"], 1),
        "our_cpu_pct": 100.0 * (cpu_prog + cpu_driver) / (elapsed * ncpu),
        "other_cpu_pct": max(0.0, 100.0 - cpu["idle"] - cpu["iowait"]
                             - 100.0 * (cpu_prog + cpu_driver) / (elapsed * ncpu)),
        "machine_cpu": cpu,
    }


def pid_reaped(pid):
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done != 0
    except ChildProcessError:
        return True


# ----------------------------------------------------------------------------
# queues

def new_queue(binq, path):
    r = subprocess.run([binq, path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"queue-fix {path} failed ({r.returncode}): {r.stderr.strip()}")


def count_files(path):
    n = 0
    for _, _, files in os.walk(path):
        n += len(files)
    return n


def check_queue(q, expected):
    """Problems found in a queue after `expected` successful injections."""
    problems = []
    todo, intd, mess, pid = (count_files(f"{q}/{d}") for d in ("todo", "intd", "mess", "pid"))
    if todo != expected:
        problems.append(f"todo/ holds {todo} entries, {expected} injections exited 0")
    if intd != expected:
        problems.append(f"intd/ holds {intd} files, expected {expected}")
    if mess != expected:
        problems.append(f"mess/ holds {mess} files, expected {expected}")
    if pid:
        problems.append(f"pid/ holds {pid} leftover files")
    return problems, {"todo": todo, "intd": intd, "mess": mess, "pid": pid}


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------
# report

def med(rounds, phase, key):
    vals = [r[phase][key] for r in rounds if phase in r]
    return statistics.median(vals) if vals else float("nan")


LABELS = {
    "raw": "(a) raw fsync: create, write, fsync, unlink",
    "pattern": "(b) queue-shaped fsync pattern (fsync-bound)",
    "inject": "qmail-queue, default durability (4 fsyncs)",
    "inject-nosync": "qmail-queue, USE_FSYNC=0 USE_SYNCDIR=0",
    "nullqueue": "qmail-nullqueue (same protocol, no files)",
    "spawn-true": "/bin/true (bare posix_spawn + waitpid)",
}


def summarize(rounds, phases):
    s = {}
    for ph in phases:
        s[ph] = {k: med(rounds, ph, k) for k in
                 ("rate", "p50_ms", "p90_ms", "p99_ms", "max_ms", "cpu_prog_ms_per_op",
                  "cpu_driver_ms_per_op", "machine_cpu_busy_pct", "our_cpu_pct", "other_cpu_pct")}
        s[ph]["per_round_rate"] = [round(r[ph]["rate"], 1) for r in rounds if ph in r]
        s[ph]["errors"] = sum(r[ph]["errors"] for r in rounds if ph in r)
    inj, pat, raw = s["inject"]["rate"], s["pattern"]["rate"], s["raw"]["rate"]
    s["inject_pct_of_pattern"] = 100.0 * inj / pat if pat else float("nan")
    s["inject_pct_of_raw"] = 100.0 * inj / raw if raw else float("nan")
    s["per_round_pct_of_pattern"] = [round(100.0 * r["inject"]["rate"] / r["pattern"]["rate"], 1)
                                     for r in rounds]
    return s


def fmt(v, nd=1):
    if isinstance(v, float) and v != v:
        return "-"
    return f"{v:,.{nd}f}"


def fs_line(info):
    j = {"no": ", no journal", "yes": ", journal"}.get(info.get("ext4_journal"), "")
    return (f"{info['fs_type']}{j} on {info['fs_source']} mounted at {info['fs_mount']} "
            f"({info['fs_options']}); statfs type {info['fs_statfs_type']}; {info['block_device']}")


def cpu_of(ph, m):
    """(program CPU ms/op, driver CPU ms/op) for a phase; the raw and pattern
    loops have no program: their work is in the driver."""
    if ph in ("raw", "pattern"):
        return float("nan"), m["cpu_driver_ms_per_op"]
    return m["cpu_prog_ms_per_op"], m["cpu_driver_ms_per_op"]


def ceiling_note(info, summary):
    """CPU-only ceiling of the injection: nproc / CPU time per injection."""
    m = summary["inject"]
    per = m["cpu_prog_ms_per_op"] + m["cpu_driver_ms_per_op"]
    try:
        n = int(info["nproc"])
    except ValueError:
        return ""
    if per != per or per <= 0:
        return ""
    return (f"CPU time per injection: {per:.2f} ms (qmail-queue {m['cpu_prog_ms_per_op']:.2f} + driver "
            f"{m['cpu_driver_ms_per_op']:.2f}); {n} CPUs alone allow at most {1000.0 * n / per:,.0f} injections/s, "
            f"before any kernel I/O work.")


def text_report(info, summary, phases, args, problems):
    out = []
    out.append(f"command:  {info['command']}")
    out.append(f"machine:  nproc {info['nproc']}, {info['cpu_model']}, {info['memory_gib']} GiB, {info['kernel']}")
    out.append(f"bench fs: {info['bench_dir']}: {fs_line(info)}")
    out.append(f"settings: parallel={args.parallel} "
               + (f"count={args.count}" if args.count else f"seconds={args.seconds}")
               + f" size={args.size} rounds={args.rounds} settle={args.settle:g}s; medians over rounds")
    out.append("")
    hdr = (f"{'measurement':46} {'ops/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'prog CPU':>8} "
           f"{'drv CPU':>7} {'busy%':>5} {'other%':>6}  per round ops/s")
    out.append(hdr)
    out.append("-" * len(hdr))
    for ph in phases:
        m = summary[ph]
        prog, drv = cpu_of(ph, m)
        out.append(f"{LABELS[ph]:46} {fmt(m['rate']):>9} {fmt(m['p50_ms'], 2):>7} {fmt(m['p90_ms'], 2):>7} "
                   f"{fmt(m['p99_ms'], 2):>7} {fmt(prog, 2):>8} {fmt(drv, 2):>7} {fmt(m['machine_cpu_busy_pct'], 0):>5} {fmt(m['other_cpu_pct'], 0):>6}  "
                   f"{m['per_round_rate']}")
    out.append("(prog/drv CPU: ms of CPU per operation in the spawned program / in the Python worker; "
               "busy%: whole machine, not idle and not iowait; other%: busy minus our\n"
               " processes: kernel threads doing our I/O, and anything else running on the machine)")
    out.append("")
    out.append(f"qmail-queue injections/s = {fmt(summary['inject_pct_of_pattern'])}% of the fsync-bound rate (b) "
               f"(target >= 80%; per round {summary['per_round_pct_of_pattern']}), "
               f"{fmt(summary['inject_pct_of_raw'])}% of raw fsync (a)")
    note = ceiling_note(info, summary)
    if note:
        out.append(note)
    for ph in phases:
        if summary[ph]["errors"]:
            out.append(f"ERRORS in {ph}: {summary[ph]['errors']}")
    for p in problems:
        out.append(f"PROBLEM: {p}")
    return "\n".join(out)


def markdown_report(info, summary, phases, args, problems):
    o = []
    o.append(f"### Run of {info['date']}")
    o.append("")
    o.append("```sh")
    o.append(info["command"])
    o.append("```")
    o.append("")
    o.append("| machine | |")
    o.append("|---|---|")
    o.append(f"| CPUs (`nproc`) | {info['nproc']} |")
    o.append(f"| CPU model | {info['cpu_model']} |")
    o.append(f"| memory | {info['memory_gib']} GiB |")
    o.append(f"| kernel | {info['kernel']} |")
    o.append(f"| bench folder | `{info['bench_dir']}` |")
    o.append(f"| file system | {fs_line(info)} |")
    o.append(f"| load average at start | {' '.join(info['loadavg_at_start'])} |")
    o.append(f"| settings | {args.parallel} parallel workers, "
             + (f"{args.count} operations" if args.count else f"{args.seconds:g} s")
             + f" per measurement, {args.size}-byte message, {args.rounds} rounds (medians), "
             f"settle {args.settle:g} s |")
    o.append("")
    o.append("| measurement | ops/s | p50 ms | p90 ms | p99 ms | program CPU ms/op | driver CPU ms/op "
             "| machine busy % | of which not ours % | ops/s per round |")
    o.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for ph in phases:
        m = summary[ph]
        prog, drv = cpu_of(ph, m)
        name = LABELS[ph]
        if ph == "inject":
            name = f"**{name}**"
        o.append(f"| {name} | {fmt(m['rate'])} | {fmt(m['p50_ms'], 2)} | {fmt(m['p90_ms'], 2)} | "
                 f"{fmt(m['p99_ms'], 2)} | {fmt(prog, 2)} | {fmt(drv, 2)} | {fmt(m['machine_cpu_busy_pct'], 0)} | {fmt(m['other_cpu_pct'], 0)} | "
                 f"{', '.join(fmt(x) for x in m['per_round_rate'])} |")
    o.append("")
    o.append(f"**qmail-queue: {fmt(summary['inject_pct_of_pattern'])}% of the fsync-bound rate (b)** "
             f"(target >= 80%; per round: {', '.join(fmt(x) for x in summary['per_round_pct_of_pattern'])}%), "
             f"{fmt(summary['inject_pct_of_raw'])}% of the raw fsync rate (a).")
    note = ceiling_note(info, summary)
    if note:
        o.append("")
        o.append(note)
    o.append("")
    o.append("Medians over the rounds. Latency: one operation, from before the spawn (or the first "
             "system call) to after waitpid (or the last). Program CPU: user + system time of the spawned "
             "program per operation. Driver CPU: the Python worker (for (a) and (b) it does all the work). "
             "Machine busy: share of all CPUs neither idle nor waiting for I/O, whoever used it; "
             "not ours: that minus the CPU time of the workers and their programs (kernel threads doing "
             "the block I/O, and any other load on the machine).")
    errs = [ph for ph in phases if summary[ph]["errors"]]
    if errs or problems:
        o.append("")
        for ph in errs:
            o.append(f"- errors in {ph}: {summary[ph]['errors']}")
        for p in problems:
            o.append(f"- problem: {p}")
    return "\n".join(o)


# ----------------------------------------------------------------------------

def wait_for_other_benchmarks(base, wait_max):
    """Two benchmarks at once measure each other. Holds <base>/inject_bench.lock
    for the run and waits while another benchmark holds a *.lock in `base`
    (engine_bench.py holds engine_bench.lock with flock for its whole run)."""
    import fcntl
    own = open(os.path.join(base, "inject_bench.lock"), "w")
    deadline = time.monotonic() + wait_max
    said = set()
    while True:
        busy = []
        try:
            fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            busy.append(own.name)
        busy += [os.path.join(base, name) for name in held_locks(base, "inject_bench.lock")]
        if not busy:
            return own
        if own.name not in busy:
            fcntl.flock(own, fcntl.LOCK_UN)
        if time.monotonic() > deadline:
            sys.exit(f"inject_bench: still busy after {wait_max:g} s: {', '.join(busy)}")
        for b in busy:
            if b not in said:
                print(f"inject_bench: waiting for the benchmark holding {b}", file=sys.stderr)
                said.add(b)
        time.sleep(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=DEFAULT_BIN, help="folder holding qmail-queue and queue-fix (default %(default)s)")
    ap.add_argument("--dir", default=None,
                    help=f"parent of the temp folder (default {DEFAULT_BASE}, else /var/tmp); must not be tmpfs")
    ap.add_argument("--parallel", type=int, default=4, help="parallel workers (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement (default %(default)s)")
    ap.add_argument("--count", type=int, default=0,
                    help="fixed number of operations per measurement instead of a duration")
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="with --count: time limit of each measurement (default %(default)s)")
    ap.add_argument("--size", type=int, default=2048, help="message size in bytes (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default %(default)s)")
    ap.add_argument("--no-analysis", action="store_true",
                    help="skip the no-fsync, qmail-nullqueue and /bin/true measurements")
    ap.add_argument("--json", metavar="FILE", help="write a JSON record to FILE")
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown section for docs/benchmarks.md")
    ap.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                    help="before measuring, wait until SECONDS have passed since the last change of the "
                         "parent folder (the previous run's cleanup); default 360 on ext4 without a "
                         "journal, else 0")
    ap.add_argument("--wait-max", type=float, default=1800.0, metavar="SECONDS",
                    help="wait at most this long for other benchmark runs in the parent folder (any "
                         "*.lock held with flock, e.g. engine_bench.lock) to end (default %(default)s)")
    ap.add_argument("--allow-tmpfs", action="store_true", help="run even if the bench folder is tmpfs")
    args = ap.parse_args()
    if args.parallel < 1 or args.rounds < 1 or args.size < 1 or (args.seconds <= 0 and not args.count):
        ap.error("--parallel, --rounds, --size and --seconds must be positive")

    base = args.dir
    if base is None:
        base = DEFAULT_BASE if os.path.isdir(os.path.dirname(DEFAULT_BASE)) else "/var/tmp"
    existed = os.path.isdir(base)
    os.makedirs(base, exist_ok=True)
    lock = wait_for_other_benchmarks(base, args.wait_max)
    _, fstype, source, _ = mount_of(base)
    if fstype == "tmpfs" and not args.allow_tmpfs:
        sys.exit(f"inject_bench: {base} is on tmpfs: fsync there means nothing; use --dir")
    # ext4 without a journal does not reuse an inode for 60 s after its deletion,
    # 360 s while its inode table block is dirty (and allocating a neighbour
    # dirties it again): a new inode is searched past every such one, which makes
    # creating files up to 2-3 times slower after a mass deletion, such as the
    # cleanup of a previous run. Wait that out.
    if args.settle is None:
        args.settle = 360.0 if fstype == "ext4" and ext4_journal(source) == "no" else 0.0
    os.sync()
    if existed and args.settle > 0:
        wait = args.settle - (time.time() - os.stat(base).st_mtime)
        if wait > 0:
            print(f"inject_bench: {base} changed {args.settle - wait:.0f} s ago (a previous run's cleanup?); "
                  f"waiting {wait:.0f} s for deleted inodes to age (--settle)", file=sys.stderr)
            time.sleep(wait)

    tmp = tempfile.mkdtemp(prefix="inject_bench.", dir=base)
    cleanup_dirs = [tmp]

    interrupt_on_term()
    try:
        return run(args, tmp)
    except KeyboardInterrupt:
        print("inject_bench: interrupted", file=sys.stderr)
        return 130
    finally:
        kill_workers([p for p in ACTIVE if not pid_reaped(p)])
        for d in cleanup_dirs:
            remove_tree(d)
        # The (now empty) parent folder stays: its modification time tells the
        # next run when this cleanup happened (--settle). Writing the freed
        # inode tables now shortens the time they count as recently deleted.
        os.sync()


def run(args, tmp):
    # On ext4 without a journal, inodes freed in the last 1 to 5 minutes are
    # skipped (scanned one by one) when a new inode is allocated in their block
    # group; the deletions of one measurement would slow down the next.
    # Spreading each measurement's folder to a block group of its own avoids that.
    topdir = set_topdir(tmp)
    bindir = f"{tmp}/bin"
    os.mkdir(bindir)
    needed = ["qmail-queue", "queue-fix"]
    optional = ["qmail-nullqueue"]
    for b in needed + optional:
        src = os.path.join(args.bin, b)
        if os.path.exists(src):
            shutil.copy2(src, f"{bindir}/{b}")
        elif b in needed:
            raise SystemExit(f"inject_bench: {src} not found")
    qq, qfix, nullq = f"{bindir}/qmail-queue", f"{bindir}/queue-fix", f"{bindir}/qmail-nullqueue"

    info = machine_info(tmp)
    info["topdir_spread"] = topdir
    info["command"] = "python3 " + shlex.join(sys.argv)
    info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    info["bin"] = os.path.realpath(args.bin)
    print(f"inject_bench: temp folder {tmp} ({info['fs_type']}), {info['nproc']} CPUs, "
          f"parallel {args.parallel}, {args.rounds} rounds", file=sys.stderr)

    data = make_message(args.size)
    base_env = {"PATH": "/usr/bin:/bin", "HOSTNAME": "bench.example.org", "DEATH": "120"}
    for k in ("TZ", "LANG"):
        if k in os.environ:
            base_env[k] = os.environ[k]

    phases = ["raw", "pattern", "inject"]
    if not args.no_analysis:
        phases += ["inject-nosync"] + (["nullqueue"] if os.path.exists(nullq) else []) + ["spawn-true"]

    rounds, problems = [], []
    for rnd in range(1, args.rounds + 1):
        res = {}
        for ph in phases:
            work = f"{tmp}/{ph}.{rnd}"
            ctx = {"data": data, "small": b"x" * 60}
            if ph == "raw":
                os.mkdir(work)
                ctx.update(op="raw", dir=work)
            elif ph == "pattern":
                os.mkdir(work)
                for d in ("mess", "intd", "todo"):
                    os.mkdir(f"{work}/{d}")
                ctx.update(op="pattern", dir=work)
            elif ph in ("inject", "inject-nosync"):
                new_queue(qfix, work)
                env = dict(base_env, QUEUEDIR=work)
                if ph == "inject-nosync":
                    env.update(USE_FSYNC="0", USE_SYNCDIR="0")
                ctx.update(op="spawn", prog=qq, env=env, pipes=True)
            elif ph == "nullqueue":
                ctx.update(op="spawn", prog=nullq, env=dict(base_env), pipes=True)
            elif ph == "spawn-true":
                ctx.update(op="spawn", prog="/bin/true", env=dict(base_env), pipes=False)
            r = run_phase(f"{ph}.{rnd}", ctx, args, tmp)
            if ph in ("inject", "inject-nosync"):
                found, counts = check_queue(work, r["ops"])
                r["queue_counts"] = counts
                problems += [f"round {rnd} {ph}: {p}" for p in found]
            if r["errors"]:
                problems.append(f"round {rnd} {ph}: {r['errors']} failed operations, first: {r['first_error']}"
                                + (f"; stderr: {r['stderr'].strip()[:300]}" if r["stderr"].strip() else ""))
            elif r["stderr"].strip():
                problems.append(f"round {rnd} {ph}: unexpected stderr output: {r['stderr'].strip()[:300]}")
            # Deleting thousands of files now would slow down the inode allocation of
            # the next measurements on ext4 without a journal (see run()); the
            # queues are removed with the temp folder at the end.
            if ph in ("raw", "pattern"):
                remove_tree(work)
            res[ph] = r
            print(f"  round {rnd} {ph:14} {r['rate']:9.1f} ops/s  p50 {r['p50_ms']:7.2f} ms  "
                  f"p99 {r['p99_ms']:7.2f} ms  busy {r['machine_cpu_busy_pct']:3.0f}%  "
                  f"not ours {r['other_cpu_pct']:3.0f}%  errors {r['errors']}", file=sys.stderr)
        rounds.append(res)

    summary = summarize(rounds, phases)
    print(text_report(info, summary, phases, args, problems))
    if args.markdown:
        print()
        print(markdown_report(info, summary, phases, args, problems))
    if args.json:
        for r in rounds:
            for v in r.values():
                v.pop("stderr", None)
        rec = {"machine": info, "settings": vars(args), "phases": phases, "summary": summary,
               "rounds": rounds, "problems": problems}
        with open(args.json, "w") as f:
            json.dump(rec, f, indent=2, default=str)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
