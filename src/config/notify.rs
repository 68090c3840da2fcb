//! `[notify]`: routes, receivers, send-rate regulation, retries, dead letters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError, Secret, SmtpConfig};

/// Bounded retries with exponential backoff and full jitter (`notify::retry` runs them).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    Email,
    Teams,
}

/// Where the log lines behind an alert are read, and how many are shown (`notify::context`).
#[derive(Debug, Clone)]
pub struct LogSource {
    /// Loki, asked first; None: the archive alone.
    pub loki_url: Option<String>,
    /// Read when Loki does not answer or is not configured: the archive's files
    /// (`archive.root`).
    pub archive: Option<super::ArchiveRoot>,
    pub max_lines: usize,
    pub max_chars: usize,
    pub timeout: Duration,
}

/// One notification target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// Email recipients (kind = email).
    #[serde(default)]
    pub to: Vec<String>,
    /// Env var holding the Teams Workflows webhook URL (kind = teams; the URL is a secret).
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    #[serde(skip_deserializing)]
    pub webhook_url: Secret,
}

/// Like an Alertmanager route: all matchers equal, first match wins unless `continue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    pub receiver: String,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub group: String,
    /// Alerts per outbox write at most; a batch goes at once when the stage is caught up
    /// (1,000: 0.90x a bare consumer end to end, 200: 0.88x; `cargo bench --bench persist`).
    pub batch_size: usize,
    /// How long a consumer batch waits to fill (fewer, larger outbox writes).
    pub linger_ms: u64,
    /// Notifications a process's delivery worker holds at once (claimed from the outbox, in
    /// the throttle, digests or senders). Waiting digests count: keep it above a burst.
    pub outbox_in_hand: usize,
    /// Base of the "View in Grafana" Explore link.
    pub grafana_url: String,
    pub routes: Vec<RouteConfig>,
    pub receivers: Vec<ReceiverConfig>,
    /// Token bucket per receiver: burst, then this many per minute.
    pub receiver_burst: u32,
    pub receiver_per_minute: u32,
    /// Token bucket per (receiver, service): burst, then this many per minute.
    pub rate_burst: u32,
    pub rate_per_minute: u32,
    /// Surplus over the rate is gathered into one digest per receiver per window.
    pub digest_window_s: u64,
    /// Sends are retried this many times (transient failures), then dead-lettered.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Loki's base URL (`http://loki:3100`): the mail of an alert from a LogQL rule shows the
    /// lines that matched around its start. Unset, or not answering: the same query runs over
    /// the archive's files (`archive.root`).
    pub loki_url: Option<String>,
    /// At most this many lines per mail, each cut to `log_line_chars` characters.
    pub log_lines: usize,
    pub log_line_chars: usize,
    /// Teams: requests per second per webhook at most.
    pub teams_max_per_s: u32,
    /// A CA (PEM) trusted for https to Teams webhooks and `loki_url`, besides the system's
    /// roots (which `SSL_CERT_FILE` replaces); host names are always checked.
    pub https_ca_file: Option<PathBuf>,
    pub dlq_topic: String,
    pub smtp: SmtpConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            group: "alertpipe-notify".into(),
            batch_size: 1000,
            linger_ms: 200,
            outbox_in_hand: 2000,
            grafana_url: "https://grafana.example.com".into(),
            routes: vec![
                RouteConfig {
                    matchers: BTreeMap::from([("severity".into(), "critical".into())]),
                    receiver: "outlook".into(),
                    continue_: false,
                },
                RouteConfig {
                    matchers: BTreeMap::from([("severity".into(), "custom".into())]),
                    receiver: "teams".into(),
                    continue_: false,
                },
            ],
            receivers: vec![
                ReceiverConfig {
                    name: "outlook".into(),
                    kind: ReceiverKind::Email,
                    to: vec!["oncall@example.com".into()],
                    webhook_url_env: None,
                    webhook_url: Secret::default(),
                },
                ReceiverConfig {
                    name: "teams".into(),
                    kind: ReceiverKind::Teams,
                    to: vec![],
                    webhook_url_env: Some("ALERTPIPE_TEAMS_WEBHOOK_URL".into()),
                    webhook_url: Secret::default(),
                },
            ],
            receiver_burst: 30,
            receiver_per_minute: 60,
            rate_burst: 10,
            rate_per_minute: 30,
            digest_window_s: 60,
            max_attempts: 5,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            teams_max_per_s: 4,
            https_ca_file: None,
            loki_url: None,
            log_lines: 10,
            log_line_chars: 400,
            dlq_topic: "alerts.dlq".into(),
            smtp: SmtpConfig::default(),
        }
    }
}

impl NotifyConfig {
    /// How long a consumer batch waits to fill.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn digest_window(&self) -> Duration {
        Duration::from_secs(self.digest_window_s)
    }

    /// Where the mails' log lines come from, when `loki_url` is set and lines are wanted.
    /// Where to read the lines behind an alert, before the archive is added by the caller
    /// (None when `log_lines` is 0).
    pub fn log_source(&self) -> Option<LogSource> {
        let url = self.loki_url.as_deref().filter(|u| !u.is_empty());
        (self.log_lines > 0).then(|| LogSource {
            loki_url: url.map(str::to_owned),
            archive: None,
            max_lines: self.log_lines,
            max_chars: self.log_line_chars.max(20),
            timeout: Duration::from_secs(3),
        })
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            base: Duration::from_millis(self.backoff_base_ms),
            max: Duration::from_millis(self.backoff_max_ms),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for r in &self.routes {
            if !self.receivers.iter().any(|x| x.name == r.receiver) {
                return bad(
                    "notify.routes",
                    &format!("unknown receiver {:?}", r.receiver),
                );
            }
        }
        for r in &self.receivers {
            if r.kind == ReceiverKind::Email && r.to.is_empty() {
                return bad(
                    "notify.receivers",
                    &format!("email receiver {:?} has no `to`", r.name),
                );
            }
        }
        if self.batch_size == 0 {
            return bad("notify.batch_size", "must be above 0");
        }
        if self.max_attempts == 0
            || self.rate_per_minute == 0
            || self.digest_window_s == 0
            || self.teams_max_per_s == 0
            || self.outbox_in_hand == 0
        {
            return bad(
                "notify",
                "max_attempts, rate_per_minute, digest_window_s, teams_max_per_s and outbox_in_hand must be above 0",
            );
        }
        self.smtp.validate()
    }
}
