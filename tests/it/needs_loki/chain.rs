//! The whole chain with every real program that can run here: a service writes log lines ->
//! Promtail (shipped config) -> Loki (shipped config; its ruler evaluating the shipped rules)
//! -> Alertmanager (shipped config) -> alertpipe -> Kafka -> PostgreSQL row + SMTP mail.
//! Only timings are shortened (rule interval 1 s, no pending period, group_wait 1 s).

use std::collections::BTreeMap;
use std::time::Duration;

use alertpipe::config::{AuthMode, Role, Secret};
use chrono::{SecondsFormat, Utc};

use crate::support::logs::{Loki, Promtail};
use crate::support::{eventually, free_port, start_alertmanager, unique, TestApp, TestDb};

const TOKEN: &str = "chain-token";

/// (alertname, service, severity, cluster, resolved) of every row in `alerts`.
fn rows(db: &TestDb) -> Vec<(String, String, String, String, bool)> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        alertname: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        service: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        severity: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        cluster: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        resolved: bool,
    }
    let mut c = db.conn();
    diesel::sql_query(
        "SELECT COALESCE(alertname, '') AS alertname, service, severity, \
         COALESCE(cluster, '') AS cluster, COALESCE(resolved, false) AS resolved \
         FROM alerts ORDER BY id",
    )
    .load::<Row>(&mut c)
    .expect("alerts readable")
    .into_iter()
    .map(|r| (r.alertname, r.service, r.severity, r.cluster, r.resolved))
    .collect()
}

#[actix_web::test]
async fn db_errors_in_a_log_file_become_one_mail_and_one_history_row_per_alert() {
    let app = TestApp::builder()
        .with_roles(&[Role::Persist, Role::Notify])
        .configure(|c| {
            c.auth.mode = AuthMode::Bearer;
            c.auth.secret = Secret::new(TOKEN);
        })
        .spawn()
        .await;
    let (db, smtp) = (app.db(), app.smtp());
    let dir = tempfile::tempdir().unwrap();
    let am_port = free_port();
    let _am = start_alertmanager(dir.path(), am_port, &app.url, TOKEN, None);
    let loki = Loki::start_with_ruler(&format!("http://127.0.0.1:{am_port}"));
    let promtail = Promtail::start_with_token(&loki.url, &app.url, TOKEN);

    // A service logging, then failing to reach its database (JSON and classic lines).
    let svc = unique("chain").replace('-', "");
    let now = Utc::now();
    let mut lines = String::new();
    for i in 0..6 {
        let ts =
            (now + chrono::Duration::milliseconds(i)).to_rfc3339_opts(SecondsFormat::Nanos, true);
        lines.push_str(&format!(
            "{{\"ts\":\"{ts}\",\"level\":\"info\",\"message\":\"payment {i} accepted\"}}\n"
        ));
    }
    for i in 0..3 {
        let ts = (now + chrono::Duration::milliseconds(10 + i))
            .to_rfc3339_opts(SecondsFormat::Nanos, true);
        lines.push_str(&format!(
            "{{\"ts\":\"{ts}\",\"level\":\"error\",\"message\":\"DB connection failed\",\"trace_id\":\"t{i}\"}}\n"
        ));
    }
    lines.push_str(&format!(
        "{} ERROR [payment] DB connection failed: timeout after 5s\n",
        now.format("%Y-%m-%d %H:%M:%S,%3f")
    ));
    promtail.append(&svc, "app.log", lines.as_bytes());

    // Both log rules fire for this service: DB failures (4 > 2) and the error rate (40%).
    let want: BTreeMap<&str, &str> = [
        ("DBConnectionFailed", "critical"),
        ("HighErrorRate", "critical"),
    ]
    .into();
    let n = want.len();
    let got = eventually(Duration::from_secs(90), "a history row per alert", || {
        let r = rows(db);
        async move { (r.len() >= n).then_some(r) }
    })
    .await;
    let mails = smtp.wait_mails(2).await;
    // Give a wrong repeat (ruler re-evaluations, Alertmanager flushes) time to show.
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    let got_now = rows(db);
    assert_eq!(got_now.len(), got.len(), "no second row: {got_now:?}");
    let names: BTreeMap<&str, &str> = got
        .iter()
        .map(|(name, _, sev, _, _)| (name.as_str(), sev.as_str()))
        .collect();
    assert_eq!(names, want, "{got:?}");
    for (name, service, _, cluster, resolved) in &got {
        assert_eq!(
            service, &svc,
            "{name}: the service label from the log directory"
        );
        assert_eq!(
            cluster, "prod",
            "{name}: cluster from Promtail's static label"
        );
        assert!(!resolved, "{name}: still firing");
    }

    let mails = if smtp.mails().len() > mails.len() {
        smtp.mails()
    } else {
        mails
    };
    assert_eq!(mails.len(), 2, "one mail per alert: {mails:#?}");
    let title = {
        let mut c = svc.chars();
        let first = c.next().unwrap().to_uppercase().to_string();
        first + c.as_str()
    };
    let subjects: Vec<&str> = mails
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert!(
        subjects.contains(&format!("[CRITICAL] {title} Service Failure").as_str()),
        "the seed's subject: {subjects:?}"
    );
    let db_mail = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap().contains("Service Failure"))
        .unwrap();
    let text = db_mail["text"].as_str().unwrap();
    assert!(text.contains(&svc), "mail names the service: {text}");
    assert!(
        text.contains("DB connection failed"),
        "mail says what failed: {text}"
    );
}
