//! The cold archive: Loki pushes in (real Promtail bodies and JSON), Kafka `logs`, Parquet
//! files out, read back by an independent reader (pyarrow). Bad pushes get Loki's codes; a
//! SIGKILL mid-flush loses and duplicates nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alertpipe::config::{Config, Role};
use serde_json::Value;

use crate::support::app::archive;
use crate::support::parquet::{all_rows, pyarrow, wait_rows};
use crate::support::{eventually, fixture, free_port, spawn_app, unique, Proc, Stack};

#[actix_web::test]
async fn promtail_and_json_pushes_become_parquet_any_reader_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(|c| {
        archive(dir.path())(c);
        c.server.body_limit_bytes = 256 * 1024;
    })
    .await;
    let mut expected = BTreeMap::new();
    for name in [
        "push-multistream",
        "push-single-error",
        "push-structured-metadata",
    ] {
        let (status, body) = app
            .push_logs(
                fixture(&format!("promtail/{name}.pb.snappy")),
                "application/x-protobuf",
                false,
            )
            .await;
        assert_eq!(status, 204, "{name}: {body}");
        let decoded: Value =
            serde_json::from_slice(&fixture(&format!("promtail/{name}.decoded.json"))).unwrap();
        for s in decoded["streams"].as_array().unwrap() {
            for e in s["entries"].as_array().unwrap() {
                expected.insert(
                    e["ts_ns"].as_str().unwrap().parse::<i64>().unwrap(),
                    e["line"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
    let (s1, _) = app
        .push_logs(
            fixture("promtail/json-push.json"),
            "application/json",
            false,
        )
        .await;
    let (s2, _) = app
        .push_logs(
            fixture("promtail/json-push-structured-metadata.json"),
            "application/json",
            false,
        )
        .await;
    let (s3, _) = app
        .push_logs(
            fixture("promtail/json-push-gzip.json.gz"),
            "application/json",
            true,
        )
        .await;
    assert_eq!((s1, s2, s3), (204, 204, 204));
    let mut json_lines = 0;
    for f in [
        "json-push.json",
        "json-push-structured-metadata.json",
        "json-push-gzip.json",
    ] {
        let v: Value = serde_json::from_slice(&fixture(&format!("promtail/{f}"))).unwrap();
        for s in v["streams"].as_array().unwrap() {
            json_lines += s["values"].as_array().unwrap().len();
        }
    }
    let total = expected.len() + json_lines;
    let files = wait_rows(dir.path(), total).await;
    let rows = all_rows(&files);
    assert_eq!(rows.len(), total, "every line once");
    // Lines read into open files and lines in closed files: counters of the whole test
    // process (other tests archive too), so each holds at least this test's lines.
    let text = app.metrics().await;
    for family in [
        "alertpipe_archive_lines_taken_total",
        "alertpipe_archive_lines_total",
    ] {
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix(family)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{family} missing from /metrics:\n{text}"));
        assert!(n >= total as f64, "{family} = {n}, want >= {total}");
    }

    // <env>/<service>/YYYY/MM/DD/HHMMSS-xxxx.snappy.parquet
    let layout = archive_layout("snappy.parquet");
    for f in &files {
        let path = f["path"].as_str().unwrap();
        assert!(layout(path), "path layout: {path}");
        assert_eq!(f["compression"], serde_json::json!(["SNAPPY"]), "{path}");
        let t = &f["types"];
        assert_eq!(t["timestamp"], "timestamp[us, tz=UTC]");
        assert_eq!(t["timestamp_ns"], "int64");
        for c in ["service", "env", "hostname", "level"] {
            assert_eq!(
                t[c], "dictionary<values=string, indices=int32, ordered=0>",
                "{c}"
            );
        }
        assert!(
            t["labels"].as_str().unwrap().starts_with("map<string"),
            "{t}"
        );
        let ns: Vec<i64> = f["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["timestamp_ns"].as_i64().unwrap())
            .collect();
        assert!(
            ns.windows(2).all(|w| w[0] <= w[1]),
            "sorted by time in {path}"
        );
    }
    for r in &rows {
        let ns = r["timestamp_ns"].as_i64().unwrap();
        assert_eq!(r["timestamp_us"].as_i64().unwrap(), ns.div_euclid(1000));
        if let Some(line) = expected.get(&ns) {
            assert_eq!(r["line"].as_str().unwrap(), line, "exact line at {ns}");
            assert_eq!(r["labels"]["job"], "payment-service");
            assert_eq!(r["service"], "payment");
            assert_eq!(r["env"], "prod");
            assert_eq!(r["hostname"], "payment-host-01");
            assert!(r["line_bytes"].is_null());
        }
    }
    let with_trace = rows
        .iter()
        .filter(|r| r["metadata"].get("trace_id").is_some())
        .count();
    assert_eq!(
        with_trace, 3,
        "structured metadata kept (2 protobuf + 1 JSON)"
    );
    // And the CLI reads the same archive.
    let out = Command::new(env!("CARGO_BIN_EXE_alertpipe"))
        .args([
            "archive",
            "cat",
            "--service",
            "payment",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2100-01-01T00:00:00Z",
            "--grep",
            "DB connection failed",
        ])
        .env("ALERTPIPE__ARCHIVE__ROOT", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let want = rows
        .iter()
        .filter(|r| {
            r["service"] == "payment"
                && r["line"].as_str().unwrap().contains("DB connection failed")
        })
        .count();
    assert_eq!(printed.lines().count(), want, "{printed}");
    let times: Vec<&str> = printed
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "cat prints in time order"
    );

    // `archive ls` counts the same rows per service-day; an empty root says so on stderr.
    let ls = |root: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_alertpipe"))
            .args(["archive", "ls"])
            .env("ALERTPIPE__ARCHIVE__ROOT", root)
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (listing, stderr) = ls(dir.path());
    assert_eq!(stderr, "");
    let payment_rows: usize = listing
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("payment"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<usize>().ok())
        .sum();
    let want = rows.iter().filter(|r| r["service"] == "payment").count();
    assert_eq!(payment_rows, want, "{listing}");
    let empty = tempfile::tempdir().unwrap();
    let (listing, stderr) = ls(empty.path());
    assert_eq!(listing.lines().count(), 1, "the header only: {listing}");
    assert!(stderr.contains("no archive files under"), "{stderr}");
}

/// Matches `<env>/<service>/YYYY/MM/DD/HHMMSS-xxxx.<ext>` (no regex crate for two tests).
fn archive_layout(ext: &'static str) -> impl Fn(&str) -> bool {
    move |p: &str| {
        let parts: Vec<&str> = p.split('/').collect();
        parts.len() == 6
            && parts[2].len() == 4
            && parts[3].len() == 2
            && parts[4].len() == 2
            && parts[2..5]
                .iter()
                .all(|s| s.chars().all(|c| c.is_ascii_digit()))
            && parts[5].len() == "163309-1b9d.".len() + ext.len()
            && parts[5][..6].chars().all(|c| c.is_ascii_digit())
            && &parts[5][6..7] == "-"
            && parts[5][7..11].chars().all(|c| c.is_ascii_hexdigit())
            && parts[5].ends_with(&format!(".{ext}"))
    }
}

pub(crate) fn pb_body(labels: &str, lines: &[&[u8]]) -> Vec<u8> {
    use alertpipe::archive::proto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
    use prost::Message;
    let now = chrono::Utc::now().timestamp();
    let req = PushRequest {
        streams: vec![StreamAdapter {
            labels: labels.into(),
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, l)| EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: now,
                        nanos: i as i32,
                    }),
                    line: l.to_vec(),
                    structured_metadata: vec![],
                })
                .collect(),
            hash: 0,
        }],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

#[actix_web::test]
async fn bad_pushes_get_lokis_answers_and_nothing_valid_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(|c| {
        archive(dir.path())(c);
        c.server.body_limit_bytes = 256 * 1024;
    })
    .await;
    let pb = "application/x-protobuf";
    let garbage_pb = snap::raw::Encoder::new()
        .compress_vec(&[0x0a, 0xff, 0xff, 0x01])
        .unwrap();
    let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        (
            "not snappy",
            b"this is not snappy protobuf".to_vec(),
            pb,
            400,
        ),
        (
            "text/plain is protobuf to Loki",
            b"hello".to_vec(),
            "text/plain",
            400,
        ),
        ("snappy but not protobuf", garbage_pb, pb, 400),
        ("bad selector", pb_body("{1bad=\"x\"}", &[b"a"]), pb, 400),
        ("unquoted selector", pb_body("{job=x}", &[b"a"]), pb, 400),
        ("empty body", Vec::new(), "application/json", 400),
        (
            "malformed json",
            br#"{"streams":[{"stream":{"job":"x"},"values":[["1","a"]"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "bad timestamp",
            br#"{"streams":[{"stream":{"job":"x"},"values":[["abc","bad ts"]]}]}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "no streams",
            br#"{"streams":[]}"#.to_vec(),
            "application/json",
            422,
        ),
        ("oversize", vec![b' '; 300 * 1024], "application/json", 413),
        (
            "bad gzip",
            b"not gzip".to_vec(),
            "application/json+gzip",
            400,
        ),
    ];
    for (name, body, ct, want) in cases {
        let gzip = ct.ends_with("+gzip");
        let ct = ct.trim_end_matches("+gzip");
        let (status, text) = app.push_logs(body, ct, gzip).await;
        assert_eq!(status, want, "{name}: {text}");
        assert!(
            !text.trim().is_empty(),
            "{name}: the answer says what is wrong"
        );
    }
    // A non-UTF-8 line is accepted (as Loki does) and kept byte for byte.
    let (status, text) = app
        .push_logs(
            pb_body(
                "{job=\"binary\", env=\"test\"}",
                &[b"ok line", b"\xff\xfebad \xc3\x28"],
            ),
            pb,
            false,
        )
        .await;
    assert_eq!(status, 204, "{text}");
    let rows = all_rows(&wait_rows(dir.path(), 2).await);
    assert_eq!(rows.len(), 2, "only the valid push landed: {rows:?}");
    let bad = rows
        .iter()
        .find(|r| !r["line_bytes"].is_null())
        .expect("raw bytes kept");
    assert_eq!(bad["line_bytes"], "fffe62616420c328");
    assert_eq!(bad["env"], "test");
    assert_eq!(bad["service"], "binary");
}

