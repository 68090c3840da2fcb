//! OutboxActor: the delivery worker. It claims notifications from the PostgreSQL outbox
//! (`db::outbox`) under a lease it keeps renewing, hands each to the ThrottleActor (which sends
//! it alone or in a digest), and moves every outcome to `notifications` as it comes. The
//! consumer never waits for a send: it enqueues and commits, so a digest window or a slow
//! SMTP server no longer holds the consumer loop, and a digest spans consumer batches.
//!
//! Crash safety: a row leaves the outbox only with its outcome recorded, in one transaction.
//! A SIGKILLed worker's claims lapse after `LEASE` and another (or its restart) takes them;
//! only a send that was in flight at the kill can go out twice. SIGTERM drains: no new claims,
//! digests go out at once, the worker waits for every send in hand and records it.

use std::collections::HashSet;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::deliver::{Delivered, NotifyError};
use super::throttle::{FlushDigests, Notify, ThrottleActor};
use crate::db::outbox::{self, Claimed, Outcome};
use crate::db::{DbError, PgPool};
use crate::domain::AlertEvent;
use crate::metrics as m;

/// How long a claim holds without renewal: a dead worker's rows wait at most this long.
pub const LEASE: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Claims also run on this tick, for rows enqueued by other processes and released rows.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// A transient failure (an actor restarting, the dead-letter store down) retries after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// New rows are in the outbox: claim now rather than at the next tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Shutdown: stop claiming, send what waits in digests now, record every send in hand.
/// Resolves when nothing is in hand.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

pub struct OutboxActor {
    pool: PgPool,
    throttle: Addr<ThrottleActor>,
    /// This worker's name in `claimed_by`: unique per process start.
    owner: String,
    max_in_hand: usize,
    /// Keys claimed and not yet recorded.
    in_hand: HashSet<String>,
    in_hand_count: watch::Sender<usize>,
    /// Outcomes waiting to be recorded, and keys to give back.
    finished: Vec<Outcome>,
    failed: Vec<String>,
    claiming: bool,
    recording: bool,
    draining: bool,
}

