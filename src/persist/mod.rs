//! The persist stage: `alerts` -> PersistActor (SyncArbiter, diesel) -> PostgreSQL alert
//! history, one row per alert occurrence.

pub mod actor;
pub mod sink;

use actix::SyncArbiter;

use crate::config::Config;
use crate::kafka::consumer::ConsumerSettings;
use crate::stage::{Stage, StageDeps};
use actor::PersistActor;

/// PersistActor on a SyncArbiter, and the `alertpipe-persist` consumer feeding it one awaited
/// batch at a time.
pub fn start(cfg: &Config, deps: &StageDeps) -> anyhow::Result<Stage> {
    let p = deps.db("persist")?;
    crate::metrics::init_persist();
    let persist = SyncArbiter::start(cfg.persist.workers, move || PersistActor::new(p.clone()));
    let settings = ConsumerSettings::new(
        &cfg.kafka,
        &cfg.persist.group,
        &cfg.kafka.alerts_topic,
        cfg.persist.batch_size,
        cfg.persist.linger(),
    )
    .yielding_to(deps.foreground.clone());
    let sink = sink::PersistSink { actor: persist };
    Ok(crate::kafka::consumer::spawn(settings, sink, deps.poison.clone()).into())
}
