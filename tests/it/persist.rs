//! Alert history in the stack's real PostgreSQL, each test in its own database.

use std::time::Duration;

use alertpipe::config::Role;
use alertpipe::domain::parse_webhook;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use serde_json::Value;

use crate::support::app::persist;
use crate::support::{
    eventually, fixture, produce_raw, spawn_app, spawn_app_with, storm_webhook, unique, PrivatePg,
    TestApp, TestDb,
};

#[derive(QueryableByName, Debug, Clone, PartialEq)]
struct Row {
    #[diesel(sql_type = Nullable<Text>)]
    fingerprint: Option<String>,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    severity: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Bool>)]
    resolved: Option<bool>,
    #[diesel(sql_type = Bool)]
    has_resolved_at: bool,
    #[diesel(sql_type = Bool)]
    has_ends_at: bool,
    #[diesel(sql_type = Nullable<Text>)]
    instance: Option<String>,
    #[diesel(sql_type = Bool)]
    truncated: bool,
    #[diesel(sql_type = Nullable<Text>)]
    label_service: Option<String>,
}

fn rows(db: &TestDb) -> Vec<Row> {
    diesel::sql_query(
        "SELECT fingerprint, service::text AS service, severity::text AS severity, status, resolved,
                resolved_at IS NOT NULL AS has_resolved_at, ends_at IS NOT NULL AS has_ends_at,
                labels->>'instance' AS instance, truncated, labels->>'service' AS label_service
         FROM alerts ORDER BY fingerprint, starts_at",
    )
    .load(&mut db.conn())
    .expect("alerts readable")
}

#[derive(QueryableByName, Debug)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(db: &TestDb, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .load::<Count>(&mut db.conn())
        .map(|r| r[0].n)
        .unwrap_or(-1)
}

async fn wait_rows(db: &TestDb, what: &str, pred: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    eventually(Duration::from_secs(30), what, || {
        let r = rows(db);
        let ok = pred(&r);
        async move { ok.then_some(r) }
    })
    .await
}

/// Alert events as the ingest path writes them, from a fixture.
fn events(fixture_name: &str) -> Vec<(String, Vec<u8>)> {
    parse_webhook(&fixture(fixture_name))
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.fingerprint.as_str().to_owned(),
                serde_json::to_vec(&e).unwrap(),
            )
        })
        .collect()
}

async fn produce(app: &TestApp, msgs: &[(String, Vec<u8>)]) {
    let borrowed: Vec<(&str, Vec<u8>)> =
        msgs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    produce_raw(&app.brokers, &app.topic, &borrowed).await;
}

#[actix_web::test]
async fn real_alertmanager_sequences_become_one_row_per_occurrence() {
    let db = TestDb::new();
    let app = spawn_app(persist(&db)).await;
    for f in [
        "firing-critical",
        "firing-critical-group",
        "firing-critical-apierrors-group",
        "firing-critical-partial-resolved",
        "firing-custom",
        "resolved-critical",
        "resolved-critical-after-partial",
        "resolved-custom",
    ] {
        let (status, _, body) = app
            .post_alerts(fixture(&format!("alertmanager/{f}.json")), None)
            .await;
        assert_eq!(status, 200, "{f}: {body}");
    }
    let r = wait_rows(&db, "5 occurrences, all resolved", |r| {
        r.len() == 5 && r.iter().all(|x| x.resolved == Some(true))
    })
    .await;
    for row in &r {
        assert_eq!(row.service, "payment");
        assert_eq!(row.status, "resolved");
        assert!(row.has_resolved_at && row.has_ends_at, "{row:?}");
    }
    let mut instances: Vec<_> = r.iter().filter_map(|x| x.instance.clone()).collect();
    instances.sort();
    assert_eq!(instances, ["api-1", "api-2", "db-1", "db-2"]);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM alerts WHERE kafka_offset IS NULL"
        ),
        0,
        "every row says where in Kafka it came from"
    );
    // The seed's own insert still works beside the history columns.
    diesel::sql_query("INSERT INTO alerts (service, severity, message) VALUES ('payment', 'critical', 'DB connection failed')")
        .execute(&mut db.conn())
        .expect("seed insert");
}

