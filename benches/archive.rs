//! Cold archive throughput on a realistic generated log mix (JSON and plain lines, five
//! services, four levels), stage by stage:
//!   cargo bench --bench archive        (MB=64 RUNS=3 CONCURRENCY=4)
//! 1. push decode: snappy protobuf bodies of 1 MiB of lines (Promtail's default batch) -> entries
//! 2. the archive stage alone: decoded entries -> one closed snappy Parquet file on local disk
//! 3. end to end: POST /loki/api/v1/push -> Kafka -> ArchiveActor -> closed files, through the
//!    local broker; and the push endpoint's requests/s and MB/s on its own.
//! 4. the archive role alone started on the full topic, until every row is in a closed file
//!    (and until every line is read into open files), against a bare consumer fetching the
//!    same topic as the stage does (like for like), RUNS pairs; with when the role took its
//!    first line and its last, and its longest pause between (an encoding flush).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alertpipe::archive::proto::PushRequest;
use alertpipe::archive::push::{decode_protobuf, stream_to_proto, Entry, Stream};
use alertpipe::coldstore::parquet::{encode, Promoted, Provenance, Row};
use alertpipe::config::{Config, Role};
use prost::Message;

const SERVICES: [&str; 5] = ["payment", "checkout", "auth", "search", "inventory"];
const LEVELS: [&str; 4] = ["info", "info", "warn", "error"];

/// A deterministic pseudo-random generator (no rand dependency for a benchmark).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn line(rng: &mut Rng, ts_ns: i64, svc: &str, level: &str) -> String {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ts_ns);
    let r = rng.next();
    match r % 3 {
        0 => format!(
            "{} {} [{svc}] {} order=A-{} user={} latency_ms={}",
            t.format("%Y-%m-%d %H:%M:%S,%3f"),
            level.to_uppercase(),
            [
                "payment processed",
                "cache miss",
                "retrying request",
                "DB connection failed"
            ][(r >> 8) as usize % 4],
            r % 100_000,
            (r >> 20) % 5000,
            (r >> 32) % 900
        ),
        _ => format!(
            r#"{{"ts":"{}","level":"{level}","service":"{svc}","message":"{}","order_id":"A-{}","user_id":{},"latency_ms":{},"trace_id":"{:016x}{:016x}","path":"/api/v1/{}","status":{}}}"#,
            t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            [
                "payment processed",
                "DB connection failed",
                "request completed",
                "upstream timeout"
            ][(r >> 8) as usize % 4],
            r % 100_000,
            (r >> 20) % 5000,
            (r >> 32) % 900,
            rng.next(),
            rng.next(),
            ["orders", "payments", "refunds", "carts"][(r >> 40) as usize % 4],
            [200, 200, 201, 500, 404][(r >> 44) as usize % 5]
        ),
    }
}

/// Push bodies holding ~1 MiB of raw lines each, `total` bytes of lines in all.
fn generate(total: usize) -> (Vec<Vec<Stream>>, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ts = 1_750_680_000_000_000_000i64; // 2025-06-23T12:00:00Z
    let mut pushes = Vec::new();
    let mut raw = 0;
    while raw < total {
        let mut streams: BTreeMap<(usize, usize), Vec<Entry>> = BTreeMap::new();
        let mut batch = 0;
        while batch < 1 << 20 {
            let s = (rng.next() % SERVICES.len() as u64) as usize;
            let l = (rng.next() % LEVELS.len() as u64) as usize;
            ts += (rng.next() % 2_000_000) as i64;
            let text = line(&mut rng, ts, SERVICES[s], LEVELS[l]);
            batch += text.len();
            streams.entry((s, l)).or_default().push(Entry {
                ts_ns: ts,
                line: text.into_bytes(),
                metadata: vec![],
            });
        }
        raw += batch;
        pushes.push(
            streams
                .into_iter()
                .map(|((s, l), entries)| Stream {
                    labels: BTreeMap::from([
                        ("env".into(), "prod".into()),
                        (
                            "hostname".into(),
                            format!("{}-host-0{}", SERVICES[s], s % 3),
                        ),
                        ("job".into(), format!("{}-service", SERVICES[s])),
                        ("level".into(), LEVELS[l].into()),
                        ("service_name".into(), SERVICES[s].into()),
                    ]),
                    entries,
                })
                .collect(),
        );
    }
    (pushes, raw)
}

