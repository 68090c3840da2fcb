//! `alertpipe dlq list` and `alertpipe dlq replay [--id N | --all]`: send dead-lettered
//! notifications again, straight to their receiver (no throttle), with the same retries.
//! A replayed row is marked; one that fails again keeps its place with the new reason.

use std::time::Duration;

use crate::config::{Config, ReceiverKind};
use crate::db::notifications::{mark_replayed, replayable};
use crate::notify::dead_letter::DeadNotification;
use crate::notify::teams::post_once;

use super::render::{alert_mail, digest_mail};
use super::smtp::{mailboxes, message, send_once, transport};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    pub sent: usize,
    pub failed: usize,
}

pub async fn replay(cfg: &Config, id: Option<i64>) -> anyhow::Result<ReplayReport> {
    let pool = crate::db::pool(cfg.database.connect_url().expose(), 2);
    let n = &cfg.notify;
    let policy = n.retry_policy();
    let p = pool.clone();
    let rows = actix_web::rt::task::spawn_blocking(move || replayable(&p, id)).await??;
    anyhow::ensure!(
        id.is_none() || !rows.is_empty(),
        "no replayable notification dead letter with id {id:?}"
    );
    let smtp = transport(&n.smtp)?;
    let from = n.smtp.sender()?;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut report = ReplayReport::default();
    for row in rows {
        let outcome: Result<(), String> = async {
            let item: DeadNotification =
                serde_json::from_slice(&row.payload).map_err(|e| format!("payload: {e}"))?;
            let r = n
                .receivers
                .iter()
                .find(|r| r.name == item.receiver)
                .ok_or_else(|| format!("receiver {:?} is no longer configured", item.receiver))?;
            match r.kind {
                ReceiverKind::Email => {
                    let mail = if item.events.len() == 1 {
                        alert_mail(&item.events[0], &n.grafana_url)
                    } else {
                        digest_mail(&item.events, &r.name, &n.grafana_url)
                    }
                    .map_err(|e| e.to_string())?;
                    let msg = message(&from, &mailboxes(&r.to)?, &mail)?;
                    policy
                        .run(|_| send_once(&smtp, msg.clone()))
                        .await
                        .map(|_| ())
                        .map_err(|g| g.reason)
                }
                ReceiverKind::Teams => {
                    let body = super::card::message(&item.events, &n.grafana_url);
                    let url = r.webhook_url.expose();
                    if url.is_empty() {
                        return Err(format!("receiver {} has no webhook URL", r.name));
                    }
                    policy
                        .run(|_| post_once(&client, url, &body))
                        .await
                        .map(|_| ())
                        .map_err(|g| g.reason)
                }
            }
        }
        .await;
        let p = pool.clone();
        let err = outcome.as_ref().err().cloned();
        actix_web::rt::task::spawn_blocking(move || mark_replayed(&p, row.id, err.as_deref()))
            .await??;
        match outcome {
            Ok(()) => {
                println!("dead letter {}: sent", row.id);
                report.sent += 1;
            }
            Err(e) => {
                println!("dead letter {}: failed again: {e}", row.id);
                report.failed += 1;
            }
        }
    }
    Ok(report)
}