#[actix_web::test]
async fn duplicates_out_of_order_and_full_redelivery_change_nothing() {
    let db = TestDb::new();
    let app = spawn_app(persist(&db)).await;
    // Resolved before its firing, then the firing; the other alert three times over.
    let mut msgs = events("alertmanager/resolved-custom.json");
    msgs.extend(events("alertmanager/firing-custom.json"));
    let group = events("alertmanager/firing-critical-group.json");
    for _ in 0..3 {
        msgs.extend(group.clone());
    }
    produce(&app, &msgs).await;
    let first = wait_rows(&db, "3 occurrences", |r| r.len() == 3).await;
    let custom = first.iter().find(|r| r.severity == "custom").unwrap();
    assert_eq!(
        custom.resolved,
        Some(true),
        "a late firing never un-resolves"
    );

    // A consumer with a new group reads the whole topic again: nothing changes.
    let again = spawn_app_with(Some(&app.brokers), {
        let url = db.url.clone();
        let topic = app.topic.clone();
        move |c| {
            c.server.roles = vec![Role::Persist];
            c.database.url = url;
            c.kafka.alerts_topic = topic;
            c.persist.group = unique("replay");
        }
    })
    .await;
    // Its stage has committed the whole topic: every row it would write is written.
    again
        .wait_drained(Role::Persist, Duration::from_secs(30))
        .await;
    assert_eq!(rows(&db), first);
}

#[actix_web::test]
async fn a_lone_alert_is_stored_at_once_not_after_the_linger() {
    let db = TestDb::new();
    let linger = Duration::from_secs(30);
    let app = spawn_app(|c: &mut alertpipe::config::Config| {
        persist(&db)(c);
        c.persist.linger_ms = linger.as_millis() as u64;
    })
    .await;
    let mut msgs = events("alertmanager/firing-critical-group.json");
    let second = msgs.split_off(1);
    // The first joins the group and reads the partition to its end; the second comes to a
    // member that is already at the end of every partition it holds.
    for (i, msg) in [msgs, second].iter().enumerate() {
        let sent = std::time::Instant::now();
        produce(&app, msg).await;
        wait_rows(&db, "the alert", |r| r.len() == i + 1).await;
        assert!(
            sent.elapsed() < linger / 2,
            "alert {} took {:?}: the batch waited for more that was not there",
            i + 1,
            sent.elapsed()
        );
    }
}

#[actix_web::test]
async fn poison_messages_are_dead_lettered_whole_nul_text_is_stored_and_consumption_goes_on() {
    let db = TestDb::new();
    let app = spawn_app(persist(&db)).await;
    let mut ok = parse_webhook(&fixture("alertmanager/firing-critical.json")).unwrap();
    let mut nul = ok[0].clone();
    nul.message = "DB connection failed\u{0}".into();
    nul.annotations
        .insert("summary\u{0}".into(), "conn\u{0}refused".into());
    nul.labels.insert("instance".into(), "db-1\u{0}".into());
    nul.fingerprint = serde_json::from_value(Value::String("00000000000000ff".into())).unwrap();
    let mut long = ok[0].clone();
    let long_name = "payment-".repeat(10);
    long.service = long_name.clone();
    long.labels.insert("service".into(), long_name.clone());
    long.fingerprint = serde_json::from_value(Value::String("00000000000000ee".into())).unwrap();
    let good = ok.remove(0);
    produce(
        &app,
        &[
            ("x".into(), b"this is not json".to_vec()),
            ("y".into(), b"\xff\xfe{".to_vec()),
            ("n".into(), serde_json::to_vec(&nul).unwrap()),
            ("l".into(), serde_json::to_vec(&long).unwrap()),
            ("g".into(), serde_json::to_vec(&good).unwrap()),
        ],
    )
    .await;
    // PostgreSQL refuses NUL in text and jsonb: the alert is stored with U+FFFD instead.
    let r = wait_rows(&db, "the three alerts", |r| r.len() == 3).await;
    let nul_row = r
        .iter()
        .find(|x| x.fingerprint.as_deref() == Some("00000000000000ff"))
        .expect("the NUL alert is in the history");
    assert_eq!(nul_row.instance.as_deref(), Some("db-1\u{FFFD}"));
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM alerts WHERE message = 'DB connection failed' || chr(65533)
               AND annotations->>('summary' || chr(65533)) = 'conn' || chr(65533) || 'refused'"
        ),
        1
    );
    let long_row = r.iter().find(|x| x.truncated).expect("long service row");
    assert_eq!(long_row.service.chars().count(), 50);
    assert_eq!(
        long_row.label_service.as_deref(),
        Some(long_name.as_str()),
        "full value kept"
    );
    let dead = eventually(Duration::from_secs(30), "2 dead letters", || {
        let n = count(
            &db,
            "SELECT COUNT(*) AS n FROM dead_letters WHERE stage = 'persist'",
        );
        async move { (n == 2).then_some(n) }
    })
    .await;
    assert_eq!(dead, 2, "only what is not an alert at all");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM dead_letters WHERE payload = convert_to('this is not json', 'UTF8') AND reason LIKE 'not an alert event%'"
        ),
        1,
        "kept whole, with the reason"
    );
}

