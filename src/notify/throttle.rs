//! ThrottleActor: send-rate regulation. Token buckets per receiver and per (receiver,
//! service); a notification within both passes straight to its sender. Over the limit
//! nothing is dropped: it waits in the receiver's digest, which opens with its first alert
//! and goes out, as one mail or card listing every alert in it, one window later. Each
//! caller's answer (the OutboxActor's) comes when its alert was sent, alone or in a digest, or
//! dead-lettered, so its outbox row is finished only then.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::deliver::{Deliver, Delivered, NotifyError};
use crate::config::{ReceiverConfig, ReceiverKind};
use crate::domain::AlertEvent;
use crate::metrics as m;

#[derive(Message)]
#[rtype(result = "Result<Delivered, NotifyError>")]
pub struct Notify {
    pub receiver: String,
    pub event: AlertEvent,
}

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate) -> Self {
        Bucket {
            tokens: f64::from(rate.burst.max(1)),
            at: Instant::now(),
        }
    }
    fn refill(&mut self, rate: Rate, now: Instant) {
        let add = now.duration_since(self.at).as_secs_f64() * f64::from(rate.per_minute) / 60.0;
        self.tokens = (self.tokens + add).min(f64::from(rate.burst.max(1)));
        self.at = now;
    }
}

type Waiting = (AlertEvent, oneshot::Sender<Result<Delivered, NotifyError>>);

pub struct ThrottleActor {
    receivers: HashMap<String, ReceiverConfig>,
    mail: Recipient<Deliver>,
    teams: Recipient<Deliver>,
    per_receiver: Rate,
    per_service: Rate,
    window: Duration,
    receiver_buckets: HashMap<String, Bucket>,
    service_buckets: HashMap<(String, String), Bucket>,
    digests: HashMap<String, Vec<Waiting>>,
}

impl ThrottleActor {
    pub fn new(
        receivers: Vec<ReceiverConfig>,
        mail: Recipient<Deliver>,
        teams: Recipient<Deliver>,
        per_receiver: Rate,
        per_service: Rate,
        window: Duration,
    ) -> Self {
        ThrottleActor {
            receivers: receivers.into_iter().map(|r| (r.name.clone(), r)).collect(),
            mail,
            teams,
            per_receiver,
            per_service,
            window,
            receiver_buckets: HashMap::new(),
            service_buckets: HashMap::new(),
            digests: HashMap::new(),
        }
    }

    /// Takes a token from both buckets, or from neither.
    fn admit(&mut self, receiver: &str, service: &str) -> bool {
        let now = Instant::now();
        let (pr, ps) = (self.per_receiver, self.per_service);
        let rb = self
            .receiver_buckets
            .entry(receiver.to_owned())
            .or_insert_with(|| Bucket::full(pr));
        rb.refill(pr, now);
        let sb = self
            .service_buckets
            .entry((receiver.to_owned(), service.to_owned()))
            .or_insert_with(|| Bucket::full(ps));
        sb.refill(ps, now);
        if rb.tokens >= 1.0 && sb.tokens >= 1.0 {
            rb.tokens -= 1.0;
            sb.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn sender(&self, r: &ReceiverConfig) -> Recipient<Deliver> {
        match r.kind {
            ReceiverKind::Email => self.mail.clone(),
            ReceiverKind::Teams => self.teams.clone(),
        }
    }

    /// Sends a receiver's waiting alerts as one digest; each waiting caller gets its outcome.
    fn flush_digest(&mut self, name: &str, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.digests.remove(name) {
            let Some(r) = self.receivers.get(name).cloned() else {
                return;
            };
            let sender = self.sender(&r);
            let (events, txs): (Vec<_>, Vec<_>) = waiting.into_iter().unzip();
            metrics::counter!(m::NOTIFY_DIGESTS, "receiver" => name.to_owned()).increment(1);
            ctx.spawn(
                async move {
                    let result = match sender
                        .send(Deliver {
                            receiver: r,
                            events,
                        })
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => Err(NotifyError(e.to_string())),
                    };
                    for tx in txs {
                        let _ = tx.send(result.clone());
                    }
                }
                .into_actor(self),
            );
        }
    }
}

/// Sends every waiting digest now (shutdown: nothing is left waiting for its window).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushDigests;

impl Handler<FlushDigests> for ThrottleActor {
    type Result = ();

    fn handle(&mut self, _: FlushDigests, ctx: &mut Self::Context) {
        let names: Vec<String> = self.digests.keys().cloned().collect();
        for name in names {
            self.flush_digest(&name, ctx);
        }
    }
}

impl Actor for ThrottleActor {
    type Context = Context<Self>;
}

impl Handler<Notify> for ThrottleActor {
    type Result = ResponseFuture<Result<Delivered, NotifyError>>;

    fn handle(&mut self, msg: Notify, ctx: &mut Self::Context) -> Self::Result {
        let Some(r) = self.receivers.get(&msg.receiver).cloned() else {
            let e = NotifyError(format!("unknown receiver {}", msg.receiver));
            return Box::pin(async move { Err(e) });
        };
        if self.admit(&r.name, &msg.event.service) {
            let send = self.sender(&r).send(Deliver {
                receiver: r,
                events: vec![msg.event],
            });
            return Box::pin(async move { send.await.map_err(|e| NotifyError(e.to_string()))? });
        }
        metrics::counter!(m::NOTIFY_THROTTLED, "receiver" => r.name.clone()).increment(1);
        let (tx, rx) = oneshot::channel();
        let waiting = self.digests.entry(r.name.clone()).or_default();
        if waiting.is_empty() {
            let name = r.name.clone();
            ctx.run_later(self.window, move |act, ctx| act.flush_digest(&name, ctx));
        }
        waiting.push((msg.event, tx));
        Box::pin(async move { rx.await.map_err(|_| NotifyError("digest dropped".into()))? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_rate_and_caps_at_burst() {
        let rate = Rate {
            burst: 2,
            per_minute: 60,
        };
        let mut b = Bucket::full(rate);
        assert_eq!(b.tokens, 2.0);
        b.tokens = 0.0;
        let t = b.at + Duration::from_millis(500);
        b.refill(rate, t);
        assert!((b.tokens - 0.5).abs() < 1e-9);
        b.refill(rate, t + Duration::from_secs(600));
        assert_eq!(b.tokens, 2.0);
    }
}
