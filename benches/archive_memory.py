"""The archive's memory under a flood of logs (driven by benches/archive_memory.sh; standard
library only).

One real alertpipe process with the ingest and archive roles on the stack's broker, default
settings but for a short file age (so files also roll by age during the run). `--mb` MB of
log lines from `--services` services (one stream per service and host, lines of a few
templates with varying fields, timestamps spread over yesterday) go through
`POST /loki/api/v1/push` from four threads. Reported: the push rate, the process's resident
memory at rest and at its peak (VmHWM), files per service-day as written and after
`alertpipe archive compact` (with the compaction's own peak), and the archive's size. Every line
is counted back out of the files: none lost, none doubled.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "common"))
from stack import ENV, REPO, port  # noqa: E402  (benches/common/stack.py)
CONFIG = os.environ.get("ALERTPIPE_BENCH_CONFIG", os.path.join(REPO, "config/alertpipe.toml"))

TEMPLATES = [
    'level=info ts={ts} caller=handler.go:{n} msg="request served" method=GET path=/api/v1/orders/{id} status=200 duration={ms}ms',
    '{{"level":"warn","ts":"{ts}","msg":"slow query","table":"payments","rows":{n},"duration_ms":{ms},"trace_id":"{hex}"}}',
    '{ts} ERROR [worker-{n}] payment {id} declined by issuer: insufficient funds (code {ms})',
    '10.0.{n}.{ms} - - [{ts}] "POST /checkout/{id} HTTP/1.1" 201 {ms} "-" "okhttp/4.12"',
    '{ts} DEBUG cache miss key=user:{id}:profile shard={n} ttl={ms}s',
]


def vm(pid, key):
    """A /proc/<pid>/status figure in MiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def metric(url, name):
    total = 0.0
    for line in get(url + "/metrics").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Pusher(threading.Thread):
    """Pushes `count` bodies of about 1 MB, each a slice of every service's stream."""

    def __init__(self, url, seed, target_bytes, services, day_ns):
        super().__init__(daemon=True)
        self.url, self.target, self.services, self.day_ns = url, target_bytes, services, day_ns
        self.rng = random.Random(seed)
        self.seed, self.lines, self.bytes, self.failed = seed, 0, 0, 0

    def run(self):
        per_service = max(1, 1_000_000 // (self.services * 120))
        i = 0
        while self.bytes < self.target:
            i += 1
            streams = []
            for s in range(self.services):
                values = []
                for j in range(per_service):
                    n = self.rng.randrange(1000)
                    ts = self.day_ns + self.seed * 6 * 3600 * 10**9 + (i * per_service + j) * 1_000_000
                    line = TEMPLATES[(s + j) % len(TEMPLATES)].format(
                        ts=ts, n=n, id=self.rng.randrange(10**8), ms=n % 97, hex=f"{self.rng.getrandbits(64):016x}")
                    values.append([str(ts), line])
                    self.bytes += len(line)
                self.lines += len(values)
                streams.append({"stream": {"service": f"svc{s:02d}", "cluster": "bench",
                                           "hostname": f"host{s % 5}"}, "values": values})
            body = json.dumps({"streams": streams}).encode()
            req = urllib.request.Request(self.url + "/loki/api/v1/push", data=body,
                                         headers={"content-type": "application/json"})
            for attempt in range(20):
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        if r.status == 204:
                            break
                except Exception:
                    pass
                time.sleep(0.5)
            else:
                self.failed += 1


def files_per_service_day(bin_, env, root):
    out = subprocess.run([bin_, "archive", "ls", "--config", CONFIG],
                         env=env, capture_output=True, text=True, check=True).stdout
    counts, rows = [], 0
    for line in out.splitlines():
        parts = line.split()
        # env service day files rows bytes
        if len(parts) == 6 and parts[0] == "bench":
            counts.append(int(parts[3]))
            rows += int(parts[4])
    return counts, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--mb", type=int, default=1024, help="MiB of raw lines to push")
    ap.add_argument("--services", type=int, default=50)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="alertpipe-archive-memory-")
    tag = f"mem{os.getpid()}"
    root = os.path.join(work, "archive")
    yesterday = (int(time.time()) // 86400 - 1) * 86400 * 10**9
    listen = port()
    env = {
        **os.environ,
        "ALERTPIPE__KAFKA__BROKERS": ENV["STACK_KAFKA_BROKERS"],
        "ALERTPIPE__KAFKA__LOGS_TOPIC": f"{tag}-logs",
        "ALERTPIPE__ARCHIVE__GROUP": f"{tag}-archive",
        "ALERTPIPE__ARCHIVE__ROOT": root,
        "ALERTPIPE__ARCHIVE__MAX_AGE_S": "20",
        "ALERTPIPE__SERVER__LISTEN": f"127.0.0.1:{listen}",
        "ALERTPIPE__TELEMETRY__LOG_LEVEL": "warn",
    }
    log = open(os.path.join(work, "alertpipe.log"), "ab")
    proc = subprocess.Popen([args.bin, "serve", "--config", CONFIG,
                             "--roles", "ingest,archive"], stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{listen}"
    ok = False
    try:
        deadline = time.time() + 60
        while True:
            try:
                if get(url + "/readyz"):
                    break
            except Exception:
                pass
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"alertpipe not ready; see {work}/alertpipe.log")
            time.sleep(0.2)
        time.sleep(2)
        rest = vm(proc.pid, "VmRSS")
        pushers = [Pusher(url, k, args.mb * 2**20 // 4, args.services, yesterday) for k in range(4)]
        t0 = time.time()
        for p in pushers:
            p.start()
        peak_during = 0.0
        while any(p.is_alive() for p in pushers):
            peak_during = max(peak_during, vm(proc.pid, "VmRSS"))
            time.sleep(0.5)
        pushed_s = time.time() - t0
        lines = sum(p.lines for p in pushers)
        raw = sum(p.bytes for p in pushers)
        if any(p.failed for p in pushers):
            sys.exit(f"{sum(p.failed for p in pushers)} pushes failed; see {work}/alertpipe.log")
        deadline = time.time() + 300
        while metric(url, "alertpipe_archive_lines_total") < lines:
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"only {metric(url, 'alertpipe_archive_lines_total'):.0f} of {lines} lines archived "
                         f"within 300 s; see {work}")
            peak_during = max(peak_during, vm(proc.pid, "VmRSS"))
            time.sleep(0.5)
        archived_s = time.time() - t0
        hwm = vm(proc.pid, "VmHWM")
        archived_lines = metric(url, "alertpipe_archive_lines_total")
        proc.terminate()
        proc.wait(timeout=60)
        if archived_lines != lines:
            sys.exit(f"{archived_lines:.0f} lines archived, {lines} pushed")
        cli_env = {**env, "ALERTPIPE__ARCHIVE__ROOT": root}
        before, rows_before = files_per_service_day(args.bin, cli_env, root)
        if rows_before != lines:
            sys.exit(f"the files hold {rows_before} rows, {lines} lines were pushed; see {work}")
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
        c0 = time.time()
        compactor = subprocess.Popen([args.bin, "archive", "compact", "--config",
                                      CONFIG],
                                     env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = compactor.stdout.read(), compactor.stderr.read()
        _, status, usage = os.wait4(compactor.pid, 0)
        compactor.returncode = os.waitstatus_to_exitcode(status)
        compact_s = time.time() - c0
        compact_peak = usage.ru_maxrss / 1024
        if compactor.returncode != 0:
            sys.exit(f"compaction failed: {err}")
        after, rows_after = files_per_service_day(args.bin, cli_env, root)
        if rows_after != lines:
            sys.exit(f"after compaction the files hold {rows_after} rows, {lines} were pushed; see {work}")
        print(f"pushed: {lines} lines, {raw / 1e6:.0f} MB raw from {args.services} services in {pushed_s:.1f} s "
              f"({raw / 1e6 / pushed_s:.1f} MB/s); all archived after {archived_s:.1f} s")
        print(f"ingest+archive process RSS: {rest:.0f} MiB at rest, peak {hwm:.0f} MiB (VmHWM; "
              f"largest sample {peak_during:.0f} MiB)  target < 256 MiB")
        print(f"files per service-day: as written mean {sum(before) / max(1, len(before)):.1f} max {max(before or [0])} "
              f"({sum(before)} files, {len(before)} service-days); after compaction mean "
              f"{sum(after) / max(1, len(after)):.1f} max {max(after or [0])}")
        print(f"compaction: {compact_s:.1f} s, peak RSS {compact_peak:.0f} MiB; {out.strip()}")
        print(f"archive: {size / 1e6:.1f} MB on disk = {raw / max(1, size):.1f}x smaller than the raw lines")
        print(f"every line once: {lines} pushed = {rows_before} rows as written = {rows_after} after compaction")
        ok = True
    finally:
        if proc.poll() is None:
            proc.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
