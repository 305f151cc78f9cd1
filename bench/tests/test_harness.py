"""Quick tests of bench/harness.py (run as root). The binaries come from
$HARNESS_BIN (scripts/test sets it to the build folder), else .build/release.
The classic-qmail target needs a classic qmail built outside the repository;
its check is bench/tests/classic_check.py, run by hand (see its docstring)."""
import json
import os
import shutil
import struct
import pytest
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(os.path.dirname(HERE), "harness.py")
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("HARNESS_BIN")


def run(args, timeout=120):
    extra = ["--bin", BIN, "--qmail-remote", os.path.join(BIN, "qmail-remote")] if BIN else []
    return subprocess.run([sys.executable, HARNESS] + extra + args, capture_output=True, text=True, timeout=timeout)


def procs_referencing(path):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


def test_refuses_non_loopback(tmp_path):
    for host in ("10.1.2.3", "8.8.8.8", "example.com"):
        r = run(["--smtp-host", host, "--messages", "5", "--base", str(tmp_path), "--out", str(tmp_path / "x")])
        assert r.returncode != 0
        assert "refusing non-loopback address" in r.stderr
        assert host in r.stderr
        assert os.listdir(tmp_path) == []          # nothing started, nothing written
    for host in ("127.0.0.1", "127.9.9.9", "::1", "localhost"):
        sys.path.insert(0, os.path.dirname(HARNESS))
        import harness
        assert harness.check_loopback(host)


def check_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, tp, w, h, depth, ctype, comp, filt, inter = struct.unpack(">I4sIIBBBBB", data[8:29])
    assert (length, tp) == (13, b"IHDR")
    assert w >= 300 and h >= 300 and depth == 8 and ctype in (2, 6)     # RGB or RGBA (matplotlib's Agg)
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29]) & 0xffffffff
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    out = subprocess.run(["file", path], capture_output=True, text=True).stdout
    assert "PNG image data" in out
    return w, h


def test_chart_has_a_column_per_workload(tmp_path):
    sys.path.insert(0, os.path.dirname(HARNESS))
    import harness
    series = [{"t": t, "delivered": 100 * t, "todo": 0, "queued": 10 - t} for t in range(11)]
    run_ = {"target": "ours", "series": series, "released_at_s": 2.0}
    result = {"title": "aims: ours, classic", "started": "now",
              "workloads": [{"name": n, "workload": {"messages": 10, "sizes": "2048", "rcpts": 1, "parallel": 4},
                             "runs": [run_, dict(run_, target="classic")]} for n in ("local", "remote-drain")]}
    one = harness.write_chart(str(tmp_path / "one.png"), dict(result, workloads=result["workloads"][:1]))
    two = harness.write_chart(str(tmp_path / "two.png"), result)
    w1, h1 = check_png(one)
    w2, h2 = check_png(two)
    assert h1 == h2 and w2 > w1 * 1.5                  # one column per workload
    assert os.path.getsize(two) < 200_000


def test_tiny_run_outputs_and_no_leftovers(tmp_path):
    out = str(tmp_path / "tiny")
    r = run(["--messages", "30", "--targets", "ours", "--timeout", "60", "--stall", "20",
             "--fsync-seconds", "0.5", "--out", out])
    assert r.returncode == 0, r.stderr[-2000:]
    for ext in (".json", ".csv", ".png"):
        assert os.path.getsize(out + ext) > 0
    check_png(out + ".png")
    res = json.load(open(out + ".json"))
    runs = res["workloads"][0]["runs"]
    assert runs[0]["ok"] and runs[0]["delivered"] == 30
    assert res["leftover_processes"] == []
    assert procs_referencing(res["run_dir"]) == []
    assert not os.path.exists(res["run_dir"])       # removed without --keep
    assert "| delivered/s |" in r.stdout


def test_latency_matches_maildir_mtimes(tmp_path):
    out = str(tmp_path / "lat")
    r = run(["--messages", "20", "--targets", "ours", "--timeout", "60", "--stall", "20",
             "--fsync-seconds", "0.5", "--out", out, "--keep"])
    res = json.load(open(out + ".json"))
    try:
        assert r.returncode == 0, r.stderr[-2000:]
        run0 = res["workloads"][0]["runs"][0]
        inj = {m["id"]: m["inject_start"] for m in run0["per_message"]}
        assert len(inj) == 20
        new = os.path.join(run0["maildir"], "new")
        lat = []
        for n in os.listdir(new):
            p = os.path.join(new, n)
            head = open(p, "rb").read(8192).decode("latin-1")
            k = head.find("X-Bench-Id: ")
            bid = head[k + 12:head.find("\n", k)].strip()
            lat.append(os.stat(p).st_mtime - inj[bid])
        assert len(lat) == 20
        lat.sort()

        def pct(p):
            x = (len(lat) - 1) * p / 100.0
            lo = int(x)
            hi = min(lo + 1, len(lat) - 1)
            return lat[lo] + (lat[hi] - lat[lo]) * (x - lo)
        for key, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
            assert abs(run0["latency_ms"][key] - pct(p) * 1000) <= 50, (key, run0["latency_ms"][key], pct(p) * 1000)
        # every message has its delivery timestamp recorded, equal to the file's mtime
        for m in run0["per_message"]:
            assert len(m["deliveries"]) == 1
    finally:
        shutil.rmtree(res["run_dir"], ignore_errors=True)
    assert procs_referencing(res["run_dir"]) == []


def postfix_masters():
    """Running Postfix master processes (any instance)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{d}/exe")
        except OSError:
            continue
        if exe.endswith("/postfix/master") or exe.endswith("/sbin/postfix-master"):
            out.append(int(d))
    return out


def test_postfix_instance_is_stopped_afterwards(tmp_path):
    before = set(postfix_masters())
    out = str(tmp_path / "pf")
    r = run(["--messages", "10", "--targets", "ours,postfix", "--timeout", "60", "--stall", "20",
             "--fsync-seconds", "0.3", "--out", out])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(out + ".json"))
    runs = res["workloads"][0]["runs"]
    assert {x["target"] for x in runs} == {"ours", "postfix"}
    assert all(x["ok"] for x in runs)
    assert res["leftover_processes"] == []
    assert procs_referencing(res["run_dir"]) == []
    assert set(postfix_masters()) == before     # the private Postfix instance is gone
