"""The whole chain, measured (driven by benches/chain.sh; standard library only).

latency: a log line written -> Promtail -> Loki (its ruler on config/loki/rules) ->
  Alertmanager -> alertpipe -> SMTP mail delivered, for N services that each start failing at a
  different moment (so the rule's evaluation phase is sampled). Timings as shipped (rule interval
  1m, for 1m, group_wait 10s) or the demo's (2s, 0s, 2s). p50/p99 per run, medians of the runs.

cpu: the same Promtail stream (a file of real log lines) pushed to Loki and to alertpipe's push
  endpoint; CPU seconds per MB of raw lines spent by Loki, by alertpipe's ingest role and by the
  broker (a private Apache Kafka), read from /proc. Ratios are against Loki, measured in the same run.

Every program is the real one, started here on 127.0.0.1 with the shipped configs.
"""
import argparse
import email
import email.policy
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "common"))
from stack import ENV, REPO, port  # noqa: E402  (benches/common/stack.py)
TICK = os.sysconf("SC_CLK_TCK")
PROCS = []


def spawn(name, args, work, env=None, cwd=None):
    log = open(os.path.join(work, f"{name}.log"), "ab")
    p = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ, **(env or {})}, cwd=cwd)
    PROCS.append(p)
    return p


def wait_http(url, within=120):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"not ready: {url}")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def loki(work, rules=None, am=None):
    http = port()
    rules_dir = os.path.join(work, "rules")
    os.makedirs(os.path.join(rules_dir, "fake"), exist_ok=True)
    if rules:
        for f in os.listdir(os.path.join(REPO, "config/loki/rules/fake")):
            text = open(os.path.join(REPO, "config/loki/rules/fake", f)).read()
            if rules == "demo":
                text = "\n".join("    interval: 2s" if l.startswith("    interval:") else
                                 "        for: 0s" if l.startswith("        for:") else l
                                 for l in text.splitlines())
            open(os.path.join(rules_dir, "fake", f), "w").write(text)
    env = {"LOKI_LISTEN_ADDRESS": "127.0.0.1", "LOKI_INSTANCE_ADDR": "127.0.0.1",
           "LOKI_HTTP_PORT": str(http), "LOKI_GRPC_PORT": str(port()),
           "LOKI_DATA_DIR": os.path.join(work, "loki"), "LOKI_RULES_DIR": rules_dir,
           "LOKI_ALERTMANAGER_URL": am or "http://127.0.0.1:9", "LOKI_LOG_LEVEL": "warn"}
    if rules == "demo":
        env.update({"LOKI_RULER_INTERVAL": "2s", "LOKI_RULER_POLL": "5s"})
    p = spawn("loki", [ENV["STACK_LOKI_BIN"], f"-config.file={REPO}/config/loki/loki.yml",
                       "-config.expand-env=true"], work, env)
    wait_http(f"http://127.0.0.1:{http}/ready", 180)
    return p, f"http://127.0.0.1:{http}"


def promtail(work, logs, loki_url, alertpipe_url):
    http = port()
    if not os.path.exists(os.path.join(work, "token")):
        open(os.path.join(work, "token"), "w").write("bench-token")
    env = {"HOSTNAME": "bench-host", "PROMTAIL_LISTEN_ADDRESS": "127.0.0.1",
           "PROMTAIL_HTTP_PORT": str(http), "PROMTAIL_POSITIONS": os.path.join(work, "positions.yaml"),
           "PROMTAIL_LOG_GLOB": f"{logs}/*/*.log",
           "LOKI_PUSH_URL": f"{loki_url}/loki/api/v1/push",
           "ALERTPIPE_PUSH_URL": f"{alertpipe_url}/loki/api/v1/push",
           "ALERTPIPE_TOKEN_FILE": os.path.join(work, "token")}
    p = spawn("promtail", [ENV["STACK_PROMTAIL_BIN"], f"-config.file={REPO}/config/promtail/promtail.yml",
                           "-config.expand-env=true"], work, env)
    wait_http(f"http://127.0.0.1:{http}/metrics", 30)
    return p, f"http://127.0.0.1:{http}"


