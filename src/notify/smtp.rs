//! SMTP: the lettre transport (pooled, TLS none / STARTTLS / implicit TLS, optional auth) and
//! one send with its outcome classified for retries. Used by MailActor and `dlq replay`.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::render::Mail;
use super::retry::Failure;
use crate::config::{SmtpConfig, SmtpTls};

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
