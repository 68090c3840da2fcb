//! KafkaProducerActor: owns the idempotent rdkafka producer. `Produce` answers only when the
//! broker acknowledged every record (acks=all), or with the first error.
//!
//! Supervised: when librdkafka reports a fatal error (an idempotent producer can reach one),
//! the actor stops and its supervisor restarts it with a fresh producer.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};

use super::acked::AckedProducer;

use crate::config::KafkaConfig;
use crate::metrics as m;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka producer queue is full")]
    QueueFull,
    #[error("kafka did not acknowledge: {0}")]
    Kafka(String),
    #[error("kafka producer is restarting")]
    Restarting,
}

/// One record: key, payload, headers (the topic is the actor's unless `Produce` names one).
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
    /// Kafka record headers (dead letters carry their reason and source here).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Produce all records; resolves after every ack.
#[derive(Message)]
#[rtype(result = "Result<(), ProduceError>")]
pub struct Produce {
    pub records: Vec<Record>,
    /// Another topic than the actor's own: one producer (one librdkafka instance and its
    /// polling thread) serves several topics.
    pub topic: Option<String>,
}

/// Is the broker reachable? (metadata round-trip)
#[derive(Message)]
#[rtype(result = "Result<(), ProduceError>")]
pub struct Ping {
    pub timeout: Duration,
}

/// Flush everything queued (graceful shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush {
    pub timeout: Duration,
}

pub struct KafkaProducerActor {
    cfg: KafkaConfig,
    /// The brokers, security, and what this producer's clients said about reaching them.
    connection: super::Connection,
    topic: String,
    mailbox_capacity: usize,
    producer: Option<AckedProducer>,
    /// Bumped on every new producer, so a burst of failures replaces it once.
    generation: u64,
    /// The last delivery that failed, while no delivery has succeeded since: readiness says
    /// why for a while (a broker that answers metadata can still refuse acks=all writes, with
    /// too few in-sync replicas).
    failing: Option<(Instant, String)>,
}

/// How long a failed delivery keeps readiness down when nothing has succeeded since.
const FAILING_FOR: Duration = Duration::from_secs(15);

impl KafkaProducerActor {
    pub fn new(cfg: KafkaConfig, topic: String, mailbox_capacity: usize) -> Self {
        KafkaProducerActor {
            connection: super::Connection::of(&cfg),
            cfg,
            topic,
            mailbox_capacity,
            producer: None,
            generation: 0,
            failing: None,
        }
    }

    fn connect(&mut self) {
        self.generation += 1;
        let config = crate::kafka::producer_config(&self.connection, &self.cfg);
        match AckedProducer::new(&config, self.connection.errors()) {
            Ok(p) => self.producer = Some(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot create kafka producer");
                self.producer = None;
            }
        }
    }
}

impl Actor for KafkaProducerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.connect();
        // Watch for librdkafka's fatal state; restart through the supervisor when it appears.
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            let fatal = act.producer.as_ref().and_then(|p| p.client().fatal_error());
            if let Some((code, reason)) = fatal {
                tracing::error!(?code, %reason, "kafka producer is in a fatal state; restarting");
                ctx.stop();
            } else if act.producer.is_none() {
                act.connect();
            }
        });
    }
}

impl KafkaProducerActor {
    /// Replaces the producer after a failed delivery. An idempotent producer whose messages
    /// timed out keeps its sequence numbers, and a broker that lost or restarted its state may
    /// refuse them; a new producer gets a new producer id.
    fn reset(&mut self, generation: u64) {
        if generation != self.generation {
            return; // already replaced since this batch started
        }
        metrics::counter!(m::ACTOR_RESTARTS, "actor" => "kafka_producer").increment(1);
        tracing::warn!("replacing kafka producer after a failed delivery");
        drop_off_thread(self.producer.take());
        self.connect();
    }
}

/// Dropping a producer purges and flushes (up to 0.5 s): never on the actor's thread.
fn drop_off_thread(producer: Option<AckedProducer>) {
    if let Some(p) = producer {
        tokio::task::spawn_blocking(move || drop(p));
    }
}

