//! The notify stage's sink: an `alerts` message decodes to an alert event; a batch is routed
//! and its notifications enqueued in the PostgreSQL outbox (what is done or queued already
//! adds nothing). The offsets are committed then; `outbox::OutboxActor` sends.

use std::future::Future;
use std::sync::Arc;

use actix::Addr;

use crate::config::RouteConfig;
use crate::db::outbox::Outgoing;
use crate::db::{DbError, PgPool};
use crate::domain::AlertEvent;
use crate::kafka::consumer::{Commit, RawMessage};
use crate::kafka::consumer::{Decoded, Retryable, Sink, Undecodable};

use super::outbox::{OutboxActor, Wake};
use super::route::route;

pub struct NotifySink {
    pub routes: Arc<Vec<RouteConfig>>,
    pub pool: PgPool,
    pub outbox: Addr<OutboxActor>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifySinkError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("notification outbox: {0}")]
    Join(String),
}

impl Retryable for NotifySinkError {
    /// Enqueueing fails only on the database: worth retrying (the batch adds nothing twice).
    fn is_transient(&self) -> bool {
        !matches!(self, NotifySinkError::Db(DbError::Migration(_)))
    }
}

impl Sink for NotifySink {
    type Item = AlertEvent;
    type Error = NotifySinkError;
    const STAGE: &'static str = "notify";

    fn decode(&self, msg: &RawMessage) -> Result<AlertEvent, Undecodable> {
        serde_json::from_slice(&msg.payload)
            .map_err(|e| Undecodable(format!("not an alert event: {e}")))
    }

    fn write(
        &self,
        batch: Arc<Vec<Decoded<AlertEvent>>>,
    ) -> impl Future<Output = Result<Commit, NotifySinkError>> + 'static {
        enqueue_batch(
            batch,
            self.routes.clone(),
            self.pool.clone(),
            self.outbox.clone(),
        )
    }
}

/// The notifications of one consumer batch of the `alerts` topic, one per receiver and alert
/// state, in Kafka order.
pub fn notifications(batch: &[Decoded<AlertEvent>], routes: &[RouteConfig]) -> Vec<Outgoing> {
    use crate::metrics as m;
    let mut out = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for msg in batch {
        let e = &msg.item;
        let receivers = route(e, routes);
        if receivers.is_empty() {
            metrics::counter!(m::NOTIFY_UNROUTED, "reason" => "no_route").increment(1);
        }
        for r in receivers {
            let key = notification_key(r, e);
            if keys.insert(key.clone()) {
                // An `AlertEvent` always serializes; the decoded event, not the raw payload,
                // is kept so the worker reads exactly what routing saw.
                let event = serde_json::to_vec(e).unwrap_or_default();
                out.push(Outgoing {
                    key,
                    receiver: r.to_owned(),
                    event,
                });
            }
        }
    }
    out
}

/// One consumer batch into the outbox; Ok once it is durable there, so the offsets can be
/// committed. Sending is the OutboxActor's, woken here.
pub async fn enqueue_batch(
    batch: Arc<Vec<Decoded<AlertEvent>>>,
    routes: Arc<Vec<RouteConfig>>,
    pool: PgPool,
    outbox: Addr<OutboxActor>,
) -> Result<Commit, NotifySinkError> {
    let work = notifications(&batch, &routes);
    if work.is_empty() {
        return Ok(Commit::Batch);
    }
    let total = work.len();
    let new = actix_web::rt::task::spawn_blocking(move || crate::db::outbox::enqueue(&pool, &work))
        .await
        .map_err(|e| NotifySinkError::Join(e.to_string()))??;
    if new < total {
        metrics::counter!(crate::metrics::NOTIFY_SKIPPED).increment((total - new) as u64);
    }
    if new > 0 {
        outbox.do_send(Wake);
    }
    Ok(Commit::Batch)
}

/// The identity of one notification: receiver + alert state. A second delivery of the same
/// state (Kafka redelivery) finds it recorded and sends nothing.
pub fn notification_key(receiver: &str, e: &AlertEvent) -> String {
    crate::db::pg_text(&format!("{receiver}|{}", e.dedup_key())).into_owned()
}
