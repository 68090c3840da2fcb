//! `[ingest]` and `[dedup]`: the webhook and push edge's budgets, and duplicate suppression.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Alerts accepted but not yet acknowledged by Kafka, across all requests; past it, 503.
    pub max_inflight_alerts: usize,
    /// Bounded mailbox of each ingest actor.
    pub mailbox_capacity: usize,
    /// Retry-After seconds on 503.
    pub retry_after_s: u64,
    /// Raw log bytes pushed but not yet acknowledged by Kafka; past it, 429.
    pub push_max_inflight_bytes: usize,
    /// Webhook acknowledgement time the process's consumer stages yield to: while acks run
    /// slower, the stages pause between batches (`kafka::priority`). 0: they never yield.
    pub ack_target_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// A repeat of the same alert state within this many seconds is dropped.
    pub window_s: u64,
    /// Upper bound on remembered states (oldest forgotten first).
    pub max_entries: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_inflight_alerts: 20_000,
            mailbox_capacity: 1024,
            retry_after_s: 5,
            push_max_inflight_bytes: 256 * 1024 * 1024,
            ack_target_ms: 25,
        }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window_s: 3600,
            max_entries: 200_000,
        }
    }
}

impl IngestConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_inflight_alerts == 0 || self.mailbox_capacity == 0 {
            return bad(
                "ingest",
                "max_inflight_alerts and mailbox_capacity must be above 0",
            );
        }
        Ok(())
    }

    pub fn ack_target(&self) -> Duration {
        Duration::from_millis(self.ack_target_ms)
    }
}

impl DedupConfig {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_s)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return bad("dedup.max_entries", "must be above 0");
        }
        Ok(())
    }
}
