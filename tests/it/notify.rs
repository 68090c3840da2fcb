//! Notifications against a real SMTP server (Debian's aiosmtpd, one per test, storing mail in
//! a Maildir and answering 451/550 on demand) and a local Teams webhook receiver.

use std::process::Command;
use std::time::{Duration, Instant};

use alertpipe::config::Role;
use serde_json::{json, Value};

use crate::support::app::notify;
use crate::support::smtp::Smtp;
use crate::support::teams::{teams_receiver, teams_receiver_tls};
use crate::support::tls::Pki;
use crate::support::{
    eventually, fixture, free_port, spawn_app, spawn_app_with, unique, TestApp, TestDb,
};

async fn outcomes(db: &TestDb) -> Vec<(String, String)> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Text)]
        receiver: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        outcome: String,
    }
    diesel::sql_query("SELECT receiver, outcome FROM notifications ORDER BY done_at")
        .load::<R>(&mut db.conn())
        .unwrap()
        .into_iter()
        .map(|r| (r.receiver, r.outcome))
        .collect()
}

/// A webhook body of `n` firing alerts; `f(i)` gives alert i's labels and summary.
fn webhook(n: usize, f: impl Fn(usize) -> (Value, String)) -> Vec<u8> {
    webhook_of(0..n, f)
}

/// A webhook body of firing alerts numbered `ids` (their fingerprints).
fn webhook_of(ids: std::ops::Range<usize>, f: impl Fn(usize) -> (Value, String)) -> Vec<u8> {
    let alerts: Vec<Value> = ids
        .map(|i| {
            let (labels, summary) = f(i);
            json!({"status": "firing", "labels": labels, "annotations": {"summary": summary},
                "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": format!("{i:016x}")})
        })
        .collect();
    let body = json!({"version": "4", "status": "firing", "receiver": "x", "groupKey": "g", "alerts": alerts});
    serde_json::to_vec(&body).unwrap()
}

async fn post(app: &TestApp, name: &str) {
    let (status, _, body) = app
        .post_alerts(fixture(&format!("alertmanager/{name}.json")), None)
        .await;
    assert_eq!(status, 200, "{name}: {body}");
}

#[actix_web::test]
async fn a_critical_alert_becomes_an_outlook_mail_and_its_resolution_another() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let app = spawn_app(notify(&db, smtp.port, None)).await;
    post(&app, "firing-critical").await;
    let m = &smtp.wait_mails(1).await[0];
    let e = &alertpipe::domain::parse_webhook(&fixture("alertmanager/firing-critical.json"))
        .unwrap()[0];
    assert_eq!(m["subject"], format!("[CRITICAL] {}", e.message));
    assert_eq!(m["content_type"], "multipart/alternative");
    assert!(m["to"].as_str().unwrap().contains("oncall@example.com"));
    let text = m["text"].as_str().unwrap();
    for want in [
        "Service: payment",
        &format!("Time: {}", e.starts_at.format("%Y-%m-%d %H:%M:%S UTC")),
        "Message: ",
        "View in Grafana: https://grafana.example.com/explore?",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let html = m["html"].as_str().unwrap();
    assert!(html.contains("<table") && html.contains("View in Grafana"));
    assert!(!html.contains("<script") && !html.contains("<style"));

    let firing_id = m["message_id"].as_str().unwrap().to_owned();
    assert!(
        firing_id.starts_with('<') && firing_id.ends_with("@example.com>"),
        "a Message-ID under the sender's domain: {firing_id}"
    );
    assert_eq!(m["in_reply_to"], "", "a firing mail starts its thread");

    post(&app, "resolved-critical").await;
    let mails = smtp.wait_mails(3).await; // db-1 resolved, db-2 resolved (its firing was never mailed)
                                          // The resolved mail of the same alert is threaded under its firing mail, as Outlook reads
                                          // it (Message-ID, In-Reply-To, References, Thread-Topic).
    let resolved = mails
        .iter()
        .find(|r| {
            r["subject"].as_str().unwrap().contains("RESOLVED")
                && r["in_reply_to"].as_str() == Some(firing_id.as_str())
        })
        .unwrap_or_else(|| panic!("no resolved mail in reply to {firing_id}: {mails:?}"));
    assert_eq!(resolved["references"], firing_id.as_str());
    assert_ne!(resolved["message_id"], firing_id.as_str());
    assert_eq!(resolved["thread_topic"], m["thread_topic"]);
    assert_eq!(
        m["thread_topic"],
        format!("{} ({})", e.alertname, e.service)
    );
    // Custom alerts route to Teams (no webhook here: dead-lettered, never mailed).
    post(&app, "firing-custom").await;
    eventually(Duration::from_secs(30), "custom dead-lettered", || async {
        outcomes(&db)
            .await
            .iter()
            .any(|(r, o)| r == "teams" && o == "dead_lettered")
            .then_some(())
    })
    .await;
    assert_eq!(smtp.mails().len(), 3);
}

