//! IngressActor: the entry of the alert path. For one webhook's alerts it asks DedupActor which
//! states are new, hands those to KafkaProducerActor, and answers once Kafka acknowledged them
//! (or with why not). It settles the dedup states with the outcome, so a failed produce is
//! retried in full by the sender.

use std::time::Duration;

use actix::prelude::*;

use super::dedup::{Admit, DedupActor, DedupKey, Settle};
use crate::domain::AlertEvent;
use crate::kafka::producer::{KafkaProducerActor, Produce, ProduceError, Record};
use crate::metrics as m;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    pub received: usize,
    pub duplicates: usize,
    pub produced: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("alert pipeline unavailable: {0}")]
    Unavailable(String),
}

#[derive(Message)]
#[rtype(result = "Result<IngestReport, IngestError>")]
pub struct IngestAlerts {
    pub alerts: Vec<AlertEvent>,
}

pub struct IngressActor {
    dedup: Addr<DedupActor>,
    producer: Addr<KafkaProducerActor>,
    mailbox_capacity: usize,
    /// Upper bound for one produce (the producer's own timeout plus slack).
    produce_timeout: Duration,
}

impl IngressActor {
    pub fn new(
        dedup: Addr<DedupActor>,
        producer: Addr<KafkaProducerActor>,
        mailbox_capacity: usize,
        produce_timeout: Duration,
    ) -> Self {
        IngressActor {
            dedup,
            producer,
            mailbox_capacity,
            produce_timeout,
        }
    }
}

impl Actor for IngressActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Supervised for IngressActor {}

impl Handler<IngestAlerts> for IngressActor {
    type Result = ResponseFuture<Result<IngestReport, IngestError>>;

    fn handle(&mut self, msg: IngestAlerts, _: &mut Self::Context) -> Self::Result {
        let dedup = self.dedup.clone();
        let producer = self.producer.clone();
        let timeout = self.produce_timeout;
        Box::pin(async move {
            let received = msg.alerts.len();
            metrics::counter!(m::RECEIVED).increment(received as u64);
            let keys: Vec<DedupKey> = msg.alerts.iter().map(DedupKey::of).collect();
            let fresh = dedup
                .send(Admit { keys: keys.clone() })
                .await
                .map_err(|e| IngestError::Unavailable(format!("dedup: {e}")))?;
            let mut admitted = Vec::new();
            let mut records = Vec::new();
            for ((alert, key), new) in msg.alerts.iter().zip(keys).zip(&fresh) {
                if !new {
                    continue;
                }
                let payload = serde_json::to_vec(alert)
                    .map_err(|e| IngestError::Unavailable(format!("encode: {e}")))?;
                records.push(Record {
                    key: alert.fingerprint.as_str().to_owned(),
                    payload,
                    headers: Vec::new(),
                });
                admitted.push(key);
            }
            let produced = records.len();
            let outcome = if records.is_empty() {
                Ok(())
            } else {
                match producer
                    .send(Produce {
                        records,
                        topic: None,
                    })
                    .timeout(timeout)
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(MailboxError::Timeout) => Err(ProduceError::Kafka(format!(
                        "no acknowledgement within {timeout:?}"
                    ))
                    .to_string()),
                    Err(e) => Err(format!("producer: {e}")),
                }
            };
            let delivered = outcome.is_ok();
            if !admitted.is_empty() {
                // Must reach dedup even on failure, or the retry would look like a repeat.
                let _ = dedup
                    .send(Settle {
                        keys: admitted,
                        delivered,
                    })
                    .await;
            }
            outcome.map_err(IngestError::Unavailable)?;
            Ok(IngestReport {
                received,
                duplicates: received - produced,
                produced,
            })
        })
    }
}
