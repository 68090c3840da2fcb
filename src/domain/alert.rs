//! The alert as it travels on the `alerts` topic: the seed table's four fields at the top
//! level, plus what history, routing and dedup need. Built only from a validated webhook
//! alert, so every `AlertEvent` has a service, a severity, a message and a fingerprint.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::webhook::WebhookAlert;

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
use super::labels::{first_of, SERVICE_LABELS};

impl AlertEvent {
    /// Maps a validated webhook alert. Pure: the same input always gives the same event.
    pub fn from_webhook(alert: WebhookAlert, fingerprint: Fingerprint) -> Self {
        let label = |k: &str| {
            alert
                .labels
                .get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let service = first_of(&SERVICE_LABELS, label)
            .unwrap_or(UNKNOWN_SERVICE)
            .to_owned();
        let alertname = label("alertname").unwrap_or_default().to_owned();
        let cluster = label("cluster").map(str::to_owned);
        let severity = Severity::from_label(label("severity"));
        let annotation = |k: &str| {
            alert
                .annotations
                .get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let message = annotation("summary")
            .or_else(|| annotation("description"))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                if alertname.is_empty() {
                    "(no summary)".to_owned()
                } else {
                    alertname.clone()
                }
            });
        let ends_at = alert.ends_at.filter(|t| t.timestamp() > 0);
        let timestamp = match (alert.status, ends_at) {
            (AlertStatus::Resolved, Some(end)) => end,
            _ => alert.starts_at,
        };
        AlertEvent {
            timestamp,
            service,
            message,
            severity,
            status: alert.status,
            fingerprint,
            alertname,
            cluster,
            labels: alert.labels,
            annotations: alert.annotations,
            starts_at: alert.starts_at,
            ends_at,
            generator_url: alert.generator_url,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> WebhookAlert {
        WebhookAlert {
            status: AlertStatus::Firing,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at: "2025-06-23T14:30:45Z".parse().unwrap(),
            ends_at: Some("0001-01-01T00:00:00Z".parse().unwrap()),
            generator_url: String::new(),
            fingerprint: "abc".into(),
        }
    }

    fn map(a: WebhookAlert) -> AlertEvent {
        let fp = Fingerprint::parse(&a.fingerprint).unwrap();
        AlertEvent::from_webhook(a, fp)
    }

    #[test]
    fn service_prefers_service_then_service_name_then_job() {
        let all = [
            ("service", "payment"),
            ("service_name", "pay-svc"),
            ("job", "payment-service"),
        ];
        assert_eq!(map(alert(&all, &[])).service, "payment");
        assert_eq!(map(alert(&all[1..], &[])).service, "pay-svc");
        assert_eq!(map(alert(&all[2..], &[])).service, "payment-service");
        assert_eq!(map(alert(&[("service", "  ")], &[])).service, "unknown");
        assert_eq!(map(alert(&[], &[])).service, UNKNOWN_SERVICE);
    }

    #[test]
    fn message_prefers_summary_then_description_then_alertname() {
        let labels = [("alertname", "PaymentDBDown")];
        let both = [("summary", "DB down"), ("description", "long text")];
        assert_eq!(map(alert(&labels, &both)).message, "DB down");
        assert_eq!(map(alert(&labels, &both[1..])).message, "long text");
        assert_eq!(map(alert(&labels, &[])).message, "PaymentDBDown");
        assert_eq!(map(alert(&[], &[])).message, "(no summary)");
    }

    #[test]
    fn severity_is_lowercased_and_defaults_to_none() {
        assert_eq!(
            map(alert(&[("severity", "CRITICAL")], &[]))
                .severity
                .as_str(),
            "critical"
        );
        assert_eq!(map(alert(&[], &[])).severity.as_str(), "none");
    }

    #[test]
    fn zero_ends_at_means_still_firing() {
        let e = map(alert(&[], &[]));
        assert_eq!(e.ends_at, None);
        assert_eq!(e.timestamp, e.starts_at);
    }

    #[test]
    fn resolved_timestamp_is_ends_at_and_key_includes_it() {
        let mut a = alert(&[], &[]);
        a.status = AlertStatus::Resolved;
        a.ends_at = Some("2025-06-23T15:00:00Z".parse().unwrap());
        let e = map(a.clone());
        assert_eq!(e.timestamp, e.ends_at.unwrap());
        a.ends_at = Some("2025-06-23T15:05:00Z".parse().unwrap());
        assert_ne!(e.dedup_key(), map(a).dedup_key());
    }

    #[test]
    fn dedup_key_separates_states_but_not_repeats() {
        let firing = map(alert(&[], &[]));
        assert_eq!(firing.dedup_key(), map(alert(&[], &[])).dedup_key());
        let mut resolved = alert(&[], &[]);
        resolved.status = AlertStatus::Resolved;
        assert_ne!(firing.dedup_key(), map(resolved).dedup_key());
        let mut refired = alert(&[], &[]);
        refired.starts_at = "2025-06-23T16:00:00Z".parse().unwrap();
        assert_ne!(firing.dedup_key(), map(refired).dedup_key());
    }

    #[test]
    fn serializes_the_contract_fields() {
        let v = serde_json::to_value(map(alert(
            &[
                ("alertname", "A"),
                ("cluster", "prod"),
                ("service", "payment"),
            ],
            &[("summary", "DB connection failed")],
        )))
        .unwrap();
        for k in [
            "timestamp",
            "service",
            "message",
            "severity",
            "status",
            "fingerprint",
            "alertname",
            "cluster",
            "labels",
            "annotations",
            "starts_at",
            "ends_at",
            "generator_url",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["timestamp"], "2025-06-23T14:30:45Z");
        assert_eq!(v["ends_at"], serde_json::Value::Null);
        assert_eq!(v["cluster"], "prod");
    }
}