def alertpipe(work, bin_, brokers, roles, extra=None):
    http = port()
    tag = f"bench{int(time.time() * 1000)}"
    env = {"ALERTPIPE__SERVER__LISTEN": f"127.0.0.1:{http}", "ALERTPIPE__KAFKA__BROKERS": brokers,
           "ALERTPIPE__KAFKA__ALERTS_TOPIC": f"{tag}-alerts", "ALERTPIPE__KAFKA__LOGS_TOPIC": f"{tag}-logs",
           "ALERTPIPE__TELEMETRY__LOG_LEVEL": "warn", **(extra or {})}
    p = spawn("alertpipe", [bin_, "serve", "--config", f"{REPO}/config/alertpipe.toml", "--roles", roles],
              work, env)
    wait_http(f"http://127.0.0.1:{http}/readyz", 60)
    return p, f"http://127.0.0.1:{http}", tag


def broker(work):
    """A private Apache Kafka broker (deploy/local/kafka.sh), ready when it answers."""
    kport, cport = port(), port()
    d = os.path.join(work, "kafka")
    os.makedirs(d, exist_ok=True)
    p = spawn("kafka", ["bash", ENV["STACK_KAFKA_SH"], "run", d, str(kport), str(cport)], work)
    if subprocess.run(["bash", ENV["STACK_KAFKA_SH"], "ready", str(kport), "60"]).returncode != 0:
        sys.exit("kafka did not start")
    return p, f"127.0.0.1:{kport}"