#[actix_web::test]
async fn alert_text_is_escaped_and_cannot_inject_headers() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let app = spawn_app(notify(&db, smtp.port, None)).await;
    let body = String::from_utf8(fixture("alertmanager/firing-critical.json"))
        .unwrap()
        .replace(
            "\"summary\": \"",
            "\"summary\": \"<script>alert(1)</script>\\r\\nBcc: victim@example.com\\r\\n",
        );
    let (status, _, _) = app.post_alerts(body, None).await;
    assert_eq!(status, 200);
    let m = &smtp.wait_mails(1).await[0];
    assert!(
        !m["header_names"]
            .as_array()
            .unwrap()
            .contains(&json!("bcc")),
        "{m}"
    );
    assert!(m["subject"]
        .as_str()
        .unwrap()
        .starts_with("[CRITICAL] <script>alert(1)</script> Bcc: victim"));
    let html = m["html"].as_str().unwrap();
    assert!(!html.contains("<script>"), "escaped in HTML");
    assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
}

#[actix_web::test]
async fn smtp_451_is_retried_and_sent_once() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    smtp.fault(Some("451 2"));
    let app = spawn_app(notify(&db, smtp.port, None)).await;
    post(&app, "firing-critical").await;
    assert_eq!(smtp.wait_mails(1).await.len(), 1);
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.mails().len(), 1, "one mail");
    assert_eq!(
        outcomes(&db).await,
        [("outlook".to_owned(), "sent".to_owned())]
    );
}

