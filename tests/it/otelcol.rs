//! The real OpenTelemetry Collector (filelog receiver, otlphttp exporter) running the shipped
//! `config/otelcol/otelcol.yaml`, sending OTLP to a test alertpipe's `/otlp/v1/logs`: the three
//! line formats and the label contract, new files, restarts (SIGTERM and SIGKILL), alertpipe
//! answering 503 and 429 for a while. Each test owns its service names and its collector.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use alertpipe::config::Role;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::support::app::archive;
use crate::support::otelcol::Collector;
use crate::support::parquet::{all_rows, pyarrow, wait_rows};
use crate::support::{eventually, free_port, spawn_app_with, start_broker, unique, TestApp};

fn counts<I: IntoIterator<Item = String>>(it: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in it {
        *m.entry(l).or_default() += 1;
    }
    m
}

/// The archived lines of `svc`, once at least `n` are there (or after 90 s).
async fn archived_lines(
    root: &Path,
    svc: &str,
    n: usize,
    col: Option<&Collector>,
) -> BTreeMap<String, usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let rows = all_rows(&pyarrow(root));
        let mine: Vec<String> = rows
            .iter()
            .filter(|r| r["service"] == svc)
            .filter_map(|r| r["line"].as_str().map(str::to_owned))
            .collect();
        if mine.len() >= n {
            return counts(mine);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} lines archived for {svc}; collector log:\n{}",
            mine.len(),
            col.map(Collector::log_text).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    }
}

