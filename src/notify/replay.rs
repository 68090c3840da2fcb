//! `alertpipe dlq list` and `alertpipe dlq replay [--id N | --all]`: send dead-lettered
//! notifications again, straight to their receiver (no throttle), through the same delivery
//! as the worker's (`notify::deliver`: log lines, rendering, retries). A replayed row is
//! marked; one that fails again keeps its place with the new reason.

use crate::config::{Config, ReceiverKind};
use crate::db::notifications::{mark_replayed, replayable};
use crate::notify::deliver::dead_letter::DeadNotification;
use crate::notify::deliver::mail::MailSender;
use crate::notify::deliver::teams::TeamsSender;
use crate::notify::deliver::{Attempted, Delivery};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    pub sent: usize,
    pub failed: usize,
}

pub async fn replay(cfg: &Config, id: Option<i64>) -> anyhow::Result<ReplayReport> {
    let pool = crate::db::pool(cfg.database.connect_url().expose(), 2);
    let n = &cfg.notify;
    let p = pool.clone();
    let rows = actix_web::rt::task::spawn_blocking(move || replayable(&p, id)).await??;
    anyhow::ensure!(
        id.is_none() || !rows.is_empty(),
        "no replayable notification dead letter with id {id:?}"
    );
    let logs = super::log_source(cfg);
    let https = super::deliver::https::client(n.https_ca_file.as_deref(), super::TEAMS_TIMEOUT)?;
    let mail = Delivery::new(
        MailSender::new(&n.smtp, n.grafana_url.clone())?,
        n.retry_policy(),
    )
    .with_log_lines(logs.clone(), https.clone());
    let teams = Delivery::new(
        TeamsSender::new(https.clone(), n.grafana_url.clone(), n.teams_max_per_s),
        n.retry_policy(),
    )
    .with_log_lines(logs, https);
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
            let attempted = match r.kind {
                ReceiverKind::Email => mail.attempt(r, &item.events).await,
                ReceiverKind::Teams => teams.attempt(r, &item.events).await,
            };
            match attempted {
                Attempted::Sent { .. } => Ok(()),
                Attempted::GaveUp { reason, .. } => Err(reason),
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
