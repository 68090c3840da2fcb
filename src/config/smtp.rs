//! `[notify.smtp]`: the SMTP server mail goes through (Outlook / Exchange Online in production).

use std::path::PathBuf;

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::{bad, ConfigError, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// The CA that signed the server's certificate (PEM), when it is not a public one; the
    /// server's host name is always checked. With `starttls` there is no plaintext fallback.
    pub ca_file: Option<PathBuf>,
    /// Empty: no auth. With a user, AUTH LOGIN or PLAIN (Outlook offers LOGIN). Password from ALERTPIPE_SMTP_PASSWORD or password_file.
    pub username: String,
    pub password_file: Option<PathBuf>,
    #[serde(skip_deserializing)]
    pub password: Secret,
    pub from: String,
    /// Pooled connections (1 = a single connection).
    pub pool_size: u32,
    pub timeout_s: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            ca_file: None,
            username: String::new(),
            password_file: None,
            password: Secret::default(),
            from: "alertpipe <alertpipe@example.com>".into(),
            pool_size: 4,
            timeout_s: 10,
        }
    }
}

impl SmtpConfig {
    /// The sender address, parsed (`notify.smtp.from`).
    pub fn sender(&self) -> Result<Mailbox, ConfigError> {
        self.from.parse().map_err(|e| ConfigError::Key {
            key: "notify.smtp.from".into(),
            message: format!("{:?}: {e}", self.from),
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.sender().map(|_| ())?;
        if let Some(ca) = &self.ca_file {
            if self.tls == SmtpTls::None {
                return bad(
                    "notify.smtp.ca_file",
                    "only with tls = \"starttls\" or \"tls\"",
                );
            }
            if let Err(e) = std::fs::metadata(ca) {
                return bad(
                    "notify.smtp.ca_file",
                    &format!("cannot read {}: {e}", ca.display()),
                );
            }
        }
        if self.pool_size == 0 || self.timeout_s == 0 {
            return bad("notify.smtp", "pool_size and timeout_s must be above 0");
        }
        Ok(())
    }
}
