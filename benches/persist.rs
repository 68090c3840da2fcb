//! Alert history write throughput, against the local stack's PostgreSQL and broker:
//!   cargo bench --bench persist        (ROWS=100000 RUNS=3)
//! 100,000 rows make the end-to-end runs a few seconds long, so the throughput, not the group
//! join and first fetch (~0.35 s for both sides), is what the ratio compares.
//! 1. The PersistActor stage alone: decoded messages -> committed rows (`store_batch`), at
//!    consumer batch sizes 1, 100 and 1000, and all rows in one transaction as COPY has them.
//! 2. Baseline, same run, same rows (every column the stage fills): COPY by a bare client
//!    (psql \copy from a CSV, one transaction).
//! 3. End to end: the rows produced to a topic, consumed by alertpipe's persist role, paired
//!    with a bare consumer reading the same topic with the stage's fetch wait
//!    (`kafka.fetch_wait_max_ms`), and one with librdkafka's defaults (500 ms).
//! 4. The notify stage end to end on the same topic (consumed -> outbox rows), paired with a
//!    bare consumer with the same fetch wait.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use alertpipe::config::{Config, Role};
use alertpipe::db::alerts::{store_batch, Inbound};
use alertpipe::domain::{parse_webhook, AlertEvent};
use diesel::{Connection, RunQueryDsl};

fn events(n: usize) -> Vec<AlertEvent> {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/alertmanager/firing-critical.json"
    ))
    .unwrap();
    let base = parse_webhook(&body).unwrap().remove(0);
    (0..n)
        .map(|i| {
            let mut e = base.clone();
            e.fingerprint =
                serde_json::from_value(serde_json::Value::String(format!("{i:016x}"))).unwrap();
            e.labels.insert("instance".into(), format!("db-{}", i % 50));
            e.service = ["payment", "checkout", "auth", "search"][i % 4].into();
            e
        })
        .collect()
}

