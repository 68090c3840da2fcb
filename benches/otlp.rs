//! OTLP/HTTP logs against Loki's push API, and the collector path end to end:
//!   cargo bench --bench otlp        (MB=16 RUNS=3 BATCH=1000 E2E_LINES=20)
//! 1. CPU per MB: alertpipe (the release binary, ingest role) is sent the same generated lines
//!    as Loki push bodies (snappy protobuf, what Promtail sends) and as OTLP bodies (gzip
//!    protobuf, what the collector's otlphttp exporter sends), alternately, RUNS times each;
//!    its CPU time (/proc) per MB of raw lines, medians, and the ratio OTLP / push.
//! 2. End to end through the real OpenTelemetry Collector (the stack's build, the shipped
//!    config): a line appended to a log file -> filelog -> otlphttp -> alertpipe -> Kafka ->
//!    the archive role -> the line in a closed Parquet file (`archive.max_age_s` = 1), one line
//!    at a time, E2E_LINES times: median and max.
//!
//! Needs the local stack (`bash deploy/local/stack.sh up`: Kafka and the collector build).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alertpipe::archive::otlp_proto::{
    any_value, AnyValue, ExportLogsServiceRequest, KeyValue, LogRecord, Resource, ResourceLogs,
    ScopeLogs,
};
use alertpipe::archive::proto::PushRequest;
use alertpipe::archive::push::{stream_to_proto, Entry, Stream};
use prost::Message;

use common::{env_usize, median, stack};

struct Alertpipe {
    child: Child,
    addr: String,
}

impl Drop for Alertpipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The release binary with `roles`, its own topic, archive under `root`.
fn start(roles: &str, root: &std::path::Path) -> Alertpipe {
    let s = stack();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let run = format!("{}-{}", std::process::id(), port);
    let child = Command::new(env!("CARGO_BIN_EXE_alertpipe"))
        .args([
            "serve",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/alertpipe.toml"),
        ])
        .args(["--roles", roles])
        .env("ALERTPIPE__SERVER__LISTEN", &addr)
        .env("ALERTPIPE__KAFKA__BROKERS", &s["STACK_KAFKA_BROKERS"])
        .env(
            "ALERTPIPE__KAFKA__LOGS_TOPIC",
            format!("bench-otlp-logs-{run}"),
        )
        .env(
            "ALERTPIPE__ARCHIVE__GROUP",
            format!("bench-otlp-archive-{run}"),
        )
        .env("ALERTPIPE__ARCHIVE__ROOT", root)
        .env("ALERTPIPE__ARCHIVE__MAX_AGE_S", "1")
        .env("ALERTPIPE__DATABASE__URL", &s["STACK_ALERTPIPE_DB_URL"])
        .env("ALERTPIPE__AUTH__MODE", "none")
        .env("ALERTPIPE__TELEMETRY__LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertpipe starts");
    let ap = Alertpipe { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(&ap.addr, "GET", "/readyz", "", &[], &[]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "alertpipe not ready on {}",
            ap.addr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ap
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    ctype: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !ctype.is_empty() {
        req.push_str(&format!("Content-Type: {ctype}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return (0, Vec::new());
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let status = std::str::from_utf8(resp.get(9..12).unwrap_or(b"0"))
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| resp[i + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// The process's CPU seconds so far (utime + stime).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Deterministic lines in the demo's three formats, about `mb` MB of them.
fn lines(mb: usize) -> Vec<String> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut out = Vec::new();
    let mut size = 0;
    while size < mb << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = out.len();
        let l = match x % 3 {
            0 => format!(
                r#"{{"ts":"2026-12-07T01:00:{:02}.{:06}Z","level":"info","message":"payment {i} accepted","trace_id":"{:016x}","amount_cents":{}}}"#,
                i % 60,
                i % 1_000_000,
                x,
                x % 100_000
            ),
            1 => format!(
                r#"ts=2026-12-07T01:00:{:02}Z level=warn msg="POST /api/pay 200" trace_id={:016x} duration_ms={}"#,
                i % 60,
                x,
                x % 900
            ),
            _ => format!(
                "2026-12-07 01:00:{:02},123 ERROR [payment] DB connection failed (attempt {})",
                i % 60,
                x % 5
            ),
        };
        size += l.len();
        out.push(l);
    }
    out
}

fn push_body(batch: &[String], base_ns: i64) -> Vec<u8> {
    let labels = BTreeMap::from([
        ("cluster".to_owned(), "prod".to_owned()),
        ("job".to_owned(), "payment-service".to_owned()),
        ("service".to_owned(), "payment".to_owned()),
    ]);
    let entries: Vec<Entry> = batch
        .iter()
        .enumerate()
        .map(|(i, l)| Entry {
            ts_ns: base_ns + i as i64,
            line: l.as_bytes().to_vec(),
            metadata: Vec::new(),
        })
        .collect();
    let s = Stream { labels, entries };
    let req = PushRequest {
        streams: vec![stream_to_proto(&s, &s.entries)],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

fn otlp_body(batch: &[String], base_ns: i64) -> Vec<u8> {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "payment"),
                    kv("deployment.environment", "prod"),
                ],
            }),
            scope_logs: vec![ScopeLogs {
                log_records: batch
                    .iter()
                    .enumerate()
                    .map(|(i, l)| LogRecord {
                        time_unix_nano: (base_ns + i as i64) as u64,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(l.clone())),
                        }),
                        attributes: vec![kv("log.file.path", "/var/log/payment/app.log")],
                        ..Default::default()
                    })
                    .collect(),
            }],
        }],
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&req.encode_to_vec()).expect("gzip");
    gz.finish().expect("gzip")
}

