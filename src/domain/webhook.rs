//! Alertmanager's webhook payload (version 4), parsed at the edge into `AlertEvent`s.
//! Unknown fields are ignored (Alertmanager adds fields over time); wrong types, missing
//! required fields, a wrong version and non-UTF-8 bodies are errors naming the field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::alert::{AlertEvent, AlertStatus, Fingerprint, Severity, UNKNOWN_SERVICE};
use super::labels::{first_of, SERVICE_LABELS};

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookPayload {
    pub version: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default, rename = "groupKey")]
    pub group_key: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookAlert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
    #[serde(default, rename = "endsAt")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Why a webhook body was refused; `field` is a path such as `alerts[2].startsAt`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PayloadError {
    pub field: Option<String>,
    pub message: String,
}

impl PayloadError {
    fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        PayloadError {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

pub const SUPPORTED_VERSION: &str = "4";

/// Parses and validates a whole webhook body. All or nothing: one bad alert refuses the
/// request (with a 400 Alertmanager will not retry, so the message says exactly what).
pub fn parse_webhook(body: &[u8]) -> Result<Vec<AlertEvent>, PayloadError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(PayloadError {
            field: None,
            message: format!("body is not valid UTF-8 (byte {})", e.valid_up_to()),
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError {
            field: None,
            message: "empty body; expected an Alertmanager webhook JSON object".into(),
        });
    }
    // The fast path parses plainly; only a refused body is parsed again, tracking the path of
    // every field, to name the one that is wrong.
    let payload: WebhookPayload = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(_) => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            let e = match serde_path_to_error::deserialize::<_, WebhookPayload>(de) {
                Ok(p) => return finish(p),
                Err(e) => e,
            };
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = (path != "." && !path.is_empty()).then_some(path);
            return Err(PayloadError {
                field,
                message: format!("invalid webhook payload: {inner}"),
            });
        }
    };
    finish(payload)
}

fn finish(payload: WebhookPayload) -> Result<Vec<AlertEvent>, PayloadError> {
    if payload.version != SUPPORTED_VERSION {
        return Err(PayloadError::at(
            "version",
            format!(
                "unsupported webhook payload version {:?}; expected {:?}",
                payload.version, SUPPORTED_VERSION
            ),
        ));
    }
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| {
            let fingerprint = Fingerprint::parse(&alert.fingerprint).ok_or_else(|| {
                PayloadError::at(
                    format!("alerts[{i}].fingerprint"),
                    "fingerprint must not be empty",
                )
            })?;
            Ok(AlertEvent::from_webhook(alert, fingerprint))
        })
        .collect()
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRING: &str = include_str!("../../tests/fixtures/alertmanager/firing-critical.json");

    #[test]
    fn parses_real_alertmanager_body() {
        let events = parse_webhook(FIRING.as_bytes()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.service, "payment");
        assert_eq!(e.severity.as_str(), "critical");
        assert_eq!(e.status, AlertStatus::Firing);
        assert_eq!(e.ends_at, None);
    }

    #[test]
    fn every_fixture_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alertmanager");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(&path).unwrap();
                let events = parse_webhook(&body).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert!(!events.is_empty(), "{path:?}");
                n += 1;
            }
        }
        assert!(n >= 10, "fixtures missing: {n}");
    }

    #[test]
    fn nanosecond_starts_at_is_kept() {
        let body =
            include_str!("../../tests/fixtures/alertmanager/firing-custom-server-startsat.json");
        let e = &parse_webhook(body.as_bytes()).unwrap()[0];
        assert_eq!(e.starts_at.timestamp_subsec_nanos(), 828_599_215);
    }

    #[test]
    fn wrong_version_names_the_field() {
        let body = FIRING.replace("\"version\": \"4\"", "\"version\": \"3\"");
        let err = parse_webhook(body.as_bytes()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("version"));
    }

    #[test]
    fn wrong_type_names_the_path() {
        let body = FIRING.replace("\"startsAt\": \"", "\"startsAt\": 12, \"x\": \"");
        let err = parse_webhook(body.as_bytes()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("alerts[0].startsAt"), "{err}");
    }

    #[test]
    fn missing_field_and_bad_status_are_refused() {
        let body = FIRING.replace("\"fingerprint\"", "\"fingerprint_\"");
        let err = parse_webhook(body.as_bytes()).unwrap_err();
        assert!(err.message.contains("fingerprint"), "{err}");
        let body = FIRING.replace(
            "\"status\": \"firing\",\n      \"labels\"",
            "\"status\": \"burning\",\n      \"labels\"",
        );
        let err = parse_webhook(body.as_bytes()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("alerts[0].status"), "{err}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = FIRING.replacen('{', "{\"futureField\": [1,2,3],", 1);
        assert_eq!(parse_webhook(body.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn non_utf8_and_empty_are_refused() {
        let mut body = FIRING.as_bytes().to_vec();
        body[20] = 0xff;
        assert!(parse_webhook(&body).unwrap_err().message.contains("UTF-8"));
        assert!(parse_webhook(b"  ").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and many single-byte mutations.
        let base = FIRING.as_bytes();
        for end in 0..base.len() {
            let _ = parse_webhook(&base[..end]);
        }
        let mut state: u32 = 0x9e37_79b9;
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut b = base.to_vec();
            let i = state as usize % b.len();
            b[i] = (state >> 8) as u8;
            let _ = parse_webhook(&b);
        }
    }
}

#[cfg(test)]
mod mapping_tests {
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

    /// The dedup table's hashed key tells the same states apart as `dedup_key` does.
    #[test]
    fn the_hashed_dedup_key_separates_what_dedup_key_separates() {
        use crate::ingest::dedup::DedupKey;
        let key = |a: &AlertEvent| DedupKey::of(a);
        let firing = map(alert(&[], &[]));
        assert_eq!(key(&firing), key(&map(alert(&[], &[]))), "a repeat");
        let mut resolved = alert(&[], &[]);
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at = Some("2025-06-23T15:00:00Z".parse().unwrap());
        let r1 = map(resolved.clone());
        assert_ne!(key(&firing), key(&r1), "firing vs resolved");
        resolved.ends_at = Some("2025-06-23T15:05:00Z".parse().unwrap());
        assert_ne!(key(&r1), key(&map(resolved)), "resolved at another time");
        let mut refired = alert(&[], &[]);
        refired.starts_at = "2025-06-23T16:00:00Z".parse().unwrap();
        assert_ne!(key(&firing), key(&map(refired)), "fired again");
        let mut other = alert(&[], &[]);
        other.fingerprint = "abd".into();
        assert_ne!(
            key(&firing),
            key(&map(other)),
            "another alert (fingerprint)"
        );
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