#[actix_web::test]
async fn smtp_550_is_dead_lettered_then_replayed_by_the_cli() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    smtp.fault(Some("550"));
    let dlq_topic = unique("dlq");
    let app = spawn_app(|c| {
        notify(&db, smtp.port, None)(c);
        c.notify.dlq_topic = dlq_topic.clone();
    })
    .await;
    post(&app, "firing-critical").await;
    eventually(Duration::from_secs(30), "dead-lettered", || async {
        (outcomes(&db).await == [("outlook".to_owned(), "dead_lettered".to_owned())]).then_some(())
    })
    .await;
    assert!(smtp.mails().is_empty());
    let dlq =
        crate::support::read_records(&app.brokers, &dlq_topic, 1, Duration::from_secs(3)).await;
    assert_eq!(dlq.len(), 1, "kept in the dead-letter topic too");
    // The one dead-letter shape: the notification whole, why in the headers.
    assert_eq!(dlq[0].header("alertpipe-stage").as_deref(), Some("notify"));
    assert_eq!(
        dlq[0].header("alertpipe-receiver").as_deref(),
        Some("outlook")
    );
    let reason = dlq[0].header("alertpipe-reason").unwrap_or_default();
    assert!(reason.contains("550"), "{reason}");
    let item: serde_json::Value = serde_json::from_slice(&dlq[0].payload).expect("JSON payload");
    assert_eq!(item["receiver"], "outlook");
    assert_eq!(
        item["events"][0]["alertname"], "PaymentDBDown",
        "the whole alert"
    );
    smtp.fault(None);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_alertpipe"))
            .args(args)
            .env("ALERTPIPE__DATABASE__URL", &db.url)
            .env("ALERTPIPE__NOTIFY__SMTP__PORT", smtp.port.to_string())
            .output()
            .unwrap()
    };
    let list = cli(&["dlq", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.status.success() && listed.contains("notify") && listed.contains("550"),
        "{listed}"
    );
    let replay = cli(&["dlq", "replay", "--all"]);
    assert!(
        replay.status.success(),
        "{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(smtp.wait_mails(1).await.len(), 1);
    let again = cli(&["dlq", "replay", "--all"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 sent"),
        "replayed once only"
    );
}

/// `alertpipe dlq` on a database without alertpipe's tables (the wrong URL, or never
/// migrated) says what to do, and doing it works.
#[actix_web::test]
async fn the_dlq_cli_on_an_unmigrated_database_says_to_migrate() {
    use diesel::RunQueryDsl;
    let db = TestDb::new();
    diesel::sql_query("DROP SCHEMA public CASCADE")
        .execute(&mut db.conn())
        .unwrap();
    diesel::sql_query("CREATE SCHEMA public")
        .execute(&mut db.conn())
        .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_alertpipe"))
            .args(args)
            .env("ALERTPIPE__DATABASE__URL", &db.url)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [&["dlq", "list"][..], &["dlq", "replay", "--all"][..]] {
        let (code, _, stderr) = cli(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no alertpipe tables") && stderr.contains("alertpipe migrate"),
            "{args:?}: {stderr}"
        );
    }
    let (code, _, stderr) = cli(&["migrate"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = cli(&["dlq", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "the header, no dead letters: {stdout}"
    );
}

#[actix_web::test]
async fn smtp_down_is_retried_then_dead_lettered() {
    let db = TestDb::new();
    let dead_port = free_port();
    let app = spawn_app(|c| {
        notify(&db, dead_port, None)(c);
        c.notify.max_attempts = 2;
    })
    .await;
    post(&app, "firing-critical").await;
    eventually(
        Duration::from_secs(30),
        "dead-lettered after retries",
        || async {
            (outcomes(&db).await == [("outlook".to_owned(), "dead_lettered".to_owned())])
                .then_some(())
        },
    )
    .await;
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct D {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
        #[diesel(sql_type = diesel::sql_types::Text)]
        reason: String,
    }
    let d: Vec<D> =
        diesel::sql_query("SELECT attempts, reason FROM dead_letters WHERE stage = 'notify'")
            .load(&mut db.conn())
            .unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].attempts, 2);
    assert!(!d[0].reason.is_empty());
}

#[actix_web::test]
async fn a_burst_over_the_rate_becomes_one_digest_naming_every_alert() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let app = spawn_app(|c| {
        notify(&db, smtp.port, None)(c);
        c.notify.rate_burst = 2;
        c.notify.rate_per_minute = 1;
        c.notify.linger_ms = 1000;
        c.kafka.partitions = 1;
    })
    .await;
    let body = webhook(10, |i| {
        (
            json!({"alertname": "Burst", "service": "payment", "severity": "critical", "n": i.to_string()}),
            format!("burst alert {i}"),
        )
    });
    let (status, _, _) = app.post_alerts(body, None).await;
    assert_eq!(status, 200);
    let mails = smtp.wait_mails(3).await;
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let mails_after = smtp.mails();
    assert_eq!(
        mails_after.len(),
        3,
        "2 alone + 1 digest: {:?}",
        mails.iter().map(|m| &m["subject"]).collect::<Vec<_>>()
    );
    let digest = mails_after
        .iter()
        .find(|m| m["subject"].as_str().unwrap().contains("Digest"))
        .expect("a digest");
    assert_eq!(digest["subject"], "[CRITICAL] Digest: 8 alerts for outlook");
    let singles: Vec<String> = mails_after
        .iter()
        .filter(|m| !m["subject"].as_str().unwrap().contains("Digest"))
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect();
    for i in 0..10 {
        let s = format!("burst alert {i}");
        let in_digest = digest["text"].as_str().unwrap().contains(&format!("{s}\n"));
        let alone = singles.iter().any(|x| x.ends_with(&s));
        assert!(in_digest ^ alone, "{s} must be in exactly one mail");
    }
    assert_eq!(outcomes(&db).await.len(), 10, "every alert accounted for");
}

async fn outbox_rows(db: &TestDb) -> i64 {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT COUNT(*) AS n FROM notification_outbox")
        .get_result::<N>(&mut db.conn())
        .unwrap()
        .n
}

#[actix_web::test]
async fn a_digest_spans_consumer_batches_and_never_holds_the_consumer() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let app = spawn_app(|c| {
        notify(&db, smtp.port, None)(c);
        c.notify.rate_burst = 1;
        c.notify.rate_per_minute = 1;
        c.notify.digest_window_s = 12;
        c.notify.linger_ms = 100;
        c.kafka.partitions = 1;
    })
    .await;
    let labels = |i: usize| {
        (
            json!({"alertname": "Spread", "service": "payment", "severity": "critical", "n": i.to_string()}),
            format!("spread alert {i}"),
        )
    };
    assert_eq!(app.post_alerts(webhook_of(0..3, labels), None).await.0, 200);
    assert_eq!(
        smtp.wait_mails(1).await.len(),
        1,
        "the first alert goes alone"
    );
    // A second webhook, well after the first batch was committed: another consumer batch.
    assert_eq!(
        app.post_alerts(webhook_of(10..13, labels), None).await.0,
        200
    );
    // The consumer commits both batches while their notifications wait in the digest.
    app.wait_committed(Role::Notify, Duration::from_secs(8))
        .await;
    assert_eq!(smtp.mails().len(), 1, "the digest waits for its window");
    assert!(
        outbox_rows(&db).await > 0,
        "waiting notifications are in the outbox"
    );
    let mails = smtp.wait_mails(2).await;
    let digest = &mails[1];
    assert_eq!(digest["subject"], "[CRITICAL] Digest: 5 alerts for outlook");
    for i in [1, 2, 10, 11, 12] {
        assert!(
            digest["text"]
                .as_str()
                .unwrap()
                .contains(&format!("spread alert {i}\n")),
            "alert {i} in the one digest"
        );
    }
    eventually(
        Duration::from_secs(5),
        "6 outcomes, outbox empty",
        || async { (outcomes(&db).await.len() == 6 && outbox_rows(&db).await == 0).then_some(()) },
    )
    .await;
}

#[actix_web::test]
async fn a_dead_workers_claim_lapses_and_another_process_sends_it() {
    use diesel::prelude::*;
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let app = spawn_app(notify(&db, smtp.port, None)).await;
    let event = alertpipe::domain::parse_webhook(&fixture("alertmanager/firing-critical.json"))
        .unwrap()
        .remove(0);
    let key = alertpipe::notify::sink::notification_key("outlook", &event);
    // What a SIGKILLed worker leaves: a row it claimed, its lease running for 3 more seconds.
    diesel::sql_query(
        "INSERT INTO notification_outbox (key, receiver, event, claimed_by, claimed_until, attempts)
         VALUES ($1, 'outlook', $2, 'a-dead-worker', NOW() + interval '3 seconds', 1)",
    )
    .bind::<diesel::sql_types::Text, _>(&key)
    .bind::<diesel::sql_types::Bytea, _>(serde_json::to_vec(&event).unwrap())
    .execute(&mut db.conn())
    .unwrap();
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    assert!(
        smtp.mails().is_empty(),
        "nobody takes a claim whose lease runs"
    );
    let started = Instant::now();
    assert_eq!(
        smtp.wait_mails(1).await.len(),
        1,
        "sent once the lease lapsed"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    eventually(
        Duration::from_secs(5),
        "the outcome recorded, outbox empty",
        || async {
            (outcomes(&db).await == vec![("outlook".to_owned(), "sent".to_owned())]
                && outbox_rows(&db).await == 0)
                .then_some(())
        },
    )
    .await;
    drop(app);
}

#[actix_web::test]
async fn a_kafka_redelivery_sends_no_second_mail() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let app = spawn_app(notify(&db, smtp.port, None)).await;
    post(&app, "firing-critical").await;
    assert_eq!(smtp.wait_mails(1).await.len(), 1);
    // A second consumer group re-reads the whole topic: every message is delivered again.
    let again = spawn_app_with(Some(&app.brokers), {
        let (url, topic, port) = (db.url.clone(), app.topic.clone(), smtp.port);
        move |c| {
            c.server.roles = vec![Role::Notify];
            c.database.url = url;
            c.kafka.alerts_topic = topic;
            c.notify.group = unique("replay");
            c.notify.smtp.port = port;
        }
    })
    .await;
    again
        .wait_drained(Role::Notify, Duration::from_secs(30))
        .await;
    assert_eq!(smtp.mails().len(), 1, "no second mail");
}

#[actix_web::test]
async fn teams_gets_a_valid_card_and_429_and_500_are_retried() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let teams = teams_receiver(vec![429, 500]).await;
    let app = spawn_app(notify(&db, smtp.port, Some(teams.url.clone()))).await;
    post(&app, "firing-custom").await;
    eventually(Duration::from_secs(30), "sent to teams", || async {
        (outcomes(&db).await == [("teams".to_owned(), "sent".to_owned())]).then_some(())
    })
    .await;
    let seen = teams.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "429, 500, then 202");
    assert!(
        seen[1].0 - seen[0].0 >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    for (_, card, problems) in &seen {
        assert!(problems.is_empty(), "{problems:?} in {card}");
    }
    assert!(seen[2].1.to_string().contains("Cache") || seen[2].1.to_string().contains("Queue"));
    assert!(smtp.mails().is_empty(), "custom goes to Teams, not mail");
}