fn lines(svc: &str, from: usize, to: usize) -> Vec<u8> {
    (from..to)
        .map(|i| format!("{svc} event {i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[actix_web::test]
async fn the_shipped_collector_parses_json_logfmt_and_classic_lines_into_the_label_contract() {
    let root = tempfile::tempdir().unwrap();
    let app = spawn_app_with(None, archive(root.path())).await;
    let col = Collector::start(&app.url);
    let svc = unique("otfmt");
    let ts = Utc::now() - chrono::Duration::seconds(5);
    let json_ts = ts.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let json_line = format!(
        "{{\"ts\":\"{json_ts}\",\"level\":\"ERROR\",\"message\":\"DB connection failed\",\"trace_id\":\"tr-json\"}}"
    );
    let kv_line = format!("ts={json_ts} level=warning msg=\"slow query\" trace_id=tr-kv");
    let classic_line = format!(
        "{} INFO [payment] started",
        ts.format("%Y-%m-%d %H:%M:%S,123")
    );
    col.append(&svc, "app.log", format!("{json_line}\n").as_bytes());
    col.append(&svc, "kv.log", format!("{kv_line}\n").as_bytes());
    col.append(&svc, "classic.log", format!("{classic_line}\n").as_bytes());

    archived_lines(root.path(), &svc, 3, Some(&col)).await;
    let rows = all_rows(&pyarrow(root.path()));
    let by_file: BTreeMap<String, &Value> = rows
        .iter()
        .filter(|r| r["service"] == svc.as_str())
        .map(|r| {
            let f = r["labels"]["filename"].as_str().unwrap_or("?");
            (f.rsplit('/').next().unwrap_or("?").to_owned(), r)
        })
        .collect();
    for (file, line, level, trace) in [
        ("app.log", &json_line, "error", Some("tr-json")),
        ("kv.log", &kv_line, "warn", Some("tr-kv")),
        ("classic.log", &classic_line, "info", None),
    ] {
        let r = by_file
            .get(file)
            .unwrap_or_else(|| panic!("{file} missing: {by_file:?}"));
        assert_eq!(r["line"], line.as_str(), "{file}: the line unchanged");
        assert_eq!(r["env"], "prod", "{file}: cluster");
        assert_eq!(r["hostname"], "test-host", "{file}");
        assert_eq!(r["level"], level, "{file}: {r}");
        let l = &r["labels"];
        assert_eq!(l["service_name"], svc.as_str(), "{file}");
        assert_eq!(l["job"], format!("{svc}-service").as_str(), "{file}");
        assert!(
            l["filename"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("/{svc}/{file}")),
            "{file}: {l}"
        );
        assert!(
            l.get("trace_id").is_none(),
            "{file}: trace_id is not a label"
        );
        assert_eq!(
            r["metadata"].get("trace_id").and_then(Value::as_str),
            trace,
            "{file}: trace_id travels as structured metadata"
        );
        // The line's own time, not the time the collector read it (classic: whole seconds).
        let want = if file == "classic.log" {
            ts.timestamp() * 1_000_000_000
        } else {
            ts.timestamp_nanos_opt().unwrap()
        };
        assert_eq!(r["timestamp_ns"], want, "{file}: timestamp from the line");
    }

    // The same lines answer through the archive's Loki query API.
    let q = format!("{{job=\"{svc}-service\", level=\"error\"}} |= \"DB connection failed\"");
    let start = (ts.timestamp() - 60).to_string();
    let (status, v) = crate::support::logs::loki_get(
        &app.url,
        "/loki/api/v1/query_range",
        &[("query", q.as_str()), ("start", start.as_str())],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let got = crate::support::logs::result_lines(&v);
    assert_eq!(got, vec![json_line.clone()], "{v}");
}

#[actix_web::test]
async fn new_files_are_picked_up_and_restarts_neither_lose_nor_double_a_line() {
    let root = tempfile::tempdir().unwrap();
    let app = spawn_app_with(None, archive(root.path())).await;
    let mut col = Collector::start(&app.url);
    let svc = unique("otrs");
    col.append(&svc, "app.log", &lines(&svc, 0, 10));
    archived_lines(root.path(), &svc, 10, Some(&col)).await;

    // A graceful restart with lines written while it is down, and a file created meanwhile.
    col.stop();
    col.append(&svc, "app.log", &lines(&svc, 10, 20));
    col.append(&svc, "new.log", &lines(&svc, 100, 105));
    col.up();
    archived_lines(root.path(), &svc, 25, Some(&col)).await;

    // SIGKILL once everything was sent: the positions on disk are the ones it had read to.
    col.kill9();
    col.append(&svc, "app.log", &lines(&svc, 20, 30));
    col.up();
    col.append(&svc, "later.log", &lines(&svc, 200, 203));
    let got = archived_lines(root.path(), &svc, 38, Some(&col)).await;
    // A marker written last and archived proves nothing else was on its way.
    col.append(&svc, "later.log", format!("{svc} marker\n").as_bytes());
    let got_after = archived_lines(root.path(), &svc, 39, Some(&col)).await;
    let want = counts(
        (0..30)
            .chain(100..105)
            .chain(200..203)
            .map(|i| format!("{svc} event {i}")),
    );
    assert_eq!(got, want, "every line once across the restarts");
    let mut want_after = want.clone();
    want_after.insert(format!("{svc} marker"), 1);
    assert_eq!(got_after, want_after);
}

#[actix_web::test]
async fn the_collector_retries_through_503_and_429_and_every_line_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(dir.path(), port);
    let brokers = format!("127.0.0.1:{port}");
    let app: TestApp = TestApp::builder()
        .with_brokers(&brokers)
        .with_roles(&[Role::Archive])
        .configure(|c| {
            c.kafka.message_timeout_ms = 2_000;
            // One push in flight at a time: the collector's parallel senders meet 429s.
            c.ingest.push_max_inflight_bytes = 1;
        })
        .spawn()
        .await;
    let root = app.archive_root.as_ref().expect("archive root");
    let col = Collector::start(&app.url);
    let svc = unique("otbp");
    col.append(&svc, "app.log", &lines(&svc, 0, 10));
    wait_rows(root.path(), 10).await;

    // Kafka goes away: alertpipe answers 503 (and 429 to the sends beside the one it holds);
    // the collector keeps its batches in its queue.
    broker.kill9();
    for chunk in 1..6 {
        col.append(
            &svc,
            &format!("f{chunk}.log"),
            &lines(&svc, chunk * 10, chunk * 10 + 10),
        );
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    }
    let refused = |status: &'static str| {
        let app = &app;
        move || async move {
            let m = app.metrics().await;
            m.lines()
                .any(|l| {
                    l.starts_with("alertpipe_http_requests_total")
                        && l.contains("route=\"/otlp/v1/logs\"")
                        && l.contains(&format!("status=\"{status}\""))
                })
                .then_some(())
        }
    };
    eventually(
        Duration::from_secs(40),
        "alertpipe answering 503",
        refused("503"),
    )
    .await;
    eventually(
        Duration::from_secs(40),
        "alertpipe answering 429",
        refused("429"),
    )
    .await;
    let _broker = start_broker(dir.path(), port);
    let back = std::time::Instant::now();

    // Not archived_lines: a failure here says what alertpipe saw (its answers to the
    // collector, the archive stage's state) and when.
    let deadline = back + Duration::from_secs(150);
    let got = loop {
        let got = counts(
            all_rows(&pyarrow(root.path()))
                .iter()
                .filter(|r| r["service"] == svc)
                .filter_map(|r| r["line"].as_str().map(str::to_owned)),
        );
        if got.values().sum::<usize>() >= 60 || std::time::Instant::now() > deadline {
            break got;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    };
    let want = counts((0..60).map(|i| format!("{svc} event {i}")));
    if got != want {
        let (_, ready) = app.get("/readyz").await;
        let m = app.metrics().await;
        let seen: Vec<&str> = m
            .lines()
            .filter(|l| {
                l.starts_with("alertpipe_http_requests_total") && l.contains("otlp")
                    || l.starts_with("alertpipe_consumer")
                    || l.starts_with("alertpipe_ingest_log")
                    || l.starts_with("alertpipe_kafka_produce")
                    || l.starts_with("alertpipe_archive")
            })
            .collect();
        panic!(
            "{} of 60 lines archived {:?} after the broker came back\nreadyz: {}\n{}\ncollector log:\n{}",
            got.values().sum::<usize>(),
            back.elapsed(),
            String::from_utf8_lossy(&ready),
            seen.join("\n"),
            col.log_text()
        );
    }
}

/// Every LogQL expression of the shipped dashboards and rules runs on the archive's engine
/// over lines the real collector shipped (HTTP 200, data where the lines should match), as
/// Grafana's "Loki cold archive" data source would ask them.
#[actix_web::test]
async fn every_logql_query_of_the_dashboards_and_rules_answers_on_the_archive_with_data() {
    let root = tempfile::tempdir().unwrap();
    let app = spawn_app_with(None, archive(root.path())).await;
    let col = Collector::start(&app.url);
    // The seed's service: logs/payment/ -> job="payment-service", service="payment"; enough
    // lines of each kind that every rule's threshold is crossed.
    let now = Utc::now();
    let mut text = String::new();
    for i in 0..160 {
        let ts =
            (now + chrono::Duration::microseconds(i)).to_rfc3339_opts(SecondsFormat::Nanos, true);
        let (level, msg) = match i % 4 {
            0 => ("error", "DB connection failed"),
            1 => ("warn", "slow query"),
            _ => ("warn", "retrying"),
        };
        text.push_str(&format!(
            "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"message\":\"{msg}\",\"trace_id\":\"{i}\"}}\n"
        ));
    }
    col.append("payment", "app.log", text.as_bytes());
    archived_lines(root.path(), "payment", 160, Some(&col)).await;

    let mut queries = crate::queries::dashboard_targets("loki", "expr");
    queries.extend(crate::queries::rule_expressions());
    let (start, end) = (
        (now - chrono::Duration::minutes(30))
            .timestamp()
            .to_string(),
        (Utc::now() + chrono::Duration::minutes(1))
            .timestamp()
            .to_string(),
    );
    let mut failures = Vec::new();
    for (name, q) in &queries {
        let q = crate::queries::expand_range_vars(q);
        let (status, v) = crate::support::logs::loki_get(
            &app.url,
            "/loki/api/v1/query_range",
            &[
                ("query", q.as_str()),
                ("start", start.as_str()),
                ("end", end.as_str()),
                ("step", "15"),
            ],
        )
        .await;
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        if status != 200 || n == 0 {
            failures.push(format!("{name}: {q}\n  -> HTTP {status}, {n} series: {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(queries.len() >= 9, "{queries:?}");
}

/// POSTs `body` to `/otlp/v1/logs`: (status, Content-Type, Retry-After, body).
async fn otlp_post(
    app: &TestApp,
    ctype: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, Option<String>, Vec<u8>) {
    let mut req = app
        .client
        .post(format!("{}/otlp/v1/logs", app.url))
        .insert_header(("content-type", ctype));
    for &(k, v) in headers {
        req = req.insert_header((k, v));
    }
    let mut resp = req
        .send_body(body)
        .await
        .expect("the request reaches the app");
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (ctype, retry) = (h("content-type").unwrap_or_default(), h("retry-after"));
    let body = resp
        .body()
        .limit(1 << 20)
        .await
        .expect("answer body")
        .to_vec();
    (resp.status().as_u16(), ctype, retry, body)
}

/// The OTLP endpoint's answers to the ugly cases, in OTLP's terms: a malformed body is a 400
/// whose `google.rpc.Status` (or JSON) names the fault, a bomb a 413, an unknown media type a
/// 415, no credentials a 401, and a record refused alone a partial success beside the rest.
#[actix_web::test]
async fn the_otlp_endpoint_answers_bad_input_clearly_and_refuses_records_alone() {
    use std::io::Write;
    let app = TestApp::builder()
        .with_roles(&[Role::Archive])
        .configure(|c| {
            c.auth.mode = alertpipe::config::AuthMode::Bearer;
            c.auth.secret = alertpipe::config::Secret::new("otlp-token");
        })
        .spawn()
        .await;
    let auth = [("authorization", "Bearer otlp-token")];
    let svc = unique("otbad");
    let record = |line: &str| {
        json!({"timeUnixNano": Utc::now().timestamp_nanos_opt().unwrap().to_string(),
               "severityText": "ERROR", "body": {"stringValue": line}})
    };
    let good = |records: Vec<Value>| {
        serde_json::to_vec(&json!({"resourceLogs": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": svc}}]},
            "scopeLogs": [{"logRecords": records}]}]}))
        .unwrap()
    };

    let (s, _, _, _) = otlp_post(&app, "application/json", &[], good(vec![record("x")])).await;
    assert_eq!(s, 401, "no credentials");
    let (s, ct, _, body) = otlp_post(
        &app,
        "application/x-protobuf",
        &auth,
        b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
    )
    .await;
    assert_eq!((s, ct.as_str()), (400, "application/x-protobuf"));
    assert!(
        String::from_utf8_lossy(&body).contains("malformed protobuf"),
        "a google.rpc.Status naming the fault: {body:?}"
    );
    let wrong = br#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": true}]}]}]}"#;
    let (s, _, _, body) = otlp_post(&app, "application/json", &auth, wrong.to_vec()).await;
    let v: Value = serde_json::from_slice(&body).expect("a JSON Status");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("timeUnixNano"),
        "{v}"
    );
    let (s, _, _, _) = otlp_post(&app, "text/plain", &auth, b"hello".to_vec()).await;
    assert_eq!(s, 415);
    // 64 MiB of zeros in a few KB of gzip: refused by size, not inflated into memory.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 64 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    let mut with_gzip = auth.to_vec();
    with_gzip.push(("content-encoding", "gzip"));
    let (s, _, _, _) = otlp_post(&app, "application/x-protobuf", &with_gzip, bomb).await;
    assert_eq!(s, 413, "a gzip bomb");

    // One record over the line limit, refused alone; its neighbours archived.
    let big = "x".repeat(alertpipe::archive::otlp::MAX_LINE_BYTES + 1);
    let body = good(vec![
        record(&format!("{svc} a")),
        record(&big),
        record(&format!("{svc} b")),
    ]);
    let (s, _, _, answer) = otlp_post(&app, "application/json", &auth, body).await;
    let v: Value = serde_json::from_slice(&answer).expect("an ExportLogsServiceResponse");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["partialSuccess"]["rejectedLogRecords"], "1", "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or("")
        .contains("line limit"));
    let root = app
        .archive_root
        .as_ref()
        .expect("archive")
        .path()
        .to_owned();
    let got = archived_lines(&root, &svc, 2, None).await;
    assert_eq!(got.len(), 2, "{got:?}");
}