fn body(streams: &[Stream]) -> Vec<u8> {
    let req = PushRequest {
        streams: streams
            .iter()
            .map(|s| stream_to_proto(s, &s.entries))
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

fn mb(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    alertpipe::alloc::tune();
    let total = common::env_usize("MB", 64) << 20;
    let runs = common::env_usize("RUNS", 3);
    let (pushes, raw) = generate(total);
    let bodies: Vec<Vec<u8>> = pushes.iter().map(|p| body(p)).collect();
    let wire: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "archive benchmark: {:.1} MB of raw lines in {} pushes of ~1 MiB ({:.1} MB on the wire, snappy), median of {runs}",
        raw as f64 / 1e6,
        bodies.len(),
        wire as f64 / 1e6
    );

    // 1. Push decode.
    let decode = common::median_of(runs, || {
        let (_, d) = common::timed(|| {
            for b in &bodies {
                decode_protobuf(b).unwrap();
            }
        });
        mb(raw, d)
    });
    println!("push decode (snappy + protobuf + selector)     {decode:>8.1} MB/s raw, one core");

    // 2. The archive stage alone, per (service): rows -> one closed Parquet file on disk.
    let dir = tempfile::tempdir().unwrap();
    let op = alertpipe::coldstore::storage::operator(dir.path().to_str().unwrap(), 9870).unwrap();
    let mut rows_by_service: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for (i, p) in pushes.iter().enumerate() {
        for s in p {
            let labels = Arc::new(s.labels.clone());
            let svc = s.labels["service_name"].clone();
            for e in &s.entries {
                rows_by_service.entry(svc.clone()).or_default().push(Row {
                    ts_ns: e.ts_ns,
                    line: e.line.clone(),
                    labels: labels.clone(),
                    metadata: vec![],
                    partition: 0,
                    offset: i as i64,
                });
            }
        }
    }
    let mut file_bytes = 0;
    let rt = actix_web::rt::System::new();
    let stage = common::median_of(runs, || {
        let mut written = 0;
        let (_, d) = common::timed(|| {
            for (svc, rows) in &rows_by_service {
                let mut rows = rows.clone();
                let bytes = encode(
                    &mut rows,
                    &Promoted {
                        service: svc,
                        env: "prod",
                    },
                    Provenance {
                        partition: 0,
                        first_offset: 0,
                        last_offset: 0,
                    },
                )
                .unwrap();
                written += bytes.len();
                let path = format!("prod/{svc}/2025/06/23/120000-0000.snappy.parquet");
                rt.block_on(op.write(&path, bytes)).unwrap();
            }
        });
        file_bytes = written;
        mb(raw, d)
    });
    println!("archive stage alone (rows -> closed Parquet)  {stage:>8.1} MB/s raw, one core");

    // 2b. The same files written to the stack's HDFS (WebHDFS, as the archive writes them:
    // staged under .incomplete/ and renamed whole), against local disk in the same run.
    if let Some(hdfs) = common::stack().get("STACK_HDFS_ROOT").cloned() {
        let root = format!("{hdfs}/bench-{}", std::process::id());
        let hop = alertpipe::coldstore::storage::operator(&root, 9870).unwrap();
        let files: Vec<(String, Vec<u8>)> = rows_by_service
            .iter()
            .map(|(svc, rows)| {
                let mut rows = rows.clone();
                let promoted = Promoted {
                    service: svc,
                    env: "prod",
                };
                let prov = Provenance {
                    partition: 0,
                    first_offset: 0,
                    last_offset: 0,
                };
                let bytes = encode(&mut rows, &promoted, prov).unwrap();
                (
                    format!("prod/{svc}/2025/06/23/120000-0000.snappy.parquet"),
                    bytes,
                )
            })
            .collect();
        let write_all = |op: &opendal::Operator| {
            let (_, d) = common::timed(|| {
                for (path, bytes) in &files {
                    rt.block_on(op.write(path, bytes.clone())).unwrap();
                }
            });
            mb(raw, d)
        };
        let (mut to_hdfs, mut to_disk) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            to_hdfs.push(write_all(&hop));
            to_disk.push(write_all(&op));
        }
        let (h, l) = (common::median(to_hdfs), common::median(to_disk));
        println!(
            "closed files written to HDFS (WebHDFS)       {h:>8.1} MB/s raw; local disk {l:.1} MB/s: HDFS = {:.2}x disk",
            h / l
        );
        rt.block_on(hop.remove_all("/")).ok();
    }
    println!(
        "archive size: {:.1} MB for {:.1} MB of lines: {:.1}x smaller",
        file_bytes as f64 / 1e6,
        raw as f64 / 1e6,
        raw as f64 / file_bytes as f64
    );

    // 3. End to end through the broker, and the push endpoint on its own.
    let stack = common::stack();
    let conc = common::env_usize("CONCURRENCY", 4);
    let logs_topic = format!("bench-logs-{}", std::process::id());
    let brokers = stack["STACK_KAFKA_BROKERS"].clone();
    let want: i64 = pushes
        .iter()
        .flatten()
        .map(|s| s.entries.len() as i64)
        .sum();
    let (push_rate, push_mb, e2e) = rt.block_on(async move {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.server.roles = vec![Role::Ingest, Role::Archive];
        cfg.server.listen = "127.0.0.1:0".parse().unwrap();
        cfg.server.body_limit_bytes = 8 << 20;
        cfg.kafka.brokers = stack["STACK_KAFKA_BROKERS"].clone();
        cfg.kafka.logs_topic = format!("bench-logs-{}", std::process::id());
        cfg.kafka.partitions = 3;
        cfg.archive.root = root.path().display().to_string();
        cfg.archive.group = format!("bench-archive-{}", std::process::id());
        cfg.archive.max_age_s = 1;
        // ENCODE_THREADS=: files encoded side by side (`archive.encode_threads`), to compare.
        cfg.archive.encode_threads =
            common::env_usize("ENCODE_THREADS", cfg.archive.encode_threads);
        cfg.telemetry.log_level = "warn".into();
        let app = alertpipe::startup::Application::build(cfg).await.unwrap();
        let url = format!("http://127.0.0.1:{}/loki/api/v1/push", app.port());
        let handle = app.handle();
        actix_web::rt::spawn(app.run_until_stopped());
        actix_web::rt::time::sleep(Duration::from_secs(2)).await;
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let bodies = Arc::new(bodies);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let (client, url, bodies, next) =
                (client.clone(), url.clone(), bodies.clone(), next.clone());
            tasks.push(actix_web::rt::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else { break };
                    let r = client
                        .post(&url)
                        .insert_header(("content-type", "application/x-protobuf"))
                        .send_body(b.clone())
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 204);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let pushed = started.elapsed();
        archived(root.path(), want, started).await;
        let e2e = started.elapsed();
        // Its consumer would go on long-polling the broker beside the next steps.
        handle.stop(true).await;
        let n = bodies.len() as f64;
        (n / pushed.as_secs_f64(), mb(raw, pushed), mb(raw, e2e))
    });
    println!("push endpoint, {conc} senders, 1 MiB batches     {push_rate:>8.1} req/s  {push_mb:.1} MB/s raw (acked by Kafka)");
    println!("end to end push -> closed files (incl. ≤1 s age flush) {e2e:>8.1} MB/s raw");
    // What bounds it: the same topic read by a bare consumer, decoding and writing nothing.
    let idle = Duration::from_secs(3);
    let (msgs, d) = common::timed(|| {
        alertpipe::kafka::read_topic(&brokers, &logs_topic, usize::MAX, idle).unwrap()
    });
    let defaults = raw as f64 / 1e6 / (d.saturating_sub(idle)).as_secs_f64().max(1e-3);
    println!(
        "bare consumer, same topic: {} records, {defaults:.1} MB/s of raw lines (fetch alone, \
         librdkafka's defaults: fetch.wait.max.ms 500); end to end / it: {:.2}",
        msgs.len(),
        e2e / defaults
    );
    // And fetching as the stage does (`kafka.fetch_wait_max_ms`).
    let wait = Config::default().kafka.fetch_wait_max_ms.to_string();
    let bare_same_wait = || {
        let (_, d) = common::bare_consume(
            &brokers,
            &logs_topic,
            msgs.len(),
            &[("fetch.wait.max.ms", &wait)],
            Duration::from_secs(30),
        );
        mb(raw, d)
    };
    let same = bare_same_wait();
    println!(
        "bare consumer, the stage's fetch wait ({wait} ms): {same:.1} MB/s of raw lines; \
         end to end / it: {:.2}",
        e2e / same
    );

    // 4. Like for like with the bare consumers: the archive role alone started on the full
    //    topic (a new group, from the beginning), until every row is in a closed file; its
    //    last files close on age, up to `max_age_s` (1 s) after its last row. Each run is
    //    paired with a bare consumer (the stage's fetch wait) right after it, on the same
    //    broker; the figure is the median of the pairs' ratios.
    let mut pairs = Vec::new();
    for run in 0..runs {
        let taken_before = taken();
        let (drained, read, tail, taking) = rt.block_on({
            let (brokers, topic) = (brokers.clone(), logs_topic.clone());
            async move {
                let root = tempfile::tempdir().unwrap();
                let mut cfg = Config::default();
                cfg.server.roles = vec![Role::Archive];
                cfg.server.listen = "127.0.0.1:0".parse().unwrap();
                cfg.kafka.brokers = brokers;
                cfg.kafka.logs_topic = topic.clone();
                cfg.archive.root = root.path().display().to_string();
                cfg.archive.group = format!("{topic}-drain-{run}");
                cfg.archive.max_age_s = 1;
                cfg.archive.encode_threads =
                    common::env_usize("ENCODE_THREADS", cfg.archive.encode_threads);
                cfg.telemetry.log_level = "warn".into();
                let started = Instant::now();
                let app = alertpipe::startup::Application::build(cfg).await.unwrap();
                let handle = app.handle();
                actix_web::rt::spawn(app.run_until_stopped());
                let read = actix_web::rt::spawn(lines_taken(taken_before + want as u64, started));
                archived(root.path(), want, started).await;
                let d = started.elapsed();
                handle.stop(false).await;
                // Every line is in a closed file: the counter must have seen them all.
                let read = actix_web::rt::time::timeout(Duration::from_secs(5), read)
                    .await
                    .expect("alertpipe_archive_lines_taken_total missed lines in closed files")
                    .unwrap();
                (
                    mb(raw, d),
                    mb(raw, read.all),
                    (d - read.all).as_secs_f64(),
                    read,
                )
            }
        });
        let bare = bare_same_wait();
        println!(
            "  run {}: archive role alone {drained:.1} MB/s, bare consumer {bare:.1} MB/s: {:.2} \
             (every line read into open files at {read:.1} MB/s: {:.2}; the last files closed \
             {tail:.2} s later, on age)",
            run + 1,
            drained / bare,
            read / bare
        );
        // Where the reading time went: start-up, and the longest stall (an encoding flush).
        println!(
            "    first line taken at {} ms, the last at {} ms; longest pause between: {} ms",
            taking.first.as_millis(),
            taking.all.as_millis(),
            taking.longest_pause.as_millis()
        );
        pairs.push((drained / bare, read / bare));
    }
    let ratio = common::median(pairs.iter().map(|p| p.0).collect());
    let read = common::median(pairs.iter().map(|p| p.1).collect());
    println!(
        "archive role alone on the full topic -> closed files / bare consumer with its fetch \
         wait, same run: {ratio:.2}; reading alone: {read:.2} (medians of {runs})"
    );

    println!(
        "peak RSS of the benchmark process: {:.0} MB",
        common::peak_rss_mb()
    );
}

