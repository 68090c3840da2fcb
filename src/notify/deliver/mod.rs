//! One way to deliver a notification, used by the delivery worker (through the throttle and
//! the sender actors) and by `alertpipe dlq replay` alike: the lines behind the alert, the
//! rendering, the send with bounded retries, and the dead letter when it gives up.
//!
//! A [`Sender`] (SMTP in `mail.rs`, a Teams webhook in `teams.rs`) only builds its message and
//! makes one attempt; [`Delivery`] does the rest the same way for both; [`SenderActor`] runs a
//! delivery per [`Deliver`] message and settles its outcome (`dead_letter.rs`).

pub mod dead_letter;
pub mod https;
pub mod mail;
pub mod retry;
pub mod teams;

use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;

use crate::config::ReceiverConfig;
pub use crate::db::notifications::Delivered;
use crate::domain::{AlertEvent, AlertStatus};
use crate::metrics as m;
use crate::notify::context::{self, LogContext, LogSource};
use dead_letter::{DeadLetter, DeadLetterActor, DeadNotification};
use retry::{Failure, RetryPolicy};

/// What MailActor and TeamsActor take: one alert, or several as one digest.
#[derive(Message, Clone)]
#[rtype(result = "Result<Delivered, NotifyError>")]
pub struct Deliver {
    pub receiver: ReceiverConfig,
    pub events: Vec<AlertEvent>,
}

/// Neither sent nor dead-lettered (the dead-letter store itself failed): retry it later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("notification neither sent nor dead-lettered: {0}")]
pub struct NotifyError(pub String);

/// A way to reach a receiver: builds the message and makes one attempt.
pub trait Sender: 'static {
    /// `email` or `teams`: metrics and logs.
    const KIND: &'static str;
    type Message: 'static;

    /// The message for `receiver` (rendering included); Err: it cannot be built, which no
    /// retry changes (a bad address, a receiver without a webhook URL).
    fn build(
        &self,
        receiver: &ReceiverConfig,
        events: &[AlertEvent],
        lines: Option<&LogContext>,
    ) -> Result<Self::Message, String>;

    /// One attempt, its failure classified for the retries.
    fn send_once(&self, msg: &Self::Message) -> impl Future<Output = Result<(), Failure>>;

    /// When the first attempt to `receiver` may go (Teams paces each webhook); None: now.
    /// Called once per notification, before anything else, so the order of calls holds.
    fn slot(&self, _receiver: &ReceiverConfig) -> Option<Instant> {
        None
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    Sent {
        attempts: u32,
    },
    /// Retries exhausted, refused for good, or not buildable (0 attempts).
    GaveUp {
        attempts: u32,
        reason: String,
    },
}

/// A sender with the retry policy and where the log lines behind an alert are read.
pub struct Delivery<S> {
    sender: S,
    policy: RetryPolicy,
    logs: Option<LogSource>,
    client: awc::Client,
}

impl<S: Sender> Delivery<S> {
    pub fn new(sender: S, policy: RetryPolicy) -> Self {
        Delivery {
            sender,
            policy,
            logs: None,
            client: awc::Client::default(),
        }
    }

    /// Notifications of single firing alerts from LogQL rules carry the lines behind them,
    /// asked of Loki with `client` (from [`https::client`]).
    pub fn with_log_lines(mut self, src: Option<LogSource>, client: awc::Client) -> Self {
        self.logs = src;
        self.client = client;
        self
    }

    /// One notification, through to its end.
    pub async fn attempt(&self, receiver: &ReceiverConfig, events: &[AlertEvent]) -> Attempted {
        let slot = self.sender.slot(receiver);
        let lines = self.lines(events).await;
        let msg = match self.sender.build(receiver, events, lines.as_ref()) {
            Ok(m) => m,
            Err(reason) => {
                return Attempted::GaveUp {
                    attempts: 0,
                    reason,
                }
            }
        };
        if let Some(at) = slot {
            actix_web::rt::time::sleep_until(at.into()).await;
        }
        match self.policy.run(|_| self.sender.send_once(&msg)).await {
            Ok(attempts) => Attempted::Sent { attempts },
            Err(g) => Attempted::GaveUp {
                attempts: g.attempts,
                reason: g.reason,
            },
        }
    }

    /// The lines behind a single firing alert from a LogQL rule; best effort.
    async fn lines(&self, events: &[AlertEvent]) -> Option<LogContext> {
        let ([e], Some(src)) = (events, &self.logs) else {
            return None;
        };
        if e.status != AlertStatus::Firing {
            return None;
        }
        let q = context::log_query(e)?;
        context::fetch(&self.client, src, &q, e.starts_at)
            .await
            .inspect_err(|err| {
                tracing::warn!(kind = S::KIND, error = %err, query = %q,
                    "log lines for the notification not read; sending without")
            })
            .ok()
    }
}

/// Runs a [`Delivery`] per [`Deliver`] and settles it: MailActor and TeamsActor.
pub struct SenderActor<S> {
    delivery: Rc<Delivery<S>>,
    dead: Addr<DeadLetterActor>,
}

pub type MailActor = SenderActor<mail::MailSender>;
pub type TeamsActor = SenderActor<teams::TeamsSender>;

impl<S: Sender> SenderActor<S> {
    pub fn new(delivery: Delivery<S>, dead: Addr<DeadLetterActor>) -> Self {
        SenderActor {
            delivery: Rc::new(delivery),
            dead,
        }
    }
}

impl<S: Sender> Actor for SenderActor<S> {
    type Context = Context<Self>;
}

impl<S: Sender> Handler<Deliver> for SenderActor<S> {
    type Result = ResponseFuture<Result<Delivered, NotifyError>>;

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) -> Self::Result {
        let (delivery, dead) = (self.delivery.clone(), self.dead.clone());
        Box::pin(async move {
            let outcome = delivery.attempt(&msg.receiver, &msg.events).await;
            let item = DeadNotification {
                receiver: msg.receiver.name.clone(),
                events: msg.events,
            };
            settle(&dead, S::KIND, item, outcome).await
        })
    }
}

/// How every delivery ends: counted as sent (with its retries), or kept by the
/// DeadLetterActor. Err only when the dead-letter store itself failed (the notification then
/// stays in the outbox and is tried again).
pub async fn settle(
    dead: &Addr<DeadLetterActor>,
    kind: &'static str,
    item: DeadNotification,
    outcome: Attempted,
) -> Result<Delivered, NotifyError> {
    match outcome {
        Attempted::Sent { attempts } => {
            metrics::counter!(m::NOTIFY_SENT, "receiver" => item.receiver, "kind" => kind)
                .increment(1);
            if attempts > 1 {
                metrics::counter!(m::NOTIFY_SEND_RETRIES, "kind" => kind)
                    .increment(u64::from(attempts - 1));
            }
            Ok(Delivered::Sent)
        }
        Attempted::GaveUp { attempts, reason } => {
            dead.send(DeadLetter {
                item,
                attempts,
                reason,
            })
            .await
            .map_err(|e| NotifyError(e.to_string()))?
            .map_err(|e| NotifyError(e.to_string()))?;
            Ok(Delivered::DeadLettered)
        }
    }
}
