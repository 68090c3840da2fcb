//! `[kafka]`: the broker, the topics, producer settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// bootstrap.servers
    pub brokers: String,
    pub alerts_topic: String,
    /// Where Loki pushes go (key = the stream's labels).
    pub logs_topic: String,
    /// Create missing topics at start (the broker may not auto-create them).
    pub create_topics: bool,
    pub partitions: i32,
    /// How long one produce may wait for the broker's ack before the webhook gets 503.
    pub message_timeout_ms: u64,
    /// Extra librdkafka producer properties (e.g. `"linger.ms" = "5"`).
    pub producer: BTreeMap<String, String>,
    /// Static group membership (KIP-345): a stable name for this process (a StatefulSet pod
    /// name, a host name). A restarted process takes its partitions back at once instead of
    /// waiting for the old member's session to expire.
    pub group_instance_id: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            alerts_topic: "alerts".into(),
            logs_topic: "logs".into(),
            create_topics: true,
            partitions: 3,
            message_timeout_ms: 10_000,
            producer: BTreeMap::from([("linger.ms".to_owned(), "5".to_owned())]),
            group_instance_id: None,
        }
    }
}

impl KafkaConfig {
    /// How long one produce may wait for the broker's ack.
    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return bad("kafka.brokers", "must not be empty");
        }
        if self.alerts_topic.trim().is_empty() {
            return bad("kafka.alerts_topic", "must not be empty");
        }
        if self.partitions < 1 {
            return bad("kafka.partitions", "must be at least 1");
        }
        if self.message_timeout_ms == 0 {
            return bad("kafka.message_timeout_ms", "must be above 0");
        }
        Ok(())
    }
}
