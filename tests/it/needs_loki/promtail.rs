//! The real Promtail 3.4.6 running the shipped `config/promtail/promtail.yml` (its own log
//! directory and positions per test), pushing to the stack's real Loki and to a test alertpipe:
//! the three line formats and the label contract, new files, restarts, ugly lines, and
//! alertpipe refusing pushes for a while. Each test owns its service names.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use alertpipe::config::Role;
use chrono::{SecondsFormat, Utc};

use crate::support::app::archive;
use crate::support::logs::{Loki, Promtail};
use crate::support::parquet::{all_rows, pyarrow, wait_rows};
use crate::support::{eventually, free_port, spawn_app_with, start_broker, unique, TestApp};

async fn archiving_app(root: &Path) -> TestApp {
    spawn_app_with(None, archive(root)).await
}

/// Waits until Loki answers `query` with at least `n` lines; returns them.
async fn loki_lines(loki: &Loki, query: &str, n: usize, promtail: &Promtail) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lines = loki.lines(query).await;
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Loki has {} of {n} lines for {query}; promtail log:\n{}",
            lines.len(),
            promtail.log_text()
        );
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    }
}

fn sorted_counts<I: IntoIterator<Item = String>>(it: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in it {
        *m.entry(l).or_default() += 1;
    }
    m
}

#[actix_web::test]
async fn shipped_promtail_parses_json_logfmt_and_classic_lines_into_the_label_contract() {
    let root = tempfile::tempdir().unwrap();
    let app = archiving_app(root.path()).await;
    let loki = Loki::stack();
    let promtail = Promtail::start(&loki.url, &app.url);
    let svc = unique("fmt");
    let ts = Utc::now() - chrono::Duration::seconds(5);
    let json_ts = ts.to_rfc3339_opts(SecondsFormat::Nanos, true);
    promtail.append(
        &svc,
        "app.log",
        format!(
            "{{\"ts\":\"{json_ts}\",\"level\":\"ERROR\",\"message\":\"DB connection failed\",\"trace_id\":\"tr-json\"}}\n"
        )
        .as_bytes(),
    );
    promtail.append(
        &svc,
        "kv.log",
        format!("ts={json_ts} level=warning msg=\"slow query\" trace_id=tr-kv\n").as_bytes(),
    );
    promtail.append(
        &svc,
        "classic.log",
        format!(
            "{} INFO [payment] started\n",
            ts.format("%Y-%m-%d %H:%M:%S,123")
        )
        .as_bytes(),
    );
    let query = format!("{{service=\"{svc}\"}}");
    loki_lines(&loki, &query, 3, &promtail).await;

    let streams = loki.streams(&query).await;
    let mut by_file = BTreeMap::new();
    for s in &streams {
        let file = s.labels["filename"].rsplit('/').next().unwrap().to_owned();
        by_file.insert(file, s);
    }
    for (file, level, trace) in [
        ("app.log", "error", Some("tr-json")),
        ("kv.log", "warn", Some("tr-kv")),
        ("classic.log", "info", None),
    ] {
        let s = by_file
            .get(file)
            .unwrap_or_else(|| panic!("{file} missing: {streams:?}"));
        let l = &s.labels;
        assert_eq!(l["cluster"], "prod", "{file}: {l:?}");
        assert_eq!(l["service"], svc, "{file}");
        assert_eq!(l["service_name"], svc, "{file}");
        assert_eq!(l["job"], format!("{svc}-service"), "{file}");
        assert_eq!(l["hostname"], "test-host", "{file}");
        assert_eq!(l.get("level").map(String::as_str), Some(level), "{file}");
        assert!(
            !l.contains_key("trace_id"),
            "{file}: trace_id is not a label"
        );
        assert_eq!(s.entries.len(), 1, "{file}");
        let e = &s.entries[0];
        assert_eq!(
            e.metadata.get("trace_id").map(String::as_str),
            trace,
            "{file}: trace_id travels as structured metadata"
        );
        // The line's own time, not the time Promtail read it (classic: whole seconds).
        let want = if file == "classic.log" {
            ts.timestamp() * 1_000_000_000
        } else {
            ts.timestamp_nanos_opt().unwrap()
        };
        assert_eq!(e.ts_ns, want, "{file}: timestamp from the line");
    }
    // The same lines reached alertpipe's archive, with the same labels.
    let rows = all_rows(&wait_rows(root.path(), 3).await);
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r["service"] == svc.as_str())
        .collect();
    assert_eq!(mine.len(), 3, "{rows:?}");
    for r in mine {
        assert_eq!(r["env"], "prod");
        assert_eq!(r["hostname"], "test-host");
        assert_eq!(r["labels"]["job"], format!("{svc}-service"));
    }
}

