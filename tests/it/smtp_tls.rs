//! Mail as Outlook takes it (smtp.office365.com:587): STARTTLS, then AUTH, against a real SMTP
//! server doing the same (aiosmtpd with a certificate the test makes, auth required). The mail
//! arrives; a wrong password is a dead letter with the server's answer after one attempt (no
//! retry storm); a server that offers no STARTTLS is refused, nothing goes in plaintext.

use std::time::Duration;

use alertpipe::config::{Secret, SmtpTls};

use crate::support::app::notify;
use crate::support::smtp::Smtp;
use crate::support::{eventually, fixture, spawn_app, TestApp, TestDb};

const USER: &str = "alertpipe@example.com";
const PASSWORD: &str = "correct-mailbox-password";

/// Dead letters of the notify stage: (attempts, reason).
fn dead_letters(db: &TestDb) -> Vec<(i32, String)> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
        #[diesel(sql_type = diesel::sql_types::Text)]
        reason: String,
    }
    diesel::sql_query("SELECT attempts, reason FROM dead_letters WHERE stage = 'notify'")
        .load::<R>(&mut db.conn())
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.attempts, r.reason))
        .collect()
}

async fn app_for(
    db: &TestDb,
    smtp: &Smtp,
    ca: Option<std::path::PathBuf>,
    password: &str,
) -> TestApp {
    let password = password.to_owned();
    spawn_app(|c| {
        notify(db, smtp.port, None)(c);
        c.notify.smtp.host = "localhost".into();
        c.notify.smtp.tls = SmtpTls::Starttls;
        c.notify.smtp.ca_file = ca;
        c.notify.smtp.username = USER.into();
        c.notify.smtp.password = Secret::new(password);
        c.notify.max_attempts = 3;
    })
    .await
}

async fn post(app: &TestApp) {
    let (status, _, body) = app
        .post_alerts(fixture("alertmanager/firing-critical.json"), None)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn starttls_then_auth_delivers_the_mail() {
    let smtp = Smtp::start_secure(USER, PASSWORD);
    let db = TestDb::new();
    let ca = smtp.pki.as_ref().map(|p| p.ca());
    let app = app_for(&db, &smtp, ca, PASSWORD).await;
    post(&app).await;
    let mails = smtp.wait_mails(1).await;
    assert!(mails[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("[CRITICAL]"));
}

#[actix_web::test]
async fn a_wrong_password_is_one_dead_letter_with_the_servers_answer() {
    let smtp = Smtp::start_secure(USER, PASSWORD);
    let db = TestDb::new();
    let ca = smtp.pki.as_ref().map(|p| p.ca());
    let app = app_for(&db, &smtp, ca, "not-the-password").await;
    post(&app).await;
    let dead = eventually(Duration::from_secs(30), "the dead letter", || async {
        let d = dead_letters(&db);
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (attempts, reason) = &dead[0];
    assert_eq!(*attempts, 1, "refused for good: no retries ({reason})");
    assert!(reason.contains("535"), "the server's answer: {reason}");
    assert!(!reason.contains("not-the-password"), "{reason}");
    assert!(smtp.mails().is_empty());
}

#[actix_web::test]
async fn a_server_without_starttls_is_refused_and_nothing_goes_in_plaintext() {
    let smtp = Smtp::start(); // plaintext only, no STARTTLS offered
    let db = TestDb::new();
    let app = app_for(&db, &smtp, None, PASSWORD).await;
    post(&app).await;
    let dead = eventually(Duration::from_secs(60), "the dead letter", || async {
        let d = dead_letters(&db);
        (!d.is_empty()).then_some(d)
    })
    .await;
    let (_, reason) = &dead[0];
    assert!(
        reason.to_ascii_lowercase().contains("tls"),
        "the reason names TLS: {reason}"
    );
    assert!(smtp.mails().is_empty(), "nothing sent in plaintext");
}
