"""A small demo payment service for deploy/local/demo.sh: it writes log files the way real
services do, in the three formats the shipped Promtail config parses, into LOGDIR/<service>/:

  payment/app.log      JSON     {"ts": ..., "level": ..., "message": ..., "trace_id": ...}
  payment/gateway.log  logfmt   ts=... level=info msg="POST /pay 200" trace_id=...
  payment/legacy.log   classic  2026-06-23 14:30:45,123 INFO [payment] settlement batch ok

After --errors-at seconds it loses its database: a run of "DB connection failed" errors (JSON
and classic lines), and it writes the wall-clock time of the first one (ns) to --marker. Halfway
through, a new service appears: checkout/app.log is created while Promtail is running.
Stops after --seconds. Standard library only.
"""
import argparse
import datetime
import json
import os
import random
import time


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def classic(t):
    return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"


def append(path, line):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("logdir")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--errors-at", type=float, default=3)
    ap.add_argument("--errors", type=int, default=5)
    ap.add_argument("--marker", required=True)
    ap.add_argument("--run", default=str(int(time.time())))
    a = ap.parse_args()
    pay = os.path.join(a.logdir, "payment")
    start, i, failed, newcomer = time.time(), 0, False, False
    while time.time() - start < a.seconds:
        i += 1
        t, trace = now(), f"{random.getrandbits(64):016x}"
        append(f"{pay}/app.log", json.dumps({
            "ts": rfc3339(t), "level": "info", "message": f"payment {a.run}-{i} accepted",
            "trace_id": trace, "amount_cents": random.randint(100, 99999)}))
        append(f"{pay}/gateway.log",
               f'ts={rfc3339(t)} level=info msg="POST /api/pay 200" trace_id={trace} '
               f"duration_ms={random.randint(3, 80)}")
        if i % 5 == 0:
            append(f"{pay}/legacy.log", f"{classic(t)} INFO [payment] settlement batch {i} ok")
        if i % 7 == 0:
            append(f"{pay}/gateway.log",
                   f'ts={rfc3339(t)} level=warning msg="slow upstream" trace_id={trace}')
        if not failed and time.time() - start >= a.errors_at:
            failed = True
            with open(a.marker, "w") as f:
                f.write(str(time.time_ns()))
            for n in range(a.errors):
                t = now()
                if n % 2 == 0:
                    append(f"{pay}/app.log", json.dumps({
                        "ts": rfc3339(t), "level": "error", "message": "DB connection failed",
                        "trace_id": trace, "db": "payments-primary", "attempt": n + 1}))
                else:
                    append(f"{pay}/legacy.log",
                           f"{classic(t)} ERROR [payment] DB connection failed (attempt {n + 1})")
        if not newcomer and time.time() - start >= a.seconds / 2:
            newcomer = True
            append(os.path.join(a.logdir, "checkout", "app.log"), json.dumps({
                "ts": rfc3339(now()), "level": "info",
                "message": f"checkout service {a.run} started", "trace_id": trace}))
        time.sleep(0.2)


if __name__ == "__main__":
    main()
