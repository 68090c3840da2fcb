//! Metric names (one family per stage, Prometheus conventions) and the recorder.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const RECEIVED: &str = "alertpipe_ingest_alerts_received_total";
pub const DEDUPLICATED: &str = "alertpipe_ingest_alerts_deduplicated_total";
pub const PRODUCED: &str = "alertpipe_kafka_produced_total";
pub const PRODUCE_FAILED: &str = "alertpipe_kafka_produce_failures_total";
pub const PRODUCE_SECONDS: &str = "alertpipe_kafka_produce_seconds";
pub const REJECTED: &str = "alertpipe_ingest_alerts_rejected_total";
pub const INGEST_INFLIGHT: &str = "alertpipe_ingest_inflight_alerts";
pub const DEDUP_ENTRIES: &str = "alertpipe_ingest_dedup_entries";
pub const HTTP_REQUESTS: &str = "alertpipe_http_requests_total";
pub const HTTP_SECONDS: &str = "alertpipe_http_request_duration_seconds";
pub const PERSISTED: &str = "alertpipe_persist_alerts_total";
pub const PERSIST_FAILED: &str = "alertpipe_persist_batch_failures_total";
pub const PERSIST_SECONDS: &str = "alertpipe_persist_batch_seconds";
pub const PERSIST_TRUNCATED: &str = "alertpipe_persist_truncated_total";
/// Persist batches whose fast `COPY` met an occurrence already stored (replays, redeliveries).
pub const PERSIST_COPY_CONFLICTS: &str = "alertpipe_persist_copy_conflicts_total";
/// The pause consumer stages take after each batch while webhook acknowledgements run slow
/// (`kafka::priority`).
pub const BACKGROUND_PAUSE: &str = "alertpipe_consumer_background_pause_seconds";
/// Log pushes (Loki push API, OTLP) refused (`reason`: invalid | full).
pub const LOG_PUSHES_REJECTED: &str = "alertpipe_ingest_log_pushes_rejected_total";
/// OTLP log records refused alone (over the record size cap; the rest of the request goes on).
pub const LOG_RECORDS_REJECTED: &str = "alertpipe_ingest_log_records_rejected_total";
pub const DEAD_LETTERED: &str = "alertpipe_dead_letters_total";
pub const LOG_PUSHES: &str = "alertpipe_ingest_log_pushes_total";
pub const LOG_LINES_RECEIVED: &str = "alertpipe_ingest_log_lines_received_total";
/// Lines in closed files (durable, committed).
pub const ARCHIVE_LINES: &str = "alertpipe_archive_lines_total";
/// Lines the archive stage took into open files (not durable until their file closes); read
/// again after a rewind or a partition move, so it may exceed `ARCHIVE_LINES`.
pub const ARCHIVE_LINES_TAKEN: &str = "alertpipe_archive_lines_taken_total";
pub const ARCHIVE_BYTES: &str = "alertpipe_archive_bytes_total";
pub const ARCHIVE_FILE_BYTES: &str = "alertpipe_archive_file_bytes_total";
pub const ARCHIVE_FILES: &str = "alertpipe_archive_files_total";
pub const ARCHIVE_FAILED: &str = "alertpipe_archive_write_failures_total";
pub const ARCHIVE_WRITE_SECONDS: &str = "alertpipe_archive_write_seconds";
/// LogQL queries over the archive (`result`: ok | bad_request | error), and the file bytes
/// they read.
pub const ARCHIVE_QUERIES: &str = "alertpipe_archive_queries_total";
pub const ARCHIVE_QUERY_BYTES_READ: &str = "alertpipe_archive_query_bytes_read_total";
pub const NOTIFY_SENT: &str = "alertpipe_notify_sent_total";
pub const NOTIFY_THROTTLED: &str = "alertpipe_notify_throttled_total";
pub const NOTIFY_DIGESTS: &str = "alertpipe_notify_digests_total";
/// Attempts beyond the first of sends that went through (`kind`: email | teams).
pub const NOTIFY_SEND_RETRIES: &str = "alertpipe_notify_send_retries_total";
/// Notifications given back to the outbox to try again later (the dead-letter store failed).
pub const NOTIFY_OUTBOX_RELEASED: &str = "alertpipe_notify_outbox_released_total";
pub const NOTIFY_UNROUTED: &str = "alertpipe_notify_unrouted_total";
pub const NOTIFY_SKIPPED: &str = "alertpipe_notify_already_sent_total";
/// Notifications consumed and committed, not sent yet (the PostgreSQL outbox), all processes.
pub const NOTIFY_OUTBOX_PENDING: &str = "alertpipe_notify_outbox_pending";
/// Age of the oldest notification waiting in the outbox, seconds (0 when empty).
pub const NOTIFY_OUTBOX_OLDEST: &str = "alertpipe_notify_outbox_oldest_seconds";
pub const ACTOR_RESTARTS: &str = "alertpipe_actor_restarts_total";
/// 1 while a consumer stage's sink is failing (its partitions paused), else 0.
pub const CONSUMER_FAILING: &str = "alertpipe_consumer_sink_failing";
/// Messages of a partition not yet durable in a consumer stage (high watermark - committed).
pub const CONSUMER_LAG: &str = "alertpipe_consumer_lag";
/// Unix time of the last batch a consumer stage made durable.
pub const CONSUMER_LAST_PROGRESS: &str = "alertpipe_consumer_last_progress_timestamp_seconds";
/// Partitions a consumer stage holds now.
pub const CONSUMER_ASSIGNED: &str = "alertpipe_consumer_assigned_partitions";
/// Batches a consumer stage made durable (and committed).
pub const CONSUMER_BATCHES: &str = "alertpipe_consumer_batches_total";