/// Teams' webhooks are https: the card goes over TLS, the certificate checked against the
/// system's roots and `notify.https_ca_file`. Without the CA the send fails naming the
/// certificate, is retried and dead-lettered, and no card arrives.
#[actix_web::test]
async fn teams_over_https_trusts_the_configured_ca_and_no_other() {
    let pki = Pki::new("teams-webhook-ca");
    let teams = teams_receiver_tls(vec![], &pki.issue("teams", "localhost")).await;
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let untrusting = spawn_app(|c| {
        notify(&db, smtp.port, Some(teams.url.clone()))(c);
        c.notify.max_attempts = 2;
    })
    .await;
    post(&untrusting, "firing-custom").await;
    eventually(Duration::from_secs(30), "dead-lettered", || async {
        (outcomes(&db).await == [("teams".to_owned(), "dead_lettered".to_owned())]).then_some(())
    })
    .await;
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct D {
        #[diesel(sql_type = diesel::sql_types::Text)]
        reason: String,
    }
    let d: Vec<D> = diesel::sql_query("SELECT reason FROM dead_letters WHERE stage = 'notify'")
        .load(&mut db.conn())
        .unwrap();
    assert_eq!(d.len(), 1);
    assert!(
        d[0].reason.to_lowercase().contains("certificate"),
        "the reason names the certificate: {}",
        d[0].reason
    );
    assert!(
        teams.seen.lock().unwrap().is_empty(),
        "no card without trust"
    );
    drop(untrusting);

    let db = TestDb::new();
    let ca = pki.ca();
    let trusting = spawn_app(|c| {
        notify(&db, smtp.port, Some(teams.url.clone()))(c);
        c.notify.https_ca_file = Some(ca);
    })
    .await;
    post(&trusting, "firing-custom").await;
    eventually(Duration::from_secs(30), "sent over https", || async {
        (outcomes(&db).await == [("teams".to_owned(), "sent".to_owned())]).then_some(())
    })
    .await;
    let seen = teams.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].2.is_empty(), "{:?}", seen[0].2);
}

