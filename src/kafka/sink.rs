//! The one contract between the consumer loop and a consumer stage (persist, notify, archive).
//!
//! A stage's sink says how to decode one message and how to make a batch of decoded messages
//! durable. Everything else is done here, the same way for every stage: a message that does
//! not decode is a poison message and is dead-lettered whole with the reason
//! ([`PoisonStore`]); a write that fails transiently pauses the partitions and retries the
//! same batch; a write that fails permanently dead-letters the batch's messages; offsets are
//! committed only after the writes and the dead letters are durable. Each stage gets one
//! readiness signal ([`StageHealth`]) from here.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use super::consumer::{self, Commit, ConsumerSettings, Event, RawMessage, StageHealth};
use super::group::TopicPartition;
use super::poison::{Poison, PoisonStore};

/// Whether trying the same thing again can help: the one question the loop asks an error.
pub trait Retryable: std::error::Error {
    fn is_transient(&self) -> bool;
}

/// Why a message cannot be used: the reason stored with its dead letter.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Undecodable(pub String);

/// A consumed message as its stage decoded it, with where it came from.
#[derive(Debug, Clone)]
pub struct Decoded<T> {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub item: T,
}

impl<T> AsRef<T> for Decoded<T> {
    fn as_ref(&self) -> &T {
        &self.item
    }
}

pub trait Sink: 'static {
    /// A decoded message.
    type Item: 'static;
    /// What a failed write says (transient: retry; permanent: dead-letter the batch).
    type Error: Retryable + 'static;
    /// The stage's name: readiness, metrics, dead letters.
    const STAGE: &'static str;

    /// Decodes one message; an error makes it a poison message, kept with that reason.
    fn decode(&self, msg: &RawMessage) -> Result<Self::Item, Undecodable>;

    /// Makes the batch durable (it may be empty: an idle tick) and says what may be committed.
    /// Called again with the same batch after a transient error: writes must be idempotent.
    fn write(
        &self,
        batch: Arc<Vec<Decoded<Self::Item>>>,
    ) -> impl Future<Output = Result<Commit, Self::Error>> + 'static;

    /// These partitions moved to another member: drop whatever is held of them but not
    /// durable (their new owner reads them again from the committed offset).
    fn forget(&self, _partitions: Vec<TopicPartition>) -> impl Future<Output = ()> + 'static {
        std::future::ready(())
    }
}

/// A consumed batch with its decoded items and its poison messages.
type DecodedBatch<T> = (Arc<Vec<RawMessage>>, Arc<Vec<Decoded<T>>>, Arc<Vec<Poison>>);

/// Runs `sink` behind a consumer group; returns the stage's readiness signal.
pub fn spawn<S: Sink>(settings: ConsumerSettings, sink: S, poison: PoisonStore) -> StageHealth {
    let health = StageHealth::new(S::STAGE, settings.limits);
    let sink = Rc::new(sink);
    let poison = Rc::new(poison);
    // The loop retries with the same Arc: decode it once.
    let mut last: Option<DecodedBatch<S::Item>> = None;
    consumer::spawn(settings, health.clone(), move |event| {
        let batch = match event {
            Event::Batch(batch) => batch,
            Event::Revoked(partitions) => {
                let sink = sink.clone();
                return futures_util::future::Either::Left(async move {
                    sink.forget(partitions).await;
                    Ok(Commit::Offsets(Vec::new()))
                });
            }
        };
        let (items, bad) = match &last {
            Some((b, items, bad)) if Arc::ptr_eq(b, &batch) => (items.clone(), bad.clone()),
            _ => {
                let (items, bad) = decode_all(&*sink, &batch);
                let (items, bad) = (Arc::new(items), Arc::new(bad));
                last = Some((batch.clone(), items.clone(), bad.clone()));
                (items, bad)
            }
        };
        let (sink, poison) = (sink.clone(), poison.clone());
        futures_util::future::Either::Right(async move {
            let commit = match sink.write(items.clone()).await {
                Ok(c) => c,
                Err(e) if e.is_transient() => return Err(e.to_string()),
                Err(e) => {
                    // Retrying cannot help: keep every message of the batch, with the reason.
                    tracing::error!(stage = S::STAGE, error = %e, "batch refused for good; dead-lettering it");
                    let all: Vec<Poison> = batch
                        .iter()
                        .map(|m| Poison::of(m, format!("{}: {e}", S::STAGE)))
                        .collect();
                    poison
                        .keep(S::STAGE, &all)
                        .await
                        .map_err(|e| e.to_string())?;
                    Commit::Batch
                }
            };
            poison
                .keep(S::STAGE, &bad)
                .await
                .map_err(|e| e.to_string())?;
            Ok(commit)
        })
    });
    health
}

fn decode_all<S: Sink>(sink: &S, batch: &[RawMessage]) -> (Vec<Decoded<S::Item>>, Vec<Poison>) {
    let mut items = Vec::with_capacity(batch.len());
    let mut bad = Vec::new();
    for m in batch {
        match sink.decode(m) {
            Ok(item) => items.push(Decoded {
                topic: m.topic.clone(),
                partition: m.partition,
                offset: m.offset,
                item,
            }),
            Err(reason) => {
                tracing::warn!(stage = S::STAGE, partition = m.partition, offset = m.offset, %reason, "poison message");
                bad.push(Poison::of(m, reason.0));
            }
        }
    }
    (items, bad)
}
