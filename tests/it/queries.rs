//! Every query the shipped Grafana dashboards and alert rules would run, executed on the real
//! backend that can run here: LogQL on Loki (data written by Promtail with the shipped config),
//! PromQL on Prometheus (the shipped config scraping a real alertpipe), SQL on PostgreSQL (the
//! real schema), with Grafana's macros and variables expanded as Grafana does for a fixed range.
//! Grafana itself cannot run here.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alertpipe::config::{Config, Role};
use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::support::logs::{repo_file, Prometheus};
use crate::support::{eventually, fixture, free_port, spawn_app_with, start_broker, Stack, TestDb};

/// Every target of every dashboard whose panel uses a datasource of `kind`: (file, query).
pub(crate) fn dashboard_targets(kind: &str, field: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo_file("config/grafana/dashboards")).unwrap() {
        let path = e.unwrap().path();
        let d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().into_iter().flatten() {
            if p["datasource"]["type"].as_str() != Some(kind) {
                continue;
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(q) = t[field].as_str() {
                    let name = path.file_name().unwrap().to_string_lossy();
                    out.push((format!("{name}: {}", p["title"]), q.to_owned()));
                }
            }
        }
    }
    assert!(!out.is_empty(), "no {kind} targets found in the dashboards");
    out
}

/// A YAML file as JSON, read by the test virtualenv's PyYAML (no YAML crate in the build).
fn yaml(path: &Path) -> Value {
    let out = Command::new(Stack::get().var("STACK_PYTHON"))
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The LogQL of Grafana's managed rules (Loki queries only) and of the Loki ruler's rules.
pub(crate) fn rule_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let g = yaml(&repo_file("config/grafana/provisioning/alerting/rules.yml"));
    for group in g["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            for q in r["data"].as_array().unwrap() {
                if q["datasourceUid"] == "loki" {
                    let name = format!("grafana rule {}", r["title"]);
                    out.push((name, q["model"]["expr"].as_str().unwrap().to_owned()));
                }
            }
        }
    }
    for e in std::fs::read_dir(repo_file("config/loki/rules/fake")).unwrap() {
        let v = yaml(&e.unwrap().path());
        for group in v["groups"].as_array().unwrap() {
            for r in group["rules"].as_array().unwrap() {
                let name = format!("loki rule {}", r["alert"]);
                out.push((name, r["expr"].as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

/// Grafana's interval variables for a one-hour range (what it substitutes before querying).
pub(crate) fn expand_range_vars(q: &str) -> String {
    q.replace("$__auto", "1m")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "3600s")
}

#[actix_web::test]
async fn every_promql_query_and_health_rule_evaluates_on_prometheus_scraping_alertpipe() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(dir.path(), port);
    let brokers = format!("127.0.0.1:{port}");
    let archive = tempfile::tempdir().unwrap();
    let archive_root = archive.path().display().to_string();
    // The shipped topic names, on a private broker: the dashboard filters on topic="alerts".
    let app = spawn_app_with(Some(&brokers), move |c: &mut Config| {
        c.server.roles = vec![Role::Ingest, Role::Archive];
        c.kafka.alerts_topic = "alerts".into();
        c.kafka.logs_topic = "logs".into();
        c.archive.root = archive_root;
        c.archive.max_age_s = 1;
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let prom = Prometheus::start(&addr, &format!("127.0.0.1:{}", free_port()));
    // Traffic for every panel: alerts (one repeat, deduplicated), a log push.
    for _ in 0..2 {
        let (status, _, body) = app
            .post_alerts(fixture("alertmanager/firing-critical.json"), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut resp = app
        .client
        .post(format!("{}/loki/api/v1/push", app.url))
        .insert_header(("content-type", "application/x-protobuf"))
        .send_body(fixture("promtail/push-multistream.pb.snappy"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.body().await);

    let exposed = app.metrics().await;
    let queries = dashboard_targets("prometheus", "expr");
    // Keep the traffic going until the scrapes hold it (a rate needs an increase between two
    // samples). 120 s: once, 60 s did not suffice with JVM peers of other tests starting.
    eventually(Duration::from_secs(120), "scraped traffic", || async {
        app.post_alerts(fixture("alertmanager/firing-critical.json"), None)
            .await;
        let (_, v) = prom
            .query("sum(rate(alertpipe_ingest_alerts_received_total[1m]))")
            .await;
        let val = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok());
        val.filter(|v| *v > 0.0).map(|_| ())
    })
    .await;
    let mut failures = Vec::new();
    for (name, q) in &queries {
        let q = expand_range_vars(q);
        let (status, v) = prom.query(&q).await;
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        // A family alertpipe has exposed must give a series; one it never incremented
        // (no dead letters yet) may be empty, but the query must still be valid.
        let family = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("alertpipe_"))
            .unwrap_or("")
            .trim_end_matches("_bucket")
            .to_owned();
        let needs_data = !family.is_empty() && exposed.contains(&format!("\n{family}"));
        if status != 200 || v["status"] != "success" || (needs_data && n == 0) {
            failures.push(format!("{name}: {q}\n  -> HTTP {status}, {n} series: {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every health rule is loaded and evaluates without error.
    let rules = eventually(Duration::from_secs(30), "rules evaluated", || async {
        let v = prom.get("/api/v1/rules").await;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = !rules.is_empty()
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        evaluated.then_some(rules)
    })
    .await;
    assert!(rules.len() >= 6, "{rules:?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{}: {}", r["name"], r["lastError"]);
    }
    let up = prom
        .query("up{job=\"alertpipe\", service=\"alertpipe\"}")
        .await
        .1;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}

/// Grafana's PostgreSQL macros for a fixed range, as Grafana expands them.
fn expand_sql_macros(sql: &str, from: &str, to: &str) -> String {
    let mut s = sql
        .replace("$__timeFrom()", &format!("'{from}'"))
        .replace("$__timeTo()", &format!("'{to}'"));
    while let Some(i) = s.find("$__timeFilter(") {
        let rest = &s[i + "$__timeFilter(".len()..];
        let close = rest.find(')').expect("macro closes");
        let col = rest[..close].trim().to_owned();
        s = format!(
            "{}{col} BETWEEN '{from}' AND '{to}'{}",
            &s[..i],
            &rest[close + 1..]
        );
    }
    while let Some(i) = s.find("$__timeGroupAlias(") {
        let rest = &s[i + "$__timeGroupAlias(".len()..];
        let close = rest.find(')').expect("macro closes");
        let (col, interval) = rest[..close].split_once(',').expect("two arguments");
        let secs = match interval.trim().trim_matches('\'') {
            "1h" => 3600,
            "1m" => 60,
            "1d" => 86400,
            other => panic!("interval {other} not expanded by this test"),
        };
        s = format!(
            "{}floor(extract(epoch from {})/{secs})*{secs} AS \"time\"{}",
            &s[..i],
            col.trim(),
            &rest[close + 1..]
        );
    }
    assert!(!s.contains("$__"), "a macro left unexpanded: {s}");
    s
}

#[test]
fn every_sql_panel_runs_on_the_real_schema_and_returns_rows() {
    let db = TestDb::new();
    let psql = format!("{}/psql", Stack::get().var("STACK_PG_BIN"));
    let seed = "INSERT INTO alerts (service, severity, message, resolved, fingerprint, alertname, \
                cluster, status, starts_at, ends_at, labels) VALUES \
                ('payment', 'critical', 'DB connection failed', false, 'f1', 'DBConnectionFailed', \
                 'prod', 'firing', now() - interval '20 minutes', NULL, '{}'), \
                ('checkout', 'critical', 'Checkout Service Failure', true, 'f2', 'DBConnectionFailed', \
                 'prod', 'resolved', now() - interval '50 minutes', now() - interval '40 minutes', '{}')";
    let run = |sql: &str| {
        let out = Command::new(&psql)
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-tA",
                "-d",
                &db.url,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(seed);
    assert!(ok, "seed rows: {err}");
    let now = Utc::now();
    let from = (now - chrono::Duration::hours(6)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let to = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let panels = dashboard_targets("grafana-postgresql-datasource", "rawSql");
    assert!(panels.len() >= 4, "{panels:?}");
    for (name, sql) in panels {
        let sql = expand_sql_macros(&sql, &from, &to);
        let (ok, out, err) = run(&sql);
        assert!(ok, "{name}: {sql}\n{err}");
        assert!(!out.trim().is_empty(), "{name}: no rows from {sql}");
    }
}
