//! The consumer loop every sink shares: read a batch (up to `batch_size`, or what arrived
//! within `linger`), hand it to the sink until the sink says its effect is durable, then
//! commit the batch's offsets. While the sink fails, the partitions are paused (the consumer
//! stays in its group) and the same batch is retried with backoff: nothing is skipped.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

/// One consumed message, owned (never hold librdkafka's borrowed messages across awaits).
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group: String,
    pub topic: String,
    pub batch_size: usize,
    pub linger: Duration,
    /// When set, an idle consumer calls the sink with an empty batch this often (for sinks
    /// that flush on age, like the archive).
    pub tick: Option<Duration>,
    /// `group.instance.id` (static membership), when configured.
    pub instance_id: Option<String>,
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
            brokers: kafka.brokers.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            batch_size,
            linger,
            tick: None,
            instance_id: kafka.group_instance_id.clone(),
        }
    }
}

/// Runs `run_batches` as a task of the current System, logging why it ended if it does.
/// Stages use it through `kafka::sink::spawn`, which gives every stage the same contract.
pub(super) fn spawn<F, Fut>(settings: ConsumerSettings, health: StageHealth, sink: F)
where
    F: FnMut(Arc<Vec<RawMessage>>) -> Fut + 'static,
    Fut: Future<Output = Result<Commit, String>> + 'static,
{
    actix_web::rt::spawn(async move {
        let group = settings.group.clone();
        if let Err(e) = run_batches(settings, health, sink).await {
            tracing::error!(%group, error = %e, "consumer stopped");
        }
    });
}

/// What a sink lets the loop commit once it returns Ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Everything in the batch is durable.
    Batch,
    /// Only up to these next offsets, per (topic, partition) (the archive keeps open files).
    Offsets(Vec<(String, i32, i64)>),
}

/// A stage's health as readiness reports it: the last failure, cleared by the next success.
#[derive(Debug, Clone, Default)]
pub struct StageHealth {
    name: &'static str,
    last_error: Arc<Mutex<Option<String>>>,
}

impl StageHealth {
    pub fn new(name: &'static str) -> Self {
        StageHealth {
            name,
            last_error: Arc::default(),
        }
    }
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
    fn set(&self, e: Option<String>) {
        // 1 while the stage's sink fails: Prometheus' "consumer making no progress" rule.
        let failing = if e.is_some() { 1.0 } else { 0.0 };
        metrics::gauge!(crate::metrics::CONSUMER_FAILING, "stage" => self.name).set(failing);
        if e.is_none() {
            metrics::counter!(crate::metrics::CONSUMER_BATCHES, "stage" => self.name).increment(1);
        }
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }
}

fn own(m: &rdkafka::message::BorrowedMessage<'_>) -> RawMessage {
    RawMessage {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

pub fn create(s: &ConsumerSettings) -> Result<StreamConsumer, KafkaError> {
    let mut c = ClientConfig::new();
    if let Some(id) = &s.instance_id {
        c.set("group.instance.id", id);
    }
    let consumer: StreamConsumer = c
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("socket.connection.setup.timeout.ms", "3000")
        // A crashed member holds its partitions until its session expires: keep that short
        // so a restarted pod resumes within seconds (librdkafka's default is 45 s).
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        // The roles' topics are created at start-up, concurrently with this subscription: a
        // consumer that subscribed first sees UnknownTopicOrPartition and only looks again at
        // the next metadata refresh (librdkafka's default: 5 minutes). Look every 2 s instead.
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create()?;
    consumer.subscribe(&[s.topic.as_str()])?;
    Ok(consumer)
}

/// Runs until the task is dropped. `sink` gets each batch (shared, so retries are cheap) and
/// answers Ok once the effect is durable, or Err(reason) to have the same batch retried.
async fn run_batches<F, Fut>(
    s: ConsumerSettings,
    health: StageHealth,
    mut sink: F,
) -> Result<(), KafkaError>
where
    F: FnMut(Arc<Vec<RawMessage>>) -> Fut,
    Fut: Future<Output = Result<Commit, String>>,
{
    let consumer = create(&s)?;
    let mut carried: Vec<RawMessage> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            let first = match s.tick {
                // Idle for `t`: a tick with an empty batch.
                Some(t) => actix_web::rt::time::timeout(t, consumer.recv()).await.ok(),
                None => Some(consumer.recv().await),
            };
            match first {
                Some(Ok(m)) => batch.push(own(&m)),
                Some(Err(e)) => {
                    tracing::warn!(group = %s.group, error = %e, "consumer error");
                    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                None => {}
            }
        }
        let deadline = Instant::now() + s.linger;
        while !batch.is_empty() && batch.len() < s.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match actix_web::rt::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(own(&m)),
                Ok(Err(e)) => {
                    tracing::warn!(group = %s.group, error = %e, "consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        let batch = Arc::new(batch);
        let mut backoff = Duration::from_millis(100);
        let mut paused = false;
        let commit_what = loop {
            match sink(batch.clone()).await {
                Ok(c) => break c,
                Err(reason) => {
                    if !paused {
                        tracing::warn!(group = %s.group, %reason, "sink failed; pausing and retrying the batch");
                        paused = pause(&consumer, true);
                    }
                    health.set(Some(reason));
                    // Keep polling while paused so the group keeps us; a message can still
                    // arrive from a partition assigned meanwhile: keep it for the next batch.
                    let until = Instant::now() + backoff;
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        if let Ok(Ok(m)) = actix_web::rt::time::timeout(left, consumer.recv()).await
                        {
                            carried.push(own(&m));
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if paused {
            pause(&consumer, false);
            tracing::info!(group = %s.group, "sink recovered; resuming");
        }
        health.set(None);
        match commit_what {
            Commit::Batch => commit(&consumer, batch_offsets(&batch)),
            Commit::Offsets(o) => commit(&consumer, o),
        }
    }
}

fn batch_offsets(batch: &[RawMessage]) -> Vec<(String, i32, i64)> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = next.entry((&m.topic, m.partition)).or_insert(m.offset + 1);
        *e = (*e).max(m.offset + 1);
    }
    next.into_iter()
        .map(|((t, p), o)| (t.to_owned(), p, o))
        .collect()
}

fn pause(consumer: &StreamConsumer, on: bool) -> bool {
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let r = if on {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    drop(assignment);
    r.is_ok()
}

/// Commits the given next offsets. Asynchronous: a lost commit only means redelivery, which
/// every sink absorbs.
fn commit(consumer: &StreamConsumer, next: Vec<(String, i32, i64)>) {
    if next.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in next {
        if let Err(e) = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, "cannot build commit list");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(error = %e, "offset commit failed; the batch may be redelivered");
    }
}
