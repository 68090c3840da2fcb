//! The notify stage's sink: an `alerts` message decodes to an alert event; a batch is routed,
//! what is done already skipped, the rest sent through the throttle and recorded.

use std::future::Future;
use std::sync::Arc;

use actix::{Addr, MailboxError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

use crate::config::RouteConfig;
use crate::db::{DbError, PgPool};
use crate::domain::AlertEvent;
use crate::kafka::consumer::{Commit, RawMessage};
use crate::kafka::sink::{Decoded, Retryable, Sink, Undecodable};

use super::deliver::{Delivered, NotifyError};
use super::route::route;
use super::throttle::{Notify, ThrottleActor};

pub struct NotifySink {
    pub routes: Arc<Vec<RouteConfig>>,
    pub pool: PgPool,
    pub throttle: Addr<ThrottleActor>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifySinkError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("notification records: {0}")]
    Join(String),
    #[error(transparent)]
    Delivery(#[from] NotifyError),
    #[error("throttle actor: {0}")]
    Mailbox(#[from] MailboxError),
}

impl Retryable for NotifySinkError {
    /// A send that failed for good is dead-lettered by the senders, not reported here: what
    /// reaches the loop (the database, the dead-letter store, an actor restarting) is worth
    /// retrying. Sends already done are skipped on the retry.
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
        notify_batch(
            batch,
            self.routes.clone(),
            self.pool.clone(),
            self.throttle.clone(),
        )
    }
}

/// One consumer batch of the `alerts` topic through notification: route, skip what is done
/// already (a redelivery), send through the throttle, record what was sent or dead-lettered.
/// Ok only when every routed alert is done, so the offsets are committed only then.
pub async fn notify_batch(
    batch: Arc<Vec<Decoded<AlertEvent>>>,
    routes: Arc<Vec<RouteConfig>>,
    pool: PgPool,
    throttle: Addr<ThrottleActor>,
) -> Result<Commit, NotifySinkError> {
    use crate::metrics as m;
    let mut work: Vec<(String, AlertEvent, String)> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for msg in batch.iter() {
        let e = &msg.item;
        let receivers = route(e, &routes);
        if receivers.is_empty() {
            metrics::counter!(m::NOTIFY_UNROUTED, "reason" => "no_route").increment(1);
        }
        for r in receivers {
            let key = notification_key(r, e);
            if keys.insert(key.clone()) {
                work.push((r.to_owned(), e.clone(), key));
            }
        }
    }
    if work.is_empty() {
        return Ok(Commit::Batch);
    }
    let (p, all): (_, Vec<String>) = (pool.clone(), work.iter().map(|w| w.2.clone()).collect());
    let done =
        actix_web::rt::task::spawn_blocking(move || crate::db::notifications::done(&p, &all))
            .await
            .map_err(|e| NotifySinkError::Join(e.to_string()))??;
    let pending: Vec<_> = work.into_iter().filter(|w| !done.contains(&w.2)).collect();
    if !done.is_empty() {
        metrics::counter!(m::NOTIFY_SKIPPED).increment(done.len() as u64);
    }
    // Record each notification as soon as its send is done (a digest completes many at once),
    // not when the whole batch is: a crash between a send and its record would send it again.
    let mut sends: FuturesUnordered<_> = pending
        .into_iter()
        .map(|(r, e, key)| {
            let send = throttle.send(Notify {
                receiver: r.clone(),
                event: e.clone(),
            });
            async move { (r, e, key, send.await) }
        })
        .collect();
    let mut failed = None;
    while let Some(first) = sends.next().await {
        let mut wave = vec![first];
        while let Some(Some(more)) = sends.next().now_or_never() {
            wave.push(more);
        }
        let mut rows = Vec::new();
        for (r, e, key, res) in wave {
            match res {
                Ok(Ok(d)) => rows.push((
                    key,
                    r,
                    crate::db::pg_text(e.fingerprint.as_str()).into_owned(),
                    e.status.as_str().to_owned(),
                    if d == Delivered::Sent {
                        "sent"
                    } else {
                        "dead_lettered"
                    },
                )),
                Ok(Err(err)) => failed = Some(NotifySinkError::Delivery(err)),
                Err(err) => failed = Some(NotifySinkError::Mailbox(err)),
            }
        }
        let p = pool.clone();
        actix_web::rt::task::spawn_blocking(move || crate::db::notifications::record(&p, &rows))
            .await
            .map_err(|e| NotifySinkError::Join(e.to_string()))??;
    }
    match failed {
        None => Ok(Commit::Batch),
        Some(e) => Err(e),
    }
}

/// The identity of one notification: receiver + alert state. A second delivery of the same
/// state (Kafka redelivery) finds it recorded and sends nothing.
pub fn notification_key(receiver: &str, e: &AlertEvent) -> String {
    crate::db::pg_text(&format!("{receiver}|{}", e.dedup_key())).into_owned()
}