impl Supervised for KafkaProducerActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        metrics::counter!(m::ACTOR_RESTARTS, "actor" => "kafka_producer").increment(1);
        drop_off_thread(self.producer.take());
    }
}

impl Handler<Produce> for KafkaProducerActor {
    type Result = ResponseActFuture<Self, Result<(), ProduceError>>;

    fn handle(&mut self, msg: Produce, _: &mut Self::Context) -> Self::Result {
        let Some(producer) = self.producer.clone() else {
            return Box::pin(fut::ready(Err(ProduceError::Restarting)));
        };
        let generation = self.generation;
        let n = msg.records.len() as u64;
        let started = Instant::now();
        // Enqueue synchronously (keeps order per key), then await the acks concurrently.
        let topic = msg.topic.as_deref().unwrap_or(&self.topic);
        let mut acks = Vec::with_capacity(msg.records.len());
        let mut enqueue_err = None;
        for r in &msg.records {
            let headers = (!r.headers.is_empty()).then(|| {
                r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(v),
                    })
                })
            });
            match producer.send(topic, &r.key, &r.payload, headers) {
                Ok(ack) => acks.push(ack),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    enqueue_err = Some(ProduceError::QueueFull);
                    break;
                }
                Err(e) => {
                    enqueue_err = Some(ProduceError::Kafka(e.to_string()));
                    break;
                }
            }
        }
        drop(producer);
        let errors = self.connection.errors();
        let wait = async move {
            let mut first_err = enqueue_err;
            for ack in join_all(acks).await {
                let err = match ack {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => ProduceError::Kafka(errors.with_cause(e)),
                    Err(_) => ProduceError::Kafka("delivery report dropped".into()),
                };
                first_err.get_or_insert(err);
            }
            first_err
        };
        let topic = self.topic.clone();
        Box::pin(wait.into_actor(self).map(move |first_err, act, _| {
            metrics::histogram!(m::PRODUCE_SECONDS, "topic" => topic.clone())
                .record(started.elapsed().as_secs_f64());
            match first_err {
                None => {
                    metrics::counter!(m::PRODUCED, "topic" => topic).increment(n);
                    act.failing = None;
                    Ok(())
                }
                Some(e) => {
                    metrics::counter!(m::PRODUCE_FAILED, "topic" => topic).increment(n);
                    act.failing = Some((Instant::now(), e.to_string()));
                    if matches!(e, ProduceError::Kafka(_)) {
                        act.reset(generation);
                    }
                    Err(e)
                }
            }
        }))
    }
}

impl Handler<Ping> for KafkaProducerActor {
    type Result = ResponseFuture<Result<(), ProduceError>>;

    fn handle(&mut self, msg: Ping, _: &mut Self::Context) -> Self::Result {
        if let Some((at, why)) = self
            .failing
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAILING_FOR)
        {
            let e = ProduceError::Kafka(format!(
                "deliveries are failing ({} s ago, none acknowledged since): {why}",
                at.elapsed().as_secs()
            ));
            return Box::pin(fut::ready(Err(e)));
        }
        let errors = self.connection.errors();
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        Box::pin(async move {
            let producer = producer.ok_or(ProduceError::Restarting)?;
            let probe = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), msg.timeout)
                    .map(|md| md.topics().iter().any(|t| t.error().is_none()))
            })
            .await
            .map_err(|e| ProduceError::Kafka(format!("metadata probe failed: {e}")))?;
            match probe {
                Ok(true) => Ok(()),
                Ok(false) => Err(ProduceError::Kafka("topic metadata has an error".into())),
                Err(e) => Err(ProduceError::Kafka(
                    errors.with_cause(format!("unreachable: {e}")),
                )),
            }
        })
    }
}

impl Handler<Flush> for KafkaProducerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Flush, _: &mut Self::Context) -> Self::Result {
        let producer = self.producer.clone();
        Box::pin(async move {
            if let Some(p) = producer {
                let _ = tokio::task::spawn_blocking(move || p.flush(msg.timeout)).await;
            }
        })
    }
}
