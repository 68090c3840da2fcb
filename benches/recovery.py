"""Recovery after SIGKILL, measured (driven by benches/recovery.sh; standard library only).

Two real alertpipe processes on the stack's broker, PostgreSQL and SMTP server: one with the
ingest role taking a steady load (unique critical alerts through the webhook, unique log lines
through the push endpoint), one with the consumer roles (persist, notify, archive). The consumer
process is SIGKILLed mid-stream and started again at once; for each stage, the time from the
restart until it is back to full flow: it holds every partition again and its lag (read from
its own /metrics) is back under one second of load. Variants: a process without
`group_instance_id` (a Deployment), one restarting under the same static id (a StatefulSet),
and the issue's case: a process without one restarting with one. Medians of the runs.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "common"))
from stack import ENV, REPO, port  # noqa: E402  (benches/common/stack.py)
STAGES = ("persist", "notify", "archive")
PROCS = []


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def post(url, body, ctype="application/json"):
    req = urllib.request.Request(url, data=body, headers={"content-type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except Exception:
        return 0


def wait_ready(url, within=60):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if get(url + "/readyz")[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"not ready within {within} s: {url}")


def metrics(url):
    """{(name, frozenset(labels)): value} of a Prometheus text page."""
    out = {}
    try:
        text = get(url + "/metrics")[1].decode()
    except Exception:
        return out
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        pairs = frozenset(
            tuple(kv.split("=", 1)) for kv in labels.rstrip("}").replace('"', "").split(",") if "=" in kv)
        try:
            out[(name, pairs)] = float(value)
        except ValueError:
            pass
    return out


def stage_state(m, stage):
    assigned = sum(v for (n, l), v in m.items()
                   if n == "alertpipe_consumer_assigned_partitions" and ("stage", stage) in l)
    lag = sum(v for (n, l), v in m.items() if n == "alertpipe_consumer_lag" and ("stage", stage) in l)
    return assigned, lag


class Load(threading.Thread):
    """Unique critical alerts (5 per request) and unique lines (20 per push) at a steady pace."""

    def __init__(self, url, per_s):
        super().__init__(daemon=True)
        self.url, self.per_s, self.stop, self.acked, self.failed = url, per_s, False, 0, 0

    def run(self):
        i, period = 0, 1.0 / self.per_s
        nxt = time.time()
        while not self.stop:
            alerts = [{
                "status": "firing",
                "labels": {"alertname": f"Recovery{i + k}", "service": f"svc{(i + k) % 7}",
                           "cluster": "bench", "severity": "critical"},
                "annotations": {"summary": f"recovery bench {i + k}"},
                "startsAt": "2026-11-24T13:23:14Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://loki.example/", "fingerprint": f"{0xbe00000000 + i + k:016x}",
            } for k in range(5)]
            hook = {"receiver": "r", "status": "firing", "alerts": alerts, "groupLabels": {},
                    "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                    "version": "4", "groupKey": "bench", "truncatedAlerts": 0}
            ok = post(self.url + "/api/v1/alerts", json.dumps(hook).encode()) == 200
            ns = time.time_ns()
            values = [[str(ns + j), f"recovery bench line {i} {j} payment failed"] for j in range(20)]
            push = {"streams": [{"stream": {"service": f"svc{i % 7}", "cluster": "bench"}, "values": values}]}
            ok = post(self.url + "/loki/api/v1/push", json.dumps(push).encode()) == 204 and ok
            self.acked += ok
            self.failed += not ok
            i += 5
            nxt += period
            time.sleep(max(0.0, nxt - time.time()))


def psql(sql):
    subprocess.run([os.path.join(ENV["STACK_PG_BIN"], "psql"), "-q", ENV["STACK_PG_URL"], "-c", sql],
                   check=True, stdout=subprocess.DEVNULL)


def one_run(bin_, variant, per_s, work, n):
    tag = f"rec{os.getpid()}x{n}x{variant.replace('-', '')}"
    psql(f"CREATE DATABASE {tag}")
    base_url = ENV["STACK_PG_URL"].rsplit("/", 1)[0]
    env = {
        **os.environ,
        "ALERTPIPE__KAFKA__BROKERS": ENV["STACK_KAFKA_BROKERS"],
        "ALERTPIPE__KAFKA__ALERTS_TOPIC": f"{tag}-alerts",
        "ALERTPIPE__KAFKA__LOGS_TOPIC": f"{tag}-logs",
        "ALERTPIPE__DATABASE__URL": f"{base_url}/{tag}",
        "ALERTPIPE__PERSIST__GROUP": f"{tag}-persist",
        "ALERTPIPE__NOTIFY__GROUP": f"{tag}-notify",
        "ALERTPIPE__NOTIFY__DLQ_TOPIC": f"{tag}-alerts.dlq",
        "ALERTPIPE__NOTIFY__SMTP__PORT": ENV["STACK_SMTP_PORT"],
        "ALERTPIPE__ARCHIVE__GROUP": f"{tag}-archive",
        "ALERTPIPE__ARCHIVE__ROOT": os.path.join(work, tag, "archive"),
        "ALERTPIPE__ARCHIVE__MAX_AGE_S": "5",
        "ALERTPIPE__TELEMETRY__LOG_LEVEL": "info,librdkafka=warn",
    }
    os.makedirs(os.path.join(work, tag), exist_ok=True)
    log = open(os.path.join(work, tag, "alertpipe.log"), "ab")

    def start(roles, listen, extra):
        p = subprocess.Popen([bin_, "serve", "--config", os.path.join(REPO, "config/alertpipe.toml"),
                              "--roles", roles], stdout=log, stderr=log,
                             env={**env, "ALERTPIPE__SERVER__LISTEN": listen, **extra})
        PROCS.append(p)
        return p

    ing_port, con_port = port(), port()
    ingest = start("ingest", f"127.0.0.1:{ing_port}", {})
    first = {} if variant in ("dynamic", "dynamic-then-static") else {"ALERTPIPE__KAFKA__GROUP_INSTANCE_ID": tag}
    after = {} if variant == "dynamic" else {"ALERTPIPE__KAFKA__GROUP_INSTANCE_ID": tag}
    consumer = start("persist,notify,archive", f"127.0.0.1:{con_port}", first)
    ing_url, con_url = f"http://127.0.0.1:{ing_port}", f"http://127.0.0.1:{con_port}"
    wait_ready(ing_url)
    wait_ready(con_url)
    load = Load(ing_url, per_s)
    load.start()
    time.sleep(10)
    consumer.kill()
    consumer.wait()
    consumer = start("persist,notify,archive", f"127.0.0.1:{con_port}", after)
    restarted = time.time()
    back = {}
    threshold = per_s * 5 * 2  # two seconds of alerts, or of log pushes
    while len(back) < len(STAGES) and time.time() - restarted < 180:
        m = metrics(con_url)
        for s in STAGES:
            if s in back:
                continue
            assigned, lag = stage_state(m, s)
            if assigned >= 3 and lag <= threshold:
                back[s] = time.time() - restarted
        time.sleep(0.25)
    load.stop = True
    load.join()
    for p in (consumer, ingest):
        p.terminate()
        p.wait(timeout=60)
    if load.failed > load.acked / 100:
        sys.exit(f"the load failed: {load.failed} of {load.acked + load.failed} requests; see {work}")
    missing = [s for s in STAGES if s not in back]
    if missing:
        sys.exit(f"{variant}: {missing} not back to full flow 180 s after the restart; see {work}/{tag}")
    psql(f"DROP DATABASE IF EXISTS {tag} WITH (FORCE)")
    return back


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=20, help="requests/s: 5 alerts and 20 lines each")
    ap.add_argument("--variants", default="dynamic,static,dynamic-then-static")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="alertpipe-recovery-")
    ok = False
    try:
        print(f"load: {args.rate * 5} alerts/s and {args.rate * 20} lines/s; SIGKILL at 10 s, restart at once")
        summary = {}
        for variant in args.variants.split(","):
            runs = []
            for n in range(args.runs):
                r = one_run(args.bin, variant, args.rate, work, n)
                runs.append(r)
                print(f"{variant:>20} run {n + 1}: " + "  ".join(f"{s} {r[s]:5.1f} s" for s in STAGES)
                      + f"  (all {max(r.values()):5.1f} s)", flush=True)
            summary[variant] = {s: statistics.median(r[s] for r in runs) for s in STAGES}
            summary[variant]["all"] = statistics.median(max(r.values()) for r in runs)
        print(f"--- restart -> every stage back to full flow, medians of {args.runs} runs ---")
        for variant, med in summary.items():
            print(f"{variant:>20}: " + "  ".join(f"{k} {v:5.1f} s" for k, v in med.items()))
        ok = True
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
