//! What the loop reads from: the broker as the loop sees it. `broker.rs` is the real one
//! (librdkafka); the loop's unit tests script one.

use std::future::Future;

use super::offsets::{Offsets, TopicPartition};

/// One consumed message, owned (never hold librdkafka's borrowed messages across awaits).
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl RawMessage {
    pub fn tp(&self) -> TopicPartition {
        TopicPartition::new(self.topic.as_str(), self.partition)
    }
}

/// What one read answered.
#[derive(Debug)]
pub enum Polled {
    Message(RawMessage),
    /// The partition is read to its end (for now).
    End(TopicPartition),
    /// The client reports a problem (it goes on trying by itself).
    Error(String),
}

/// A group member's client. Rebalances are not read from here: they reach the loop through
/// the stage's health (`group::GroupContext` records them while `poll` runs).
pub trait Source {
    /// The next message, end of partition or error; pending while there is none (the loop
    /// bounds the wait). Cancel-safe: dropping it loses nothing.
    fn poll(&self) -> impl Future<Output = Polled>;
    /// Pauses (or resumes) fetching every held partition; false when it could not.
    fn pause(&self, on: bool) -> bool;
    /// Commits these next offsets; synchronously (waiting for the broker) when `sync`.
    /// False when the commit failed (an asynchronous one: could not be queued).
    fn commit(&self, next: Offsets, sync: bool) -> impl Future<Output = bool>;
    /// Moves a held partition's fetch position back to `offset`.
    fn seek(&self, tp: TopicPartition, offset: i64) -> impl Future<Output = ()>;
    /// Leaves the group (its partitions move at once).
    fn close(self) -> impl Future<Output = ()>;
}
