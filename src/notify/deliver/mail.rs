//! The "Outlook producer": mails over SMTP (lettre's pooled transport; TLS none, STARTTLS or
//! implicit TLS; optional auth), rendered with askama, one attempt classified for retries.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::retry::Failure;
use super::Sender;
use crate::config::{ReceiverConfig, SmtpConfig, SmtpTls};
use crate::domain::AlertEvent;
use crate::notify::context::LogContext;
use crate::notify::render::{alert_mail_with, digest_mail, Mail};

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

pub fn transport(cfg: &SmtpConfig) -> Result<Transport, lettre::transport::smtp::Error> {
    let builder = match cfg.tls {
        SmtpTls::None => Transport::builder_dangerous(&cfg.host),
        SmtpTls::Starttls => Transport::starttls_relay(&cfg.host)?,
        SmtpTls::Tls => Transport::relay(&cfg.host)?,
    };
    let mut builder = builder
        .port(cfg.port)
        .timeout(Some(Duration::from_secs(cfg.timeout_s)))
        .pool_config(PoolConfig::new().max_size(cfg.pool_size.max(1)));
    if !cfg.username.is_empty() {
        builder = builder.credentials(Credentials::new(
            cfg.username.clone(),
            cfg.password.expose().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// The message: subject, multipart/alternative of plain text and HTML.
pub fn message(from: &Mailbox, to: &[Mailbox], mail: &Mail) -> Result<Message, String> {
    let mut b = Message::builder()
        .from(from.clone())
        .subject(mail.subject.clone());
    for t in to {
        b = b.to(t.clone());
    }
    b.multipart(
        MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.text.clone()),
            )
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(mail.html.clone()),
            ),
    )
    .map_err(|e| format!("building the message: {e}"))
}

pub fn mailboxes(addrs: &[String]) -> Result<Vec<Mailbox>, String> {
    addrs
        .iter()
        .map(|a| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("bad address {a:?}: {e}"))
        })
        .collect()
}

/// One attempt. 4xx replies, timeouts and connection errors are transient; 5xx permanent.
pub async fn send_once(t: &Transport, msg: Message) -> Result<(), Failure> {
    match t.send(msg).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
        Err(e) => Err(Failure::Transient {
            reason: e.to_string(),
            after: None,
        }),
    }
}

pub struct MailSender {
    /// Always Some while the sender lives; see `Drop`.
    transport: Option<Transport>,
    from: Mailbox,
    grafana_url: String,
}

impl MailSender {
    pub fn new(cfg: &SmtpConfig, grafana_url: String) -> anyhow::Result<Self> {
        Ok(MailSender {
            transport: Some(transport(cfg)?),
            from: cfg.sender()?,
            grafana_url,
        })
    }
}

impl Drop for MailSender {
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

impl Sender for MailSender {
    const KIND: &'static str = "email";
    type Message = Message;

    fn build(
        &self,
        receiver: &ReceiverConfig,
        events: &[AlertEvent],
        lines: Option<&LogContext>,
    ) -> Result<Message, String> {
        let mail = match events {
            [e] => alert_mail_with(e, &self.grafana_url, lines),
            _ => digest_mail(events, &receiver.name, &self.grafana_url),
        }
        .map_err(|e| format!("rendering: {e}"))?;
        message(&self.from, &mailboxes(&receiver.to)?, &mail)
    }

    async fn send_once(&self, msg: &Message) -> Result<(), Failure> {
        match &self.transport {
            Some(t) => send_once(t, msg.clone()).await,
            None => Err(Failure::Permanent("mail transport closed".into())),
        }
    }
}
