//! The persist stage: `alerts` -> PersistActor (SyncArbiter, diesel) -> PostgreSQL alert
//! history, one row per alert occurrence.

pub mod actor;

use actix::SyncArbiter;

use crate::config::Config;
use crate::db::PgPool;
use crate::kafka::consumer::{self, Commit, ConsumerSettings, StageHealth};
use actor::{PersistActor, PersistBatch};

/// PersistActor on a SyncArbiter, and the `alertpipe-persist` consumer feeding it one awaited
/// batch at a time.
pub fn start(cfg: &Config, pool: PgPool) -> StageHealth {
    let p = pool.clone();
    let persist = SyncArbiter::start(cfg.persist.workers, move || PersistActor::new(p.clone()));
    let health = StageHealth::new("persist");
    let settings = ConsumerSettings::new(
        &cfg.kafka,
        &cfg.persist.group,
        &cfg.kafka.alerts_topic,
        cfg.persist.batch_size,
        cfg.persist.linger(),
    );
    consumer::spawn(settings, health.clone(), move |batch| {
        let persist = persist.clone();
        async move {
            match persist.send(PersistBatch::decode(&batch)).await {
                Ok(Ok(_)) => Ok(Commit::Batch),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("persist actor: {e}")),
            }
        }
    });
    health
}
