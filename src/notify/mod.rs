//! The notify stage: `alerts` -> routing -> outbox (PostgreSQL) -> OutboxActor -> ThrottleActor -> MailActor (SMTP) / TeamsActor
//! (Teams webhook); failed sends -> DeadLetterActor -> `alerts.dlq` + `dead_letters`.
//! `start` wires it; `sink` is what the consumer hands each batch to.

pub mod card;
pub mod context;
pub mod deliver;
pub mod outbox;
pub mod render;
pub mod replay;
pub mod route;
pub mod sink;
pub mod throttle;

pub use deliver::{Deliver, Delivered, NotifyError};
pub use route::route;

use std::sync::Arc;

use actix::Actor;
use anyhow::Context as _;

use crate::config::{Config, LogSource};
use crate::kafka::consumer::ConsumerSettings;
use crate::stage::{Drain, Stage, StageDeps};
use deliver::dead_letter::DeadLetterActor;
use deliver::mail::MailSender;
use deliver::teams::TeamsSender;
use deliver::{Delivery, MailActor, TeamsActor};
use outbox::OutboxActor;
use throttle::{Rate, ThrottleActor};

/// A Teams webhook request's bound (connect, TLS and answer); Loki's are `LogSource::timeout`.
const TEAMS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// DeadLetterActor, MailActor, TeamsActor, ThrottleActor, OutboxActor, and the
/// `alertpipe-notify` consumer: route each alert and enqueue its notifications in the outbox;
/// the OutboxActor sends them through the throttle and records each outcome.
pub fn start(cfg: &Config, deps: &StageDeps) -> anyhow::Result<Stage> {
    let pool = deps.db("notify")?;
    let receivers: Vec<(String, &'static str)> = cfg
        .notify
        .receivers
        .iter()
        .map(|r| {
            let kind = match r.kind {
                crate::config::ReceiverKind::Email => "email",
                crate::config::ReceiverKind::Teams => "teams",
            };
            (r.name.clone(), kind)
        })
        .collect();
    crate::metrics::init_notify(&receivers);
    let n = cfg.notify.clone();
    let dead =
        DeadLetterActor::new(pool.clone(), deps.poison.producer(), n.dlq_topic.clone()).start();
    let policy = n.retry_policy();
    let mail_sender = MailSender::new(&n.smtp, n.grafana_url.clone()).context("notify.smtp")?;
    let https = deliver::https::client(n.https_ca_file.as_deref(), TEAMS_TIMEOUT)?;
    let teams_sender = TeamsSender::new(https.clone(), n.grafana_url.clone(), n.teams_max_per_s);
    let logs = log_source(cfg);
    let mail = MailActor::new(
        Delivery::new(mail_sender, policy).with_log_lines(logs.clone(), https.clone()),
        dead.clone(),
    )
    .start();
    let teams = TeamsActor::new(
        Delivery::new(teams_sender, policy).with_log_lines(logs, https),
        dead,
    )
    .start();
    let throttle = ThrottleActor::new(
        n.receivers.clone(),
        mail.recipient(),
        teams.recipient(),
        Rate {
            burst: n.receiver_burst,
            per_minute: n.receiver_per_minute,
        },
        Rate {
            burst: n.rate_burst,
            per_minute: n.rate_per_minute,
        },
        n.digest_window(),
    )
    .start();
    let settings = ConsumerSettings::new(
        &cfg.kafka,
        &n.group,
        &cfg.kafka.alerts_topic,
        n.batch_size,
        n.linger(),
    )
    .yielding_to(deps.foreground.clone());
    let outbox = OutboxActor::new(pool.clone(), throttle, n.outbox_in_hand).start();
    let sink = sink::NotifySink {
        routes: Arc::new(n.routes),
        pool,
        outbox: outbox.clone(),
    };
    let health = crate::kafka::consumer::spawn(settings, sink, deps.poison.clone());
    // On shutdown, after the consumer: digests go out now and every send in hand is recorded;
    // what was never claimed stays in the outbox for the next process.
    let drain: Drain = Box::new(move || {
        Box::pin(async move {
            let _ = outbox.send(outbox::Drain).await;
        })
    });
    Ok(Stage {
        health,
        drain: Some(drain),
    })
}

/// Where the lines behind an alert are read: Loki (`notify.loki_url`), else (or without Loki)
/// the archive's files; None when neither is configured.
pub fn log_source(cfg: &Config) -> Option<LogSource> {
    cfg.notify
        .log_source()
        .map(|s| LogSource {
            archive: cfg.archive.root().ok(),
            ..s
        })
        .filter(|s| s.loki_url.is_some() || s.archive.is_some())
}
