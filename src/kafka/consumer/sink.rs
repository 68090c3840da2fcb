//! The one contract between the consumer loop and a consumer stage (persist, notify, archive).
//!
//! A stage's sink says how to decode one message and how to make a batch of decoded messages
//! durable; the loop (`run.rs`) does everything else the same way for every stage.

use std::future::Future;
use std::sync::Arc;

use super::offsets::{Offsets, TopicPartition};
use super::source::RawMessage;

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

impl<T> Decoded<T> {
    pub fn tp(&self) -> TopicPartition {
        TopicPartition::new(self.topic.as_str(), self.partition)
    }
}

impl<T> AsRef<T> for Decoded<T> {
    fn as_ref(&self) -> &T {
        &self.item
    }
}

/// What a sink lets the loop commit once its write returned Ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Everything in the batch is durable.
    Batch,
    /// Only up to these next offsets (the archive keeps open files). Committed synchronously:
    /// the archive's file names depend on it (see `archive::actor`).
    Offsets(Offsets),
    /// As `Offsets`, and the sink lost what it held of the partitions in `from` (an archive
    /// file failed mid-write): read them again from these offsets.
    Rewind {
        commit: Offsets,
        from: Offsets,
        reason: String,
    },
}

pub trait Sink: 'static {
    /// A decoded message.
    type Item: Clone + 'static;
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
