"""The chain part of deploy/local/demo.sh's report: what Loki answers to the seed's Explore
query, the ruler's firing LogQL rule, the seed-format mail, its history row, the same lines in
the Parquet archive, and the time from the first error line written to the mail delivered.
Reads its inputs from the environment (API, LOKI, MAIL_FILE, MARKER, BIN, RUN). Standard library.
"""
import datetime
import email
import email.policy
import json
import os
import subprocess
import urllib.parse
import urllib.request

API, LOKI, BIN = os.environ["API"], os.environ.get("LOKI", ""), os.environ["BIN"]
MAIL_FILE, MARKER = os.environ.get("MAIL_FILE", ""), os.environ["MARKER"]


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def loki_range(query, since_s=900):
    end = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    q = urllib.parse.urlencode({"query": query, "start": end - since_s, "end": end + 60,
                                "limit": 5000})
    return get(f"{LOKI}/loki/api/v1/query_range?{q}",
               {"X-Loki-Response-Encoding-Flags": "categorize-labels"})["data"]["result"]


first_error_ns = int(open(MARKER).read()) if os.path.exists(MARKER) else None
since = datetime.datetime.fromtimestamp((first_error_ns or 0) / 1e9, datetime.timezone.utc)

explore = '{job="payment-service", level="error"}'
if not LOKI:
    print("Loki, Promtail and the ruler: not installed here, not run (README: Loki and Promtail)")
streams = loki_range(explore) if LOKI else []
entries = [(int(v[0]), v[1], s["stream"], (v[2] if len(v) > 2 else {}).get("structuredMetadata", {}))
           for s in streams for v in s["values"]]
entries.sort()
if LOKI:
    print(f"Loki, Grafana's Explore query {explore} (last 15 min): {len(entries)} lines")
if entries:
    ts, line, labels, meta = entries[-1]
    print(f"  newest: {line}")
    print(f"  labels: {json.dumps(labels, sort_keys=True)}")
    if meta:
        print(f"  structured metadata: {json.dumps(meta, sort_keys=True)}")

alerts = get(f"{LOKI}/prometheus/api/v1/alerts")["data"]["alerts"] if LOKI else []
mine = [a for a in alerts if a["labels"].get("service") == "payment"]
if LOKI:
    print(f"Loki ruler (config/loki/rules): {len(mine)} alert(s) for service=payment")
elif os.path.exists(os.environ.get("RULER_LOG", "")):
    fired = [l.strip() for l in open(os.environ["RULER_LOG"]) if "firing" in l]
    print(f"The rules of config/loki/rules on the archive (deploy/local/demo_ruler.py through "
          f"alertpipe's Loki API): {len(fired)} firing")
    for l in fired[:4]:
        print(f"  {l}")
for a in mine:
    l = a["labels"]
    print(f"  {a['state']:8} {l.get('alertname')} cluster={l.get('cluster')} service={l.get('service')} "
          f"severity={l.get('severity')} since {a.get('activeAt', '')[:19]}Z")

if MAIL_FILE and os.path.exists(MAIL_FILE):
    with open(MAIL_FILE, "rb") as f:
        m = email.message_from_binary_file(f, policy=email.policy.default)
    text = next((p.get_content() for p in m.walk() if p.get_content_type() == "text/plain"), "")
    print(f"The mail it became ({MAIL_FILE}):")
    print(f"  Subject: {m['subject']}")
    lines = text.strip().splitlines()
    for line in lines[:6]:
        print(f"  {line}")
    # The log lines behind the alert (read by alertpipe from Loki, else from the archive).
    start = next((i for i, l in enumerate(lines) if l.startswith("Log lines")), None)
    if start is None:
        print("  (no log lines in the mail: neither Loki nor the archive answered alertpipe in time?)")
    else:
        for line in lines[start:start + 4]:
            print(f"  {line[:160]}")
    if first_error_ns:
        delivered_ns = os.stat(MAIL_FILE).st_mtime_ns
        print(f"Time from the first error line written to the mail delivered: "
              f"{(delivered_ns - first_error_ns) / 1e9:.1f} s")
else:
    print("No '[CRITICAL] Payment Service Failure' mail newer than this run's first error line:"
          " the payment alert may still be firing from a run less than 5 minutes ago"
          " (Alertmanager sends a firing alert once); see .state/alertpipe.log, .state/loki.log or"
          " .state/demo-ruler.log")

TOKEN = open(os.environ["STACK_AUTH_SECRET_FILE"]).read().strip()
inc = get(f"{API}/api/v1/incidents?limit=1000", {"Authorization": f"Bearer {TOKEN}"})["items"]
rows = [i for i in inc if i.get("alertname") == "DBConnectionFailed" and i["service"] == "payment"
        and "demo_run" not in i.get("labels", {})]
if rows:
    r = rows[0]
    print(f"History row (PostgreSQL alerts, GET /api/v1/incidents): id={r['id']} service={r['service']} "
          f"severity={r['severity']} message={r['message']!r} starts_at={r['starts_at']} "
          f"resolved={r['resolved']}")

if first_error_ns:
    frm = (since - datetime.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    to = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = subprocess.run([BIN, "--config", "config/alertpipe.toml", "archive", "cat", "--service", "payment",
                          "--from", frm, "--to", to, "--grep", "DB connection failed"],
                         capture_output=True, text=True)
    archived = [l for l in out.stdout.splitlines() if l.strip()]
    start_s = int(since.timestamp()) - 30
    in_loki = sum(len(s["values"]) for s in loki_range('{service="payment"} |= "DB connection failed"',
                                                        since_s=int(datetime.datetime.now().timestamp()) - start_s)) if LOKI else "not run"
    print(f"The same error lines in the Parquet archive (alertpipe archive cat --service payment --grep ...): "
          f"{len(archived)}; in Loki: {in_loki}")
    for l in archived[:2]:
        print(f"  {l[:160]}")
new = loki_range('{service="checkout"}') if LOKI else []
if LOKI:
    print(f"A service that appeared after Promtail started (checkout/app.log): "
          f"{sum(len(s['values']) for s in new)} line(s) in Loki")