/// The series the ingest role records, at zero from its start: rules and dashboards see them
/// (and `rate()` over them works) before the first event. Each stage does the same for its own
/// (`init_stage`, `init_persist`, `init_notify`, `init_archive`).
pub fn init_ingest(topics: &[&str]) {
    for name in [
        RECEIVED,
        DEDUPLICATED,
        LOG_PUSHES,
        LOG_LINES_RECEIVED,
        LOG_RECORDS_REJECTED,
    ] {
        metrics::counter!(name).increment(0);
    }
    for reason in ["invalid", "full"] {
        metrics::counter!(REJECTED, "reason" => reason).increment(0);
        metrics::counter!(LOG_PUSHES_REJECTED, "reason" => reason).increment(0);
    }
    for topic in topics {
        let topic = topic.to_string();
        metrics::counter!(PRODUCED, "topic" => topic.clone()).increment(0);
        metrics::counter!(PRODUCE_FAILED, "topic" => topic.clone()).increment(0);
        let _ = metrics::histogram!(PRODUCE_SECONDS, "topic" => topic);
    }
    metrics::gauge!(INGEST_INFLIGHT).set(0.0);
    metrics::gauge!(DEDUP_ENTRIES).set(0.0);
    metrics::counter!(ACTOR_RESTARTS, "actor" => "kafka_producer").increment(0);
}

/// A consumer stage's own series (its health gauges are set by `StageHealth`).
pub fn init_stage(stage: &'static str) {
    metrics::counter!(CONSUMER_BATCHES, "stage" => stage).increment(0);
    metrics::counter!(DEAD_LETTERED, "stage" => stage).increment(0);
    metrics::gauge!(CONSUMER_FAILING, "stage" => stage).set(0.0);
}

pub fn init_persist() {
    for name in [
        PERSISTED,
        PERSIST_FAILED,
        PERSIST_TRUNCATED,
        PERSIST_COPY_CONFLICTS,
    ] {
        metrics::counter!(name).increment(0);
    }
    let _ = metrics::histogram!(PERSIST_SECONDS);
}

/// `receivers`: (name, kind) of every configured receiver.
pub fn init_notify(receivers: &[(String, &'static str)]) {
    for (name, kind) in receivers {
        metrics::counter!(NOTIFY_SENT, "receiver" => name.clone(), "kind" => *kind).increment(0);
        metrics::counter!(NOTIFY_THROTTLED, "receiver" => name.clone()).increment(0);
        metrics::counter!(NOTIFY_DIGESTS, "receiver" => name.clone()).increment(0);
    }
    for kind in ["email", "teams"] {
        metrics::counter!(NOTIFY_SEND_RETRIES, "kind" => kind).increment(0);
    }
    metrics::counter!(NOTIFY_UNROUTED, "reason" => "no_route").increment(0);
    metrics::counter!(NOTIFY_OUTBOX_RELEASED).increment(0);
    metrics::counter!(NOTIFY_SKIPPED).increment(0);
    metrics::gauge!(NOTIFY_OUTBOX_PENDING).set(0.0);
    metrics::gauge!(NOTIFY_OUTBOX_OLDEST).set(0.0);
}

pub fn init_archive() {
    for name in [
        ARCHIVE_LINES,
        ARCHIVE_LINES_TAKEN,
        ARCHIVE_BYTES,
        ARCHIVE_FILE_BYTES,
        ARCHIVE_FILES,
        ARCHIVE_FAILED,
        ARCHIVE_QUERY_BYTES_READ,
    ] {
        metrics::counter!(name).increment(0);
    }
    for result in ["ok", "bad_request", "error"] {
        metrics::counter!(ARCHIVE_QUERIES, "result" => result).increment(0);
    }
    let _ = metrics::histogram!(ARCHIVE_WRITE_SECONDS);
}

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process (tests boot many apps in one process) and
/// returns the handle `/metrics` renders.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    let upkeep = handle.clone();
                    std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || loop {
                            std::thread::sleep(Duration::from_secs(5));
                            upkeep.run_upkeep();
                        })
                        .ok();
                    handle
                }
                // Another recorder is installed (embedding): render what this builder sees.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}
