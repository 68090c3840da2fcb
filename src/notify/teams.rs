//! TeamsActor: posts the Adaptive Card to a Teams Workflows webhook. 200 and 202 are success;
//! 429 honours Retry-After; 5xx and connection errors are retried; other 4xx are permanent.
//! Paced to at most `max_per_s` requests per second per webhook. Same dead-letter path as mail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::card;
use super::context::{self, LogSource};
use super::dead_letter::{settle, DeadLetterActor, DeadNotification};
use super::deliver::{Deliver, Delivered, NotifyError};
use crate::domain::AlertStatus;
use crate::notify::retry::{Failure, RetryPolicy};

pub struct TeamsActor {
    client: awc::Client,
    grafana_url: String,
    policy: RetryPolicy,
    dead: Addr<DeadLetterActor>,
    interval: Duration,
    next_slot: HashMap<String, Instant>,
    /// Where the log lines behind an alert are read (`notify.loki_url`), if anywhere.
    logs: Option<LogSource>,
}

impl TeamsActor {
    /// Cards of single firing alerts from LogQL rules carry the lines behind them.
    pub fn with_log_lines(mut self, src: Option<LogSource>) -> Self {
        self.logs = src;
        self
    }

    pub fn new(
        grafana_url: String,
        policy: RetryPolicy,
        dead: Addr<DeadLetterActor>,
        max_per_s: u32,
    ) -> Self {
        TeamsActor {
            client: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
            grafana_url,
            policy,
            dead,
            interval: Duration::from_secs(1) / max_per_s.max(1),
            next_slot: HashMap::new(),
            logs: None,
        }
    }

    /// When the next request to `url` may go: one every `interval`.
    fn slot(&mut self, url: &str) -> Instant {
        let now = Instant::now();
        let at = self
            .next_slot
            .get(url)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        self.next_slot.insert(url.to_owned(), at + self.interval);
        at
    }
}

/// One POST, classified.
pub async fn post_once(
    client: &awc::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), Failure> {
    match client.post(url).send_json(body).await {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let _ = r.body().limit(64 * 1024).await;
            match status {
                200..=299 => Ok(()),
                429 => Err(Failure::Transient {
                    reason: "429 Too Many Requests".into(),
                    after: r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs),
                }),
                500..=599 | 408 => Err(Failure::Transient {
                    reason: format!("HTTP {status}"),
                    after: None,
                }),
                _ => Err(Failure::Permanent(format!("HTTP {status}"))),
            }
        }
        Err(e) => Err(Failure::Transient {
            reason: e.to_string(),
            after: None,
        }),
    }
}

impl Actor for TeamsActor {
    type Context = Context<Self>;
}

impl Handler<Deliver> for TeamsActor {
    type Result = ResponseFuture<Result<Delivered, NotifyError>>;

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) -> Self::Result {
        let url = msg.receiver.webhook_url.expose().to_owned();
        let slot = self.slot(&url);
        let (client, policy, dead) = (self.client.clone(), self.policy, self.dead.clone());
        let (grafana, logs) = (self.grafana_url.clone(), self.logs.clone());
        Box::pin(async move {
            let lines = match (&msg.events[..], &logs) {
                ([e], Some(src)) if e.status == AlertStatus::Firing => match context::log_query(e) {
                    Some(q) => context::fetch(&client, src, &q, e.starts_at)
                        .await
                        .inspect_err(|err| tracing::warn!(error = %err, query = %q, "log lines for the card not read; sending without"))
                        .ok(),
                    None => None,
                },
                _ => None,
            };
            let body = card::message_with(&msg.events, &grafana, lines.as_ref());
            let outcome = if url.is_empty() {
                Err((
                    0,
                    format!(
                        "receiver {} has no webhook URL (set its webhook_url_env)",
                        msg.receiver.name
                    ),
                ))
            } else {
                actix_web::rt::time::sleep_until(slot.into()).await;
                policy
                    .run(|_| post_once(&client, &url, &body))
                    .await
                    .map_err(|g| (g.attempts, g.reason))
            };
            let item = DeadNotification {
                receiver: msg.receiver.name.clone(),
                events: msg.events,
            };
            settle(&dead, "teams", item, outcome).await
        })
    }
}