#[actix_web::test]
async fn postgres_restarted_mid_stream_loses_and_doubles_nothing() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url);
    let app = spawn_app(persist(&db)).await;
    let batch = |from: u64, n: u64| -> Vec<(String, Vec<u8>)> {
        let base = parse_webhook(&fixture("alertmanager/firing-critical.json")).unwrap()[0].clone();
        (from..from + n)
            .map(|i| {
                let mut e = base.clone();
                e.fingerprint = serde_json::from_value(Value::String(format!("{i:016x}"))).unwrap();
                (format!("{i}"), serde_json::to_vec(&e).unwrap())
            })
            .collect()
    };
    produce(&app, &batch(0, 50)).await;
    wait_rows(&db, "first 50 rows", |r| r.len() == 50).await;

    pg.down();
    produce(&app, &batch(50, 50)).await;
    eventually(
        Duration::from_secs(20),
        "readiness reports the database",
        || async {
            let r = app
                .client
                .get(format!("{}/readyz", app.url))
                .send()
                .await
                .ok()?;
            (r.status().as_u16() == 503).then_some(())
        },
    )
    .await;
    pg.up();
    let r = wait_rows(&db, "all 100 rows after the restart", |r| r.len() >= 100).await;
    assert_eq!(r.len(), 100, "nothing doubled");
    app.wait_ready(Duration::from_secs(30)).await;
}

#[derive(QueryableByName, Debug)]
struct Sla {
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Nullable<Double>)]
    critical_open_minutes: Option<f64>,
}

