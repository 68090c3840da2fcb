//! Notifications: which receivers an alert goes to (`route`), what the mail and the Teams
//! card say (`render`, `teams`). The actors that send them live in `src/actors/`.

pub mod mail;
pub mod render;
pub mod retry;
pub mod teams;

use actix::Message;

use crate::config::{ReceiverConfig, RouteConfig};
use crate::domain::AlertEvent;

/// What MailActor and TeamsActor take: one alert, or several as one digest.
#[derive(Message, Clone)]
#[rtype(result = "Result<Delivered, NotifyError>")]
pub struct Deliver {
    pub receiver: ReceiverConfig,
    pub events: Vec<AlertEvent>,
}

/// Done with it: sent, or kept in the dead letters. Either way the offset may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    DeadLettered,
}

/// Neither sent nor dead-lettered (the dead-letter store itself failed): retry the batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("notification neither sent nor dead-lettered: {0}")]
pub struct NotifyError(pub String);

/// Receivers for an alert, like Alertmanager's routing: a route matches when every matcher
/// equals the alert's label (or `severity`/`service` field); the first match wins unless it
/// has `continue`. No match: unrouted (counted, not sent).
pub fn route<'a>(event: &AlertEvent, routes: &'a [RouteConfig]) -> Vec<&'a str> {
    let value = |k: &str| -> Option<&str> {
        match k {
            "severity" => Some(event.severity.as_str()),
            "service" => event
                .labels
                .get(k)
                .map(String::as_str)
                .or(Some(event.service.as_str())),
            _ => event.labels.get(k).map(String::as_str),
        }
    };
    let mut out = Vec::new();
    for r in routes {
        if r.matchers.iter().all(|(k, v)| value(k) == Some(v.as_str())) {
            if !out.contains(&r.receiver.as_str()) {
                out.push(r.receiver.as_str());
            }
            if !r.continue_ {
                break;
            }
        }
    }
    out
}

/// The identity of one notification: receiver + alert state. A second delivery of the same
/// state (Kafka redelivery) finds it recorded and sends nothing.
pub fn notification_key(receiver: &str, e: &AlertEvent) -> String {
    format!("{receiver}|{}", e.dedup_key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ev(sev: &str) -> AlertEvent {
        let body = include_str!("../../tests/fixtures/alertmanager/firing-critical.json").replace(
            "\"severity\": \"critical\"",
            &format!("\"severity\": \"{sev}\""),
        );
        crate::domain::parse_webhook(body.as_bytes())
            .unwrap()
            .remove(0)
    }

    fn r(m: &[(&str, &str)], receiver: &str, cont: bool) -> RouteConfig {
        RouteConfig {
            matchers: m
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            receiver: receiver.into(),
            continue_: cont,
        }
    }

    #[test]
    fn default_routes_send_critical_to_email_and_custom_to_teams() {
        let routes = crate::config::NotifyConfig::default().routes;
        assert_eq!(route(&ev("critical"), &routes), ["outlook"]);
        assert_eq!(route(&ev("custom"), &routes), ["teams"]);
        assert!(route(&ev("warning"), &routes).is_empty(), "unrouted");
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let routes = vec![
            r(&[("service", "payment")], "pay", true),
            r(&[("severity", "critical")], "mail", false),
            r(&[], "catchall", false),
        ];
        assert_eq!(route(&ev("critical"), &routes), ["pay", "mail"]);
        assert_eq!(route(&ev("info"), &routes), ["pay", "catchall"]);
        let routes = vec![r(&[("cluster", "prod"), ("instance", "nope")], "x", false)];
        assert!(
            route(&ev("critical"), &routes).is_empty(),
            "all matchers must hold"
        );
    }
}