#[actix_web::test]
async fn teams_requests_are_paced_per_webhook() {
    let teams = teams_receiver(vec![]).await;
    let app = TestApp::builder()
        .with_roles(&[Role::Notify])
        .with_teams(&teams.url)
        .configure(|c| c.notify.teams_max_per_s = 4)
        .spawn()
        .await;
    let body = webhook(8, |i| {
        (
            json!({"alertname": "Pace", "service": format!("s{i}"), "severity": "custom"}),
            format!("pace {i}"),
        )
    });
    let (status, _, _) = app.post_alerts(body, None).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(30), "8 cards", || async {
        (teams.seen.lock().unwrap().len() >= 8).then_some(())
    })
    .await;
    let times: Vec<Instant> = teams.seen.lock().unwrap().iter().map(|s| s.0).collect();
    let span = *times.last().unwrap() - times[0];
    assert!(
        span >= Duration::from_millis(1600),
        "8 requests at <= 4/s take >= 1.75 s, took {span:?}"
    );
}

#[actix_web::test]
async fn an_undecodable_alerts_message_is_dead_lettered_by_notify_too() {
    let app = TestApp::builder()
        .with_db()
        .with_smtp()
        .with_roles(&[Role::Notify])
        .spawn()
        .await;
    let (db, smtp) = (app.db(), app.smtp());
    crate::support::produce_raw(&app.brokers, &app.topic, &[("x", b"{not json".to_vec())]).await;
    post(&app, "firing-critical").await;
    assert_eq!(smtp.wait_mails(1).await.len(), 1, "the stage went on");
    let dead = eventually(Duration::from_secs(30), "notify's dead letter", || {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct D {
            #[diesel(sql_type = diesel::sql_types::Text)]
            reason: String,
            #[diesel(sql_type = diesel::sql_types::Binary)]
            payload: Vec<u8>,
        }
        let rows: Vec<D> = diesel::sql_query(
            "SELECT reason, payload FROM dead_letters WHERE stage = 'notify' AND receiver IS NULL",
        )
        .load(&mut db.conn())
        .unwrap();
        async move { (!rows.is_empty()).then_some(rows) }
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, b"{not json", "kept whole");
    assert!(
        dead[0].reason.starts_with("not an alert event"),
        "{}",
        dead[0].reason
    );
}

/// The stack's stand-in for a Teams Workflows webhook (`deploy/local/teams_sink.py`, what the
/// demo's `teams` receiver posts to) takes alertpipe's card: one 429 on demand, honoured, then
/// 202 and the card stored where the demo's report reads it.
#[actix_web::test]
async fn the_stacks_teams_stand_in_takes_a_card_after_a_429() {
    let db = TestDb::new();
    let smtp = Smtp::start();
    let stack = crate::support::Stack::get();
    let cards = std::path::PathBuf::from(stack.var("STACK_TEAMS_CARDS"));
    let fault = cards.parent().unwrap().join("fault");
    std::fs::write(&fault, "429 1").unwrap();
    let app = spawn_app(notify(
        &db,
        smtp.port,
        Some(stack.var("STACK_TEAMS_URL").into()),
    ))
    .await;
    let name = unique("StandIn");
    let body = webhook(1, |_| {
        (
            json!({"alertname": name, "service": "queue", "severity": "custom"}),
            format!("{name} backlog growing"),
        )
    });
    let (status, _, _) = app.post_alerts(body, None).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcomes(&db).await != [("teams".to_owned(), "sent".to_owned())] {
        if Instant::now() > deadline {
            panic!(
                "not sent to teams in 30 s\n{}",
                stand_in_report(&app, &db, &cards).await
            );
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!fault.exists(), "the 429 was answered (and retried past)");
    let card: Value = std::fs::read_dir(&cards)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .find(|text| text.contains(&name))
        .map(|text| serde_json::from_str(&text).unwrap())
        .expect("the card is stored");
    assert_eq!(card["type"], "message");
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
}

/// What a notify test that waited in vain saw: outcomes, the outbox, dead letters, the
/// stand-in's own log and the app's notify and consumer metrics.
async fn stand_in_report(app: &TestApp, db: &TestDb, cards: &std::path::Path) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Dead {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        receiver: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Text)]
        reason: String,
    }
    let dead: Vec<Dead> =
        diesel::sql_query("SELECT receiver, reason FROM dead_letters WHERE stage = 'notify'")
            .load(&mut db.conn())
            .unwrap_or_default();
    let dead: Vec<(Option<String>, String)> =
        dead.into_iter().map(|d| (d.receiver, d.reason)).collect();
    let log = cards
        .parent()
        .and_then(|teams| teams.parent())
        .map(|state| std::fs::read_to_string(state.join("teams.log")).unwrap_or_default())
        .unwrap_or_default();
    let log_tail: Vec<&str> = log.lines().rev().take(10).collect();
    let metrics: Vec<String> = app
        .metrics()
        .await
        .lines()
        .filter(|l| l.contains("notif") || l.contains("consumer") || l.contains("outbox"))
        .map(str::to_owned)
        .collect();
    format!(
        "outcomes: {:?}\noutbox rows: {}\ndead letters: {dead:?}\nstand-in log (newest first): {log_tail:#?}\nmetrics:\n{}",
        outcomes(db).await,
        outbox_rows(db).await,
        metrics.join("\n")
    )
}