#[actix_web::test]
async fn sla_and_incidents_on_a_known_data_set() {
    let db = TestDb::new();
    let app = spawn_app(persist(&db)).await;
    // payment/critical: three resolved incidents of 60 s, 120 s, 600 s; payment/custom: one of
    // 30 s; checkout/critical: one open for the last 10 minutes.
    diesel::sql_query(
        "INSERT INTO alerts (service, severity, message, resolved, fingerprint, status, starts_at, ends_at, resolved_at) VALUES
         ('payment','critical','a',true,'f1','resolved','2025-06-23T10:00:00Z','2025-06-23T10:01:00Z','2025-06-23T10:01:00Z'),
         ('payment','critical','b',true,'f2','resolved','2025-06-23T11:00:00Z','2025-06-23T11:02:00Z','2025-06-23T11:02:00Z'),
         ('payment','critical','c',true,'f3','resolved','2025-06-23T12:00:00Z','2025-06-23T12:10:00Z','2025-06-23T12:10:00Z'),
         ('payment','custom','d',true,'f4','resolved','2025-06-23T13:00:00Z','2025-06-23T13:00:30Z','2025-06-23T13:00:30Z')",
    )
    .execute(&mut db.conn())
    .unwrap();
    diesel::sql_query(
        "INSERT INTO alerts (service, severity, message, fingerprint, status, starts_at)
         VALUES ('checkout','critical','e','f5','firing', now() - interval '10 minutes')",
    )
    .execute(&mut db.conn())
    .unwrap();

    let (status, sla) = app
        .get_json("/api/v1/sla?from=2025-06-23T00:00:00Z&to=2025-06-24T00:00:00Z")
        .await;
    assert_eq!(status, 200, "{sla}");
    let services = sla["services"].as_array().unwrap();
    let pc = services
        .iter()
        .find(|s| s["service"] == "payment" && s["severity"] == "critical")
        .unwrap();
    assert_eq!(pc["incidents"], 3);
    assert_eq!(pc["open_now"], 0);
    assert_eq!(pc["resolve_p50_s"], 120.0);
    assert!(
        (pc["resolve_p95_s"].as_f64().unwrap() - 552.0).abs() < 1e-6,
        "{pc}"
    );
    assert_eq!(pc["resolve_max_s"], 600.0);
    assert!(
        (pc["critical_open_minutes"].as_f64().unwrap() - 13.0).abs() < 1e-6,
        "{pc}"
    );
    let custom = services.iter().find(|s| s["severity"] == "custom").unwrap();
    assert_eq!(custom["critical_open_minutes"], 0.0);

    let (_, now) = app.get_json("/api/v1/sla").await;
    let open = now["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "checkout")
        .unwrap();
    assert_eq!(open["open_now"], 1);
    let minutes = open["critical_open_minutes"].as_f64().unwrap();
    assert!((9.9..10.5).contains(&minutes), "{open}");
    // The view Grafana charts gives the same numbers.
    let view: Vec<Sla> = diesel::sql_query(
        "SELECT service, critical_open_minutes FROM alert_sla_all WHERE severity = 'critical' AND service = 'payment'",
    )
    .load(&mut db.conn())
    .unwrap();
    assert_eq!(view[0].service, "payment");
    assert!((view[0].critical_open_minutes.unwrap() - 13.0).abs() < 1e-6);

    let (_, page) = app
        .get_json("/api/v1/incidents?service=payment&limit=2")
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["message"], "d", "newest first");
    assert_eq!(page["next_offset"], 2);
    let (_, page2) = app
        .get_json("/api/v1/incidents?service=payment&limit=2&offset=2")
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert_eq!(page2["next_offset"], Value::Null);
    let (_, open) = app.get_json("/api/v1/incidents?resolved=false").await;
    assert_eq!(open["items"].as_array().unwrap().len(), 1);
    let (_, ranged) = app
        .get_json(
            "/api/v1/incidents?from=2025-06-23T10:30:00Z&to=2025-06-23T12:30:00Z&severity=critical",
        )
        .await;
    assert_eq!(ranged["items"].as_array().unwrap().len(), 2);

    for (q, field) in [
        ("limit=0", Some("limit")),
        ("limit=abc", Some("limit")),
        ("from=yesterday", Some("from")),
        ("resolved=maybe", Some("resolved")),
        (
            "from=2025-06-24T00:00:00Z&to=2025-06-23T00:00:00Z",
            Some("from"),
        ),
        ("colour=red", None),
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/incidents?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["error"].is_string(), "{q}: {body}");
        if let Some(f) = field {
            assert_eq!(body["field"], f, "{q}: {body}");
        }
    }
    let (status, _) = app
        .get_json("/api/v1/sla?to=2025-01-01T00:00:00Z&from=2025-02-01T00:00:00Z")
        .await;
    assert_eq!(status, 400);
}

/// In a process that also acknowledges webhooks, the persist stage pauses between batches
/// while acknowledgements run over `ingest.ack_target_ms`, still stores every alert once,
/// and runs flat out again once the webhook is quiet (`kafka::priority`).
#[actix_web::test]
async fn the_stage_yields_to_slow_webhook_acks_stores_everything_and_resumes_when_quiet() {
    let app = TestApp::builder()
        .with_roles(&[Role::Persist])
        .configure(|c| {
            // Every real ack (a broker round trip) takes longer: the stage always yields.
            c.ingest.ack_target_ms = 1;
            c.persist.batch_size = 10;
        })
        .spawn()
        .await;
    let pause = |m: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix("alertpipe_consumer_background_pause_seconds "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // At least 20 webhooks, and on until the pause shows (a window closes every 100 ms).
    let (mut most, mut sent) = (0.0f64, 0);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while sent < 20 || (most == 0.0 && std::time::Instant::now() < until) {
        let (status, _, body) = app.post_alerts(storm_webhook(sent * 10, 10), None).await;
        assert_eq!(status, 200, "{body}");
        sent += 1;
        most = most.max(pause(&app.metrics().await));
    }
    assert!(
        most >= 0.01,
        "slow acks did not make the stage pause (most {most} s after {sent} webhooks)"
    );
    let db = app.db();
    let want = sent * 10;
    wait_rows(db, "every alert, once each", |r| r.len() == want).await;
    assert_eq!(
        count(db, "SELECT COUNT(DISTINCT fingerprint) AS n FROM alerts") as usize,
        want
    );
    // No webhook traffic: the pause shrinks to nothing within a few seconds.
    eventually(Duration::from_secs(10), "the pause gone", || {
        let app = &app;
        async move { (pause(&app.metrics().await) == 0.0).then_some(()) }
    })
    .await;
}
