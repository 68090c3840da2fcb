//! No secret in `check-config`, a log line, `/readyz` or an error answer: every password the
//! process holds (Kafka SASL, PostgreSQL, SMTP) set through the environment, a Kafka that
//! refuses the connection, and everything the process says grepped for them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{fixture, free_port, unique, Proc, Stack};

const SECRETS: [(&str, &str); 3] = [
    ("ALERTPIPE_KAFKA_PASSWORD", "kafka-pw-4f1d2c"),
    ("ALERTPIPE_DATABASE_PASSWORD", "pg-pw-9a8b7c"),
    ("ALERTPIPE_SMTP_PASSWORD", "smtp-pw-3e5d6f"),
];

fn alertpipe(args: &[&str], port: u16) -> Command {
    let stack = Stack::get();
    let mut c = Command::new(env!("CARGO_BIN_EXE_alertpipe"));
    c.args(args)
        // SASL_SSL to the stack's plaintext broker: every connection fails.
        .env(
            "ALERTPIPE__KAFKA__BROKERS",
            stack.var("STACK_KAFKA_BROKERS"),
        )
        .env("ALERTPIPE__KAFKA__SECURITY__PROTOCOL", "sasl_ssl")
        .env("ALERTPIPE__KAFKA__SECURITY__USERNAME", "alertpipe")
        .env("ALERTPIPE__KAFKA__ALERTS_TOPIC", unique("alerts"))
        .env("ALERTPIPE__NOTIFY__SMTP__USERNAME", "alertpipe@example.com")
        .env("ALERTPIPE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ALERTPIPE__TELEMETRY__LOG_FORMAT", "json");
    for (k, v) in SECRETS {
        c.env(k, v);
    }
    c
}

fn assert_clean(what: &str, text: &str) {
    for (name, secret) in SECRETS {
        assert!(!text.contains(secret), "{name}'s value in {what}:\n{text}");
    }
}

#[actix_web::test]
async fn no_secret_in_check_config_logs_readiness_or_errors() {
    let out = alertpipe(&["check-config"], 0).output().expect("runs");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("********"),
        "secrets are masked, not absent:\n{shown}"
    );
    assert_clean("check-config", &shown);

    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alertpipe.log");
    let mut proc = Proc {
        child: alertpipe(&["serve", "--roles", "ingest"], port)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("alertpipe serves"),
    };
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let readiness = loop {
        if let Ok(mut r) = client.get(format!("{base}/readyz")).send().await {
            let body = String::from_utf8_lossy(&r.body().await.unwrap_or_default()).into_owned();
            if r.status().as_u16() == 503 && body.contains("broker connection") {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "never not-ready with a cause");
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    };
    assert_clean("/readyz", &readiness);
    let mut r = client
        .post(format!("{base}/api/v1/alerts"))
        .insert_header(("content-type", "application/json"))
        .send_body(fixture("alertmanager/firing-critical.json"))
        .await
        .expect("webhook answers");
    assert_eq!(r.status().as_u16(), 503);
    let answer = String::from_utf8_lossy(&r.body().await.unwrap_or_default()).into_owned();
    assert_clean("the webhook's 503", &answer);
    proc.kill9();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("kafka client error"),
        "the failures were logged:\n{logged}"
    );
    assert_clean("the log", &logged);
}