impl OutboxActor {
    pub fn new(pool: PgPool, throttle: Addr<ThrottleActor>, max_in_hand: usize) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let owner = format!("{}-{}-{started}", hostname(), std::process::id());
        OutboxActor {
            pool,
            throttle,
            owner,
            max_in_hand: max_in_hand.max(1),
            in_hand: HashSet::new(),
            in_hand_count: watch::channel(0).0,
            finished: Vec::new(),
            failed: Vec::new(),
            claiming: false,
            recording: false,
            draining: false,
        }
    }

    /// Claims what fits in hand and sends it through the throttle.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.claiming || self.draining || self.in_hand.len() >= self.max_in_hand {
            return;
        }
        self.claiming = true;
        let (pool, owner, room) = (
            self.pool.clone(),
            self.owner.clone(),
            self.max_in_hand - self.in_hand.len(),
        );
        let claim =
            actix_web::rt::task::spawn_blocking(move || outbox::claim(&pool, &owner, room, LEASE));
        ctx.spawn(claim.into_actor(self).map(move |res, act, ctx| {
            act.claiming = false;
            let rows = match res {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "notification outbox: claim failed");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification outbox: claim task failed");
                    return;
                }
            };
            let full = rows.len() == room;
            for row in rows {
                act.send(row, ctx);
            }
            act.count();
            if full {
                ctx.notify(Wake);
            }
        }));
    }

    fn send(&mut self, row: Claimed, ctx: &mut Context<Self>) {
        if !self.in_hand.insert(row.key.clone()) {
            return; // already in hand (a lease renewed after a slow claim)
        }
        let event: AlertEvent = match serde_json::from_slice(&row.event) {
            Ok(e) => e,
            Err(e) => {
                // Written by this program from a decoded event: only a manual edit gets here.
                tracing::error!(key = %row.key, error = %e, "notification outbox row is not an alert event; recorded as dead-lettered");
                self.finished.push(Outcome {
                    key: row.key,
                    receiver: row.receiver,
                    fingerprint: String::new(),
                    status: String::new(),
                    delivered: Delivered::DeadLettered,
                });
                self.record(ctx);
                return;
            }
        };
        let fingerprint = crate::db::pg_text(event.fingerprint.as_str()).into_owned();
        let status = event.status.as_str().to_owned();
        let send = self.throttle.send(Notify {
            receiver: row.receiver.clone(),
            event,
        });
        ctx.spawn(send.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Ok(delivered)) => act.finished.push(Outcome {
                    key: row.key,
                    receiver: row.receiver,
                    fingerprint,
                    status,
                    delivered,
                }),
                Ok(Err(NotifyError(e))) => {
                    tracing::warn!(key = %row.key, error = %e, "notification failed; retrying from the outbox");
                    act.failed.push(row.key);
                }
                Err(e) => {
                    tracing::warn!(key = %row.key, error = %e, "throttle unavailable; retrying from the outbox");
                    act.failed.push(row.key);
                }
            }
            act.record(ctx);
        }));
    }

    /// Records outcomes and gives failed rows back, one round trip at a time: outcomes that
    /// arrive meanwhile wait for the next round (a digest records many at once).
    fn record(&mut self, ctx: &mut Context<Self>) {
        if self.recording || (self.finished.is_empty() && self.failed.is_empty()) {
            return;
        }
        self.recording = true;
        let done = std::mem::take(&mut self.finished);
        let failed = std::mem::take(&mut self.failed);
        let pool = self.pool.clone();
        let (d2, f2) = (done.clone(), failed.clone());
        let write = actix_web::rt::task::spawn_blocking(move || -> Result<(), DbError> {
            outbox::finish(&pool, &d2)?;
            outbox::release(&pool, &f2, RETRY_AFTER)
        });
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.recording = false;
            match res {
                Ok(Ok(())) => {
                    for o in &done {
                        act.in_hand.remove(&o.key);
                    }
                    for key in &failed {
                        act.in_hand.remove(key);
                    }
                    if !failed.is_empty() {
                        metrics::counter!(m::NOTIFY_OUTBOX_RELEASED).increment(failed.len() as u64);
                    }
                    act.count();
                    act.record(ctx);
                    act.pump(ctx);
                }
                Ok(Err(e)) => {
                    // Keep them in hand (the lease is renewed) and try again shortly.
                    tracing::warn!(error = %e, "notification outcomes not recorded yet; retrying");
                    act.finished.extend(done);
                    act.failed.extend(failed);
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.record(ctx));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording task failed; retrying");
                    act.finished.extend(done);
                    act.failed.extend(failed);
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.record(ctx));
                }
            }
        }));
    }

    fn count(&self) {
        self.in_hand_count.send_replace(self.in_hand.len());
    }

    fn renew(&mut self, ctx: &mut Context<Self>) {
        if self.in_hand.is_empty() {
            return;
        }
        let (pool, owner) = (self.pool.clone(), self.owner.clone());
        let renew =
            actix_web::rt::task::spawn_blocking(move || outbox::renew(&pool, &owner, LEASE));
        ctx.spawn(renew.into_actor(self).map(|res, _, _| {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "notification outbox: lease not renewed");
            }
        }));
    }

    fn gauge_backlog(&mut self, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let read = actix_web::rt::task::spawn_blocking(move || outbox::backlog(&pool));
        ctx.spawn(read.into_actor(self).map(|res, _, _| {
            if let Ok(Ok((n, age))) = res {
                metrics::gauge!(m::NOTIFY_OUTBOX_PENDING).set(n as f64);
                metrics::gauge!(m::NOTIFY_OUTBOX_OLDEST).set(age);
            }
        }));
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "alertpipe".to_owned())
}

impl Actor for OutboxActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(POLL_EVERY, |act, ctx| act.pump(ctx));
        ctx.run_interval(RENEW_EVERY, |act, ctx| act.renew(ctx));
        ctx.run_interval(Duration::from_secs(10), |act, ctx| act.gauge_backlog(ctx));
        self.pump(ctx);
    }
}

impl Handler<Wake> for OutboxActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl Handler<Drain> for OutboxActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        self.throttle.do_send(FlushDigests);
        let mut rx = self.in_hand_count.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|n| *n == 0).await;
        })
    }
}
