//! The consumer core every stage (persist, notify, archive) runs on: a stage writes a [`Sink`]
//! and gets batching, retries, dead letters, commits and rebalances done the same way.
//!
//! - `sink.rs`: the contract a stage implements ([`Sink`], [`Commit`]).
//! - `run.rs`: the loop and its rules (batching, retry, commit, rewind, revoke).
//! - `source.rs`: what the loop reads from; `broker.rs`: the librdkafka consumer behind it.
//! - `offsets.rs`: typed partitions and offsets, and the commits that are due.
//! - `poison.rs`: where what a stage cannot use is kept (the dead-letter topic and table).
//! - `group.rs`: the stage's standing in its group ([`StageHealth`], rebalance callbacks).
//! - `settings.rs`: [`ConsumerSettings`].

mod broker;
pub mod group;
mod offsets;
pub mod poison;
mod run;
mod settings;
mod sink;
mod source;
#[cfg(test)]
mod tests;

use tracing::Instrument;

pub use group::{Limits, StageHealth};
pub use offsets::{Offsets, TopicPartition};
pub use settings::ConsumerSettings;
pub use sink::{Commit, Decoded, Retryable, Sink, Undecodable};
pub use source::RawMessage;

use poison::PoisonStore;

/// Runs `sink` behind a consumer group, as a task of the current System; returns the stage's
/// readiness signal, which also asks the loop to stop and says when it has.
pub fn spawn<S: Sink>(settings: ConsumerSettings, sink: S, poison: PoisonStore) -> StageHealth {
    let health =
        StageHealth::new(S::STAGE, settings.limits).reporting(settings.connection.errors());
    let h = health.clone();
    let span = tracing::info_span!("stage", stage = S::STAGE);
    actix_web::rt::spawn(
        async move {
            let mut parts = Some((sink, poison));
            while let Some((sink, poison)) = parts.take() {
                match broker::KafkaSource::join(&settings, &h) {
                    Ok(source) => {
                        parts = run::Loop::new(settings.clone(), source, sink, poison, h.clone())
                            .run()
                            .await;
                        if parts.is_none() {
                            tracing::info!("consumer left its group");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "consumer stopped: cannot join its group")
                    }
                }
            }
            h.mark_stopped();
        }
        .instrument(span),
    );
    health
}
