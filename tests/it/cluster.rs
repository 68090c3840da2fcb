//! A real three-broker Kafka cluster (KRaft, three processes), faults included: alertpipe with
//! every role creates its topics replicated three ways with `min.insync.replicas` 2; during a
//! storm of webhook posts and log pushes the leader of an `alerts` partition is SIGKILLed, then
//! a second broker is stopped for 60 s and started again. Nothing acknowledged is lost or
//! doubled, two brokers down is a 503 (never a 200) and a not-ready saying why, and every stage
//! is back to full flow within 30 s of the broker's return.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alertpipe::config::Role;
use serde_json::{json, Value};

use crate::support::cluster::KafkaCluster;
use crate::support::parquet::{all_rows, pyarrow};
use crate::support::{read_json, unique, TestApp, TestDb};

/// One webhook body of `ids`' firing alerts (fingerprint = id), severity critical (a mail each).
fn webhook(run: &str, ids: std::ops::Range<usize>) -> Vec<u8> {
    let alerts: Vec<Value> = ids
        .map(|i| {
            json!({"status": "firing",
                "labels": {"alertname": "ClusterStorm", "service": "payment", "severity": "critical",
                           "cluster": "prod", "instance": format!("{run}-{i}")},
                "annotations": {"summary": format!("storm alert {i}")},
                "startsAt": "2026-12-07T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": format!("{i:016x}")})
        })
        .collect();
    serde_json::to_vec(&json!({"version": "4", "status": "firing", "receiver": "x",
        "groupKey": "g", "alerts": alerts}))
    .unwrap()
}

fn push_body(svc: &str, i: usize) -> Vec<u8> {
    let ts = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    serde_json::to_vec(
        &json!({"streams": [{"stream": {"service": svc, "job": "storm"},
        "values": [[ts.to_string(), format!("{svc} line {i}")]]}]}),
    )
    .unwrap()
}

/// What the storm sent and how it was answered.
#[derive(Default)]
struct Sent {
    /// Batches of alerts: (first id, last id + 1) with the statuses their attempts got.
    alerts: Vec<(usize, usize, Vec<u16>)>,
    /// Log pushes: line index and statuses.
    lines: Vec<(usize, Vec<u16>)>,
}

/// Posts batch `k` (ids 5k..5k+5) and push `k` until each is acknowledged (as Alertmanager
/// and the collector retry), or once when `retry` is false.
async fn send(app: &TestApp, run: &str, svc: &str, k: usize, retry: bool, sent: &mut Sent) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut statuses = Vec::new();
    loop {
        let (s, _, _) = app.post_alerts(webhook(run, 5 * k..5 * k + 5), None).await;
        statuses.push(s);
        if s == 200 || !retry || Instant::now() > deadline {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    sent.alerts.push((5 * k, 5 * k + 5, statuses));
    let mut statuses = Vec::new();
    loop {
        let (s, _) = app
            .push_logs(push_body(svc, k), "application/json", false)
            .await;
        statuses.push(s);
        if s == 204 || !retry || Instant::now() > deadline {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    sent.lines.push((k, statuses));
}

async fn rows_by_fingerprint(db: &TestDb) -> BTreeMap<String, i64> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Text)]
        fingerprint: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT fingerprint, count(*) AS n FROM alerts GROUP BY fingerprint")
        .load::<R>(&mut db.conn())
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.fingerprint, r.n))
        .collect()
}

async fn sent_mails(db: &TestDb) -> BTreeMap<String, i64> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Text)]
        fingerprint: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT fingerprint, count(*) AS n FROM notifications \
         WHERE outcome = 'sent' AND status = 'firing' GROUP BY fingerprint",
    )
    .load::<R>(&mut db.conn())
    .unwrap_or_default()
    .into_iter()
    .map(|r| (r.fingerprint, r.n))
    .collect()
}

