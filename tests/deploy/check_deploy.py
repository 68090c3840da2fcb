"""Static checks of the shipped configuration and deployment files (no Docker engine here).

Run by deploy/local/test.sh with the project's virtualenv:
    python tests/deploy/check_deploy.py --alertpipe target/debug/alertpipe

1. Every YAML and JSON file under config/ and deploy/ parses.
2. deploy/docker-compose.yml validates against the compose-spec schema (check-jsonschema).
3. deploy/k8s/*.yaml validate against the Kubernetes API schemas, strictly (kubernetes-validate).
4. What they say about alertpipe matches alertpipe: its config, as compose and Kubernetes set
   it (file + environment), passes `alertpipe check-config`; ports, probe paths, webhook and
   push URLs, secret mounts and Grafana datasource uids agree with each other and the code.
Prints one line per check and a closing "N passed, N failed" line; exits 1 on any failure.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok or not detail else ': ' + detail}")


def rel(*p):
    return os.path.join(ROOT, *p)


def load_yaml(path):
    with open(path) as f:
        return list(yaml.safe_load_all(f))


def routes():
    """Route paths registered in src/http/mod.rs."""
    with open(rel("src/http/mod.rs")) as f:
        return set(re.findall(r'(?:\.route|\bresource|\bget_and_post)\(\s*"([^"]+)"', f.read()))


def parse_all():
    files = sorted(
        glob.glob(rel("config/**/*.y*ml"), recursive=True)
        + glob.glob(rel("deploy/**/*.y*ml"), recursive=True)
        + glob.glob(rel("config/**/*.json"), recursive=True)
        + glob.glob(rel("deploy/**/*.json"), recursive=True)
    )
    for path in files:
        try:
            if path.endswith(".json"):
                with open(path) as f:
                    json.load(f)
            else:
                load_yaml(path)
            check(f"parses: {os.path.relpath(path, ROOT)}", True)
        except Exception as e:  # noqa: BLE001 - any parse error is the finding
            check(f"parses: {os.path.relpath(path, ROOT)}", False, str(e))
    check("found config files to parse", len(files) >= 15, f"only {len(files)}")


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return p.returncode, (p.stdout + p.stderr).strip()


def schemas(venv_bin):
    rc, out = run([os.path.join(venv_bin, "check-jsonschema"), "--builtin-schema",
                   "vendor.compose-spec", rel("deploy/docker-compose.yml")])
    check("docker-compose.yml matches the compose-spec schema", rc == 0, out)
    manifests = sorted(glob.glob(rel("deploy/k8s/*.yaml")))
    rc, out = run([os.path.join(venv_bin, "kubernetes-validate"), "--strict", "--quiet", *manifests])
    check(f"{len(manifests)} Kubernetes manifests match the API schemas (strict)",
          rc == 0 and len(manifests) >= 6, out)


def alertpipe_check_config(binary, env_vars, config_file, name):
    """Runs `alertpipe check-config` with exactly this environment; secret files made up."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PATH": os.environ.get("PATH", "")}
        for k, v in env_vars.items():
            if k.endswith("_FILE") or k.endswith("__SECRET_FILE") or k.endswith("__PASSWORD_FILE"):
                fake = os.path.join(tmp, k.lower())
                with open(fake, "w") as f:
                    f.write("secret\n")
                v = fake
            env[k] = str(v)
        args = [binary, "check-config"]
        if config_file:
            args += ["--config", config_file]
        rc, out = run(args, env=env)
        check(f"alertpipe check-config accepts {name}", rc == 0, out)
        return out if rc == 0 else ""