#[actix_web::test]
async fn promtail_picks_up_new_files_and_resumes_after_a_restart_without_gaps_or_repeats() {
    let root = tempfile::tempdir().unwrap();
    let app = archiving_app(root.path()).await;
    let loki = Loki::stack();
    let mut promtail = Promtail::start(&loki.url, &app.url);
    let svc = unique("pos");
    // Plain lines carry no time: Promtail stamps them when read, so a line read twice would
    // show up twice in Loki (it only merges identical time + line).
    let batch = |from: usize, to: usize| -> Vec<u8> {
        (from..to)
            .map(|i| format!("{svc} line {i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    promtail.append(&svc, "app.log", &batch(0, 5));
    let query = format!("{{service=\"{svc}\"}}");
    loki_lines(&loki, &query, 5, &promtail).await;

    // A file that did not exist when Promtail started (a new service's first log).
    let newcomer = format!("{svc}-new");
    promtail.append(&newcomer, "first.log", b"hello from a new service\n");
    let got = loki_lines(&loki, &format!("{{service=\"{newcomer}\"}}"), 1, &promtail).await;
    assert_eq!(got, vec!["hello from a new service"]);

    promtail.stop();
    promtail.append(&svc, "app.log", &batch(5, 10)); // written while Promtail is down
    promtail.up();
    promtail.append(&svc, "app.log", &batch(10, 15));
    loki_lines(&loki, &query, 15, &promtail).await;
    actix_web::rt::time::sleep(Duration::from_secs(3)).await; // room for a wrong resend
    let counts = sorted_counts(loki.lines(&query).await);
    let want = sorted_counts((0..15).map(|i| format!("{svc} line {i}")));
    assert_eq!(counts, want, "every line once across the restart");
}

#[actix_web::test]
async fn invalid_utf8_odd_label_values_and_an_overlong_line_leave_their_batch_intact() {
    let root = tempfile::tempdir().unwrap();
    let app = archiving_app(root.path()).await;
    let loki = Loki::stack();
    let promtail = Promtail::start(&loki.url, &app.url);
    let svc = unique("ugly");
    let long = format!("{svc} long {}", "x".repeat(300 * 1024)); // over Loki's 256KB max_line_size
    let mut body = Vec::new();
    body.extend_from_slice(format!("{svc} before\n").as_bytes());
    body.extend_from_slice(format!("{svc} bad ").as_bytes());
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(b" bytes\n");
    // A JSON line whose level holds a quote and a newline: it becomes a label value.
    body.extend_from_slice(
        format!("{{\"level\":\"we\\\"ird\\nlevel\",\"message\":\"{svc} odd label\"}}\n").as_bytes(),
    );
    body.extend_from_slice(format!("{long}\n").as_bytes());
    body.extend_from_slice(format!("{svc} after\n").as_bytes());
    promtail.append(&svc, "app.log", &body); // one write: one Promtail batch

    let query = format!("{{service=\"{svc}\"}}");
    let lines = loki_lines(&loki, &query, 5, &promtail).await;
    assert!(lines.contains(&format!("{svc} before")), "{lines:?}");
    assert!(lines.contains(&format!("{svc} after")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{svc} bad ")) && l.ends_with(" bytes")),
        "the invalid UTF-8 line reached Loki"
    );
    let cut = lines
        .iter()
        .find(|l| l.starts_with(&format!("{svc} long ")))
        .expect("the long line reached Loki");
    assert!(
        cut.len() <= 256 * 1024 && cut.len() > 200 * 1024,
        "Loki keeps the long line cut to its max_line_size: {} bytes",
        cut.len()
    );
    let streams = loki.streams(&query).await;
    assert!(
        streams
            .iter()
            .any(|s| s.labels.get("level").map(String::as_str) == Some("we\"ird\nlevel")),
        "the odd label value arrived as is: {:?}",
        streams.iter().map(|s| &s.labels).collect::<Vec<_>>()
    );

    // The archive keeps every line whole, the invalid UTF-8 byte-exact.
    let files = wait_rows(root.path(), 5).await;
    let rows: Vec<_> = all_rows(&files)
        .into_iter()
        .filter(|r| r["service"] == svc.as_str())
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let whole = rows
        .iter()
        .find(|r| {
            r["line"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{svc} long"))
        })
        .unwrap();
    assert_eq!(
        whole["line"].as_str().unwrap(),
        long,
        "archive keeps the whole line"
    );
    let mut bad_bytes = format!("{svc} bad ").into_bytes();
    bad_bytes.extend_from_slice(&[0xff, 0xfe]);
    bad_bytes.extend_from_slice(b" bytes");
    let hex: String = bad_bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        rows.iter().any(|r| r["line_bytes"] == hex.as_str()),
        "archive keeps the invalid UTF-8 line byte-exact"
    );
    assert!(rows
        .iter()
        .any(|r| r["labels"]["level"] == "we\"ird\nlevel"));
}

#[actix_web::test]
async fn promtail_retries_through_503_and_loki_and_the_archive_end_with_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(dir.path(), port);
    let brokers = format!("127.0.0.1:{port}");
    let app = TestApp::builder()
        .with_brokers(&brokers)
        .with_roles(&[Role::Archive])
        .spawn()
        .await;
    let root = app.archive_root.as_ref().expect("archive root");
    let loki = Loki::stack();
    let promtail = Promtail::start(&loki.url, &app.url);
    let svc = unique("bp");
    let lines = |from: usize, to: usize| -> Vec<u8> {
        (from..to)
            .map(|i| format!("{svc} event {i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    promtail.append(&svc, "app.log", &lines(0, 10));
    wait_rows(root.path(), 10).await;

    // Kafka goes away: alertpipe answers 503 (Retry-After) and Promtail keeps the batches.
    broker.kill9();
    for chunk in 1..4 {
        promtail.append(&svc, "app.log", &lines(chunk * 10, chunk * 10 + 10));
        actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    }
    eventually(
        Duration::from_secs(40),
        "alertpipe refusing pushes",
        || async {
            let m = app.metrics().await;
            m.lines()
                .any(|l| {
                    l.starts_with("alertpipe_http_requests_total")
                        && l.contains("route=\"/loki/api/v1/push\"")
                        && (l.contains("status=\"503\"") || l.contains("status=\"429\""))
                })
                .then_some(())
        },
    )
    .await;
    let _broker = start_broker(dir.path(), port);

    let query = format!("{{service=\"{svc}\"}}");
    let in_loki = sorted_counts(loki_lines(&loki, &query, 40, &promtail).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let archived = loop {
        let rows = all_rows(&pyarrow(root.path()));
        let mine: Vec<String> = rows
            .iter()
            .filter(|r| r["service"] == svc.as_str())
            .map(|r| r["line"].as_str().unwrap().to_owned())
            .collect();
        if mine.len() >= 40 || std::time::Instant::now() > deadline {
            break sorted_counts(mine);
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    };
    let want = sorted_counts((0..40).map(|i| format!("{svc} event {i}")));
    assert_eq!(in_loki, want, "Loki: every line once");
    assert_eq!(
        archived, want,
        "archive: every line once, the same set as Loki"
    );
}
