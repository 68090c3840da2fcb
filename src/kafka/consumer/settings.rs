//! How a stage's consumer is set up: its group, batching and the shared Kafka settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::group::Limits;
use crate::kafka::priority::Foreground;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The brokers and how to reach them (`[kafka.security]`).
    pub connection: crate::kafka::Connection,
    pub group: String,
    pub topic: String,
    pub batch_size: usize,
    pub linger: Duration,
    /// When set, an idle consumer calls the sink with an empty batch this often (for sinks
    /// that flush on age, like the archive).
    pub tick: Option<Duration>,
    /// `group.instance.id` (static membership), when configured.
    pub instance_id: Option<String>,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_poll_interval_ms: u64,
    pub fetch_wait_max_ms: u64,
    /// Commits at most this often while a backlog lasts (`kafka.commit_interval_ms`).
    pub commit_interval: Duration,
    /// When readiness gives up on the stage.
    pub limits: Limits,
    /// Extra librdkafka properties (`kafka.consumer`), applied last.
    pub extra: BTreeMap<String, String>,
    /// In a process that also acknowledges webhooks: the pause after each batch that keeps
    /// those acknowledgements fast (`kafka::priority`).
    pub foreground: Option<Arc<Foreground>>,
    /// How long one wait for a message lasts: the loop looks at its group (stop requests,
    /// due commits) at least this often.
    pub look: Duration,
    /// A stage that has waited this long for its group to assign it anything (since it joined,
    /// or since a revocation left it nothing) closes its consumer and joins again: librdkafka
    /// can stay out of the group for good when the broker dies during a join and comes back
    /// (ARCHITECTURE.md, "Kafka consumers"). Longer than a rebalance may legitimately take (it
    /// waits up to `max.poll.interval.ms` for slow members) plus a session.
    pub rejoin_after: Duration,
}

impl ConsumerSettings {
    /// A consumer group on `topic` with the shared Kafka settings (brokers, static membership).
    pub fn new(
        kafka: &crate::config::KafkaConfig,
        group: &str,
        topic: &str,
        batch_size: usize,
        linger: Duration,
    ) -> Self {
        ConsumerSettings {
            connection: crate::kafka::Connection::of(kafka),
            group: group.to_owned(),
            topic: topic.to_owned(),
            batch_size,
            linger,
            tick: None,
            instance_id: kafka.group_instance_id.clone(),
            session_timeout_ms: kafka.session_timeout_ms,
            heartbeat_interval_ms: kafka.heartbeat_interval_ms,
            max_poll_interval_ms: kafka.max_poll_interval_ms,
            fetch_wait_max_ms: kafka.fetch_wait_max_ms,
            commit_interval: Duration::from_millis(kafka.commit_interval_ms),
            limits: Limits {
                unassigned_grace: Duration::from_secs(kafka.unassigned_grace_s),
                stall_timeout: Duration::from_secs(kafka.stall_timeout_s),
            },
            extra: kafka.consumer.clone(),
            foreground: None,
            look: Duration::from_secs(1),
            rejoin_after: Duration::from_millis(
                kafka.max_poll_interval_ms + kafka.session_timeout_ms,
            ),
        }
    }

    /// Yields to `foreground` between batches (see `kafka::priority`).
    pub fn yielding_to(mut self, foreground: Option<Arc<Foreground>>) -> Self {
        self.foreground = foreground;
        self
    }
}