/// The real binary, with the archive role, writing under `root`.
fn start_binary(root: &Path, port: u16, brokers: &str, topic: &str, group: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_alertpipe"))
        .args(["serve", "--roles", "ingest,archive"])
        .env("ALERTPIPE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ALERTPIPE__KAFKA__BROKERS", brokers)
        .env("ALERTPIPE__KAFKA__LOGS_TOPIC", topic)
        .env("ALERTPIPE__KAFKA__PARTITIONS", "2")
        .env("ALERTPIPE__ARCHIVE__ROOT", root)
        .env("ALERTPIPE__ARCHIVE__GROUP", group)
        // The same process identity across the restart, as a StatefulSet pod keeps its name.
        .env("ALERTPIPE__KAFKA__GROUP_INSTANCE_ID", format!("{group}-0"))
        .env("ALERTPIPE__ARCHIVE__MAX_FILE_BYTES", "4096")
        .env("ALERTPIPE__ARCHIVE__MAX_AGE_S", "1")
        .env("ALERTPIPE__ARCHIVE__BATCH_SIZE", "7")
        .env(
            "ALERTPIPE__TELEMETRY__LOG_LEVEL",
            "info,librdkafka=info,rdkafka=info",
        )
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.with_extension("log"))
                .unwrap(),
        )
        .spawn()
        .expect("alertpipe binary starts");
    Proc { child }
}

