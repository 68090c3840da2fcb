//! DeadLetterActor: keeps what could not be delivered, whole: the alert(s) and the receiver
//! (the payload), the attempts and the last error, in topic `alerts.dlq` (the one dead-letter
//! shape, `kafka::poison::dead_letter_record`) and the `dead_letters` table, from where
//! `alertpipe dlq replay` sends them again.

use actix::prelude::*;
use diesel::RunQueryDsl;

use crate::db::alerts::NewDeadLetter;
use crate::db::schema::dead_letters;
use crate::db::PgPool;
use crate::kafka::consumer::poison::dead_letter_record;
use crate::kafka::producer::{KafkaProducerActor, Produce, ProduceError};
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
            let key = msg
                .item
                .events
                .first()
                .map(|e| e.fingerprint.as_str().to_owned())
                .unwrap_or_default();
            let record = dead_letter_record(
                key,
                payload.clone(),
                "notify",
                &msg.reason,
                vec![
                    ("alertpipe-receiver", msg.item.receiver.as_bytes().to_vec()),
                    ("alertpipe-attempts", msg.attempts.to_string().into_bytes()),
                ],
            );
            producer
                .send(Produce {
                    topic: Some(topic),
                    records: vec![record],
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
