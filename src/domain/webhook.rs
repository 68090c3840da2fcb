//! Alertmanager's webhook payload (version 4), parsed at the edge into `AlertEvent`s.
//! Unknown fields are ignored (Alertmanager adds fields over time); wrong types, missing
//! required fields, a wrong version and non-UTF-8 bodies are errors naming the field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::alert::{AlertEvent, AlertStatus, Fingerprint};

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
