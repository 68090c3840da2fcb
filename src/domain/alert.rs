//! The alert as it travels on the `alerts` topic: the seed table's four fields at the top
//! level, plus what history, routing and dedup need. Built only from a validated webhook
//! alert, so every `AlertEvent` has a service, a severity, a message and a fingerprint.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `firing` or `resolved`, as Alertmanager says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity from the `severity` label, lower-cased; `none` when the label is absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Severity(String);

impl Severity {
    pub const MISSING: &'static str = "none";

    pub fn from_label(value: Option<&str>) -> Self {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => Severity(v.to_lowercase()),
            None => Severity(Self::MISSING.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The alert's identity in Alertmanager (a hash of its label set). Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        (!v.is_empty()).then(|| Fingerprint(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One message on the `alerts` topic (the Kafka contract in DESIGN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// When this state began: `starts_at` while firing, `ends_at` once resolved.
    pub timestamp: DateTime<Utc>,
    pub service: String,
    pub message: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub fingerprint: Fingerprint,
    pub alertname: String,
    pub cluster: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
}

pub use super::labels::UNKNOWN_SERVICE;

impl AlertEvent {
    /// The identity of this alert *state*: repeats of it are duplicates.
    /// fingerprint + status + startsAt, and endsAt once resolved. Never the group key.
    pub fn dedup_key(&self) -> String {
        let mut key = format!(
            "{}|{}|{}",
            self.fingerprint.as_str(),
            self.status,
            self.starts_at.timestamp_nanos_opt().unwrap_or(i64::MIN)
        );
        if self.status == AlertStatus::Resolved {
            let end = self
                .ends_at
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            key.push('|');
            key.push_str(&end.to_string());
        }
        key
    }
}
