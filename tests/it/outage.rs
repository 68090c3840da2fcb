//! The broker goes away and comes back: 503 + Retry-After while it is gone (Alertmanager
//! retries only 5xx), and the retried delivery lands afterwards. Nothing lost. And the real
//! binary's own lifecycle: SIGTERM drains, its log file is plain text.

use std::time::Duration;

use crate::support::{eventually, fixture, free_port, read_json, spawn_app_with, start_broker};

#[actix_web::test]
async fn broker_down_gives_503_and_the_retry_lands_after_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(dir.path(), port);
    let brokers = format!("127.0.0.1:{port}");
    let app = spawn_app_with(Some(&brokers), |c| {
        c.kafka.message_timeout_ms = 2_000;
        c.ingest.retry_after_s = 3;
    })
    .await;

    let (status, _, body) = app
        .post_alerts(fixture("alertmanager/firing-critical.json"), None)
        .await;
    assert_eq!(status, 200, "{body}");

    broker.kill9();
    let custom = fixture("alertmanager/firing-custom.json");
    let (status, retry_after, body) = app.post_alerts(custom.clone(), None).await;
    assert_eq!(
        status, 503,
        "broker down must be a 5xx so the sender retries: {body}"
    );
    assert_eq!(retry_after.as_deref(), Some("3"));
    assert!(body["error"].is_string());
    // The log endpoints say the same, with the same configured Retry-After.
    for (path, ctype, log) in [
        (
            "/loki/api/v1/push",
            "application/json",
            r#"{"streams": [{"stream": {"job": "outage"}, "values": [["1", "a line"]]}]}"#,
        ),
        (
            "/otlp/v1/logs",
            "application/json",
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "a line"}}]}]}]}"#,
        ),
    ] {
        let resp = app
            .client
            .post(format!("{}{path}", app.url))
            .insert_header(("content-type", ctype))
            .send_body(log)
            .await
            .expect("the push reaches the app");
        assert_eq!(resp.status().as_u16(), 503, "{path}");
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("3"),
            "{path}: ingest.retry_after_s"
        );
    }
    let mut ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        503,
        "not ready while the broker is down"
    );
    let _ = ready.body().await;

    let _broker = start_broker(dir.path(), port);
    // What Alertmanager does: retry until it gets a 2xx.
    let report = eventually(Duration::from_secs(60), "retried delivery accepted", || {
        let (app, custom) = (&app, custom.clone());
        async move {
            let (status, _, body) = app.post_alerts(custom, None).await;
            (status == 200).then_some(body)
        }
    })
    .await;
    assert_eq!(
        report["produced"], 1,
        "the failed state was not remembered as seen: {report}"
    );

    // The broker has just come back: give its group coordinator time to load.
    let msgs = read_json(&brokers, &app.topic, 10, Duration::from_secs(10)).await;
    let names: Vec<&str> = msgs
        .iter()
        .filter_map(|m| m["alertname"].as_str())
        .collect();
    assert_eq!(
        names.iter().filter(|n| **n == "PaymentDBDown").count(),
        1,
        "{names:?}"
    );
    assert!(
        names.contains(&"PaymentQueueBacklog"),
        "retried alert landed: {names:?}"
    );
}

#[actix_web::test]
async fn a_full_pipeline_answers_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(dir.path(), port);
    let brokers = format!("127.0.0.1:{port}");
    let app = spawn_app_with(Some(&brokers), |c| {
        c.kafka.message_timeout_ms = 3_000;
        c.ingest.max_inflight_alerts = 1;
    })
    .await;
    broker.kill9();
    // The first request holds the only slot while it waits for the (dead) broker.
    let first = app.post_alerts(fixture("alertmanager/firing-critical.json"), None);
    let second = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let r = app
            .post_alerts(fixture("alertmanager/firing-custom.json"), None)
            .await;
        (r, started.elapsed())
    };
    let ((s1, _, _), ((s2, retry, body), waited)) = futures_util::future::join(first, second).await;
    assert_eq!(s1, 503);
    assert_eq!(s2, 503, "{body}");
    assert!(retry.is_some());
    assert!(
        waited < Duration::from_secs(1),
        "refused at once, waited {waited:?}"
    );
}

