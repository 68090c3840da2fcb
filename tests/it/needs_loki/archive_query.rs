//! LogQL over the Parquet archive through Loki's HTTP API: the same lines, sent by the real
//! Promtail (shipped config) to a real Loki and to alertpipe, give the same answers on both —
//! exact for log queries, equal values for metric queries, the shipped dashboards' and rules'
//! queries among them — and the real `logcli` reads the archive as it reads Loki.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use alertpipe::config::{AuthMode, Role, Secret};
use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::queries::{dashboard_targets, expand_range_vars, rule_expressions};
use crate::support::logs::{loki_get_with as get, Loki, Promtail};
use crate::support::{eventually, unique, Stack, TestApp};

const TOKEN: &str = "test-token";

/// An app that ingests pushes and archives them, with a bearer token.
async fn archive_app() -> TestApp {
    TestApp::builder()
        .with_roles(&[Role::Ingest, Role::Archive])
        .configure(|c| {
            c.auth.mode = AuthMode::Bearer;
            c.auth.secret = Secret::new(TOKEN);
        })
        .spawn()
        .await
}

type Row = (BTreeMap<String, String>, String, String, Value, Value);

/// A streams answer as sorted rows: (stream labels, ts, line, structured metadata, parsed).
fn log_rows(v: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let labels: BTreeMap<String, String> = s["stream"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        for e in s["values"].as_array().into_iter().flatten() {
            let empty = || Value::Object(Default::default());
            let sm = e[2]["structuredMetadata"].clone();
            let parsed = e[2]["parsed"].clone();
            out.push((
                labels.clone(),
                e[0].as_str().unwrap_or_default().to_owned(),
                e[1].as_str().unwrap_or_default().to_owned(),
                if sm.is_null() { empty() } else { sm },
                if parsed.is_null() { empty() } else { parsed },
            ));
        }
    }
    out.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    out
}