#[actix_web::test]
async fn with_loki_down_the_lines_behind_an_alert_come_from_the_archive() {
    // Loki is configured but nothing listens there.
    let dead_loki = format!("http://127.0.0.1:{}", crate::support::free_port());
    archive_lines_in_the_mail(Some(dead_loki)).await;
}

#[actix_web::test]
async fn without_loki_the_lines_behind_an_alert_come_from_the_archive() {
    archive_lines_in_the_mail(None).await;
}

/// `dlq replay` delivers the way the worker does: the replayed mail has the lines too.
#[actix_web::test]
async fn a_replayed_mail_carries_the_lines_behind_its_alert() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let service = unique("replaysvc").replace('-', "_");
    let archive = archive_with_lines(&service);
    let root = archive.path().to_string_lossy().into_owned();
    smtp.fault(Some("550"));
    let r = root.clone();
    let app = spawn_app(|c| {
        notify(&db, smtp.port, None)(c);
        c.notify.loki_url = None;
        c.notify.log_lines = 5;
        c.archive.root = r;
    })
    .await;
    let (status, _, _) = app
        .post_alerts(serde_json::to_vec(&logql_alert(&service)).unwrap(), None)
        .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(30), "dead-lettered", || async {
        (outcomes(&db).await == [("outlook".to_owned(), "dead_lettered".to_owned())]).then_some(())
    })
    .await;
    smtp.fault(None);
    let replay = Command::new(env!("CARGO_BIN_EXE_alertpipe"))
        .args(["dlq", "replay", "--all"])
        .env("ALERTPIPE__DATABASE__URL", &db.url)
        .env("ALERTPIPE__NOTIFY__SMTP__PORT", smtp.port.to_string())
        .env("ALERTPIPE__NOTIFY__LOG_LINES", "5")
        .env("ALERTPIPE__ARCHIVE__ROOT", &root)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    let mail = &smtp.wait_mails(1).await[0];
    let (html, text) = (
        mail["html"].as_str().unwrap(),
        mail["text"].as_str().unwrap(),
    );
    assert!(html.contains("Log lines (5, newest last)"), "{html}");
    assert!(
        text.contains("attempt 18 refused"),
        "the newest line: {text}"
    );
}