fn send_all(ap: &Alertpipe, path: &str, ctype: &str, headers: &[(&str, &str)], bodies: &[Vec<u8>]) {
    for b in bodies {
        let (status, body) = http(&ap.addr, "POST", path, ctype, headers, b);
        assert!(
            status == 200 || status == 204,
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

fn cpu_per_mb(mb: usize, runs: usize, batch: usize) {
    let lines = lines(mb);
    let raw_mb = lines.iter().map(String::len).sum::<usize>() as f64 / (1 << 20) as f64;
    let base = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let push: Vec<Vec<u8>> = lines.chunks(batch).map(|c| push_body(c, base)).collect();
    let otlp: Vec<Vec<u8>> = lines.chunks(batch).map(|c| otlp_body(c, base)).collect();
    let root = tempfile::tempdir().expect("root");
    let ap = start("ingest", root.path());
    let pid = ap.child.id();
    // Warm-up: topics, connections.
    send_all(
        &ap,
        "/loki/api/v1/push",
        "application/x-protobuf",
        &[],
        &push[..1],
    );
    send_all(
        &ap,
        "/otlp/v1/logs",
        "application/x-protobuf",
        &[("Content-Encoding", "gzip")],
        &otlp[..1],
    );
    let (mut p, mut o) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let c0 = cpu_s(pid);
        let t0 = Instant::now();
        send_all(
            &ap,
            "/loki/api/v1/push",
            "application/x-protobuf",
            &[],
            &push,
        );
        let (c1, t1) = (cpu_s(pid), t0.elapsed());
        send_all(
            &ap,
            "/otlp/v1/logs",
            "application/x-protobuf",
            &[("Content-Encoding", "gzip")],
            &otlp,
        );
        let (c2, t2) = (cpu_s(pid), t0.elapsed() - t1);
        p.push((c1 - c0) / raw_mb);
        o.push((c2 - c1) / raw_mb);
        println!(
            "run {run}: push {:.1} CPU-ms/MB ({:.1} MB/s)   otlp {:.1} CPU-ms/MB ({:.1} MB/s)",
            p[run] * 1e3,
            raw_mb / t1.as_secs_f64(),
            o[run] * 1e3,
            raw_mb / t2.as_secs_f64()
        );
    }
    let (mp, mo) = (median(p), median(o));
    println!(
        "median over {runs} runs of {raw_mb:.1} MB ({} lines, {batch} per request): \
         Loki push {:.1} CPU-ms/MB, OTLP {:.1} CPU-ms/MB; OTLP / push = {:.2}x",
        lines.len(),
        mp * 1e3,
        mo * 1e3,
        if mp > 0.0 { mo / mp } else { f64::NAN }
    );
}

/// Rows in closed files under `root` (file footers).
fn archived_rows(root: &std::path::Path) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let Ok(op) = alertpipe::coldstore::storage::operator(&root.display().to_string(), 9870)
        else {
            return 0;
        };
        alertpipe::coldstore::read::list(&op)
            .await
            .map(|files| files.iter().map(|f| f.rows).sum())
            .unwrap_or(0)
    })
}

fn end_to_end(n: usize) {
    let s = stack();
    let root = tempfile::tempdir().expect("root");
    let ap = start("ingest,archive", root.path());
    let dir = tempfile::tempdir().expect("collector dir");
    let logs = dir.path().join("logs/payment");
    std::fs::create_dir_all(&logs).expect("logs dir");
    std::fs::write(dir.path().join("token"), "unused").expect("token");
    let mut col = Command::new(&s["STACK_OTELCOL_BIN"])
        .arg("--config")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/otelcol/otelcol.yaml"
        ))
        .env("HOSTNAME", "bench-host")
        .env("CLUSTER", "prod")
        .env("OTELCOL_STORAGE_DIR", dir.path().join("storage"))
        .env(
            "OTELCOL_LOG_GLOB",
            format!("{}/logs/*/*.log", dir.path().display()),
        )
        .env("ALERTPIPE_OTLP_URL", format!("http://{}/otlp", ap.addr))
        .env("ALERTPIPE_TOKEN_FILE", dir.path().join("token"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the collector starts (STACK_OTELCOL_BIN)");
    let file = logs.join("app.log");
    let mut lat = Vec::new();
    for i in 0..=n {
        let before = archived_rows(root.path());
        let t0 = Instant::now();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .expect("log file");
        writeln!(f, "2026-12-07 01:00:00,000 ERROR [payment] bench line {i}").expect("append");
        drop(f);
        while archived_rows(root.path()) <= before {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "line {i} not archived in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if i > 0 {
            // The first line also waits for the collector to start and Kafka's first fetch.
            lat.push(t0.elapsed().as_secs_f64());
        }
    }
    let _ = col.kill();
    let _ = col.wait();
    let max = lat.iter().copied().fold(0.0, f64::max);
    println!(
        "end to end, a line written to a file -> collector -> alertpipe -> Kafka -> closed \
         Parquet file (archive.max_age_s = 1): median {:.2} s, max {:.2} s over {n} lines",
        median(lat),
        max
    );
}

fn main() {
    alertpipe::alloc::tune();
    let (mb, runs, batch) = (
        env_usize("MB", 16),
        env_usize("RUNS", 3),
        env_usize("BATCH", 1000),
    );
    cpu_per_mb(mb, runs, batch);
    end_to_end(env_usize("E2E_LINES", 20));
}