/// A matrix or vector as sorted (labels, [(t, value)]).
fn metric_rows(v: &Value) -> Vec<(String, Vec<(String, f64)>)> {
    let mut out: Vec<(String, Vec<(String, f64)>)> = v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let pts = match s["values"].as_array() {
                Some(vals) => vals.clone(),
                None => vec![s["value"].clone()],
            };
            (
                s["metric"].to_string(),
                pts.iter()
                    .map(|p| {
                        (
                            p[0].to_string(),
                            p[1].as_str()
                                .and_then(|x| x.parse().ok())
                                .unwrap_or(f64::NAN),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn same_metrics(a: &[(String, Vec<(String, f64)>)], b: &[(String, Vec<(String, f64)>)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.0 == y.0
                && x.1.len() == y.1.len()
                && x.1
                    .iter()
                    .zip(&y.1)
                    .all(|(p, q)| p.0 == q.0 && (p.1 - q.1).abs() <= 1e-9 * p.1.abs().max(1.0))
        })
}

/// Lines of three formats and levels, of two services, spread over the last 20 minutes.
fn write_lines(promtail: &Promtail, file: &str) -> usize {
    let start = Utc::now() - chrono::Duration::minutes(20);
    let (mut a, mut b) = (String::new(), String::new());
    let n = 600;
    for i in 0..n {
        let t = start + chrono::Duration::milliseconds(i as i64 * 1900);
        let ts = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let (level, msg) = match i % 5 {
            0 => ("error", "DB connection failed"),
            1 => ("warn", "slow query"),
            2 => ("info", "payment accepted"),
            _ => ("warn", "retrying"),
        };
        let line = match i % 3 {
            0 => format!(
                "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"message\":\"{msg}\",\"trace_id\":\"t{i}\",\"status\":{}}}\n",
                500 + i % 7
            ),
            1 => format!("ts={ts} level={level} msg=\"{msg}\" trace_id=t{i} duration_ms={}\n", i % 90),
            _ => format!(
                "{} {} [payment] {msg} #{i}\n",
                t.format("%Y-%m-%d %H:%M:%S,%3f"),
                level.to_uppercase()
            ),
        };
        if i % 4 == 0 {
            b.push_str(&line);
        } else {
            a.push_str(&line);
        }
    }
    promtail.append("payment", file, a.as_bytes());
    promtail.append("ledger", file, b.as_bytes());
    n
}

#[actix_web::test]
async fn the_archive_answers_logql_as_loki_does_for_the_same_lines() {
    let app = archive_app().await;
    let loki = Loki::start_without_ruler();
    let promtail = Promtail::start(&loki.url, &app.url);
    let file = format!("{}.log", unique("aq"));
    let n = write_lines(&promtail, &file);
    let all = format!("{{job=~\".+\", filename=~\".*{file}\"}}");
    let count_q = format!("sum(count_over_time({all}[2h]))");
    for (name, base, token) in [
        ("Loki", &loki.url, None),
        ("archive", &app.url, Some(TOKEN)),
    ] {
        eventually(
            Duration::from_secs(90),
            &format!("{n} lines in {name}"),
            || async {
                let (s, v) = get(base, "/loki/api/v1/query", &[("query", &count_q)], token).await;
                let got = v["data"]["result"][0]["value"][1]
                    .as_str()
                    .unwrap_or("0")
                    .to_owned();
                (s == 200 && got == n.to_string()).then_some(())
            },
        )
        .await;
    }

    let now = Utc::now();
    let start = (now - chrono::Duration::minutes(40))
        .timestamp()
        .to_string();
    let end = (now + chrono::Duration::minutes(1)).timestamp().to_string();
    let sel = |extra: &str| format!("{{job=~\".+\", filename=~\".*{file}\"{extra}}}");
    let logs = [
        sel(""),
        sel(", service=\"payment\""),
        sel(", level=\"error\""),
        format!("{} |= \"DB connection failed\"", sel("")),
        format!("{} != \"retrying\" |~ \"(?i)slow|accepted\"", sel("")),
        format!("{} | json | status >= 503 and level_extracted=\"error\"", sel("")),
        format!("{} | logfmt | duration_ms > 40 | line_format \"{{{{.msg}}}} took {{{{.duration_ms}}}}\"", sel("")),
        format!("{} | json | __error__=\"\" | line_format \"{{{{.message}}}}\"", sel(", service=\"ledger\"")),
    ];
    // Loki's whole answer is the reference; a limited answer must be its oldest (forward) or
    // newest (backward) lines. (Loki's own limited answers are not compared: under load its
    // split sub-queries once returned a different cut.)
    let mut failures = Vec::new();
    for q in &logs {
        let full = |limit: &'static str, direction: &'static str| {
            [
                ("query", q.clone()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("limit", limit.to_owned()),
                ("direction", direction.to_owned()),
            ]
        };
        let params = full("5000", "backward");
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (ls, lv) = get(&loki.url, "/loki/api/v1/query_range", &params, None).await;
        let reference = log_rows(&lv);
        if ls != 200 || reference.is_empty() {
            failures.push(format!(
                "{q}: Loki answered {ls} with {} rows: {lv}",
                reference.len()
            ));
            continue;
        }
        for (limit, direction) in [("5000", "backward"), ("17", "backward"), ("23", "forward")] {
            let params = full(limit, direction);
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, v) = get(&app.url, "/loki/api/v1/query_range", &params, Some(TOKEN)).await;
            let n: usize = limit.parse().unwrap_or(usize::MAX);
            let want: Vec<Row> = if direction == "forward" {
                reference.iter().take(n).cloned().collect()
            } else {
                let mut w: Vec<Row> = reference.iter().rev().take(n).cloned().collect();
                w.reverse();
                w
            };
            let got = log_rows(&v);
            if s != 200 || want != got {
                let diff = want.iter().zip(&got).find(|(a, b)| a != b);
                failures.push(format!(
                    "{q} limit={limit} {direction}: Loki {} rows, archive {s} {} rows; first difference {diff:?}; archive said {}",
                    want.len(),
                    got.len(),
                    if s == 200 { String::new() } else { v.to_string() }
                ));
            }
        }
    }

    let mut metrics: Vec<(String, String)> = dashboard_targets("loki", "expr");
    metrics.extend(rule_expressions());
    metrics.retain(|(_, q)| !q.trim_start().starts_with('{'));
    for q in [
        format!(
            "count_over_time({}[1m])",
            sel(", service=\"ledger\", level=\"info\"")
        ),
        format!("sum by (level) (bytes_over_time({}[5m]))", sel("")),
        format!(
            "topk(2, sum by (service, level) (rate({} |= \"retrying\" [3m])))",
            sel("")
        ),
        format!(
            "sum by (status) (count_over_time({} | json | __error__=\"\" [10m]))",
            sel("")
        ),
        format!(
            "avg(sum by (service) (count_over_time({}[5m]))) > 3",
            sel("")
        ),
    ] {
        metrics.push((q.clone(), q));
    }
    // Grafana's "Save & test" of a Loki data source.
    metrics.push(("Save & test".into(), "vector(1)+vector(1)".into()));
    for (name, q) in &metrics {
        let q = expand_range_vars(q).replace("$__range", "3600s");
        let params = [
            ("query", q.as_str()),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", "60"),
        ];
        let (ls, lv) = get(&loki.url, "/loki/api/v1/query_range", &params, None).await;
        let (s, v) = get(&app.url, "/loki/api/v1/query_range", &params, Some(TOKEN)).await;
        let (want, got) = (metric_rows(&lv), metric_rows(&v));
        if ls != 200 || s != 200 || want.is_empty() || !same_metrics(&want, &got) {
            failures.push(format!(
                "{name}: {q}\n  Loki {ls}: {want:?}\n  archive {s}: {got:?} {}",
                if s == 200 {
                    String::new()
                } else {
                    v.to_string()
                }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(logs.len() + metrics.len() >= 20);

    // Save & test asks the instant endpoint: a one-sample vector of 2, as Loki answers.
    let params = [("query", "vector(1)+vector(1)")];
    let (ls, lv) = get(&loki.url, "/loki/api/v1/query", &params, None).await;
    let (s, v) = get(&app.url, "/loki/api/v1/query", &params, Some(TOKEN)).await;
    assert_eq!((ls, s), (200, 200), "Loki {lv}\narchive {v}");
    for answer in [&lv, &v] {
        assert_eq!(answer["data"]["resultType"], "vector", "{answer}");
        assert_eq!(answer["data"]["result"][0]["value"][1], "2", "{answer}");
        assert_eq!(
            answer["data"]["result"][0]["metric"],
            serde_json::json!({}),
            "{answer}"
        );
    }

    // What the archive cannot answer, it says, naming the construct.
    let (s, v) = get(
        &app.url,
        "/loki/api/v1/query_range",
        &[("query", &format!("{} | pattern \"<ip> <_>\"", sel("")))],
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("pattern"), "{v}");
    // And nobody reads it without credentials.
    let (s, _) = get(
        &app.url,
        "/loki/api/v1/query_range",
        &[("query", &all)],
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = get(&app.url, "/loki/api/v1/labels", &[], Some("wrong")).await;
    assert_eq!(s, 401);
}

fn logcli(app: &str, args: &[&str]) -> String {
    let out = Command::new(Stack::get().var("STACK_LOGCLI_BIN"))
        .args(args)
        .arg(format!("--addr={app}"))
        .arg(format!("--bearer-token={TOKEN}"))
        .env("LOKI_ORG_ID", "")
        .output()
        .expect("logcli runs");
    assert!(
        out.status.success(),
        "logcli {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[actix_web::test]
async fn logcli_reads_the_archive() {
    let app = archive_app().await;
    // Promtail sends to alertpipe only (its Loki URL answers nothing).
    let promtail = Promtail::start("http://127.0.0.1:9", &app.url);
    let file = format!("{}.log", unique("cli"));
    let now = Utc::now();
    let mut written = Vec::new();
    for i in 0..40 {
        let ts =
            (now - chrono::Duration::seconds(60 - i)).to_rfc3339_opts(SecondsFormat::Nanos, true);
        written.push(format!(
            "{{\"ts\":\"{ts}\",\"level\":\"error\",\"message\":\"card declined #{i}\"}}"
        ));
    }
    promtail.append(
        "payment",
        &file,
        format!("{}\n", written.join("\n")).as_bytes(),
    );
    let sel = format!("{{service=\"payment\", filename=~\".*{file}\"}}");
    let url = app.url.clone();
    eventually(Duration::from_secs(60), "40 lines in the archive", || {
        let sel = sel.clone();
        let url = url.clone();
        async move {
            let out = actix_web::rt::task::spawn_blocking(move || {
                logcli(
                    &url,
                    &[
                        "query",
                        "--quiet",
                        "--output=raw",
                        "--since=10m",
                        "--limit=1000",
                        &sel,
                    ],
                )
            })
            .await
            .ok()?;
            (out.lines().count() == 40).then_some(())
        }
    })
    .await;
    let out = logcli(
        &app.url,
        &[
            "query",
            "--quiet",
            "--output=raw",
            "--forward",
            "--since=10m",
            "--limit=1000",
            &sel,
        ],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        written,
        "the lines, in order"
    );
    // logcli pages with --batch: 40 lines through batches of 7.
    let out = logcli(
        &app.url,
        &[
            "query",
            "--quiet",
            "--output=raw",
            "--since=10m",
            "--limit=40",
            "--batch=7",
            &sel,
        ],
    );
    assert_eq!(out.lines().count(), 40, "{out}");
    let out = logcli(
        &app.url,
        &[
            "query",
            "--quiet",
            "--since=10m",
            &format!("{sel} |= \"#17\""),
        ],
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("card declined #17"), "{out}");
    let labels = logcli(&app.url, &["labels", "--quiet", "--since=10m"]);
    for l in ["service", "job", "filename", "level"] {
        assert!(labels.lines().any(|x| x == l), "{l} in {labels}");
    }
    let values = logcli(&app.url, &["labels", "--quiet", "--since=10m", "service"]);
    assert!(values.lines().any(|x| x == "payment"), "{values}");
    let series = logcli(&app.url, &["series", "--quiet", "--since=10m", &sel]);
    assert_eq!(series.lines().count(), 1, "{series}");
    let v = logcli(
        &app.url,
        &[
            "instant-query",
            "--quiet",
            &format!("sum(count_over_time({sel}[10m]))"),
        ],
    );
    let v: Value = serde_json::from_str(&v).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(v[0]["value"][1], "40", "{v}");
}
