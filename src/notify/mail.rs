//! MailActor, the "Outlook producer": renders the mail (askama), sends it over the pooled
//! SMTP transport, retries transient failures with backoff, and hands permanent failures and
//! exhausted retries to the DeadLetterActor.

use actix::prelude::*;
use lettre::message::Mailbox;

use super::dead_letter::{settle, DeadLetterActor, DeadNotification};
use super::deliver::{Deliver, Delivered, NotifyError};
use crate::domain::AlertStatus;
use crate::notify::context::{self, LogSource};
use crate::notify::render::{alert_mail_with, digest_mail};
use crate::notify::retry::RetryPolicy;
use crate::notify::smtp::{mailboxes, message, send_once, Transport};

pub struct MailActor {
    /// Always Some while the actor lives; see `Drop`.
    transport: Option<Transport>,
    from: Mailbox,
    grafana_url: String,
    policy: RetryPolicy,
    dead: Addr<DeadLetterActor>,
    /// Where the log lines behind an alert are read (`notify.loki_url`), if anywhere.
    logs: Option<(awc::Client, LogSource)>,
}

impl MailActor {
    /// Mails of single firing alerts from LogQL rules carry the lines behind them.
    pub fn with_log_lines(mut self, src: Option<LogSource>) -> Self {
        self.logs = src.map(|s| (awc::Client::default(), s));
        self
    }

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
            logs: None,
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
        let logs = self.logs.clone();
        Box::pin(async move {
            let rendered = if msg.events.len() == 1 {
                let e = &msg.events[0];
                let lines = match (&logs, context::log_query(e)) {
                    (Some((client, src)), Some(q)) if e.status == AlertStatus::Firing => {
                        context::fetch(client, src, &q, e.starts_at)
                            .await
                            .inspect_err(|err| tracing::warn!(error = %err, query = %q, "log lines for the mail not read; sending without"))
                            .ok()
                    }
                    _ => None,
                };
                alert_mail_with(e, &grafana, lines.as_ref())
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
