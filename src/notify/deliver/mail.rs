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

/// The pooled transport: TLS as configured (STARTTLS required, never a plaintext fallback;
/// or implicit TLS), the server's certificate checked against the system's roots or
/// `ca_file`, and AUTH LOGIN / PLAIN when a user is set.
pub fn transport(cfg: &SmtpConfig) -> anyhow::Result<Transport> {
    use anyhow::Context as _;
    use lettre::transport::smtp::authentication::Mechanism;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let params = || -> anyhow::Result<TlsParameters> {
        let mut b = TlsParameters::builder(cfg.host.clone());
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("notify.smtp.ca_file: cannot read {}", ca.display()))?;
            b = b.add_root_certificate(Certificate::from_pem(&pem).with_context(|| {
                format!(
                    "notify.smtp.ca_file {}: not a PEM certificate",
                    ca.display()
                )
            })?);
        }
        Ok(b.build_rustls()?)
    };
    let builder = Transport::builder_dangerous(&cfg.host);
    let builder = match cfg.tls {
        SmtpTls::None => builder,
        SmtpTls::Starttls => builder.tls(Tls::Required(params()?)),
        SmtpTls::Tls => builder.tls(Tls::Wrapper(params()?)),
    };
    let mut builder = builder
        .port(cfg.port)
        .timeout(Some(Duration::from_secs(cfg.timeout_s)))
        .pool_config(PoolConfig::new().max_size(cfg.pool_size.max(1)));
    if !cfg.username.is_empty() {
        builder = builder
            .credentials(Credentials::new(
                cfg.username.clone(),
                cfg.password.expose().to_owned(),
            ))
            .authentication(vec![Mechanism::Login, Mechanism::Plain]);
    }
    Ok(builder.build())
}

/// A mail's identity and its place in a conversation: a `Message-ID` that is the same for
/// the same alert state and receiver (a mail resent after a crash is recognisably the same
/// message, and Exchange drops the copy), and the resolved mail threaded under its firing one
/// (`In-Reply-To`, `References`, and Outlook's `Thread-Topic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub topic: String,
}

/// FNV-1a, 64 bits: a stable hash (std's is seeded per process).
fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The thread of the mail of `events` to `receiver`, ids under the sender's `domain`.
pub fn thread_of(receiver: &str, events: &[AlertEvent], domain: &str) -> Thread {
    let occurrence = |e: &AlertEvent| {
        let start = e
            .starts_at
            .timestamp_nanos_opt()
            .unwrap_or(i64::MIN)
            .to_string();
        fnv64(&[receiver, e.fingerprint.as_str(), &start])
    };
    match events {
        [e] => {
            let base = occurrence(e);
            let id = |state: &str| format!("<{base:016x}.{state}@{domain}>");
            let resolved = e.status == crate::domain::AlertStatus::Resolved;
            Thread {
                message_id: id(e.status.as_str()),
                in_reply_to: resolved.then(|| id("firing")),
                topic: crate::notify::render::one_line(&format!("{} ({})", e.alertname, e.service)),
            }
        }
        _ => {
            let mut keys: Vec<String> = events.iter().map(AlertEvent::dedup_key).collect();
            keys.sort();
            let parts: Vec<&str> = std::iter::once(receiver)
                .chain(keys.iter().map(String::as_str))
                .collect();
            Thread {
                message_id: format!("<{:016x}.digest@{domain}>", fnv64(&parts)),
                in_reply_to: None,
                topic: crate::notify::render::one_line(&format!("Digest for {receiver}")),
            }
        }
    }
}

/// Outlook's `Thread-Topic`: the conversation's subject without its status prefix.
#[derive(Debug, Clone)]
struct ThreadTopic(String);

impl lettre::message::header::Header for ThreadTopic {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Thread-Topic")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ThreadTopic(s.to_owned()))
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The message: subject, identity and thread, multipart/alternative of plain text and HTML.
pub fn message(
    from: &Mailbox,
    to: &[Mailbox],
    mail: &Mail,
    thread: &Thread,
) -> Result<Message, String> {
    let mut b = Message::builder()
        .from(from.clone())
        .subject(mail.subject.clone())
        .message_id(Some(thread.message_id.clone()))
        .header(ThreadTopic(thread.topic.clone()));
    if let Some(parent) = &thread.in_reply_to {
        b = b.in_reply_to(parent.clone()).references(parent.clone());
    }
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
        let thread = thread_of(&receiver.name, events, self.from.email.domain());
        message(&self.from, &mailboxes(&receiver.to)?, &mail, &thread)
    }

    async fn send_once(&self, msg: &Message) -> Result<(), Failure> {
        match &self.transport {
            Some(t) => send_once(t, msg.clone()).await,
            None => Err(Failure::Permanent("mail transport closed".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: &str) -> AlertEvent {
        serde_json::from_value(serde_json::json!({
            "service": "payment", "severity": "critical", "message": "m", "status": status,
            "alertname": "PaymentDBDown", "fingerprint": "c0ffee0000000001",
            "starts_at": "2026-01-01T00:00:00Z", "ends_at": if status == "resolved" { "2026-01-01T00:05:00Z" } else { "0001-01-01T00:00:00Z" },
            "timestamp": "2026-01-01T00:00:00Z", "labels": {}, "annotations": {}, "generator_url": ""
        }))
        .expect("an alert event")
    }

    #[test]
    fn the_same_state_has_the_same_id_and_a_resolution_threads_under_its_firing() {
        let firing = thread_of("outlook", &[event("firing")], "example.com");
        assert_eq!(
            firing,
            thread_of("outlook", &[event("firing")], "example.com")
        );
        assert!(firing.message_id.starts_with('<') && firing.message_id.ends_with("@example.com>"));
        assert_eq!(firing.in_reply_to, None);
        let resolved = thread_of("outlook", &[event("resolved")], "example.com");
        assert_ne!(resolved.message_id, firing.message_id);
        assert_eq!(
            resolved.in_reply_to.as_deref(),
            Some(firing.message_id.as_str())
        );
        assert_eq!(resolved.topic, "PaymentDBDown (payment)");
        let other = thread_of("oncall", &[event("firing")], "example.com");
        assert_ne!(other.message_id, firing.message_id, "per receiver");
        let digest = thread_of(
            "outlook",
            &[event("firing"), event("resolved")],
            "example.com",
        );
        assert!(digest.message_id.contains(".digest@"));
    }
}
