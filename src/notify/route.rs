//! Which receivers an alert goes to.

use crate::config::RouteConfig;
use crate::domain::AlertEvent;

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
