//! What the senders (MailActor, TeamsActor) take and answer: the contract between the
//! throttle and the senders.

use actix::Message;

use crate::config::ReceiverConfig;
use crate::domain::AlertEvent;

/// What MailActor and TeamsActor take: one alert, or several as one digest.
#[derive(Message, Clone)]
#[rtype(result = "Result<Delivered, NotifyError>")]
pub struct Deliver {
    pub receiver: ReceiverConfig,
    pub events: Vec<AlertEvent>,
}

/// Done with it: sent, or kept in the dead letters. Either way the offset may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    DeadLettered,
}

/// Neither sent nor dead-lettered (the dead-letter store itself failed): retry the batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("notification neither sent nor dead-lettered: {0}")]
pub struct NotifyError(pub String);
