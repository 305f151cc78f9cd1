"""The harness's classic-qmail target, end to end and as a drain, against a
classic qmail built outside this repository (docs/benchmarks.md, "Method",
says how). Not part of scripts/test, which runs where no classic qmail is
installed; run it by hand, as root:

    HARNESS_BIN=$PWD/.build/release HARNESS_CLASSIC=/var/qmail-classic \
        python3 -m pytest bench/tests/classic_check.py -q -p no:cacheprovider
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_harness import procs_referencing, run  # noqa: E402


CLASSIC = os.environ.get("HARNESS_CLASSIC")


def test_classic_target_end_to_end_and_drain_then_prefix_restored(tmp_path):
    assert CLASSIC, "set HARNESS_CLASSIC to a classic qmail prefix (built from notqmail, docs/benchmarks.md)"
    for burst in (False, True):
        out = str(tmp_path / f"classic{int(burst)}")
        r = run(["--messages", "20", "--targets", "ours,classic", "--classic", CLASSIC, "--remote-share", "0.5",
                 "--sink", "smtp-sink", "--timeout", "60", "--stall", "20", "--fsync-seconds", "0.3", "--out", out]
                + (["--scenario", "burst"] if burst else []))
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.load(open(out + ".json"))
        runs = res["workloads"][0]["runs"]
        assert {x["target"] for x in runs} == {"ours", "classic"}
        assert all(x["ok"] and x["delivered"] == 20 for x in runs)
        if burst:
            c = next(x for x in runs if x["target"] == "classic")
            assert c["drain_rate"] and c["max_queued"] + c["max_todo"] >= 15    # built up while held
        assert res["leftover_processes"] == []
        assert procs_referencing(res["run_dir"]) == []
        assert "ratio ours/classic" in res["workloads"][0]["summary"]
    # the installation's own folders are back in place
    for d in ("control", "users", "queue"):
        assert os.path.isdir(os.path.join(CLASSIC, d)) and not os.path.islink(os.path.join(CLASSIC, d))
        assert not os.path.exists(os.path.join(CLASSIC, d + ".install"))
