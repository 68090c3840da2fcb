//! The notify stage's sink: one consumer batch of `alerts` -> routed, already-done skipped,
//! sent through the throttle, recorded.

use crate::config::RouteConfig;
use crate::domain::AlertEvent;

use super::deliver::Delivered;
use super::route::route;
use super::throttle::{Notify, ThrottleActor};

/// One consumer batch of the `alerts` topic through notification: route, skip what is done
/// already (a redelivery), send through the throttle, record what was sent or dead-lettered.
/// Ok only when every routed alert is done, so the offsets are committed only then.
pub async fn notify_batch(
    batch: std::sync::Arc<Vec<crate::kafka::consumer::RawMessage>>,
    routes: std::sync::Arc<Vec<RouteConfig>>,
    pool: crate::db::PgPool,
    throttle: actix::Addr<ThrottleActor>,
) -> Result<crate::kafka::consumer::Commit, String> {
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
