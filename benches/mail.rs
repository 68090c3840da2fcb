//! Mail throughput to the local stack's SMTP server (aiosmtpd storing to a Maildir):
//!   cargo bench --bench mail           (MAILS=400 RUNS=3 POOL=8)
//! The same rendered alert mails sent with lettre's pooled transport (POOL connections) and
//! with a single connection, in the same run.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use alertpipe::config::SmtpConfig;
use alertpipe::domain::parse_webhook;
use alertpipe::notify::deliver::mail::{mailboxes, message, send_once, thread_of, transport};
use alertpipe::notify::render::alert_mail;
use futures_util::StreamExt;

fn main() {
    alertpipe::alloc::tune();
    let stack = common::stack();
    let n = common::env_usize("MAILS", 400);
    let runs = common::env_usize("RUNS", 3);
    let pool = common::env_usize("POOL", 8) as u32;
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/alertmanager/firing-critical.json"
    ))
    .unwrap();
    let event = parse_webhook(&body).unwrap().remove(0);
    let mail = alert_mail(&event, "https://grafana.example.com").unwrap();
    let from = "alertpipe <alertpipe@example.com>".parse().unwrap();
    let to = mailboxes(&["oncall@example.com".into()]).unwrap();
    let thread = thread_of("oncall", std::slice::from_ref(&event), "example.com");
    let msg = message(&from, &to, &mail, &thread).unwrap();
    println!(
        "mail benchmark: {n} mails of {} bytes to aiosmtpd :{}, median of {runs}",
        msg.formatted().len(),
        stack["STACK_SMTP_PORT"]
    );
    let rt = actix_web::rt::System::new();
    let rate = |pool_size: u32, concurrency: usize| {
        let cfg = SmtpConfig {
            host: stack["STACK_SMTP_HOST"].clone(),
            port: stack["STACK_SMTP_PORT"].parse().unwrap(),
            pool_size,
            ..Default::default()
        };
        common::median_of(runs, || {
            rt.block_on(async {
                // lettre's pool spawns tasks when made and dropped: inside the runtime.
                let t = transport(&cfg).unwrap();
                let started = Instant::now();
                let sent = futures_util::stream::iter(0..n)
                    .map(|_| send_once(&t, msg.clone()))
                    .buffer_unordered(concurrency)
                    .filter(|r| std::future::ready(r.is_ok()))
                    .count()
                    .await;
                assert_eq!(sent, n, "every mail accepted");
                n as f64 / started.elapsed().as_secs_f64()
            })
        })
    };
    let single = rate(1, 1);
    let pooled = rate(pool, pool as usize * 2);
    println!("one connection            {single:>8.0} mails/s");
    println!(
        "pooled ({pool} connections)  {pooled:>8.0} mails/s   ({:.1}x)",
        pooled / single
    );
}
