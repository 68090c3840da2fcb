//! MailActor, the "Outlook producer": renders the mail (askama), sends it over the pooled
//! SMTP transport, retries transient failures with backoff, and hands permanent failures and
//! exhausted retries to the DeadLetterActor.

use actix::prelude::*;
use lettre::message::Mailbox;

use super::dead_letter::{settle, DeadLetterActor, DeadNotification};
use super::deliver::{Deliver, Delivered, NotifyError};
use crate::notify::render::{alert_mail, digest_mail};
use crate::notify::retry::RetryPolicy;
use crate::notify::smtp::{mailboxes, message, send_once, Transport};

pub struct MailActor {
    /// Always Some while the actor lives; see `Drop`.
    transport: Option<Transport>,
    from: Mailbox,
    grafana_url: String,
    policy: RetryPolicy,
    dead: Addr<DeadLetterActor>,
}

impl MailActor {
    pub fn new(
        transport: Transport,
        from: Mailbox,
        grafana_url: String,
        policy: RetryPolicy,
        dead: Addr<DeadLetterActor>,
    ) -> Self {
        MailActor {
            transport: Some(transport),
            from,
            grafana_url,
            policy,
            dead,
        }
    }
}

impl Drop for MailActor {
    fn drop(&mut self) {
        // lettre's pool spawns a cleanup task when dropped, which panics without a Tokio
        // runtime: at process exit (after the System's runtime ended) forget it instead; the
        // OS closes the connections.
        if tokio::runtime::Handle::try_current().is_err() {
            if let Some(t) = self.transport.take() {
                std::mem::forget(t);
            }
        }
    }
}

impl Actor for MailActor {
    type Context = Context<Self>;
}

impl Handler<Deliver> for MailActor {
    type Result = ResponseFuture<Result<Delivered, NotifyError>>;

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) -> Self::Result {
        let Some(t) = self.transport.clone() else {
            return Box::pin(async { Err(NotifyError("mail transport closed".into())) });
        };
        let (from, policy, dead) = (self.from.clone(), self.policy, self.dead.clone());
        let grafana = self.grafana_url.clone();
        Box::pin(async move {
            let rendered = if msg.events.len() == 1 {
                alert_mail(&msg.events[0], &grafana)
            } else {
                digest_mail(&msg.events, &msg.receiver.name, &grafana)
            };
            let built = rendered
                .map_err(|e| format!("rendering: {e}"))
                .and_then(|mail| Ok((mailboxes(&msg.receiver.to)?, mail)))
                .and_then(|(to, mail)| message(&from, &to, &mail));
            let outcome = match built {
                Ok(m) => policy
                    .run(|_| send_once(&t, m.clone()))
                    .await
                    .map_err(|g| (g.attempts, g.reason)),
                Err(e) => Err((0, e)),
            };
            let item = DeadNotification {
                receiver: msg.receiver.name.clone(),
                events: msg.events,
            };
            settle(&dead, "email", item, outcome).await
        })
    }
}
