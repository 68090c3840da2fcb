"""The demo's rule evaluator where Loki's ruler is not installed: every --interval seconds it
asks alertpipe's Loki query API (the Parquet archive, as Grafana's "Loki cold archive" data
source does) each LogQL alert rule of config/loki/rules/, and posts what fires to Alertmanager
the way Loki's ruler does (rule labels, templated annotations, a generatorURL carrying the
expression, so the mail shows the lines behind the alert). `for:` is not waited for: the demo
stack's Loki runs the same rules with `for: 0s`. Runs for --seconds, logging each firing.

Usage: demo_ruler.py --api URL --token-file F --alertmanager URL --rules DIR --seconds N
"""
import argparse
import glob
import json
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def template(text, labels):
    """The two forms the shipped rules use: {{ $labels.x }} and {{ title $labels.x }}."""
    def sub(m):
        value = labels.get(m.group(2), "")
        return value.title() if m.group(1) else value
    return re.sub(r"\{\{\s*(title\s+)?\$labels\.([a-zA-Z_]+)\s*\}\}", sub, text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--alertmanager", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=2)
    a = ap.parse_args()
    token = open(a.token_file).read().strip()
    rules = [r for path in sorted(glob.glob(f"{a.rules}/*/*.yml"))
             for g in yaml.safe_load(open(path))["groups"] for r in g["rules"]]
    fired = set()
    deadline = time.time() + a.seconds
    while time.time() < deadline:
        alerts = []
        for rule in rules:
            q = urllib.parse.urlencode({"query": rule["expr"], "time": f"{time.time():.3f}"})
            try:
                result = get(f"{a.api}/loki/api/v1/query?{q}", token)["data"]["result"]
            except Exception as e:  # the archive not answering yet: the next round asks again
                print(f"[ruler] {rule['alert']}: {e}", file=sys.stderr, flush=True)
                continue
            for series in result:
                labels = dict(series["metric"], alertname=rule["alert"], **rule.get("labels", {}))
                annotations = {k: template(v, labels) for k, v in rule.get("annotations", {}).items()}
                expr = urllib.parse.quote(rule["expr"], safe="")
                # Valid for four evaluation intervals, as Prometheus' and Loki's rulers send
                # it: once the rule stops firing (or this evaluator stops) it resolves.
                ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4 * a.interval))
                alerts.append({"labels": labels, "annotations": annotations, "endsAt": ends,
                               "generatorURL": f"http://loki:3100/graph?g0.expr={expr}&g0.tab=1"})
                key = (rule["alert"], labels.get("cluster"), labels.get("service"))
                if key not in fired:
                    fired.add(key)
                    print(f"[ruler] firing {rule['alert']} cluster={labels.get('cluster')} "
                          f"service={labels.get('service')} value={series['value'][1]}", flush=True)
        if alerts:
            req = urllib.request.Request(f"{a.alertmanager}/api/v2/alerts",
                                         data=json.dumps(alerts).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).close()
        time.sleep(a.interval)


if __name__ == "__main__":
    main()