/// Every role, so every actor's shutdown (lettre's SMTP pool among them) is exercised.
#[actix_web::test]
async fn sigterm_drains_and_exits_cleanly() {
    use std::process::{Command, Stdio};
    let stack = crate::support::Stack::get();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alertpipe.log");
    let db = crate::support::TestDb::new();
    let u = crate::support::unique;
    // Killed on drop: a failing assertion does not leave it running against the stack.
    let mut proc = crate::support::Proc {
        child: Command::new(env!("CARGO_BIN_EXE_alertpipe"))
            .args(["serve", "--roles", "all"])
            .env("ALERTPIPE__DATABASE__URL", &db.url)
            .env(
                "ALERTPIPE__NOTIFY__SMTP__PORT",
                stack.var("STACK_SMTP_PORT"),
            )
            .env("ALERTPIPE__NOTIFY__GROUP", u("notify"))
            .env("ALERTPIPE__NOTIFY__DLQ_TOPIC", u("dlq"))
            .env("ALERTPIPE__PERSIST__GROUP", u("persist"))
            .env("ALERTPIPE__ARCHIVE__GROUP", u("archive"))
            .env("ALERTPIPE__KAFKA__LOGS_TOPIC", u("logs"))
            .env("ALERTPIPE__ARCHIVE__ROOT", dir.path().join("archive"))
            .env("ALERTPIPE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "ALERTPIPE__KAFKA__BROKERS",
                stack.var("STACK_KAFKA_BROKERS"),
            )
            .env(
                "ALERTPIPE__KAFKA__ALERTS_TOPIC",
                crate::support::unique("alerts"),
            )
            .env("ALERTPIPE__TELEMETRY__LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    };
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(30), "ready", || {
        let (c, u) = (client.clone(), format!("{base}/readyz"));
        async move { (c.get(u).send().await.ok()?.status().as_u16() == 200).then_some(()) }
    })
    .await;
    let r = client
        .post(format!("{base}/api/v1/alerts"))
        .insert_header(("content-type", "application/json"))
        .send_body(fixture("alertmanager/firing-critical.json"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The mail is sent (its outcome recorded), so the SMTP pool holds a connection at shutdown.
    eventually(Duration::from_secs(30), "the mail sent", || async {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n = diesel::sql_query("SELECT count(*) AS n FROM notifications WHERE outcome = 'sent'")
            .get_result::<N>(&mut db.conn())
            .ok()?;
        (n.n > 0).then_some(())
    })
    .await;
    let ok = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status:?}\n{text}");
    assert!(text.contains("signal received; draining"), "{text}");
    assert!(text.contains("alertpipe stopped"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// The text log written to a file (the demo's, systemd's, a collector's) is plain text: no
/// terminal colour codes around levels and targets.
#[actix_web::test]
async fn a_text_log_to_a_file_has_no_colour_codes() {
    use std::process::Command;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alertpipe.log");
    let mut proc = crate::support::Proc {
        child: Command::new(env!("CARGO_BIN_EXE_alertpipe"))
            .args(["serve", "--roles", "ingest"])
            .env("ALERTPIPE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "ALERTPIPE__KAFKA__BROKERS",
                crate::support::Stack::get().var("STACK_KAFKA_BROKERS"),
            )
            .env(
                "ALERTPIPE__KAFKA__ALERTS_TOPIC",
                crate::support::unique("alerts"),
            )
            .env("ALERTPIPE__TELEMETRY__LOG_FORMAT", "text")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    };
    let client = awc::Client::default();
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually(Duration::from_secs(30), "alertpipe answers", || {
        let (c, u) = (client.clone(), url.clone());
        async move { (c.get(u).send().await.ok()?.status().as_u16() == 200).then_some(()) }
    })
    .await;
    let ok = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    eventually(Duration::from_secs(15), "exit after SIGTERM", || {
        let done = proc.child.try_wait().unwrap().is_some();
        async move { done.then_some(()) }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "{text}");
    assert!(text.contains("alertpipe stopped"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
}

/// librdkafka can stay out of its group for good when the broker dies while a consumer joins
/// and comes back (seen in CI, reproduced here every time): the stage rejoins on its own
/// (`kafka::consumer::run`, the rejoin rule) and archives what arrived before and after.
#[actix_web::test]
async fn a_stage_whose_join_the_broker_cut_short_joins_again_once_the_broker_is_back() {
    use alertpipe::config::Role;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(dir.path(), port);
    let brokers = format!("127.0.0.1:{port}");
    let app = crate::support::TestApp::builder()
        .with_brokers(&brokers)
        .with_roles(&[Role::Archive])
        .configure(|c| {
            c.kafka.message_timeout_ms = 2_000;
            // Rejoin after 20 + 10 s without an assignment (default 60 + 10).
            c.kafka.max_poll_interval_ms = 20_000;
        })
        .spawn()
        .await;
    let push = |line: &str| {
        let ts = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        format!(r#"{{"streams": [{{"stream": {{"service": "rejoin"}}, "values": [["{ts}", "{line}"]]}}]}}"#)
            .into_bytes()
    };
    let (status, body) = app
        .push_logs(push("before"), "application/json", false)
        .await;
    assert!(status < 300, "{status} {body}");
    // The archive's consumer is still joining its new group.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    broker.kill9();
    actix_web::rt::time::sleep(Duration::from_secs(20)).await;
    let _broker = start_broker(dir.path(), port);
    let back = std::time::Instant::now();
    eventually(Duration::from_secs(30), "a push accepted again", || {
        let (app, body) = (&app, push("after"));
        async move { (app.push_logs(body, "application/json", false).await.0 < 300).then_some(()) }
    })
    .await;
    let root = app
        .archive_root
        .as_ref()
        .expect("archive root")
        .path()
        .to_owned();
    let lines = eventually(Duration::from_secs(90), "both lines archived", || {
        let root = root.clone();
        async move {
            let rows = crate::support::parquet::all_rows(&crate::support::parquet::pyarrow(&root));
            let mine: Vec<String> = rows
                .iter()
                .filter(|r| r["service"] == "rejoin")
                .filter_map(|r| r["line"].as_str().map(str::to_owned))
                .collect();
            (mine.iter().any(|l| l == "before") && mine.iter().any(|l| l == "after"))
                .then_some(mine)
        }
    })
    .await;
    // Pushes refused while the broker was away may still have landed: "after" at least once.
    assert_eq!(
        lines.iter().filter(|l| *l == "before").count(),
        1,
        "the line from before the outage, once: {lines:?}"
    );
    eprintln!("archived {:?} after the broker came back", back.elapsed());
}
