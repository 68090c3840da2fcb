//! `[kafka]`: the broker, the topics, producer settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::kafka_security::KafkaSecurity;
use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// bootstrap.servers
    pub brokers: String,
    /// TLS and SASL for every client (`[kafka.security]`).
    pub security: KafkaSecurity,
    pub alerts_topic: String,
    /// Where Loki pushes go (key = the stream's labels).
    pub logs_topic: String,
    /// Create missing topics at start (the broker may not auto-create them).
    pub create_topics: bool,
    pub partitions: i32,
    /// Replicas of each topic alertpipe creates. 0: as many as the cluster has brokers, at
    /// most 3 (1 on a single broker, 3 on a cluster of three or more).
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics alertpipe creates: how many replicas must have a
    /// record before the broker acknowledges it (the producers ask `acks=all`). 0: one less
    /// than the replication factor, at least 1 (2 of 3), so one broker may be down and
    /// nothing acknowledged lives on a single disk.
    pub min_insync_replicas: i32,
    /// How long one produce may wait for the broker's ack before the webhook gets 503.
    pub message_timeout_ms: u64,
    /// Extra librdkafka producer properties (e.g. `"linger.ms" = "5"`).
    pub producer: BTreeMap<String, String>,
    /// Extra librdkafka properties for the stages' consumers (e.g. `"fetch.wait.max.ms"`,
    /// or `debug = "cgrp"` to see group membership in the log).
    pub consumer: BTreeMap<String, String>,
    /// Static group membership (KIP-345): a stable name for this process (a StatefulSet pod
    /// name, a host name). A restarted process takes its partitions back at once instead of
    /// waiting for the old member's session to expire.
    pub group_instance_id: Option<String>,
    /// A member silent this long is dead: its partitions move to the others. Short, so a
    /// killed process's partitions resume within seconds (librdkafka's default is 45 s).
    pub session_timeout_ms: u64,
    /// How often members tell the coordinator they are alive (a third of the session or less).
    pub heartbeat_interval_ms: u64,
    /// Longest a stage may take between two polls before the group gives its partitions away
    /// (also the time a rebalance waits for members to rejoin). Stages never hold the loop for
    /// long, so this can be short.
    pub max_poll_interval_ms: u64,
    /// Longest the broker may hold a fetch that has no data yet (`fetch.wait.max.ms`,
    /// librdkafka's 500 ms). Apache Kafka answers as soon as data arrives, so this bounds only
    /// how often an idle consumer asks, not how late it sees a new message.
    pub fetch_wait_max_ms: u64,
    /// While a stage works through a backlog, its offsets are committed at most this often
    /// (each batch's otherwise); once every partition it holds is read to its end, and when it
    /// stops, at once. Every offset commit is a write to the broker's `__consumer_offsets`, so a
    /// commit per batch of a fast backlog costs the broker more than it buys. A crash
    /// redelivers at most this much, which the stages absorb (one row per occurrence, one mail
    /// per notification). 0: commit every batch.
    pub commit_interval_ms: u64,
    /// `/readyz` turns not-ready when a consumer stage has held no partition this long.
    pub unassigned_grace_s: u64,
    /// `/readyz` turns not-ready when a consumer stage has lag and no batch made durable
    /// for this long.
    pub stall_timeout_s: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            security: KafkaSecurity::default(),
            alerts_topic: "alerts".into(),
            logs_topic: "logs".into(),
            create_topics: true,
            partitions: 3,
            replication_factor: 0,
            min_insync_replicas: 0,
            message_timeout_ms: 10_000,
            // One produce request in flight per broker connection: with more (librdkafka
            // allows 5 with idempotence) its broker thread busy-loops under load while the
            // window is full, which on a small machine ate 63% of the process's CPU
            // (benches/RESULTS.md, "Ingest both ways").
            producer: BTreeMap::from([
                ("linger.ms".to_owned(), "5".to_owned()),
                (
                    "max.in.flight.requests.per.connection".to_owned(),
                    "1".to_owned(),
                ),
            ]),
            consumer: BTreeMap::new(),
            group_instance_id: None,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            max_poll_interval_ms: 60_000,
            fetch_wait_max_ms: 500,
            commit_interval_ms: 1_000,
            unassigned_grace_s: 30,
            stall_timeout_s: 120,
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
        self.security.validate()?;
        if self.alerts_topic.trim().is_empty() {
            return bad("kafka.alerts_topic", "must not be empty");
        }
        if self.partitions < 1 {
            return bad("kafka.partitions", "must be at least 1");
        }
        if self.replication_factor < 0 {
            return bad(
                "kafka.replication_factor",
                "must be 0 (automatic) or at least 1",
            );
        }
        if self.min_insync_replicas < 0
            || (self.replication_factor > 0 && self.min_insync_replicas > self.replication_factor)
        {
            return bad(
                "kafka.min_insync_replicas",
                "must be 0 (automatic) or between 1 and replication_factor",
            );
        }
        if self.message_timeout_ms == 0 {
            return bad("kafka.message_timeout_ms", "must be above 0");
        }
        if self.session_timeout_ms < 1_000 {
            return bad("kafka.session_timeout_ms", "must be at least 1000");
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms * 3 > self.session_timeout_ms
        {
            return bad(
                "kafka.heartbeat_interval_ms",
                "must be above 0 and at most a third of session_timeout_ms",
            );
        }
        if self.fetch_wait_max_ms == 0 || self.fetch_wait_max_ms > 10_000 {
            return bad("kafka.fetch_wait_max_ms", "must be between 1 and 10000");
        }
        if self.commit_interval_ms >= self.session_timeout_ms {
            return bad(
                "kafka.commit_interval_ms",
                "must be below session_timeout_ms (a stuck group is told by commits that do not move)",
            );
        }
        if self.max_poll_interval_ms < self.session_timeout_ms {
            return bad(
                "kafka.max_poll_interval_ms",
                "must be at least session_timeout_ms",
            );
        }
        Ok(())
    }
}