/// Lines the archive stages of this process have read into open files so far.
fn taken() -> u64 {
    alertpipe::metrics::handle()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("alertpipe_archive_lines_taken_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// How the role took the topic's lines into open files.
struct Taking {
    /// When the first line was taken (process start, group join, first fetch).
    first: Duration,
    /// The longest time no line was taken once they came (an encoding flush, mostly).
    longest_pause: Duration,
    /// When the last was.
    all: Duration,
}

/// Waits until this process's archive stages have read `want` lines in all (looking every
/// 20 ms); says when the first and the last were taken, and the longest pause between.
async fn lines_taken(want: u64, started: Instant) -> Taking {
    let (mut first, mut last_change, mut longest_pause) = (None, None, Duration::ZERO);
    let mut seen = taken();
    loop {
        let now_taken = taken();
        let now = started.elapsed();
        if now_taken != seen {
            first.get_or_insert(now);
            if let Some(t) = last_change {
                longest_pause = longest_pause.max(now - t);
            }
            last_change = Some(now);
            seen = now_taken;
        }
        if now_taken >= want {
            return Taking {
                first: first.unwrap_or(now),
                longest_pause,
                all: now,
            };
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "stalled reading at {now_taken}/{want} lines"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the archive under `root` holds `want` rows in closed files.
async fn archived(root: &std::path::Path, want: i64, started: Instant) {
    let op = alertpipe::coldstore::storage::operator(root.to_str().unwrap(), 9870).unwrap();
    loop {
        let rows: i64 = alertpipe::coldstore::read::list(&op)
            .await
            .unwrap_or_default()
            .iter()
            .map(|f| f.rows)
            .sum();
        if rows >= want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "stalled at {rows}/{want}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}