fn exec(url: &str, sql: &str) {
    let mut c = diesel::PgConnection::establish(url).expect("postgres reachable");
    diesel::sql_query(sql)
        .execute(&mut c)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn count(url: &str) -> i64 {
    let mut c = diesel::PgConnection::establish(url).expect("postgres reachable");
    scalar_on(&mut c, ALERT_ROWS.exact)
}

/// One number from `sql` (a query answering a bigint `n`).
fn scalar_on(c: &mut diesel::PgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .load::<N>(c)
        .map(|r| r[0].n)
        .unwrap_or(0)
}

/// Rows in `alerts`: the highest id first (one look into the primary key's index, however
/// many rows there are; the table was truncated with its ids restarted), then a count.
const ALERT_ROWS: Stored = Stored {
    what: "end to end",
    probe: "SELECT COALESCE(MAX(id), 0)::bigint AS n FROM alerts",
    exact: "SELECT COUNT(*) AS n FROM alerts",
};

/// Notifications enqueued (in the outbox, or already moved on to `notifications`): the
/// outbox's id sequence first, then the counts, in one snapshot.
const NOTIFICATIONS: Stored = Stored {
    what: "notify end to end",
    probe: "SELECT (CASE WHEN is_called THEN last_value ELSE 0 END)::bigint AS n \
            FROM notification_outbox_id_seq",
    exact: "SELECT ((SELECT COUNT(*) FROM notification_outbox) \
            + (SELECT COUNT(*) FROM notifications))::bigint AS n",
};

/// How to tell that a stage's rows are stored: a cheap `probe` that may count too high, and
/// an `exact` count (a scan) asked only once the probe says they may all be there.
struct Stored {
    what: &'static str,
    probe: &'static str,
    exact: &'static str,
}

/// Waits on a thread of its own, through one connection (a new connection per look costs
/// PostgreSQL a process start, CPU the stage under test would otherwise have), until `rows`
/// are stored; answers when it saw the first and when it saw them all. A scan every 20 ms
/// took PostgreSQL CPU from the stage under test, hence the probe.
fn wait_until_stored(
    mut c: diesel::PgConnection,
    rows: usize,
    started: Instant,
    stored: &'static Stored,
) -> std::thread::JoinHandle<(Instant, Instant)> {
    let mut first = None;
    std::thread::spawn(move || loop {
        let mut n = scalar_on(&mut c, stored.probe);
        if n > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if n as usize >= rows {
            n = scalar_on(&mut c, stored.exact);
            if n as usize >= rows {
                let now = Instant::now();
                return (first.unwrap_or(now), now);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} stalled at {n}",
            stored.what
        );
        // The bare consumer's clock stops at its last message: look often enough that the
        // stage's does not stop much later than its last row (an index probe is cheap).
        std::thread::sleep(Duration::from_millis(5));
    })
}

/// Starts alertpipe with `cfg` and runs it until `poller` (started with the clock) says the
/// last of `rows` landed; prints when the first and the last came, and returns rows/s.
async fn run_until(
    cfg: Config,
    what: &str,
    rows: usize,
    poller: impl FnOnce(Instant) -> std::thread::JoinHandle<(Instant, Instant)>,
) -> f64 {
    let started = Instant::now();
    let app = alertpipe::startup::Application::build(cfg).await.unwrap();
    let built = started.elapsed();
    let handle = app.handle();
    let poller = poller(started);
    actix_web::rt::spawn(app.run_until_stopped());
    let (first, done) = actix_web::rt::task::spawn_blocking(move || poller.join())
        .await
        .unwrap()
        .expect("end to end finished");
    println!(
        "  (process start {} ms, first {what} at {} ms, last at {} ms)",
        built.as_millis(),
        (first - started).as_millis(),
        (done - started).as_millis()
    );
    handle.stop(false).await;
    rows as f64 / (done - started).as_secs_f64()
}

fn main() {
    alertpipe::alloc::tune();
    let stack = common::stack();
    let rows = common::env_usize("ROWS", 100_000);
    let runs = common::env_usize("RUNS", 3);
    let admin = &stack["STACK_PG_URL"];
    let name = format!("bench_persist_{}", std::process::id());
    exec(admin, &format!("DROP DATABASE IF EXISTS {name}"));
    exec(admin, &format!("CREATE DATABASE {name}"));
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    alertpipe::db::migrate(&url).unwrap();
    let pool = alertpipe::db::pool(&url, 4);
    let evs = events(rows);
    let inbound: Vec<Inbound> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| Inbound::decode("alerts", 0, i as i64, serde_json::to_vec(e).unwrap()))
        .collect();
    println!(
        "persist benchmark: {rows} rows, median of {runs} runs, PostgreSQL {}",
        stack["STACK_PG_PORT"]
    );

    // Baseline: COPY the same rows with a bare client.
    let csv = std::env::temp_dir().join(format!("{name}.csv"));
    {
        let mut f = std::fs::File::create(&csv).unwrap();
        // The same rows the stage writes: every column it fills, with the same values.
        for (i, e) in evs.iter().enumerate() {
            let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            writeln!(
                f,
                "{},{},{},false,{},{},{},firing,{},,,{},{},{},0,{i},false",
                q(&e.service),
                q(e.severity.as_str()),
                q(&e.message),
                q(e.fingerprint.as_str()),
                q(&e.alertname),
                e.cluster.as_deref().map(q).unwrap_or_default(),
                e.starts_at.to_rfc3339(),
                q(&serde_json::to_string(&e.labels).unwrap()),
                q(&serde_json::to_string(&e.annotations).unwrap()),
                q(&e.generator_url),
            )
            .unwrap();
        }
    }
    let psql = format!("{}/psql", stack["STACK_PG_BIN"]);
    let copy_once = || {
        exec(&url, "TRUNCATE alerts RESTART IDENTITY");
        let (out, d) = common::timed(|| {
            Command::new(&psql)
                .args([&url, "-q", "-c", &format!("\\copy alerts (service, severity, message, resolved, fingerprint, alertname, cluster, status, starts_at, ends_at, resolved_at, labels, annotations, generator_url, kafka_partition, kafka_offset, truncated) FROM '{}' CSV", csv.display())])
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rows as f64 / d.as_secs_f64()
    };
    let stage_once = |batch: usize, n: usize| {
        exec(&url, "TRUNCATE alerts RESTART IDENTITY");
        let (_, d) = common::timed(|| {
            for chunk in inbound[..n].chunks(batch) {
                store_batch(&pool, chunk).expect("stored");
            }
        });
        assert_eq!(count(&url) as usize, n);
        n as f64 / d.as_secs_f64()
    };
    // The machine's speed drifts by 2x over minutes: each run measures COPY and the stage
    // back to back, and the ratio is the median of the runs' ratios.
    let mut copies = Vec::new();
    let mut ratio = |batch: usize| {
        let mut ratios = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..runs {
            let c = copy_once();
            let r = stage_once(batch, rows);
            copies.push(c);
            ratios.push(r / c);
            rates.push(r);
        }
        (common::median(rates), common::median(ratios))
    };
    // The stage's batch: the shipped `persist.batch_size` unless BATCH says otherwise.
    let batch = common::env_usize("BATCH", Config::default().persist.batch_size);
    let (rb, ratio_b) = ratio(batch);
    let (rall, ratio_all) = ratio(rows);
    let copy = common::median(copies);
    println!("baseline COPY (psql)          {copy:>10.0} rows/s");
    for batch in [1usize, 100] {
        // Batch 1 is one transaction per row: measure fewer rows, it is slow by design.
        let n = if batch == 1 { rows.min(2000) } else { rows };
        let r = common::median_of(runs, || stage_once(batch, n));
        println!(
            "PersistActor stage, batch {batch:>5} {r:>9.0} rows/s  ({:.0}% of COPY)",
            100.0 * r / copy
        );
    }
    println!(
        "PersistActor stage, batch {batch:>5} {rb:>9.0} rows/s  ({:.2}x COPY, median of paired runs)",
        ratio_b
    );
    println!(
        "PersistActor stage, batch {rows:>5} {rall:>9.0} rows/s  ({:.2}x COPY: one transaction, as COPY)",
        ratio_all
    );

    // End to end: produce once, then per run alertpipe's persist role (a new group) consumes
    // the topic into an empty table, paired with a bare consumer (a new group too) reading the
    // same topic; both times include joining the group.
    exec(&url, "TRUNCATE alerts RESTART IDENTITY");
    let brokers = stack["STACK_KAFKA_BROKERS"].clone();
    let topic = format!("bench-persist-{}", std::process::id());
    actix_web::rt::System::new().block_on({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        async move {
            let mut kcfg = alertpipe::config::KafkaConfig {
                brokers,
                partitions: 3,
                ..Default::default()
            };
            kcfg.producer.insert("linger.ms".into(), "5".into());
            alertpipe::kafka::ensure_topics(&kcfg, &[&topic], Duration::from_secs(10))
                .await
                .unwrap();
            let producer = alertpipe::kafka::future_producer(&kcfg).unwrap();
            let acks: Vec<_> = evs
                .iter()
                .map(|e| {
                    let payload = serde_json::to_vec(e).unwrap();
                    producer
                        .send_result(
                            rdkafka::producer::FutureRecord::to(&topic)
                                .key(e.fingerprint.as_str())
                                .payload(&payload),
                        )
                        .map_err(|_| ())
                        .unwrap()
                })
                .collect();
            for a in acks {
                a.await.unwrap().unwrap();
            }
        }
    });
    // CONSUMER="key=value,...": librdkafka properties for the stages' consumers (persist and
    // notify), to tune.
    let extra: Vec<(String, String)> = std::env::var("CONSUMER")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    // The fetch wait the stage runs with, for the bare consumer that fetches as it does.
    let wait = extra
        .iter()
        .find(|(k, _)| k == "fetch.wait.max.ms")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| Config::default().kafka.fetch_wait_max_ms.to_string());
    let mut pairs = Vec::new();
    for run in 0..runs {
        exec(&url, "TRUNCATE alerts RESTART IDENTITY");
        let (b, t, u, extra) = (brokers.clone(), topic.clone(), url.clone(), extra.clone());
        let e2e = actix_web::rt::System::new().block_on(async move {
            let mut cfg = Config::default();
            cfg.server.roles = vec![Role::Persist];
            cfg.server.listen = "127.0.0.1:0".parse().unwrap();
            cfg.kafka.brokers = b;
            cfg.kafka.alerts_topic = t.clone();
            cfg.database.url = u.clone();
            cfg.persist.batch_size = batch;
            cfg.persist.group = format!("{t}-g{run}");
            // COMMIT_INTERVAL_MS=0: commit after every batch, as before the interval (an A/B).
            cfg.kafka.commit_interval_ms =
                common::env_usize("COMMIT_INTERVAL_MS", cfg.kafka.commit_interval_ms as usize)
                    as u64;
            cfg.kafka.consumer.extend(extra);
            let conn = diesel::PgConnection::establish(&u).expect("postgres reachable");
            run_until(cfg, "row", rows, |started| {
                wait_until_stored(conn, rows, started, &ALERT_ROWS)
            })
            .await
        });
        // What bounds it: the same topic read by a bare consumer, storing nothing, fetching
        // as the stage does; then with librdkafka's defaults.
        let bare = |props: &[(&str, &str)], what: &str| {
            let give_up = Duration::from_secs(30);
            let (first, d) = common::bare_consume(&brokers, &topic, rows, props, give_up);
            println!(
                "  (bare consumer, {what}: first message at {} ms, last at {} ms)",
                first.as_millis(),
                d.as_millis()
            );
            rows as f64 / d.as_secs_f64()
        };
        let same = bare(&[("fetch.wait.max.ms", &wait)], "the stage's fetch wait");
        let default = bare(&[], "librdkafka's defaults");
        println!(
            "  end to end run {}: persist {e2e:>8.0} rows/s, bare consumer {same:>8.0} rows/s \
             ({:.2}x), with defaults {default:>8.0} rows/s ({:.2}x)",
            run + 1,
            e2e / same,
            e2e / default
        );
        pairs.push((e2e, same, default));
    }
    let med = |f: &dyn Fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = pairs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "end to end via broker         {:>10.0} rows/s  (consumer start + fetch + store)",
        med(&|p| p.0)
    );
    println!(
        "bare consumer, same topic     {:>10.0} rows/s  (fetch alone, fetch.wait.max.ms {wait})",
        med(&|p| p.1)
    );
    println!(
        "bare consumer, defaults       {:>10.0} rows/s  (fetch alone, fetch.wait.max.ms 500)",
        med(&|p| p.2)
    );
    println!(
        "end to end / bare consumer: {:.2} (median of paired runs; target 0.9); / bare consumer with defaults: {:.2}",
        med(&|p| p.0 / p.1),
        med(&|p| p.0 / p.2)
    );
    println!(
        "end to end / COPY: {:.2} (what bounds the stage: its durable write; COPY median {copy:.0} rows/s)",
        med(&|p| p.0) / copy
    );
    println!(
        "stage/COPY at batch {batch}: {ratio_b:.2}; in one transaction like COPY: {ratio_all:.2}"
    );

    // 4. The notify stage end to end, on the same topic: every alert is critical and routes to
    //    one receiver, so each becomes one outbox row (consumed -> enqueued -> committed). The
    //    delivery worker runs too and moves rows to `notifications` (digests, mostly: the
    //    throttle lets a few mails a minute through), so the rows are counted in both tables.
    let mut notify_pairs = Vec::new();
    for run in 0..runs {
        exec(
            &url,
            "TRUNCATE notification_outbox, notifications RESTART IDENTITY",
        );
        let (b, t, u, smtp, extra) = (
            brokers.clone(),
            topic.clone(),
            url.clone(),
            stack["STACK_SMTP_PORT"].clone(),
            extra.clone(),
        );
        let rate = actix_web::rt::System::new().block_on(async move {
            let mut cfg = Config::default();
            cfg.server.roles = vec![Role::Notify];
            cfg.server.listen = "127.0.0.1:0".parse().unwrap();
            cfg.kafka.brokers = b;
            cfg.kafka.alerts_topic = t.clone();
            cfg.database.url = u.clone();
            cfg.notify.group = format!("{t}-notify-g{run}");
            // NOTIFY_BATCH=: the notify stage's batch (`notify.batch_size`), to tune.
            cfg.notify.batch_size = common::env_usize("NOTIFY_BATCH", cfg.notify.batch_size);
            cfg.notify.dlq_topic = format!("{t}.dlq");
            cfg.notify.smtp.port = smtp.parse().expect("STACK_SMTP_PORT");
            cfg.kafka.consumer.extend(extra);
            cfg.telemetry.log_level = "error".into();
            let conn = diesel::PgConnection::establish(&u).expect("postgres reachable");
            run_until(cfg, "outbox row", rows, |started| {
                wait_until_stored(conn, rows, started, &NOTIFICATIONS)
            })
            .await
        });
        let (first, d) = common::bare_consume(
            &brokers,
            &topic,
            rows,
            &[("fetch.wait.max.ms", &wait)],
            Duration::from_secs(30),
        );
        let same = rows as f64 / d.as_secs_f64();
        println!(
            "  (bare consumer, the stage's fetch wait: first message at {} ms, last at {} ms)",
            first.as_millis(),
            d.as_millis()
        );
        println!(
            "  notify run {}: {rate:>8.0} alerts/s into the outbox, bare consumer {same:>8.0} \
             ({:.2}x)",
            run + 1,
            rate / same
        );
        notify_pairs.push(rate / same);
    }
    println!(
        "notify stage end to end / bare consumer with its fetch wait: {:.2} (median of paired runs)",
        common::median(notify_pairs)
    );
    let _ = std::fs::remove_file(&csv);
    exec(
        admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
