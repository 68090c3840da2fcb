//! `[persist]`: the `alerts` -> PostgreSQL consumer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// Kafka consumer group.
    pub group: String,
    /// Messages per transaction at most. A batch is stored at once when the stage is caught
    /// up, so this only matters during a backlog, where each transaction's fixed cost counts:
    /// the stage reached 0.89x a bare COPY at 500, 0.98x at 2000 (`cargo bench --bench persist`).
    pub batch_size: usize,
    /// How long a batch waits to fill.
    pub linger_ms: u64,
    /// PersistActor threads (SyncArbiter).
    pub workers: usize,
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            group: "alertpipe-persist".into(),
            batch_size: 2000,
            linger_ms: 50,
            workers: 2,
        }
    }
}

impl PersistConfig {
    /// How long a batch waits to fill.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 || self.workers == 0 {
            return bad("persist", "batch_size and workers must be above 0");
        }
        Ok(())
    }
}
