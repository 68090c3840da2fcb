//! The persist stage: `alerts` -> PersistActor (SyncArbiter, diesel) -> PostgreSQL alert
//! history, one row per alert occurrence.

pub mod actor;
pub mod sink;

use std::sync::Arc;

use actix::SyncArbiter;

use crate::config::Config;
use crate::db::PgPool;
use crate::kafka::consumer::{ConsumerSettings, StageHealth};
use crate::kafka::poison::PoisonStore;
use crate::kafka::priority::Foreground;
use actor::PersistActor;

/// PersistActor on a SyncArbiter, and the `alertpipe-persist` consumer feeding it one awaited
/// batch at a time.
pub fn start(
    cfg: &Config,
    pool: PgPool,
    poison: PoisonStore,
    foreground: Option<Arc<Foreground>>,
) -> StageHealth {
    let p = pool.clone();
    let persist = SyncArbiter::start(cfg.persist.workers, move || PersistActor::new(p.clone()));
    let settings = ConsumerSettings::new(
        &cfg.kafka,
        &cfg.persist.group,
        &cfg.kafka.alerts_topic,
        cfg.persist.batch_size,
        cfg.persist.linger(),
    )
    .yielding_to(foreground);
    crate::kafka::consumer::spawn(settings, sink::PersistSink { actor: persist }, poison)
}
