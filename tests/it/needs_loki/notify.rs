//! A mail's log lines read from the stack's real Loki.

use serde_json::json;

use crate::notify::mail_of;
use crate::support::app::notify;
use crate::support::smtp::Smtp;
use crate::support::{spawn_app, unique, TestDb};

#[actix_web::test]
async fn an_alert_from_a_logql_rule_mails_the_lines_behind_it() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let loki = crate::support::Stack::get()
        .var("STACK_LOKI_URL")
        .to_owned();
    let service = unique("ctxsvc").replace('-', "_");
    // Lines in the stack's real Loki: 14 matching the rule's filter (one with markup, one
    // overlong), and others that do not match.
    let now = chrono::Utc::now();
    let mut values = Vec::new();
    for i in 0..20i64 {
        let ts = (now - chrono::Duration::seconds(60 - i))
            .timestamp_nanos_opt()
            .unwrap();
        let line = match i {
            3 => "DB connection failed: <script>alert(1)</script>".to_owned(),
            17 => format!("DB connection failed: {}", "x".repeat(1000)),
            _ if i % 5 == 4 => format!("request {i} ok"),
            _ => format!("DB connection failed: attempt {i} refused by 10.0.0.5:5432"),
        };
        values.push(json!([ts.to_string(), line]));
    }
    let push = json!({"streams": [{"stream": {"service": service, "job": format!("{service}-service")}, "values": values}]});
    let resp = awc::Client::default()
        .post(format!("{loki}/loki/api/v1/push"))
        .send_json(&push)
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "push to loki: {}",
        resp.status()
    );

    let app = spawn_app(|c| {
        notify(&db, smtp.port, None)(c);
        c.notify.loki_url = Some(loki.clone());
        c.notify.log_lines = 10;
        c.notify.log_line_chars = 200;
    })
    .await;
    // What Loki's ruler sends: the rule's expression in the generator URL.
    let expr = r#"(sum by (cluster, service) (count_over_time({job=~".+"} |= "DB connection failed" [5m]))) > 2"#;
    let enc: String = expr
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = json!({"version": "4", "status": "firing", "receiver": "x", "groupKey": "g", "alerts": [{
        "status": "firing",
        "labels": {"alertname": "DBConnectionFailed", "service": service, "severity": "critical", "cluster": "prod"},
        "annotations": {"summary": "Payment Service Failure"},
        "startsAt": now.to_rfc3339(), "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": format!("http://loki:3100/graph?g0.expr={enc}&g0.tab=1"),
        "fingerprint": "c0ffee0000000001"}]});
    let (html, text) = &mail_of(&app, &smtp, &body).await;
    assert!(html.contains("Log lines (10, newest last)"), "{html}");
    assert!(
        !html.contains("request 9 ok") && !text.contains("ok\n"),
        "only matching lines"
    );
    assert!(
        text.contains("attempt 18 refused"),
        "the newest line: {text}"
    );
    assert!(
        !text.contains("attempt 2 refused"),
        "only the newest 10: {text}"
    );
    assert!(!html.contains("<script>"), "escaped");
    assert!(
        text.contains(&format!("DB connection failed: {}…", "x".repeat(178))),
        "capped: {text}"
    );
    assert!(html.contains("Full query in Grafana Explore"));
    assert!(text.contains(&format!(
        r#"{{service="{service}", job=~".+"}} |= "DB connection failed""#
    )));
}