/// An archive holding 20 lines of `service` from the last minute (as the archive stage writes
/// them): 16 "DB connection failed: attempt N refused ..." and 4 "request N ok".
fn archive_with_lines(service: &str) -> tempfile::TempDir {
    use alertpipe::coldstore::parquet::{encode, Promoted, Provenance, Row};
    let archive = tempfile::tempdir().unwrap();
    // The archive holds the service's lines (as the archive stage writes them).
    let now = chrono::Utc::now();
    let labels = std::sync::Arc::new(std::collections::BTreeMap::from([
        ("service".to_owned(), service.to_owned()),
        ("job".to_owned(), format!("{service}-service")),
    ]));
    let mut rows: Vec<Row> = (0..20i64)
        .map(|i| Row {
            ts_ns: (now - chrono::Duration::seconds(60 - i))
                .timestamp_nanos_opt()
                .unwrap(),
            line: match i {
                3 => "DB connection failed: <b>pool</b> exhausted".to_owned(),
                _ if i % 5 == 4 => format!("request {i} ok"),
                _ => format!("DB connection failed: attempt {i} refused by 10.0.0.5:5432"),
            }
            .into_bytes(),
            labels: labels.clone(),
            metadata: Vec::new(),
            partition: 0,
            offset: i,
        })
        .collect();
    let first_ts = rows[0].ts_ns;
    let file = encode(
        &mut rows,
        &Promoted {
            service,
            env: "prod",
        },
        Provenance {
            partition: 0,
            first_offset: 0,
            last_offset: 19,
        },
    )
    .unwrap();
    let path = archive.path().join(alertpipe::coldstore::layout::file_path(
        "prod",
        service,
        first_ts,
        0,
        0,
        0,
        Default::default(),
    ));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, file).unwrap();

    archive
}

