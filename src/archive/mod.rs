//! The archive stage: `logs` -> ArchiveActor (`actor`) -> snappy Parquet files on storage.
//! `push` decodes what Promtail sends, `otlp` what OpenTelemetry exporters send; the files themselves (format, names, storage, reading,
//! LogQL) are `crate::coldstore`'s, shared with the readers.

pub mod actor;
pub mod epochs;
mod files;
pub mod otlp;
pub mod otlp_proto;
pub mod proto;
pub mod push;
pub mod sink;

use std::time::Duration;

use actix::Actor;

use crate::coldstore::storage;
use crate::config::Config;
use crate::kafka::consumer::ConsumerSettings;
use crate::stage::{Stage, StageDeps};
use actor::ArchiveActor;
use epochs::ArchiveSettings;

/// Bounds of the idle tick that closes files on age when no logs arrive.
const TICK_MIN: Duration = Duration::from_millis(50);
const TICK_MAX: Duration = Duration::from_millis(500);

/// ArchiveActor on a thread of its own (Parquet encoding is CPU work), fed by the
/// `alertpipe-archive` consumer, which commits only what is in closed files.
pub fn start(cfg: &Config, deps: &StageDeps) -> anyhow::Result<Stage> {
    crate::metrics::init_archive();
    let storage = storage::open(&cfg.archive.root()?)?;
    let settings = ArchiveSettings {
        default_env: cfg.archive.default_env.clone(),
        max_file_bytes: cfg.archive.max_file_bytes,
        max_age: cfg.archive.max_age(),
        codec: cfg.archive.codec,
        row_group_bytes: cfg.archive.row_group_bytes,
        buffer_bytes: cfg.archive.buffer_bytes,
        encode_threads: cfg.archive.encode_threads,
    };
    let sweep = (
        storage.clone(),
        cfg.archive.max_age() + Duration::from_secs(3600),
    );
    actix_web::rt::spawn(async move {
        match storage::sweep_incomplete(&sweep.0, sweep.1).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed files crashed writers left unfinished"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep unfinished archive files"),
        }
    });
    let archive = ArchiveActor::start_in_arbiter(&actix::Arbiter::new().handle(), move |_| {
        ArchiveActor::new(settings, storage)
    });
    let consumer = ConsumerSettings {
        // Idle ticks let age-based flushes happen when no logs arrive: a file closes within
        // a tenth of `max_age` (at most 500 ms, at least 50 ms) of being due.
        tick: Some((cfg.archive.max_age() / 10).clamp(TICK_MIN, TICK_MAX)),
        ..ConsumerSettings::new(
            &cfg.kafka,
            &cfg.archive.group,
            &cfg.kafka.logs_topic,
            cfg.archive.batch_size,
            Duration::from_millis(50),
        )
        // Log records are large (up to 512 KiB of lines each) and the archive reads tens of
        // MB/s: a 2 MiB fetch every fetch wait would halve that, so it keeps librdkafka's size.
        .yielding_to(deps.foreground.clone())
    };
    let health = crate::kafka::consumer::spawn(
        consumer,
        sink::ArchiveSink {
            actor: archive,
            batches: Default::default(),
        },
        deps.poison.clone(),
    );
    Ok(health.into())
}