fn archived(root: &std::path::Path, svc: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in all_rows(&pyarrow(root)) {
        if r["service"] == svc {
            *m.entry(r["line"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    m
}

/// Waits until every stage has caught up with `n` alerts and `lines` log lines, or panics
/// after `within` with what is missing.
async fn caught_up(app: &TestApp, svc: &str, n: usize, lines: usize, within: Duration) {
    let db = app.db.as_ref().expect("db");
    let root = app.archive_root.as_ref().expect("archive").path();
    let deadline = Instant::now() + within;
    loop {
        let (rows, mails, arch) = (
            rows_by_fingerprint(db).await.len(),
            sent_mails(db).await.len(),
            archived(root, svc).len(),
        );
        if rows >= n && mails >= n && arch >= lines {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not back to full flow within {within:?}: {rows}/{n} history rows, {mails}/{n} \
             mails, {arch}/{lines} archived lines"
        );
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    }
}

#[actix_web::test]
async fn a_leader_killed_and_a_second_broker_stopped_lose_and_double_nothing() {
    let mut cluster = KafkaCluster::start(3);
    let brokers = cluster.brokers();
    let app = TestApp::builder()
        .with_brokers(&brokers)
        .with_roles(&[Role::Ingest, Role::Persist, Role::Notify, Role::Archive])
        .configure(|c| {
            c.kafka.message_timeout_ms = 5_000;
            // One mail per alert state, not digests: the count below is per alert.
            c.notify.rate_burst = 10_000;
            c.notify.rate_per_minute = 100_000;
            c.notify.receiver_burst = 10_000;
            c.notify.receiver_per_minute = 100_000;
        })
        .spawn()
        .await;
    let (run, svc) = (unique("storm"), unique("stormlogs"));
    let mut sent = Sent::default();
    let mut k = 0;
    for _ in 0..10 {
        send(&app, &run, &svc, k, true, &mut sent).await;
        k += 1;
    }

    // 1. SIGKILL the leader of alerts partition 0, mid-storm.
    let leader = cluster.leader_of(&app.topic, 0);
    cluster.kill9(leader);
    for _ in 0..10 {
        send(&app, &run, &svc, k, true, &mut sent).await;
        k += 1;
    }

    // 2. A second broker stopped: two of three down, acks=all cannot be met. Never a 200.
    let second = (leader + 1) % 3;
    cluster.stop(second);
    let down_since = Instant::now();
    let mut refused = Sent::default();
    send(&app, &run, &svc, k, false, &mut refused).await;
    let (_, _, statuses) = &refused.alerts[0];
    assert_eq!(statuses, &vec![503], "two brokers down: 503, never 200");
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["reason"]
            .as_str()
            .is_some_and(|r| r.contains("kafka") || r.contains("deliver")),
        "readiness says why: {ready}"
    );
    // Alertmanager and the collector retry: the batch lands once the broker is back.
    let wait = Duration::from_secs(60).saturating_sub(down_since.elapsed());
    actix_web::rt::time::sleep(wait).await;
    cluster.restart(second);
    let back = Instant::now();
    send(&app, &run, &svc, k, true, &mut sent).await;
    k += 1;
    for _ in 0..5 {
        send(&app, &run, &svc, k, true, &mut sent).await;
        k += 1;
    }
    caught_up(
        &app,
        &svc,
        5 * k,
        k,
        Duration::from_secs(30).saturating_sub(back.elapsed()),
    )
    .await;
    eprintln!(
        "every stage back to full flow {:.1} s after the second broker's return",
        back.elapsed().as_secs_f64()
    );
    cluster.restart(leader);

    // Every acknowledged alert: in the topic (exactly once unless an attempt of it was
    // answered 503, whose write may still have landed), one history row, one mail.
    for (from, to, statuses) in &sent.alerts {
        assert_eq!(
            statuses.last(),
            Some(&200),
            "alerts {from}..{to}: {statuses:?}"
        );
    }
    // Everything there is (with any second copies): read until the topic is quiet.
    let msgs = read_json(&brokers, &app.topic, usize::MAX, Duration::from_secs(5)).await;
    let mut in_topic: BTreeMap<String, usize> = BTreeMap::new();
    for m in &msgs {
        *in_topic
            .entry(m["fingerprint"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    let rows = rows_by_fingerprint(app.db.as_ref().unwrap()).await;
    let mails = sent_mails(app.db.as_ref().unwrap()).await;
    for (from, to, statuses) in &sent.alerts {
        for i in *from..*to {
            let fp = format!("{i:016x}");
            let n = in_topic.get(&fp).copied().unwrap_or(0);
            if statuses.len() == 1 {
                assert_eq!(n, 1, "alert {i} (one attempt, 200) in the topic once");
            } else {
                assert!(n >= 1, "alert {i} in the topic");
            }
            assert_eq!(rows.get(&fp), Some(&1), "alert {i}: one history row");
            assert_eq!(mails.get(&fp), Some(&1), "alert {i}: one mail");
        }
    }
    // Every acknowledged line once in the Parquet archive.
    let lines = archived(app.archive_root.as_ref().unwrap().path(), &svc);
    for (i, statuses) in &sent.lines {
        assert_eq!(statuses.last(), Some(&204), "push {i}: {statuses:?}");
        let n = lines.get(&format!("{svc} line {i}")).copied().unwrap_or(0);
        // A push answered 503 may still have been written (the leader appended it and the
        // acks=all wait timed out): its retry is then a second copy. One attempt: exactly once.
        if statuses.len() == 1 {
            assert_eq!(n, 1, "line {i} archived once");
        } else {
            assert!(n >= 1, "line {i} archived");
        }
    }
    assert_eq!(lines.len(), sent.lines.len(), "no other line archived");
}