/// A firing alert of `service` from a LogQL rule on "DB connection failed".
fn logql_alert(service: &str) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "x", "groupKey": "g", "alerts": [{
        "status": "firing",
        "labels": {"alertname": "DBConnectionFailed", "service": service, "severity": "critical", "cluster": "prod"},
        "annotations": {"summary": "Payment Service Failure",
                        "logql": r#"sum(count_over_time({job=~".+"} |= "DB connection failed" [5m])) > 2"#},
        "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://grafana/alerting", "fingerprint": "c0ffee0000000002"}]})
}

/// A mail's log lines read from the archive's files: Loki at `loki_url` does not answer, or
/// none is configured.
async fn archive_lines_in_the_mail(loki_url: Option<String>) {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let service = unique("archsvc").replace('-', "_");
    let archive = archive_with_lines(&service);
    let root = archive.path().to_owned();
    let app = spawn_app(|c| {
        notify(&db, smtp.port, None)(c);
        c.notify.loki_url = loki_url;
        c.notify.log_lines = 5;
        c.archive.root = root.to_string_lossy().into_owned();
    })
    .await;
    let body = logql_alert(&service);
    let (html, text) = &mail_of(&app, &smtp, &body).await;
    assert!(html.contains("Log lines (5, newest last)"), "{html}");
    assert!(
        text.contains("attempt 18 refused"),
        "the newest line: {text}"
    );
    assert!(
        text.contains("attempt 13 refused") && !text.contains("attempt 12 refused"),
        "only the newest 5: {text}"
    );
    assert!(
        !text.contains("request 14 ok"),
        "only matching lines: {text}"
    );
    assert!(!html.contains("<b>pool</b>"), "escaped");
}

/// Posts one webhook `body` and returns the (html, text) of the one mail it gives.
pub(crate) async fn mail_of(app: &TestApp, smtp: &Smtp, body: &Value) -> (String, String) {
    let (status, _, _) = app
        .post_alerts(serde_json::to_vec(body).unwrap(), None)
        .await;
    assert_eq!(status, 200);
    let mail = &smtp.wait_mails(1).await[0];
    (
        mail["html"].as_str().unwrap().to_owned(),
        mail["text"].as_str().unwrap().to_owned(),
    )
}
