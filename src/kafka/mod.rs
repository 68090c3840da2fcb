//! Kafka client settings shared by every producer and consumer, topic creation, a topic reader
//! for tools and tests; `consumer` runs the service's consumer groups.

pub mod acked;
pub mod connection;
pub mod consumer;
pub mod priority;
pub mod producer;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use crate::config::KafkaConfig;
pub use connection::Connection;
use connection::ReportingContext;

/// The producer every alert and log goes through: acks=all and idempotent, so an ack means
/// the broker has it and a retry inside librdkafka cannot duplicate or reorder it.
pub fn producer_config(conn: &Connection, cfg: &KafkaConfig) -> ClientConfig {
    let mut c = conn.client();
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", cfg.message_timeout_ms.to_string());
    for (k, v) in &cfg.producer {
        c.set(k, v);
    }
    c
}

pub fn future_producer(cfg: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    producer_config(&Connection::of(cfg), cfg).create()
}

/// Creates the topics that are missing; existing ones are left as they are.
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<(), KafkaError> {
    let conn = Connection::of(cfg);
    let admin: AdminClient<ReportingContext> = conn
        .client()
        .create_with_context(ReportingContext(conn.errors()))?;
    let (replicas, min_isr) = replication(cfg, timeout).await?;
    let min_isr = min_isr.to_string();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, cfg.partitions, TopicReplication::Fixed(replicas))
                .set("min.insync.replicas", &min_isr)
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = admin.create_topics(&new, &opts).await;
    // Dropping an AdminClient joins its polling thread, which waits up to 100 ms for an event:
    // not on the caller's thread (at start-up, the System thread every stage runs on).
    actix_web::rt::task::spawn_blocking(move || drop(admin));
    for r in results? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(%topic, ?code, "cannot create topic");
                })
            }
        }
    }
    Ok(())
}

/// The replication factor and `min.insync.replicas` for new topics: as configured, or (0) as
/// many replicas as the cluster has brokers, at most 3, and one less in sync, at least 1.
async fn replication(cfg: &KafkaConfig, timeout: Duration) -> Result<(i32, i32), KafkaError> {
    let replicas = if cfg.replication_factor > 0 {
        cfg.replication_factor
    } else {
        let conn = Connection::of(cfg);
        let n = actix_web::rt::task::spawn_blocking(move || {
            use rdkafka::consumer::Consumer;
            let c: rdkafka::consumer::BaseConsumer<ReportingContext> = conn
                .client()
                .create_with_context(ReportingContext(conn.errors()))?;
            let n = c.fetch_metadata(None, timeout)?.brokers().len();
            Ok::<_, KafkaError>(n)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        i32::try_from(n).unwrap_or(3).clamp(1, 3)
    };
    let min_isr = if cfg.min_insync_replicas > 0 {
        cfg.min_insync_replicas
    } else {
        (replicas - 1).max(1)
    };
    tracing::info!(
        replicas,
        min_isr,
        "replication of the topics alertpipe creates"
    );
    Ok((replicas, min_isr))
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadMessage {
    /// The value of header `name`, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Messages on `topic` that consumer group `group` has not committed yet, over all partitions
/// (a group that never committed counts from the low watermark). Tools and tests use it to
/// wait for a stage to drain.
pub fn group_lag(
    conn: impl Into<Connection>,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    Ok(consumer::group::Probe::new(&conn.into(), group)?
        .position(topic, timeout)?
        .lag)
}

/// Reads a topic from the beginning with a throwaway consumer group until `max` messages or
/// until nothing arrived for `idle`. For tools and tests, not the service's consumers.
pub fn read_topic(
    conn: impl Into<Connection>,
    topic: &str,
    max: usize,
    idle: Duration,
) -> Result<Vec<ReadMessage>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::Message;

    let group = format!(
        "alertpipe-reader-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let consumer: BaseConsumer = conn
        .into()
        .client()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let mut last = started;
    // Silence counts once the group has assigned the partitions (a join can take seconds on a
    // loaded machine), or after 30 s without an assignment.
    let mut assigned = false;
    while out.len() < max && last.elapsed() < idle {
        if !assigned {
            assigned = consumer.assignment().is_ok_and(|a| a.count() > 0);
            if !assigned && started.elapsed() < Duration::from_secs(30) {
                last = std::time::Instant::now();
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(ReadMessage {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
                last = std::time::Instant::now();
            }
            Some(Err(e)) => tracing::debug!(error = %e, "reader poll error"),
            None => {}
        }
    }
    Ok(out)
}

/// Why a topic cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka at {brokers} did not answer within {timeout:?}: {source}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        source: KafkaError,
    },
    #[error("topic {topic} does not exist on {brokers}")]
    Missing { topic: String, brokers: String },
    #[error("topic {topic} on {brokers}: the broker answered {code}")]
    Broker {
        topic: String,
        brokers: String,
        code: RDKafkaErrorCode,
    },
}

/// How many partitions `topic` has, asking the broker (without creating the topic). An
/// unreachable broker and a missing topic are errors that say which.
pub fn topic_partitions(
    conn: impl Into<Connection>,
    topic: &str,
    timeout: Duration,
) -> Result<usize, TopicError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let conn: Connection = conn.into();
    let brokers = conn.brokers();
    let unreachable = |source| TopicError::Unreachable {
        brokers: brokers.to_owned(),
        timeout,
        source,
    };
    let consumer: BaseConsumer = conn
        .client()
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(unreachable)?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(unreachable)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(TopicError::Missing {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        });
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None if !t.partitions().is_empty() => Ok(t.partitions().len()),
        None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Err(TopicError::Missing {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        }),
        Some(code) => Err(TopicError::Broker {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
            code,
        }),
    }
}
