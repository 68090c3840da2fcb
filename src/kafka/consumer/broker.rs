//! The real [`Source`]: a librdkafka consumer in the stage's group.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::group::{GroupContext, StageHealth};
use super::offsets::{Offsets, TopicPartition};
use super::settings::ConsumerSettings;
use super::source::{Polled, RawMessage, Source};

type GroupConsumer = StreamConsumer<GroupContext>;

/// How long a partition whose prefetch is full waits before librdkafka fetches for it again
/// (see `client_config`).
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

pub(super) struct KafkaSource {
    consumer: Arc<GroupConsumer>,
    topic: String,
}

impl KafkaSource {
    /// Joins the stage's group (with `group.instance.id` when configured) and subscribes.
    pub(super) fn join(s: &ConsumerSettings, health: &StageHealth) -> Result<Self, KafkaError> {
        let consumer: GroupConsumer = client_config(s).create_with_context(GroupContext {
            health: health.clone(),
        })?;
        consumer.subscribe(&[s.topic.as_str()])?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            topic: s.topic.clone(),
        })
    }
}

/// The stage's librdkafka consumer: its group, its timings, its prefetch; `[kafka.consumer]`
/// (`s.extra`) last, so an operator's setting wins.
fn client_config(s: &ConsumerSettings) -> ClientConfig {
    let mut c = s.connection.client();
    if let Some(id) = &s.instance_id {
        c.set("group.instance.id", id);
    }
    c.set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // A crashed member holds its partitions until its session expires: keep that short
        // so a restarted process resumes within seconds (librdkafka's default is 45 s).
        .set("session.timeout.ms", s.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", s.heartbeat_interval_ms.to_string())
        .set("max.poll.interval.ms", s.max_poll_interval_ms.to_string())
        // `kafka.fetch_wait_max_ms`: how long an empty fetch may wait for data.
        .set("fetch.wait.max.ms", s.fetch_wait_max_ms.to_string())
        // The roles' topics are created at start-up, concurrently with this subscription: a
        // consumer that subscribed first sees UnknownTopicOrPartition and only looks again at
        // the next metadata refresh (librdkafka's default: 5 minutes). Look every 2 s instead.
        .set("topic.metadata.refresh.interval.ms", "2000")
        // Lag per partition comes from librdkafka's statistics (see `group::GroupContext`).
        .set("statistics.interval.ms", "1000")
        // Say when a partition has been read to its end: a batch then stops waiting out its
        // linger once nothing more is there to read (`run::AtEnd`).
        .set("enable.partition.eof", "true")
        // Prefetch ten batches, not librdkafka's 100,000 messages / 64 MB per partition: a
        // stage that pauses (`kafka::priority`) soon stops costing the broker fetches, and a
        // backlog does not sit in memory three times over.
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "16384")
        // Once a partition's prefetch is full librdkafka waits this long before it looks
        // again (default 1,000 ms): a stage that empties its prefetch faster than that
        // then idles, and with the limits above that capped persist and notify at ~14,000
        // alerts/s end to end. `benches/persist.rs` with `CONSUMER=fetch.queue.backoff.ms=N`,
        // medians of 3 (persist / notify, alerts/s): 0 -> 34,374 / 36,611 (spins),
        // 5 -> 48,353 / 54,640, 20 -> 48,300 / 56,890, 100 -> 42,696 / 46,946,
        // 1,000 -> 13,293 / 12,975.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    for (k, v) in &s.extra {
        c.set(k, v);
    }
    c
}

impl Source for KafkaSource {
    async fn poll(&self) -> Polled {
        match self.consumer.recv().await {
            Ok(m) => Polled::Message(RawMessage {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            Err(KafkaError::PartitionEOF(p)) => {
                Polled::End(TopicPartition::new(self.topic.as_str(), p))
            }
            Err(e) => Polled::Error(e.to_string()),
        }
    }

    fn pause(&self, on: bool) -> bool {
        let Ok(assignment) = self.consumer.assignment() else {
            return false;
        };
        let r = if on {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        drop(assignment);
        r.is_ok()
    }

    /// Asynchronous unless `sync`: a lost commit only means redelivery, which every sink
    /// absorbs; the archive's names need its commits in order.
    async fn commit(&self, next: Offsets, sync: bool) -> bool {
        if next.is_empty() {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        for (tp, offset) in next.iter() {
            if let Err(e) =
                tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))
            {
                tracing::warn!(error = %e, "cannot build commit list");
            }
        }
        let result = if sync {
            let c = self.consumer.clone();
            actix_web::rt::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
                .await
                .unwrap_or_else(|e| {
                    Err(KafkaError::Canceled).inspect_err(|_| {
                        tracing::warn!(error = %e, "commit task failed");
                    })
                })
        } else {
            self.consumer.commit(&tpl, CommitMode::Async)
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "offset commit failed; the batch may be redelivered");
        }
        result.is_ok()
    }

    async fn seek(&self, tp: TopicPartition, offset: i64) {
        let c = self.consumer.clone();
        let (t, p) = (tp.topic.clone(), tp.partition);
        let sought = actix_web::rt::task::spawn_blocking(move || {
            c.seek(&t, p, Offset::Offset(offset), Duration::from_secs(5))
        })
        .await;
        match sought {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(%tp, offset, error = %e, "cannot seek back"),
            Err(e) => tracing::error!(%tp, offset, error = %e, "seek task failed"),
        }
    }

    /// Closes the consumer off the System's thread: rust-rdkafka's drop polls until librdkafka
    /// has left the group, which can take as long as the coordinator takes to answer, and would
    /// stall every stage and actor on this thread meanwhile. Waits at most 10 s for it.
    async fn close(self) {
        let consumer = self.consumer;
        let closing = actix_web::rt::task::spawn_blocking(move || drop(consumer));
        if actix_web::rt::time::timeout(Duration::from_secs(10), closing)
            .await
            .is_err()
        {
            tracing::warn!("a consumer is still closing after 10 s; going on without it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaConfig;

    fn settings(kafka: &KafkaConfig) -> ConsumerSettings {
        ConsumerSettings::new(kafka, "g", "alerts", 2000, Duration::from_millis(50))
    }

    /// librdkafka's default (1 s) idled a stage that empties its small prefetch faster than
    /// that: persist and notify ran at a quarter of their speed end to end (benches/persist.rs).
    #[test]
    fn a_full_prefetch_is_fetched_again_after_20_ms_unless_the_operator_says_otherwise() {
        let kafka = KafkaConfig::default();
        let c = client_config(&settings(&kafka));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("20"));
        assert_eq!(c.get("queued.min.messages"), Some("10000"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));

        let mut kafka = KafkaConfig::default();
        kafka
            .consumer
            .insert("fetch.queue.backoff.ms".into(), "250".into());
        let c = client_config(&settings(&kafka));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("250"));
    }
}
