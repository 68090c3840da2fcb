//! DeadLetterActor: keeps what could not be delivered, whole: the alert(s), the receiver, the
//! attempts and the last error, in topic `alerts.dlq` and the `dead_letters` table, from where
//! `alertpipe dlq replay` sends them again.

use actix::prelude::*;
use diesel::RunQueryDsl;

use crate::db::alerts::NewDeadLetter;
use crate::db::schema::dead_letters;
use crate::db::PgPool;
use crate::kafka::producer::{KafkaProducerActor, Produce, ProduceError, Record};
use crate::metrics as m;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeadNotification {
    pub receiver: String,
    pub events: Vec<crate::domain::AlertEvent>,
}

#[derive(Message)]
#[rtype(result = "Result<(), DeadLetterError>")]
pub struct DeadLetter {
    pub item: DeadNotification,
    pub attempts: u32,
    pub reason: String,
}

/// The dead-letter store itself failed: the notification is neither sent nor kept.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("encoding the dead letter: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("dead-letter topic: {0}")]
    Kafka(#[from] ProduceError),
    #[error("dead-letter producer: {0}")]
    Mailbox(#[from] actix::MailboxError),
    #[error("dead_letters table: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("dead_letters table: {0}")]
    Join(String),
}

pub struct DeadLetterActor {
    pool: PgPool,
    producer: Addr<KafkaProducerActor>,
    /// `notify.dlq_topic`.
    topic: String,
}

impl DeadLetterActor {
    pub fn new(pool: PgPool, producer: Addr<KafkaProducerActor>, topic: String) -> Self {
        DeadLetterActor {
            pool,
            producer,
            topic,
        }
    }
}

impl Actor for DeadLetterActor {
    type Context = Context<Self>;
}

impl Handler<DeadLetter> for DeadLetterActor {
    type Result = ResponseFuture<Result<(), DeadLetterError>>;

    fn handle(&mut self, msg: DeadLetter, _: &mut Self::Context) -> Self::Result {
        let (pool, producer, topic) =
            (self.pool.clone(), self.producer.clone(), self.topic.clone());
        Box::pin(async move {
            let payload = serde_json::to_vec(&msg.item)?;
            let record = serde_json::to_vec(&serde_json::json!({
                "receiver": msg.item.receiver, "attempts": msg.attempts, "reason": msg.reason,
                "events": msg.item.events,
            }))?;
            let key = msg
                .item
                .events
                .first()
                .map(|e| e.fingerprint.as_str().to_owned())
                .unwrap_or_default();
            producer
                .send(Produce {
                    topic: Some(topic),
                    records: vec![Record {
                        key,
                        payload: record,
                        headers: Vec::new(),
                    }],
                })
                .await??;
            let (receiver, reason, attempts) = (
                msg.item.receiver.clone(),
                msg.reason.clone(),
                msg.attempts as i32,
            );
            actix_web::rt::task::spawn_blocking(move || {
                let mut c = crate::db::conn(&pool)?;
                diesel::insert_into(dead_letters::table)
                    .values(NewDeadLetter {
                        stage: "notify",
                        topic: None,
                        kafka_partition: None,
                        kafka_offset: None,
                        receiver: Some(&receiver),
                        attempts,
                        reason: &reason,
                        payload: &payload,
                    })
                    .execute(&mut c)
                    .map(|_| ())
                    .map_err(crate::db::DbError::from)
            })
            .await
            .map_err(|e| DeadLetterError::Join(e.to_string()))??;
            metrics::counter!(m::DEAD_LETTERED, "stage" => "notify").increment(1);
            tracing::warn!(receiver = %msg.item.receiver, attempts = msg.attempts, reason = %msg.reason, "notification dead-lettered");
            Ok(())
        })
    }
}

/// How every send ends: counted as sent (with its retries), or kept by the DeadLetterActor.
/// Err only when the dead-letter store itself failed (the consumer then retries the batch).
pub async fn settle(
    dead: &Addr<DeadLetterActor>,
    kind: &'static str,
    item: DeadNotification,
    outcome: Result<u32, (u32, String)>,
) -> Result<crate::notify::Delivered, crate::notify::NotifyError> {
    use crate::notify::{Delivered, NotifyError};
    match outcome {
        Ok(attempts) => {
            metrics::counter!(m::NOTIFY_SENT, "receiver" => item.receiver, "kind" => kind)
                .increment(1);
            if attempts > 1 {
                metrics::counter!(m::NOTIFY_RETRIED, "kind" => kind)
                    .increment(u64::from(attempts - 1));
            }
            Ok(Delivered::Sent)
        }
        Err((attempts, reason)) => {
            dead.send(DeadLetter {
                item,
                attempts,
                reason,
            })
            .await
            .map_err(|e| NotifyError(e.to_string()))?
            .map_err(|e| NotifyError(e.to_string()))?;
            Ok(Delivered::DeadLettered)
        }
    }
}