def compose_checks(binary):
    compose = load_yaml(rel("deploy/docker-compose.yml"))[0]
    svcs = compose["services"]
    for s in ["payment-service", "promtail", "loki", "grafana", "alertmanager", "kafka",
              "postgres", "mail", "namenode", "datanode", "alertpipe"]:
        check(f"compose runs {s}", s in svcs)
    ap = svcs["alertpipe"]
    env = dict(ap["environment"])
    # The secret file alertpipe reads is the one mounted into it.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in ap.get("volumes", []) if isinstance(v, str)}
    secret = env.get("ALERTPIPE__AUTH__SECRET_FILE")
    check("compose mounts alertpipe's webhook secret", secret in mounts, f"{secret} not in {list(mounts)}")
    effective = alertpipe_check_config(binary, env, None, "the compose environment")
    listen = re.search(r'listen = "([^"]+)"', effective)
    port = listen.group(1).rsplit(":", 1)[1] if listen else None
    check("compose publishes alertpipe's listen port", any(p.endswith(f":{port}") for p in ap.get("ports", [])),
          f"listen port {port}, ports {ap.get('ports')}")
    check("compose health check uses `alertpipe healthcheck`", ap["healthcheck"]["test"][1:] == ["alertpipe", "healthcheck"])
    # The container is non-root with no writable path: the archive must go to a store.
    root = urlparse(env.get("ALERTPIPE__ARCHIVE__ROOT", "./data/archive"))
    check("compose archives to the compose HDFS", root.scheme in ("webhdfs", "hdfs") and root.hostname in svcs,
          env.get("ALERTPIPE__ARCHIVE__ROOT", "(default: local disk, not writable in the container)"))
    check("compose mails to the compose SMTP server", env.get("ALERTPIPE__NOTIFY__SMTP__HOST") in svcs)
    # Alertmanager: the webhook target is alertpipe's route, on that port, with that token.
    am = load_yaml(rel("config/alertmanager/alertmanager.yml"))[0]
    am_mounts = {v.split(":")[1]: v.split(":")[0] for v in svcs["alertmanager"]["volumes"]}
    for r in am["receivers"]:
        for w in r.get("webhook_configs", []):
            u = urlparse(w["url"])
            check(f"alertmanager receiver {r['name']} posts to alertpipe's webhook",
                  u.hostname == "alertpipe" and str(u.port) == port and u.path in routes(), w["url"])
            cred = w["http_config"]["authorization"]["credentials_file"]
            check(f"alertmanager receiver {r['name']} token file is mounted",
                  cred in am_mounts and am_mounts[cred] == mounts.get(secret), cred)
    # Promtail pushes to Loki and to alertpipe's push route.
    pt = load_yaml(rel("config/promtail/promtail.yml"))[0]
    urls = [re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", c["url"]) for c in pt["clients"]]
    check("promtail pushes to loki", any(urlparse(u).hostname == "loki" for u in urls), str(urls))
    pushes = [u for u in urls if urlparse(u).hostname == "alertpipe"]
    check("promtail pushes to alertpipe's push route",
          len(pushes) == 1 and urlparse(pushes[0]).path in routes() and str(urlparse(pushes[0]).port) == port,
          str(pushes))
    pt_env = svcs["promtail"]["environment"]
    check("compose gives promtail the alertpipe push URL", pt_env.get("ALERTPIPE_PUSH_URL") == pushes[0] if pushes else False)
    with open(rel("config/alloy/config.alloy")) as f:
        alloy = f.read()
    check("alloy pushes to the same alertpipe URL", pushes and pushes[0] in alloy)
    # Kafka, PostgreSQL addresses alertpipe uses are services of the compose file.
    brokers = urlparse("kafka://" + env["ALERTPIPE__KAFKA__BROKERS"]).hostname
    check("alertpipe's Kafka is a compose service", brokers in svcs, brokers)
    db = urlparse(env["ALERTPIPE__DATABASE__URL"])
    pg_env = svcs["postgres"]["environment"]
    check("alertpipe's database is the compose PostgreSQL",
          db.hostname in svcs and db.path.lstrip("/") == pg_env["POSTGRES_DB"] and db.username == pg_env["POSTGRES_USER"],
          env["ALERTPIPE__DATABASE__URL"])
    check("alertpipe's database password matches", env.get("ALERTPIPE_DATABASE_PASSWORD") == pg_env["POSTGRES_PASSWORD"])


def k8s_checks(binary):
    docs = {}
    for path in glob.glob(rel("deploy/k8s/*.yaml")):
        for d in load_yaml(path):
            docs[d["kind"]] = d
    for kind in ["Deployment", "Service", "Ingress", "ConfigMap", "Secret", "PodDisruptionBudget"]:
        check(f"k8s has a {kind}", kind in docs)
    dep = docs["Deployment"]
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    cfg_path = c["args"][c["args"].index("--config") + 1]
    check("k8s mounts the config file it names", os.path.dirname(cfg_path) in mounts, cfg_path)
    toml_text = docs["ConfigMap"]["data"][os.path.basename(cfg_path)]
    secret_keys = set(docs["Secret"]["stringData"])
    secret_dir = next(p for p, n in mounts.items() if n == "secrets")
    for key in re.findall(r'(?:secret_file|password_file) = "([^"]+)"', toml_text):
        check(f"k8s secret file {key} comes from the Secret",
              os.path.dirname(key) == secret_dir and os.path.basename(key) in secret_keys, key)
    with tempfile.TemporaryDirectory() as tmp:
        # Point the secret files at made-up ones: the content is not what is checked here.
        fake = os.path.join(tmp, "s")
        with open(fake, "w") as f:
            f.write("secret\n")
        local_toml = re.sub(r'((?:secret_file|password_file) = )"[^"]+"', lambda m: f'{m.group(1)}"{fake}"', toml_text)
        path = os.path.join(tmp, "alertpipe.toml")
        with open(path, "w") as f:
            f.write(local_toml)
        effective = alertpipe_check_config(binary, env, path, "the Kubernetes ConfigMap + env")
    listen = re.search(r'listen = "([^"]+)"', effective)
    port = int(listen.group(1).rsplit(":", 1)[1]) if listen else None
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check("k8s containerPort is alertpipe's listen port", ports.get("http") == port, f"{ports} vs {port}")
    for probe in ["livenessProbe", "readinessProbe"]:
        path = c[probe]["httpGet"]["path"]
        check(f"k8s {probe} path {path} is a route", path in routes())
    check("liveness is /healthz and readiness /readyz",
          c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz")
    ann = pod["metadata"].get("annotations", {})
    check("pods carry Prometheus scrape annotations for /metrics",
          ann.get("prometheus.io/path") == "/metrics" and ann.get("prometheus.io/port") == str(port))
    check("resource requests are set", "requests" in c.get("resources", {}))
    read_only = c.get("securityContext", {}).get("readOnlyRootFilesystem")
    archive_root = re.search(r'\[archive\][^\[]*root = "([^"]+)"', toml_text)
    check("a read-only pod archives to a remote store",
          not read_only or (archive_root and urlparse(archive_root.group(1)).scheme in ("hdfs", "webhdfs", "s3")),
          archive_root.group(1) if archive_root else "(default: local disk)")
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(f"env {e['name']} comes from a key of the Secret", ref["name"] == docs["Secret"]["metadata"]["name"] and ref["key"] in secret_keys)
    svc = docs["Service"]["spec"]
    check("Service targets the container port", all(p["targetPort"] in ports or p["targetPort"] == port for p in svc["ports"]))
    check("Service selects the pods", svc["selector"].items() <= pod["metadata"]["labels"].items())
    for rule in docs["Ingress"]["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            check(f"ingress path {p['path']} is a route", p["path"] in routes())
    pdb = docs["PodDisruptionBudget"]["spec"]
    check("PDB selects the pods", pdb["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items())
    check("PDB leaves a pod up", pdb.get("minAvailable", 0) >= 1 and dep["spec"]["replicas"] > pdb["minAvailable"])


def grafana_checks():
    ds = load_yaml(rel("config/grafana/provisioning/datasources/datasources.yml"))[0]["datasources"]
    uids = {d["uid"]: d for d in ds}
    check("grafana has Loki and PostgreSQL datasources",
          any(d["type"] == "loki" for d in ds) and any("postgres" in d["type"] for d in ds))
    cold = [d for d in ds if d["name"] == "Loki cold archive"]
    check("grafana has the archive as a second Loki datasource, with alertpipe's credentials",
          cold and cold[0]["type"] == "loki" and ":8080" in cold[0]["url"]
          and cold[0]["secureJsonData"]["httpHeaderValue1"].startswith("Bearer "))
    am = [d for d in ds if d["type"] == "alertmanager"]
    check("grafana uses the Alertmanager as external Alertmanager",
          am and am[0]["jsonData"].get("handleGrafanaManagedAlerts") is True)
    used = set()
    for path in glob.glob(rel("config/grafana/dashboards/*.json")):
        with open(path) as f:
            text = f.read()
        used |= set(re.findall(r'"uid": "([a-z-]+)"', json.dumps([p.get("datasource", {}) for p in json.loads(text)["panels"]])))
        if path.endswith("logs.json"):
            check("a log panel is preset to {job=\"payment-service\", level=\"error\"}",
                  '{job=\\"payment-service\\", level=\\"error\\"}' in text)
    rules = load_yaml(rel("config/grafana/provisioning/alerting/rules.yml"))[0]
    for g in rules["groups"]:
        for r in g["rules"]:
            used |= {d["datasourceUid"] for d in r["data"] if d["datasourceUid"] != "__expr__"}
            check(f"rule {r['title']} sets severity (the route) and keeps cluster/service from the query",
                  r["labels"].get("severity") in ("critical", "custom", "warning")
                  and "by (cluster, service)" in r["data"][0]["model"]["expr"])
    loki_ruler_matches_grafana(rules)
    missing = used - set(uids)
    check("dashboards and rules use only provisioned datasources", not missing, str(missing))
    with open(rel("migrations/2026-11-24-000003_sla/up.sql")) as f:
        sql = f.read()
    for obj in ["incidents", "alert_sla"]:
        dash_sql = open(rel("config/grafana/dashboards/alert-history.json")).read()
        check(f"alert-history dashboard reads {obj}, which a migration creates", obj in dash_sql and obj in sql)


def alloy_matches_promtail():
    """Alloy cannot run here; Promtail runs the same pipeline in the tests. Keep the two in step:
    the same match selectors, regexes and templates, in order, and the same static labels."""
    pt = load_yaml(rel("config/promtail/promtail.yml"))[0]["scrape_configs"][0]
    want = {"selector": [], "expression": [], "template": []}

    def walk(stages):
        for st in stages:
            for kind, body in st.items():
                if kind == "match":
                    want["selector"].append(body["selector"])
                    walk(body["stages"])
                elif kind == "regex":
                    want["expression"].append(body["expression"])
                elif kind == "template":
                    want["template"].append(body["template"])
    walk(pt["pipeline_stages"])
    with open(rel("config/alloy/config.alloy")) as f:
        alloy = f.read()
    unq = lambda v: v.replace('\\"', '"').replace("\\\\", "\\")
    for key, values in want.items():
        got = [unq(v) for v in re.findall(rf'^\s*{key}\s*=\s*"((?:[^"\\]|\\.)*)"', alloy, re.M)]
        check(f"alloy has Promtail's {key}s, in order", got == values, f"alloy {got} vs promtail {values}")
    static = set(pt["static_configs"][0]["labels"]) - {"__path__"}
    check("alloy attaches Promtail's static labels", all(f'"{k}"' in alloy for k in static), str(static))
    check("neither config holds a backslash escape (-config.expand-env eats them)",
          "\\" not in open(rel("config/promtail/promtail.yml")).read())


def alloy_otlp_matches_the_collector():
    """config/alloy/otlp.alloy wraps the collector's own components: its filelog operators must
    be the ones config/otelcol/otelcol.yaml runs in the tests, in order, with the same
    conditions, regexes and layouts."""
    col = load_yaml(rel("config/otelcol/otelcol.yaml"))[0]
    ops = col["receivers"]["file_log"]["operators"]
    with open(rel("config/alloy/otlp.alloy")) as f:
        alloy = f.read()
    unq = lambda v: json.loads(f'"{v}"')
    for key in ("type", "if", "regex", "layout", "parse_from", "parse_to", "from", "to", "field"):
        want = [o[key] for o in ops if key in o]
        pat = rf'(?:\b|"){re.escape(key)}"?\s*=\s*"((?:[^"\\]|\\.)*)"'
        block = alloy[alloy.index('operators = ['):alloy.index('output {')]
        got = [unq(v) for v in re.findall(pat, block)]
        check(f"alloy's filelog operators have the collector's {key}s, in order", got == want,
              f"alloy {got} vs collector {want}")
    exp = col["exporters"]["otlp_http/alertpipe"]
    check("alloy and the collector send to alertpipe's /otlp path",
          exp["endpoint"] == "${env:ALERTPIPE_OTLP_URL}" and '"http://alertpipe:8080/otlp"' in alloy)


def loki_ruler_matches_grafana(grafana):
    """config/loki/rules/ must hold the Grafana-managed rules, rule for rule: the same name,
    LogQL (Grafana's query, then its threshold as a comparison), `for`, labels, annotations."""
    def norm(e):
        return re.sub(r"\s+", " ", e).strip()
    want = {}
    for g in grafana["groups"]:
        for r in g["rules"]:
            query = next(d for d in r["data"] if d["datasourceUid"] == "loki")["model"]["expr"]
            cond = next(d for d in r["data"] if d["refId"] == r["condition"])["model"]
            ev = cond["conditions"][0]["evaluator"]
            op = {"gt": ">", "lt": "<"}[ev["type"]]
            want[r["title"]] = {"expr": norm(f"({query}) {op} {ev['params'][0]}"), "for": r.get("for"),
                                "labels": r["labels"], "annotations": r["annotations"]}
    got = {}
    for path in glob.glob(rel("config/loki/rules/*/*.yml")):
        for g in load_yaml(path)[0]["groups"]:
            for r in g["rules"]:
                got[r["alert"]] = {"expr": norm(r["expr"]), "for": r.get("for"),
                                   "labels": r.get("labels", {}), "annotations": r.get("annotations", {})}
    check("Loki ruler and Grafana have the same rule names", set(got) == set(want),
          f"loki {sorted(got)} vs grafana {sorted(want)}")
    for name in set(got) & set(want):
        for key in ("expr", "for", "labels", "annotations"):
            check(f"Loki rule {name}: {key} as in Grafana", got[name][key] == want[name][key],
                  f"loki {got[name][key]!r} vs grafana {want[name][key]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alertpipe", required=True, help="the alertpipe binary")
    args = ap.parse_args()
    venv_bin = os.path.dirname(sys.executable)
    parse_all()
    schemas(venv_bin)
    compose_checks(os.path.abspath(args.alertpipe))
    k8s_checks(os.path.abspath(args.alertpipe))
    grafana_checks()
    alloy_matches_promtail()
    alloy_otlp_matches_the_collector()
    passed, failed = RESULTS.count(True), RESULTS.count(False)
    print(f"deploy checks: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
