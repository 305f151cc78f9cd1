"""Quick tests of bench/smtp_bench.py's own logic (no SMTP servers, no long runs)."""
import os
import socket
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import smtp_bench as S  # noqa: E402


def test_master_cf_gets_one_loopback_smtpd_listener():
    text = "# comment\n#smtp      inet  n       -       y       -       -       smtpd\nqmgr  unix  n  -  n  300  1  qmgr\n"
    out = S.postfix_master_cf(text, 2525)
    lines = out.splitlines()
    assert lines[:3] == text.splitlines()
    assert lines[-1].split() == ["127.0.0.1:2525", "inet", "n", "-", "n", "-", "-", "smtpd"]
    assert S.postfix_master_cf(out, 2525) == out          # not added twice


def test_smtp_data_crlf_and_dot_stuffing():
    assert S.smtp_data(b"a\n.b\n..c\nd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    assert S.smtp_data(b"a\r\nb\r\n") == b"a\r\nb\r\n.\r\n"
    m = S.probe_message("t-probe-3", 1234.5)
    assert b"X-Bench-Id: t-probe-3\n" in m and b"X-Bench-Injected: 1234.500000\n" in m and len(m) == 1024


def test_parallel_fsync_ceiling_counts_files(tmp_path):
    rate = S.parallel_fsync_ceiling(str(tmp_path / "c"), 2, 0.2, 2048)
    files = [f for f in os.listdir(tmp_path / "c") if not f.startswith(".")]
    assert rate > 0 and files
    assert all(os.path.getsize(tmp_path / "c" / f) == 2048 for f in files)
    assert abs(rate - len(files) / 0.2) <= 0.5 * len(files) / 0.2 + 10


def run(target, wl, n, **kv):
    r = {"target": target, "workload": wl, "sessions": n, "ok": True}
    r.update(kv)
    return r


def test_summary_and_aims():
    runs = [run("ours-daemon", "inject", 4, injection_rate=900.0, fsync_ceiling=1000.0),
            run("ours-daemon", "inject", 16, injection_rate=700.0, fsync_ceiling=1000.0),
            run("ours-daemon", "local", 4, throughput=1000.0, probe_ms={"p50": 7.5}),
            run("ours-daemon", "local", 4, throughput=1200.0, probe_ms={"p50": 12.5}),
            run("postfix", "local", 4, throughput=500.0),
            run("postfix", "local", 4, throughput=600.0, ok=False),     # failed runs do not count
            run("classic", "local", 4, throughput=300.0),
            run("ours-daemon", "remote", 4, throughput=900.0),
            run("postfix", "remote", 4, throughput=500.0)]
    s = S.summarize(runs)
    assert s[("local", 4)]["ours-daemon"]["throughput"] == 1100.0
    assert s[("local", 4)]["postfix"]["throughput"] == 500.0 and s[("local", 4)]["postfix"]["ok_runs"] == 1
    aims = {a: (got, met) for a, got, met in S.evaluate_aims(s)}
    assert aims["injection alone, 4 sessions: >= 80 % of the parallel fsync ceiling"][1] is True
    assert aims["injection alone, 16 sessions: >= 80 % of the parallel fsync ceiling"][1] is False
    assert aims["local, 4 sessions: end to end >= 2x postfix"] == ("1,100.0 / 500.0 = 2.20x", True)
    assert aims["local, 4 sessions: end to end >= 4x classic"][1] is False
    assert aims["local, 4 sessions: p50 SMTP-in -> Maildir < 10 ms"] == ("10.0 ms", False)
    assert aims["remote, 4 sessions: end to end >= 2x postfix"][1] is False
    assert "remote, 4 sessions: end to end >= 4x classic" not in aims      # classic did not run remote
    assert "### local, 4 sessions" in S.tables(s, list(S.TARGETS))


def test_smtp_send_against_a_scripted_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = []

    def serve():
        c, _ = srv.accept()
        f = c.makefile("rb")
        c.sendall(b"220 hi\r\n")
        data = False
        for line in f:
            got.append(line)
            if data:
                if line == b".\r\n":
                    data = False
                    c.sendall(b"250 ok\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                c.sendall(b"250-x\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                data = True
                c.sendall(b"354 go\r\n")
            elif verb == b"QUIT":
                c.sendall(b"221 bye\r\n")
                break
            else:
                c.sendall(b"250 ok\r\n")
        c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert S.smtp_send(srv.getsockname()[1], "s@x", "r@y", b"Subject: t\n\n.dot\n", timeout=10) == 250
    t.join(10)
    srv.close()
    assert b"RCPT TO:<r@y>\r\n" in got and b"..dot\r\n" in got and got[-1] == b"QUIT\r\n"


def test_remove_tree(tmp_path):
    for d in range(3):
        os.makedirs(tmp_path / "t" / f"d{d}" / "sub")
        for k in range(20):
            (tmp_path / "t" / f"d{d}" / "sub" / f"f{k}").write_bytes(b"x")
    S.remove_tree(str(tmp_path / "t"), threads=4)
    assert not os.path.exists(tmp_path / "t")


def test_chart(tmp_path):
    import pytest
    pytest.importorskip("matplotlib")
    runs = [run("ours-daemon", "inject", 4, injection_rate=900.0), run("postfix", "local", 4, throughput=500.0),
            run("classic", "remote", 16, throughput=300.0)]
    p = S.write_chart(str(tmp_path / "c.png"), [runs, runs], "t")
    assert open(p, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
