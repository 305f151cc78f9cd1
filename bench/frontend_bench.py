#!/usr/bin/env python3
"""Cost per message of the queue front ends (issue #22), beside plain
qmail-queue, in one run: the same message is handed, with its envelope, to

  qmail-queue                                   (the baseline)
  qmail-dkim (sign, RSA 2048)        -> qmail-queue
  qmail-dkim (sign, Ed25519)         -> qmail-queue
  qmail-dkim (verify, RSA, DNS stub) -> qmail-queue
  qmail-spamfilter (bogofilter) -> qmail-dkim (sign, RSA) -> qmail-queue

as a client does it (descriptor 0 the message, descriptor 1 the envelope),
one process chain per message, into a real queue with fsync. Rounds alternate
between the targets so that machine noise falls on all of them alike.
Reported: wall time per message and CPU time per message (user + system of
every process of the chain), and the extra over qmail-queue.

usage: bench/frontend_bench.py [--bin .build/release] [--messages 400] [--rounds 8]
Needs the programs built (swift build -c release; scripts/musl-link release),
opendkim-genkey, openssl, bogofilter, python3 (scripts/ensure-deps).
"""
import argparse, os, resource, shutil, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=".build/release")
ap.add_argument("--messages", type=int, default=400)
ap.add_argument("--rounds", type=int, default=8)
a = ap.parse_args()
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bin_ = os.path.abspath(a.bin)
support = os.path.join(root, "Tests/FrontEndsTests/Support")
prog = lambda p: os.path.join(bin_, p)
for p in ["qmail-queue", "qmail-dkim", "qmail-spamfilter", "queue-fix"]:
    if not os.access(prog(p), os.X_OK):
        sys.exit(f"frontend_bench: {prog(p)} is not built")

d = tempfile.mkdtemp(prefix="frontend-bench-")
try:
    subprocess.run([prog("queue-fix"), d + "/queue"], check=True, stdout=subprocess.DEVNULL)
    os.makedirs(d + "/control/keys")
    open(d + "/control/me", "w").write("mx.example.org\n")
    subprocess.run(["opendkim-genkey", "--domain=example.com", "--selector=rsa1", "--directory=" + d], check=True)
    shutil.move(d + "/rsa1.private", d + "/control/keys/rsa1")
    txt = open(d + "/rsa1.txt").read()
    rsa_record = "".join(part for i, part in enumerate(txt.split('"')) if i % 2 == 1)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", d + "/control/keys/ed1"], check=True)
    open(d + "/zone", "w").write(f"rsa1._domainkey.example.com {rsa_record}\n")
    os.makedirs(d + "/bogo")
    for i in range(6):
        spam = f"From: p{i}@spam.example\nSubject: cheap pills casino winner {i}\n\nBuy cheap pills casino lottery prize {i} free free\n"
        ham = f"From: c{i}@work.example\nSubject: project meeting {i}\n\nMinutes of the project meeting {i}; review the schedule.\n"
        subprocess.run(["bogofilter", "-d", d + "/bogo", "-s"], input=spam.encode(), check=True)
        subprocess.run(["bogofilter", "-d", d + "/bogo", "-n"], input=ham.encode(), check=True)
    body = "".join(f"Line {i} of the minutes of the project meeting, with the schedule and the budget.\n" for i in range(24))
    message = ("From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: project meeting\n"
               "Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <bench@example.com>\n\n" + body)
    open(d + "/message", "w").write(message)
    open(d + "/envelope", "wb").write(b"Falice@example.com\0Tbob@example.org\0\0")
    base_env = dict(os.environ, QUEUEDIR=d + "/queue", CONTROLDIR=d + "/control", QMAILHOME=d)
    for k in ["QMAILQUEUE", "NULLQUEUE", "DKIMSIGN", "DKIMVERIFY", "RELAYCLIENT", "SPAMFILTER", "DKIMQUEUE", "SPAMQUEUE", "QUEUEPROG"]:
        base_env.pop(k, None)
    # A signed copy for the verifying target, and the DNS stub serving its key.
    signed = subprocess.run([prog("qmail-dkim"), "/bin/cat"], stdin=open(d + "/message", "rb"), stdout=subprocess.PIPE,
                            env=dict(base_env, DKIMSIGN=d + "/control/keys/rsa1"), check=True).stdout
    open(d + "/signed", "wb").write(signed)
    dns = subprocess.Popen([sys.executable, support + "/txtdns.py", "--lifetime", "3600", d + "/zone"], stdout=subprocess.PIPE)
    port = int(dns.stdout.readline())
    targets = [
        ("qmail-queue", [prog("qmail-queue")], {}, "message"),
        ("qmail-dkim sign rsa-sha256 -> qmail-queue", [prog("qmail-dkim")], {"DKIMSIGN": d + "/control/keys/rsa1"}, "message"),
        ("qmail-dkim sign ed25519-sha256 -> qmail-queue", [prog("qmail-dkim")], {"DKIMSIGN": d + "/control/keys/ed1"}, "message"),
        ("qmail-dkim verify (rsa, DNS stub) -> qmail-queue", [prog("qmail-dkim")], {"DKIMVERIFY": "", "DNS_SERVER": f"127.0.0.1:{port}"}, "signed"),
        ("qmail-spamfilter (bogofilter) -> qmail-dkim sign rsa -> qmail-queue", [prog("qmail-spamfilter")],
         {"SPAMFILTER": f"/usr/bin/bogofilter -d {d}/bogo -p", "SPAMQUEUE": prog("qmail-dkim"), "DKIMSIGN": d + "/control/keys/rsa1"}, "message"),
    ]
    per_round = max(1, a.messages // a.rounds)
    results = {t[0]: [0.0, 0.0, 0] for t in targets}
    for r in range(a.rounds):
        for name, argv, extra, input_name in targets:
            env = dict(base_env, **extra)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            for _ in range(per_round):
                with open(d + "/" + input_name, "rb") as m, open(d + "/envelope", "rb") as e:
                    rc = subprocess.call(argv, stdin=m, stdout=e, env=env)
                if rc != 0:
                    sys.exit(f"frontend_bench: {name} exited {rc}")
            wall = time.monotonic() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            results[name][0] += wall; results[name][1] += cpu; results[name][2] += per_round
    dns.kill(); dns.wait()
    queued = len(os.listdir(d + "/queue/todo")) if os.path.isdir(d + "/queue/todo") else 0
    base_wall = results["qmail-queue"][0] / results["qmail-queue"][2] * 1000
    base_cpu = results["qmail-queue"][1] / results["qmail-queue"][2] * 1000
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, {per_round * a.rounds} messages per target "
          f"({len(message)} bytes), {a.rounds} rounds, programs from {a.bin}; {queued} messages queued in all")
    print("| chain | wall ms/msg | CPU ms/msg | extra wall over qmail-queue | extra CPU |")
    print("|---|---|---|---|---|")
    for name, _, _, _ in targets:
        w = results[name][0] / results[name][2] * 1000
        c = results[name][1] / results[name][2] * 1000
        print(f"| {name} | {w:.2f} | {c:.2f} | {w - base_wall:+.2f} | {c - base_cpu:+.2f} |")
finally:
    shutil.rmtree(d, ignore_errors=True)
