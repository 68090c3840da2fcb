//! Notifications: which receivers an alert goes to (`route`), what the mail and the Teams
//! card say (`render`, `teams`). The actors that send them live in `src/actors/`.

pub mod mail;
pub mod render;
pub mod replay;
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

/// One consumer batch of the `alerts` topic through notification: route, skip what is done
/// already (a redelivery), send through the throttle, record what was sent or dead-lettered.
/// Ok only when every routed alert is done, so the offsets are committed only then.
pub async fn notify_batch(
    batch: std::sync::Arc<Vec<crate::kafka::consumer::RawMessage>>,
    routes: std::sync::Arc<Vec<RouteConfig>>,
    pool: crate::db::PgPool,
    throttle: actix::Addr<crate::actors::throttle::ThrottleActor>,
) -> Result<crate::kafka::consumer::Commit, String> {
    use crate::actors::throttle::Notify;
    use crate::metrics as m;
    let mut work: Vec<(String, AlertEvent, String)> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for msg in batch.iter() {
        let Ok(e) = serde_json::from_slice::<AlertEvent>(&msg.payload) else {
            // The persist stage dead-letters undecodable messages whole; nothing to send here.
            metrics::counter!(m::NOTIFY_UNROUTED, "reason" => "undecodable").increment(1);
            continue;
        };
        let receivers = route(&e, &routes);
        if receivers.is_empty() {
            metrics::counter!(m::NOTIFY_UNROUTED, "reason" => "no_route").increment(1);
        }
        for r in receivers {
            let key = notification_key(r, &e);
            if keys.insert(key.clone()) {
                work.push((r.to_owned(), e.clone(), key));
            }
        }
    }
    if work.is_empty() {
        return Ok(crate::kafka::consumer::Commit::Batch);
    }
    let (p, all): (_, Vec<String>) = (pool.clone(), work.iter().map(|w| w.2.clone()).collect());
    let done =
        actix_web::rt::task::spawn_blocking(move || crate::db::notifications::done(&p, &all))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    let pending: Vec<_> = work.into_iter().filter(|w| !done.contains(&w.2)).collect();
    if !done.is_empty() {
        metrics::counter!(m::NOTIFY_SKIPPED).increment(done.len() as u64);
    }
    let results = futures_util::future::join_all(pending.iter().map(|(r, e, _)| {
        throttle.send(Notify {
            receiver: r.clone(),
            event: e.clone(),
        })
    }))
    .await;
    let mut rows = Vec::new();
    let mut failed = None;
    for ((r, e, key), res) in pending.into_iter().zip(results) {
        match res {
            Ok(Ok(d)) => rows.push((
                key,
                r,
                e.fingerprint.as_str().to_owned(),
                e.status.as_str().to_owned(),
                if d == Delivered::Sent {
                    "sent"
                } else {
                    "dead_lettered"
                },
            )),
            Ok(Err(err)) => failed = Some(err.to_string()),
            Err(err) => failed = Some(err.to_string()),
        }
    }
    actix_web::rt::task::spawn_blocking(move || crate::db::notifications::record(&pool, &rows))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match failed {
        None => Ok(crate::kafka::consumer::Commit::Batch),
        Some(e) => Err(e),
    }
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