#[actix_web::test]
async fn sigkill_mid_flush_then_restart_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = Stack::get().var("STACK_KAFKA_BROKERS").to_owned();
    let (topic, group, port) = (unique("logs"), unique("archive"), free_port());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let url = format!("http://127.0.0.1:{port}/loki/api/v1/push");
    let ready = |client: awc::Client| async move {
        eventually(Duration::from_secs(30), "alertpipe ready", || {
            let c = client.clone();
            async move {
                let r = c
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await
                    .ok()?;
                (r.status().as_u16() == 200).then_some(())
            }
        })
        .await
    };
    let body = |i: usize| {
        let base = 1_750_000_000_000_000_000i64 + (i as i64) * 1_000_000;
        let values: Vec<Value> = (0..20)
            .map(|j| {
                serde_json::json!([
                    (base + j).to_string(),
                    format!("batch {i} line {j} {}", "x".repeat(40))
                ])
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"streams": [
            {"stream": {"job": "payment-service", "service_name": format!("svc{}", i % 3), "env": "prod"}, "values": values}
        ]}))
        .unwrap()
    };
    let mut proc = start_binary(dir.path(), port, &brokers, &topic, &group);
    ready(client.clone()).await;
    let mut acked = Vec::new();
    let mut i = 0;
    // Push until well past several size flushes, then kill -9 while files are being written.
    while i < 60 {
        let r = client
            .post(&url)
            .insert_header(("content-type", "application/json"))
            .send_body(body(i))
            .await;
        if r.map(|r| r.status().as_u16()).ok() == Some(204) {
            acked.push(i);
        }
        i += 1;
    }
    proc.kill9();
    let mut proc2 = start_binary(dir.path(), port, &brokers, &topic, &group);
    ready(client.clone()).await;
    for i in 60..100 {
        let r = client
            .post(&url)
            .insert_header(("content-type", "application/json"))
            .send_body(body(i))
            .await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(204), "push {i}");
        acked.push(i);
    }
    let want = acked.len() * 20;
    let rows = all_rows(&wait_rows(dir.path(), want).await);
    // Everything committed is in closed files: nothing more can land, so a second count is final.
    crate::support::wait_group_drained(&brokers, &group, &topic, Duration::from_secs(30)).await;
    let rows_after = all_rows(&pyarrow(dir.path()));
    assert_eq!(rows.len(), rows_after.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows_after {
        *seen
            .entry(r["line"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicated: {twice:?}");
    for i in &acked {
        for j in 0..20 {
            let prefix = format!("batch {i} line {j} ");
            assert!(
                seen.keys().any(|l| l.starts_with(&prefix)),
                "acknowledged line lost: {prefix}"
            );
        }
    }
    assert_eq!(rows_after.len(), want);
    proc2.kill9();
}

#[actix_web::test]
async fn storage_failing_mid_file_rewinds_the_partition_and_nothing_is_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    // Where files being written live is not a directory: every file fails to start, after
    // the consumer has handed the actor its messages.
    let incomplete = root.join(".incomplete");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(&incomplete, b"not a directory").unwrap();
    let brokers = Stack::get().var("STACK_KAFKA_BROKERS").to_owned();
    let (topic, group, port) = (unique("logs"), unique("archive"), free_port());
    let mut proc = start_binary(&root, port, &brokers, &topic, &group);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let base = format!("http://127.0.0.1:{port}");
    let status = |client: awc::Client, path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            client
                .get(url)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    eventually(Duration::from_secs(30), "alertpipe answers", || {
        let c = client.clone();
        async move { status(c, "/healthz").await.filter(|s| *s == 200) }
    })
    .await;
    let mut want = Vec::new();
    for i in 0..30 {
        let values: Vec<Value> = (0..10)
            .map(|j| {
                let ts = 1_750_000_000_000_000_000i64 + i * 1_000_000 + j;
                want.push(format!("push {i} line {j} storage outage"));
                serde_json::json!([ts.to_string(), format!("push {i} line {j} storage outage")])
            })
            .collect();
        let body = serde_json::json!({"streams": [
            {"stream": {"service": format!("svc{}", i % 3), "env": "prod"}, "values": values}
        ]});
        let r = client
            .post(format!("{base}/loki/api/v1/push"))
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "push {i}");
    }
    // The stage reports the failure (readiness) and writes nothing while storage fails.
    eventually(
        Duration::from_secs(30),
        "the archive stage reports failing",
        || {
            let c = client.clone();
            async move { status(c, "/readyz").await.filter(|s| *s == 503) }
        },
    )
    .await;
    assert!(
        pyarrow(&root).is_empty(),
        "nothing is visible while storage fails"
    );
    // Storage back: the partitions are read again from their last commit.
    std::fs::remove_file(&incomplete).unwrap();
    std::fs::create_dir(&incomplete).unwrap();
    wait_rows(&root, want.len()).await;
    // Everything committed is in closed files: a duplicate would be there now.
    crate::support::wait_group_drained(&brokers, &group, &topic, Duration::from_secs(30)).await;
    let rows = all_rows(&pyarrow(&root));
    let mut got: Vec<String> = rows
        .iter()
        .map(|r| r["line"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every line once");
    eventually(Duration::from_secs(30), "ready again", || {
        let c = client.clone();
        async move { status(c, "/readyz").await.filter(|s| *s == 200) }
    })
    .await;
    proc.kill9();
    let log = std::fs::read_to_string(root.with_extension("log")).unwrap();
    assert!(
        log.contains("reading those partitions again"),
        "the consumer sought back (Commit::Rewind): {log}"
    );
}

#[actix_web::test]
async fn an_undecodable_logs_message_is_dead_lettered_whole_and_the_stage_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let logs = unique("logs");
    let (root, topic) = (dir.path().display().to_string(), logs.clone());
    let app = spawn_app(move |c: &mut Config| {
        c.server.roles = vec![Role::Ingest, Role::Archive];
        c.archive.root = root;
        c.archive.max_age_s = 1;
        c.archive.group = unique("archive");
        c.kafka.logs_topic = topic;
    })
    .await;
    crate::support::produce_raw(
        &app.brokers,
        &logs,
        &[("{job=\"x\"}", b"this is not a Loki stream".to_vec())],
    )
    .await;
    let (status, body) = app
        .push_logs(
            fixture("promtail/push-single-error.pb.snappy"),
            "application/x-protobuf",
            false,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // The good push behind the poison message is archived: the stage did not stop.
    assert!(!all_rows(&wait_rows(dir.path(), 1).await).is_empty());
    let dlq = alertpipe::kafka::consumer::poison::dlq_topic(&logs);
    let dead = crate::support::read_payloads(&app.brokers, &dlq, 1, Duration::from_secs(5)).await;
    assert_eq!(dead.len(), 1, "one dead letter in {dlq}");
    assert_eq!(dead[0], b"this is not a Loki stream", "kept whole");
}

#[actix_web::test]
async fn the_push_endpoint_takes_the_configured_credentials() {
    let app = crate::support::TestApp::builder()
        .configure(|c| {
            c.auth.mode = alertpipe::config::AuthMode::Bearer;
            c.auth.secret = alertpipe::config::Secret::new("push-token");
        })
        .spawn()
        .await;
    let body = fixture("promtail/push-single-error.pb.snappy");
    let (status, text) = app
        .push_logs(body.clone(), "application/x-protobuf", false)
        .await;
    assert_eq!(status, 401, "{text}");
    let resp = app
        .client
        .post(format!("{}/loki/api/v1/push", app.url))
        .insert_header(("content-type", "application/x-protobuf"))
        .insert_header(("authorization", "Bearer push-token"))
        .send_body(body)
        .await
        .expect("push reaches the app");
    assert_eq!(
        resp.status().as_u16(),
        204,
        "Promtail's bearer token is accepted"
    );
}

#[actix_web::test]
async fn the_zstd_codec_writes_zstd_parquet_files_with_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(|c| {
        archive(dir.path())(c);
        c.archive.codec = alertpipe::coldstore::parquet::Codec::Zstd;
    })
    .await;
    let (status, body) = app
        .push_logs(
            fixture("promtail/push-multistream.pb.snappy"),
            "application/x-protobuf",
            false,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let decoded: Value =
        serde_json::from_slice(&fixture("promtail/push-multistream.decoded.json")).unwrap();
    let mut expected: Vec<String> = decoded["streams"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["entries"].as_array().unwrap().clone())
        .map(|e| e["line"].as_str().unwrap().to_owned())
        .collect();
    let files = wait_rows(dir.path(), expected.len()).await;
    let layout = archive_layout("zstd.parquet");
    for f in &files {
        let path = f["path"].as_str().unwrap();
        assert!(layout(path), "path layout: {path}");
        assert_eq!(f["compression"], serde_json::json!(["ZSTD"]), "{path}");
    }
    let mut lines: Vec<String> = all_rows(&files)
        .iter()
        .map(|r| r["line"].as_str().unwrap().to_owned())
        .collect();
    lines.sort();
    expected.sort();
    assert_eq!(lines, expected, "every line once, byte-exact");
}

/// Archive files written the way the stage writes them: `n` files of 50 lines for `service`
/// on `day`, each from its own offsets.
fn write_day(root: &Path, service: &str, day: chrono::NaiveDate, n: usize) -> Vec<String> {
    use alertpipe::coldstore::parquet::{encode, Promoted, Provenance, Row};
    use std::sync::Arc;
    let labels = Arc::new(BTreeMap::from([("service".to_owned(), service.to_owned())]));
    let mut lines = Vec::new();
    for f in 0..n {
        let start = day.and_hms_opt(1 + f as u32, 0, 0).unwrap().and_utc();
        let first_ts = start.timestamp_nanos_opt().unwrap();
        let mut rows: Vec<Row> = (0..50)
            .map(|i| {
                let line =
                    format!("{service} {day} file {f} line {i} level=info msg=\"compaction\"");
                lines.push(line.clone());
                Row {
                    ts_ns: first_ts + i * 1_000_000,
                    line: line.into_bytes(),
                    labels: labels.clone(),
                    metadata: vec![],
                    partition: 0,
                    offset: (f * 50) as i64 + i,
                }
            })
            .collect();
        let prov = Provenance {
            partition: 0,
            first_offset: (f * 50) as i64,
            last_offset: (f * 50 + 49) as i64,
        };
        let bytes = encode(
            &mut rows,
            &Promoted {
                service,
                env: "prod",
            },
            prov,
        )
        .unwrap();
        let path = root.join(alertpipe::coldstore::layout::file_path(
            "prod",
            service,
            first_ts,
            0,
            (f * 50) as i64,
            0,
            alertpipe::coldstore::parquet::Codec::Snappy,
        ));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    lines
}

fn parquet_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[actix_web::test]
async fn compaction_merges_each_closed_day_and_recovers_from_a_crash_at_every_step() {
    use alertpipe::coldstore::compact::compact;
    use alertpipe::coldstore::parquet::Codec;
    let root = tempfile::tempdir().unwrap();
    let op = alertpipe::coldstore::storage::operator(root.path().to_str().unwrap(), 9870).unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let today = chrono::Utc::now().date_naive();
    let mut expected = write_day(root.path(), "payment", day, 4);
    expected.extend(write_day(root.path(), "auth", day, 3));
    expected.extend(write_day(root.path(), "search", day, 1));
    write_day(root.path(), "payment", today, 2);
    let pay = root.path().join("prod/payment/2026/11/20");
    let inputs = parquet_files(&pay);
    // A crash while uploading left a temporary file without a footer.
    std::fs::write(pay.join("_compacting-0badf00d.tmp"), b"PAR1 half a file").unwrap();

    let r = compact(&op, today, Codec::Snappy).await.unwrap();
    assert_eq!(
        (r.merged, r.files_before, r.files_after),
        (2, 7, 2),
        "{r:?}"
    );
    assert_eq!(r.rows, 350);
    assert_eq!(r.recovered, 1, "the partial file was cleaned up");
    let merged = parquet_files(&pay);
    assert_eq!(merged.len(), 1, "one file for payment's day: {merged:?}");
    assert_eq!(
        parquet_files(&root.path().join("prod/auth/2026/11/20")).len(),
        1
    );
    assert_eq!(
        parquet_files(&root.path().join("prod/search/2026/11/20")).len(),
        1
    );
    let today_dir = root
        .path()
        .join(format!("prod/payment/{}", today.format("%Y/%m/%d")));
    assert_eq!(parquet_files(&today_dir).len(), 2, "today is not closed");
    // Every line once, read by an independent reader.
    let mut lines: Vec<String> = all_rows(&pyarrow(root.path()))
        .iter()
        .map(|r| r["line"].as_str().unwrap().to_owned())
        .filter(|l| l.contains(&day.to_string()))
        .collect();
    lines.sort();
    expected.sort();
    assert!(
        lines == expected,
        "no row lost or doubled: {} rows read, {} written",
        lines.len(),
        expected.len()
    );

    // Idempotent: nothing left to do.
    let again = compact(&op, today, Codec::Snappy).await.unwrap();
    assert_eq!((again.merged, again.recovered), (0, 0));
    assert_eq!(parquet_files(&pay), merged);

    // A crash after the rename, before the deletes: an input is back beside the compacted
    // file. Readers see each row once; the next run deletes the leftover.
    let before_crash = parquet_files(&pay);
    write_day(root.path(), "payment", day, 1);
    assert_eq!(parquet_files(&pay).len(), 2);
    let from = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let read = alertpipe::coldstore::read::lines(
        &op,
        "payment",
        from,
        from + chrono::Duration::days(1),
        None,
    )
    .await
    .unwrap();
    assert_eq!(read.len(), 200, "the leftover input is not read twice");
    let r = compact(&op, today, Codec::Snappy).await.unwrap();
    assert_eq!((r.merged, r.recovered), (0, 1), "{r:?}");
    assert_eq!(parquet_files(&pay), before_crash);

    // A crash after the upload, before the rename: the complete temporary file and its inputs.
    let tmp_day = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    let lines21 = write_day(root.path(), "auth", tmp_day, 3);
    let auth21 = root.path().join("prod/auth/2026/11/21");
    let originals: Vec<(String, Vec<u8>)> = parquet_files(&auth21)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(auth21.join(&n)).unwrap()))
        .collect();
    compact(&op, today, Codec::Snappy).await.unwrap();
    let done = parquet_files(&auth21);
    assert_eq!(done.len(), 1);
    let id = done[0].split(['-', '.']).nth(1).unwrap().to_owned();
    std::fs::rename(
        auth21.join(&done[0]),
        auth21.join(format!("_compacting-{id}.tmp")),
    )
    .unwrap();
    for (n, bytes) in &originals {
        std::fs::write(auth21.join(n), bytes).unwrap();
    }
    let r = compact(&op, today, Codec::Snappy).await.unwrap();
    assert_eq!(r.recovered, 1, "{r:?}");
    assert_eq!(
        parquet_files(&auth21),
        done,
        "published under its name, inputs gone"
    );
    let from = tmp_day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let read = alertpipe::coldstore::read::lines(
        &op,
        "auth",
        from,
        from + chrono::Duration::days(1),
        None,
    )
    .await
    .unwrap();
    let mut got: Vec<String> = read.into_iter().map(|(_, l)| l).collect();
    got.sort();
    let mut want = lines21;
    want.sort();
    assert!(
        got == want,
        "{} rows read, {} written",
        got.len(),
        want.len()
    );
    drop(inputs);
}

/// A sender retrying a push alertpipe stored but could not acknowledge (Kafka appended it,
/// then the ack timed out and the sender saw a 503) stores its lines twice; the Loki API
/// answers and counts each (stream, time, line) once, as Loki does with a line pushed again.
#[actix_web::test]
async fn a_push_stored_twice_is_answered_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(archive(dir.path())).await;
    let svc = unique("twice");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let body = serde_json::to_vec(&serde_json::json!({"streams": [{
        "stream": {"service": svc, "job": "twice"},
        "values": (0..50).map(|i| [(now + i / 2).to_string(), format!("{svc} line {i}")])
            .collect::<Vec<_>>()
    }]}))
    .unwrap();
    for _ in 0..2 {
        let (status, text) = app.push_logs(body.clone(), "application/json", false).await;
        assert_eq!(status, 204, "{text}");
    }
    let rows = all_rows(&wait_rows(dir.path(), 100).await);
    let stored = rows.iter().filter(|r| r["service"] == svc.as_str()).count();
    assert_eq!(stored, 100, "both deliveries are stored");

    let q = format!("{{service=\"{svc}\"}}");
    let (start, end) = (
        (now - 60_000_000_000).to_string(),
        (now + 60_000_000_000).to_string(),
    );
    let (status, v) = crate::support::logs::loki_get(
        &app.url,
        "/loki/api/v1/query_range",
        &[
            ("query", q.as_str()),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("limit", "1000"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let mut lines = crate::support::logs::result_lines(&v);
    lines.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("{svc} line {i}")).collect();
    want.sort();
    assert_eq!(lines, want, "every line once");

    let count = format!("sum(count_over_time({{service=\"{svc}\"}}[5m]))");
    let at = (now + 1_000_000_000).to_string();
    let (status, v) = crate::support::logs::loki_get(
        &app.url,
        "/loki/api/v1/query",
        &[("query", count.as_str()), ("time", at.as_str())],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["value"][1], "50", "{v}");
}
