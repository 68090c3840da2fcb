//! Teams: posts the Adaptive Card to a Teams Workflows webhook. 200 and 202 are success;
//! 429 honours Retry-After; 5xx and connection errors are retried; other 4xx are permanent.
//! Paced to at most `max_per_s` requests per second per webhook.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::retry::Failure;
use super::Sender;
use crate::config::ReceiverConfig;
use crate::domain::AlertEvent;
use crate::notify::card;
use crate::notify::context::LogContext;

pub struct TeamsSender {
    client: awc::Client,
    grafana_url: String,
    interval: Duration,
    /// When the next request to each webhook may go.
    next_slot: RefCell<HashMap<String, Instant>>,
}

impl TeamsSender {
    /// `client`: from [`super::https::client`] (https, with notify's trust anchors).
    pub fn new(client: awc::Client, grafana_url: String, max_per_s: u32) -> Self {
        TeamsSender {
            client,
            grafana_url,
            interval: Duration::from_secs(1) / max_per_s.max(1),
            next_slot: RefCell::new(HashMap::new()),
        }
    }
}

/// A card and the webhook it goes to.
pub struct Post {
    url: String,
    body: serde_json::Value,
}

impl Sender for TeamsSender {
    const KIND: &'static str = "teams";
    type Message = Post;

    fn build(
        &self,
        receiver: &ReceiverConfig,
        events: &[AlertEvent],
        lines: Option<&LogContext>,
    ) -> Result<Post, String> {
        let url = receiver.webhook_url.expose();
        if url.is_empty() {
            return Err(format!(
                "receiver {} has no webhook URL (set its webhook_url_env)",
                receiver.name
            ));
        }
        Ok(Post {
            url: url.to_owned(),
            body: card::message_with(events, &self.grafana_url, lines),
        })
    }

    async fn send_once(&self, post: &Post) -> Result<(), Failure> {
        post_once(&self.client, &post.url, &post.body).await
    }

    /// One request every `interval` per webhook.
    fn slot(&self, receiver: &ReceiverConfig) -> Option<Instant> {
        let url = receiver.webhook_url.expose();
        let now = Instant::now();
        let mut slots = self.next_slot.borrow_mut();
        let at = slots.get(url).copied().filter(|t| *t > now).unwrap_or(now);
        slots.insert(url.to_owned(), at + self.interval);
        Some(at)
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