def metric(url, name, **labels):
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def latency(args, bin_):
    work = tempfile.mkdtemp(prefix="bench-chain-")
    shipped = args.timings == "shipped"
    kp, brokers = broker(work)
    smtp_port = port()
    maildir = os.path.join(work, "maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub))
    spawn("smtp", [ENV["STACK_SYS_PYTHON"], "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}", "-c",
                   "smtp_sink.MaildirSink", maildir], work, {"PYTHONPATH": f"{REPO}/deploy/local"})
    token = os.path.join(work, "token")
    open(token, "w").write("bench-token")
    ap, ap_url, _ = alertpipe(work, bin_, brokers, "ingest,persist,notify", {
        "ALERTPIPE__DATABASE__URL": ENV["STACK_ALERTPIPE_DB_URL"],
        "ALERTPIPE__AUTH__MODE": "bearer", "ALERTPIPE__AUTH__SECRET_FILE": token,
        "ALERTPIPE__NOTIFY__SMTP__PORT": str(smtp_port),
        "ALERTPIPE__NOTIFY__GROUP": f"bench-notify-{os.getpid()}",
        "ALERTPIPE__PERSIST__GROUP": f"bench-persist-{os.getpid()}",
        # One mail per alert, as in production for a handful of services: no digest.
        "ALERTPIPE__NOTIFY__RECEIVER_BURST": "1000", "ALERTPIPE__NOTIFY__RECEIVER_PER_MINUTE": "1000"})
    am_port = port()
    cfg = open(f"{REPO}/config/alertmanager/alertmanager.yml").read()
    cfg = cfg.replace("http://alertpipe:8080", ap_url).replace("/etc/alertmanager/secrets/alertpipe-token", token)
    if not shipped:
        cfg = cfg.replace("group_wait: 10s", "group_wait: 2s").replace("group_interval: 1m", "group_interval: 5s")
    open(os.path.join(work, "am.yml"), "w").write(cfg)
    spawn("alertmanager", [ENV["STACK_ALERTMANAGER_BIN"], f"--config.file={work}/am.yml",
                           f"--storage.path={work}/am", f"--web.listen-address=127.0.0.1:{am_port}",
                           "--cluster.listen-address="], work)
    wait_http(f"http://127.0.0.1:{am_port}/-/ready")
    lp, loki_url = loki(work, rules=args.timings, am=f"http://127.0.0.1:{am_port}")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    promtail(work, logs, loki_url, ap_url)
    spread = 60.0 if shipped else 10.0
    runs = []
    for run in range(args.runs):
        services = [f"r{run}svc{i:02d}x{os.getpid()}" for i in range(args.alerts)]
        written = {}
        start = time.time()
        for i, svc in enumerate(services):
            d = os.path.join(logs, svc)
            os.makedirs(d)
            with open(os.path.join(d, "app.log"), "a") as f:  # normal operation first
                for n in range(80):
                    f.write(json.dumps({"level": "info", "message": f"payment {n} accepted"}) + "\n")
        for i, svc in enumerate(services):
            at = start + spread * i / len(services)
            time.sleep(max(0.0, at - time.time()))
            with open(os.path.join(logs, svc, "app.log"), "a") as f:
                written[svc] = time.time()
                for n in range(3):
                    f.write(json.dumps({"level": "error", "message": "DB connection failed", "n": n}) + "\n")
        deadline = time.time() + (400 if shipped else 90)
        got = {}
        while time.time() < deadline and len(got) < len(services):
            for name in os.listdir(os.path.join(maildir, "new")):
                path = os.path.join(maildir, "new", name)
                with open(path, "rb") as f:
                    m = email.message_from_binary_file(f, policy=email.policy.default)
                subject = str(m["subject"])
                for svc in services:
                    if svc.lower() in subject.lower() and "Service Failure" in subject and svc not in got:
                        got[svc] = os.stat(path).st_mtime
            time.sleep(0.5)
        lat = [got[s] - written[s] for s in services if s in got]
        if len(lat) < len(services):
            print(f"  run {run + 1}: only {len(lat)} of {len(services)} mails arrived", flush=True)
        if not lat:
            sys.exit("no mail arrived; see " + work)
        r = (pct(lat, 0.5), pct(lat, 0.99), len(lat))
        runs.append(r)
        print(f"  run {run + 1}: {r[2]} alerts, line written -> mail delivered p50 {r[0]:.1f} s, "
              f"p99 {r[1]:.1f} s", flush=True)
    print(f"latency ({args.timings} timings): median of {len(runs)} runs: "
          f"p50 {statistics.median(r[0] for r in runs):.1f} s, p99 {statistics.median(r[1] for r in runs):.1f} s "
          f"over {args.alerts} alerts per run")
    shutil.rmtree(work, ignore_errors=True)


def corpus(path, mb):
    """Real log lines: what the real programs of this machine wrote (the stack's logs, the
    package manager's), repeated until `mb` MB."""
    sources = []
    for d in (ENV.get("STACK_STATE", ""), "/var/log"):
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if name.endswith(".log") and os.path.isfile(p) and not name.startswith("bench"):
                sources.append(p)
    lines = []
    for p in sources:
        with open(p, "rb") as f:
            for raw in f:
                raw = raw.rstrip(b"\n")
                # Lines that carry their own old date would be refused by Loki (older than
                # 7 days): keep the ones Promtail stamps or that are recent.
                if raw and len(raw) < 16384 and not raw[:4].isdigit():
                    lines.append(raw)
    if not lines:
        sys.exit("no log lines found to build the corpus")
    size, out = 0, []
    with open(path, "wb") as f:
        while size < mb * 1_000_000:
            for l in lines:
                f.write(l + b"\n")
                size += len(l) + 1
                if size >= mb * 1_000_000:
                    break
    return size, len(lines)


def cpu(args, bin_):
    work = tempfile.mkdtemp(prefix="bench-cpu-")
    kp, brokers = broker(work)
    ap, ap_url, _ = alertpipe(work, bin_, brokers, "ingest")
    lp, loki_url = loki(work)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    pt, pt_url = promtail(work, logs, loki_url, ap_url)
    procs = (("loki", lp), ("alertpipe", ap), ("kafka", kp))
    # What each spends doing nothing, measured in the same run: the "marginal" figures take
    # it out (alertpipe's librdkafka polling threads cost about 0.6% of a core each when idle).
    time.sleep(5)
    idle0 = {n: cpu_s(p.pid) for n, p in procs}
    time.sleep(15)
    idle = {n: (cpu_s(p.pid) - idle0[n]) / 15 for n, p in procs}
    print("  idle CPU (cores): " + ", ".join(f"{n} {v:.4f}" for n, v in idle.items()), flush=True)
    rows, marginal = [], []
    for run in range(args.runs):
        d = os.path.join(logs, f"corpus{run}")
        os.makedirs(d)
        tmp = os.path.join(work, "corpus.tmp")
        size, distinct = corpus(tmp, args.mb)
        sent0 = {u: metric(pt_url, "promtail_sent_bytes_total", host=h) for u, h in
                 ((loki_url, loki_url.split("//")[1]), (ap_url, ap_url.split("//")[1]))}
        before = {n: cpu_s(p.pid) for n, p in (("loki", lp), ("alertpipe", ap), ("kafka", kp))}
        t0 = time.time()
        os.rename(tmp, os.path.join(d, "app.log"))  # appears at once, whole
        # Done when Promtail has read the file and both clients have sent it all.
        last, stable = None, 0
        while time.time() - t0 < 1800:
            time.sleep(1)
            read = metric(pt_url, "promtail_read_bytes_total", path=os.path.join(d, "app.log"))
            sent = tuple(metric(pt_url, "promtail_sent_bytes_total", host=u.split("//")[1]) for u in sent0)
            stable = stable + 1 if (sent == last and read >= size) else 0
            last = sent
            if stable >= 3:
                break
        secs = time.time() - t0
        after = {n: cpu_s(p.pid) for n, p in (("loki", lp), ("alertpipe", ap), ("kafka", kp))}
        mbs = size / 1e6
        per = {n: (after[n] - before[n]) / mbs for n in after}
        rows.append(per)
        marg = {n: max(0.0, after[n] - before[n] - idle[n] * secs) / mbs for n in after}
        marginal.append(marg)
        print(f"  run {run + 1}: {mbs:.0f} MB ({distinct} distinct real lines, repeated) in {secs:.0f} s; "
              f"CPU-s/MB: Loki {per['loki']:.4f}, alertpipe {per['alertpipe']:.4f} "
              f"({per['alertpipe'] / per['loki']:.2f}x), kafka {per['kafka']:.4f}, "
              f"alertpipe+kafka {(per['alertpipe'] + per['kafka']) / per['loki']:.2f}x; marginal (idle taken out): "
              f"alertpipe {marg['alertpipe'] / marg['loki']:.2f}x, +kafka "
              f"{(marg['alertpipe'] + marg['kafka']) / marg['loki']:.2f}x", flush=True)
        os.remove(os.path.join(d, "app.log"))
    med = {n: statistics.median(r[n] for r in rows) for n in rows[0]}
    print(f"cpu per MB of the Promtail stream, median of {len(rows)} runs: Loki {med['loki']:.4f} CPU-s/MB, "
          f"alertpipe ingest {med['alertpipe']:.4f} = {med['alertpipe'] / med['loki']:.2f}x Loki "
          f"(target <= 0.10x), alertpipe + broker {(med['alertpipe'] + med['kafka']) / med['loki']:.2f}x "
          f"(target <= 0.25x)")
    mm = {n: statistics.median(r[n] for r in marginal) for n in marginal[0]}
    print(f"  marginal (each process's idle CPU taken out): Loki {mm['loki']:.4f} CPU-s/MB, alertpipe "
          f"{mm['alertpipe']:.4f} = {mm['alertpipe'] / mm['loki']:.2f}x, alertpipe + broker "
          f"{(mm['alertpipe'] + mm['kafka']) / mm['loki']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["latency", "cpu"])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--alerts", type=int, default=20)
    ap.add_argument("--timings", choices=["shipped", "demo"], default="demo")
    ap.add_argument("--mb", type=int, default=200)
    args = ap.parse_args()
    try:
        (latency if args.what == "latency" else cpu)(args, args.bin)
    finally:
        for p in PROCS:
            p.terminate()
        for p in PROCS:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
