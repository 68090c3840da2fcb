//! Where every consumer stage keeps what it cannot use: the message whole, with the reason.
//! Always the Kafka topic `<source topic>.dlq` (same key, same bytes; the stage, reason and
//! source partition/offset in headers), and the `dead_letters` table too when the process has
//! the database. Both are idempotent per (stage, topic, partition, offset) for the table;
//! a redelivered poison message may appear twice in the topic.

use actix::Addr;

use super::offsets::TopicPartition;
use super::source::RawMessage;
use crate::db::alerts::{insert_dead_letters, NewDeadLetter};
use crate::db::{DbError, PgPool};
use crate::kafka::producer::{KafkaProducerActor, Produce, ProduceError, Record};
use crate::metrics as m;

/// One message a stage could not use.
#[derive(Debug, Clone)]
pub struct Poison {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: String,
}

impl Poison {
    pub fn tp(&self) -> TopicPartition {
        TopicPartition::new(self.topic.as_str(), self.partition)
    }

    pub fn of(m: &RawMessage, reason: String) -> Poison {
        Poison {
            topic: m.topic.clone(),
            partition: m.partition,
            offset: m.offset,
            key: m.key.clone(),
            payload: m.payload.clone(),
            reason,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoisonError {
    #[error("dead-letter topic: {0}")]
    Kafka(#[from] ProduceError),
    #[error("producer actor: {0}")]
    Mailbox(#[from] actix::MailboxError),
    #[error("dead_letters table: {0}")]
    Db(#[from] DbError),
    #[error("dead_letters table: {0}")]
    Join(String),
}

/// Where the consumer loop keeps what a stage cannot use ([`PoisonStore`]; a list in the
/// loop's unit tests).
pub trait DeadLetters: Clone + 'static {
    /// Keeps them all, durably, or says why not (then the batch is retried, not committed).
    fn keep(
        &self,
        stage: &'static str,
        items: Vec<Poison>,
    ) -> impl std::future::Future<Output = Result<(), String>>;
}

impl DeadLetters for PoisonStore {
    async fn keep(&self, stage: &'static str, items: Vec<Poison>) -> Result<(), String> {
        self.keep_all(stage, &items)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The one shape of every record in a dead-letter topic (a poison message, a notification
/// that could not be delivered): the payload whole, as it was, and headers that say which
/// stage gave up on it and why (`alertpipe-stage`, `alertpipe-reason`), plus `extra` (where a
/// message came from; a notification's receiver and attempts).
pub fn dead_letter_record(
    key: String,
    payload: Vec<u8>,
    stage: &str,
    reason: &str,
    extra: Vec<(&str, Vec<u8>)>,
) -> Record {
    let mut headers = vec![
        ("alertpipe-stage".to_owned(), stage.as_bytes().to_vec()),
        ("alertpipe-reason".to_owned(), reason.as_bytes().to_vec()),
    ];
    headers.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Record {
        key,
        payload,
        headers,
    }
}

/// The dead-letter topic of a source topic.
pub fn dlq_topic(source: &str) -> String {
    format!("{source}.dlq")
}

#[derive(Clone)]
pub struct PoisonStore {
    producer: Addr<KafkaProducerActor>,
    db: Option<PgPool>,
}

impl PoisonStore {
    /// `producer` (shared by the process's dead letters) writes to `dlq_topic(source)`; `db`
    /// when the process has the database.
    pub fn new(producer: Addr<KafkaProducerActor>, db: Option<PgPool>) -> Self {
        PoisonStore { producer, db }
    }

    /// The dead-letter producer, for other dead letters of the process (failed sends).
    pub fn producer(&self) -> Addr<KafkaProducerActor> {
        self.producer.clone()
    }

    /// Keeps them all, durably, or says why not (then the batch is retried, not committed).
    pub async fn keep_all(&self, stage: &'static str, items: &[Poison]) -> Result<(), PoisonError> {
        if items.is_empty() {
            return Ok(());
        }
        let records = items
            .iter()
            .map(|p| {
                let key = String::from_utf8_lossy(p.key.as_deref().unwrap_or_default());
                dead_letter_record(
                    key.into_owned(),
                    p.payload.clone(),
                    stage,
                    &p.reason,
                    vec![
                        ("alertpipe-source-topic", p.topic.as_bytes().to_vec()),
                        (
                            "alertpipe-source-partition",
                            p.partition.to_string().into_bytes(),
                        ),
                        ("alertpipe-source-offset", p.offset.to_string().into_bytes()),
                    ],
                )
            })
            .collect();
        self.producer
            .send(Produce {
                records,
                topic: Some(dlq_topic(&items[0].topic)),
            })
            .await??;
        if let Some(pool) = &self.db {
            let (pool, rows) = (pool.clone(), items.to_vec());
            actix_web::rt::task::spawn_blocking(move || {
                let rows: Vec<NewDeadLetter<'_>> = rows
                    .iter()
                    .map(|p| NewDeadLetter {
                        stage,
                        topic: Some(&p.topic),
                        kafka_partition: Some(p.partition),
                        kafka_offset: Some(p.offset),
                        receiver: None,
                        attempts: 1,
                        reason: &p.reason,
                        payload: &p.payload,
                    })
                    .collect();
                insert_dead_letters(&pool, &rows)
            })
            .await
            .map_err(|e| PoisonError::Join(e.to_string()))??;
        }
        metrics::counter!(m::DEAD_LETTERED, "stage" => stage).increment(items.len() as u64);
        Ok(())
    }
}
