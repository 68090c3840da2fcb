//! The loop every stage shares. Its rules:
//!
//! - **Batching**: a batch is up to `batch_size` messages, or what arrived within `linger`, or
//!   what there was once every held partition is read to its end. It is decoded once; a
//!   message that does not decode is poison, dead-lettered whole with the reason.
//! - **Store while reading**: while the sink writes a batch, the next one is read.
//! - **Retry**: a transient write failure pauses the partitions (the member stays in its group)
//!   and the same decoded batch is written again with backoff: nothing is skipped. A permanent
//!   one dead-letters every message of the batch.
//! - **Commit**: only after the write and the dead letters are durable; at most once per
//!   `commit_interval` during a backlog; never for a partition this member no longer holds.
//! - **Rewind**: a sink that lost open work has its partitions read again from its offsets.
//! - **Revoke** (`note_revoked`, `forget_lost`): rebalances run inside a read, so a revocation
//!   concerns what was read before it; those messages leave every buffer and the sink forgets
//!   the partitions. The new owner reads them from the committed offset.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::rt::time::{sleep, timeout};
use tracing::Instrument;

use super::group::StageHealth;
use super::offsets::{Offsets, Pending, TopicPartition};
use super::poison::{DeadLetters, Poison};
use super::settings::ConsumerSettings;
use super::sink::{Commit, Decoded, Retryable, Sink};
use super::source::{Polled, RawMessage, Source};

/// The held partitions read to their end (librdkafka's partition EOF), so nothing more is there
/// to fill a batch with: the loop stores what it has instead of waiting out `linger`. Under a
/// trickle a batch is then one message (stored at once, not `linger` later); under load, or
/// behind, partitions are never at their end and batches fill as before.
#[derive(Default)]
struct AtEnd(BTreeSet<TopicPartition>);

impl AtEnd {
    /// Every partition this member holds is read to its end.
    fn all(&self, health: &StageHealth) -> bool {
        let held = health.assigned();
        !held.is_empty() && held.iter().all(|tp| self.0.contains(tp))
    }
}

/// A batch in hand: the messages, decoded once, and the ones that did not decode.
struct InFlight<T> {
    raw: Vec<RawMessage>,
    items: Arc<Vec<Decoded<T>>>,
    poison: Vec<Poison>,
}

impl<T: Clone> InFlight<T> {
    fn decode<S: Sink<Item = T>>(sink: &S, raw: Vec<RawMessage>) -> Self {
        let mut items = Vec::with_capacity(raw.len());
        let mut poison = Vec::new();
        for m in &raw {
            match sink.decode(m) {
                Ok(item) => items.push(Decoded {
                    topic: m.topic.clone(),
                    partition: m.partition,
                    offset: m.offset,
                    item,
                }),
                Err(reason) => {
                    tracing::warn!(partition = m.partition, offset = m.offset, %reason, "poison message");
                    poison.push(Poison::of(m, reason.0));
                }
            }
        }
        InFlight {
            raw,
            items: Arc::new(items),
            poison,
        }
    }

    fn drop_partitions(&mut self, lost: &[TopicPartition]) {
        self.raw.retain(|m| !lost.contains(&m.tp()));
        self.poison.retain(|p| !lost.contains(&p.tp()));
        // The last write has ended, so nothing else holds the items: no copy is made.
        Arc::make_mut(&mut self.items).retain(|d| !lost.contains(&d.tp()));
    }

    /// The next offset of every partition in the batch.
    fn next_offsets(&self) -> Offsets {
        let mut next = Offsets::new();
        for m in &self.raw {
            next.raise(m.tp(), m.offset + 1);
        }
        next
    }
}

/// What one read gave.
enum Read {
    /// A message, now at the end of `carried`.
    Message,
    End,
    Error(String),
    /// Nothing within the wait.
    Idle,
}

pub(super) struct Loop<Src, S, D> {
    s: ConsumerSettings,
    source: Src,
    sink: S,
    dead: D,
    health: StageHealth,
    /// Read and not handed to the sink yet: the next batch, filling.
    carried: Vec<RawMessage>,
    /// Revoked since the sink was last told.
    lost: Vec<TopicPartition>,
    at_end: AtEnd,
    pending: Pending,
    last_tick: Instant,
}

impl<Src: Source, S: Sink, D: DeadLetters> Loop<Src, S, D> {
    pub(super) fn new(
        s: ConsumerSettings,
        source: Src,
        sink: S,
        dead: D,
        health: StageHealth,
    ) -> Self {
        Loop {
            s,
            source,
            sink,
            dead,
            health,
            carried: Vec::new(),
            lost: Vec::new(),
            at_end: AtEnd::default(),
            pending: Pending::default(),
            last_tick: Instant::now(),
        }
    }

    /// Runs until the stage is asked to stop; then commits what is durable and leaves (None).
    /// Or, when the group has not assigned the stage anything for `rejoin_after`, closes the
    /// consumer and hands back the sink and dead letters to join again with (the rejoin rule).
    pub(super) async fn run(mut self) -> Option<(S, D)> {
        loop {
            if self.health.stopping() {
                self.leave().await;
                return None;
            }
            if self
                .health
                .waiting_for_group()
                .is_some_and(|w| w > self.s.rejoin_after)
            {
                tracing::warn!(group = %self.s.group, waited = ?self.s.rejoin_after,
                    "no assignment from the group; closing the consumer and joining again");
                self.forget_lost(None).await;
                self.source.close().await;
                self.health.rejoining();
                return Some((self.sink, self.dead));
            }
            if self.pending.due(self.s.commit_interval)
                || (self.pending.any() && self.at_end.all(&self.health))
            {
                self.flush(false).await;
            }
            let Some(raw) = self.next_batch().await else {
                continue;
            };
            let span = batch_span(S::STAGE, &raw);
            let mut batch = span.in_scope(|| InFlight::decode(&self.sink, raw));
            let Some(commit) = self.store(&mut batch).instrument(span.clone()).await else {
                self.leave().await;
                return None;
            };
            self.settle(commit, &batch).instrument(span).await;
            if let (false, Some(fg)) = (batch.raw.is_empty(), &self.s.foreground) {
                let pause = fg.pause();
                if !pause.is_zero() && !self.health.stopping() {
                    sleep(pause).await;
                }
            }
        }
    }

    /// One read of at most `wait`; a message goes to `carried`.
    async fn read(&mut self, wait: Duration) -> Read {
        let got = timeout(wait, self.source.poll()).await;
        self.note_revoked();
        match got {
            Ok(Polled::Message(m)) => {
                self.at_end.0.remove(&m.tp());
                self.carried.push(m);
                Read::Message
            }
            Ok(Polled::End(tp)) => {
                self.at_end.0.insert(tp);
                Read::End
            }
            Ok(Polled::Error(e)) => Read::Error(e),
            Err(_) => Read::Idle,
        }
    }

    /// The revocation rule, part one, called after every read and before its message is kept.
    /// Rebalances run inside a read, so partitions revoked since the last look concern what
    /// was read before this read's message: their messages leave `carried` now; the batch in hand drops them and the sink forgets them in
    /// `forget_lost`, once no write is running.
    fn note_revoked(&mut self) {
        let lost = self.health.take_revoked();
        if lost.is_empty() {
            return;
        }
        self.carried.retain(|m| !lost.contains(&m.tp()));
        self.lost.extend(lost);
    }

    /// The revocation rule, part two: the batch in hand drops the lost partitions' messages
    /// and the sink forgets what it holds of them.
    async fn forget_lost(&mut self, batch: Option<&mut InFlight<S::Item>>) {
        if self.lost.is_empty() {
            return;
        }
        let lost = std::mem::take(&mut self.lost);
        if let Some(batch) = batch {
            batch.drop_partitions(&lost);
        }
        self.sink.forget(lost).await;
    }

    /// The next batch to write (possibly empty: an idle tick), or None when there is none
    /// yet (the caller looks at its group and comes back).
    async fn next_batch(&mut self) -> Option<Vec<RawMessage>> {
        if self.carried.is_empty() {
            let wait = self.s.tick.map_or(self.s.look, |t| t.min(self.s.look));
            match self.read(wait).await {
                Read::Message => {}
                Read::End => return None,
                Read::Error(e) => {
                    tracing::warn!(group = %self.s.group, error = %e, "consumer error");
                    sleep(Duration::from_millis(500)).await;
                    return None;
                }
                Read::Idle => {
                    self.forget_lost(None).await;
                    if let Some(fg) = &self.s.foreground {
                        // Quiet: let the pause (and its gauge) shrink.
                        fg.pause();
                    }
                    // Idle: a tick with an empty batch when the stage wants one.
                    match self.s.tick {
                        Some(t) if self.last_tick.elapsed() >= t => {}
                        _ => return None,
                    }
                }
            }
        }
        let deadline = Instant::now() + self.s.linger;
        // Already read to the end (during the last store, say): nothing to linger for.
        let mut drained = !self.carried.is_empty() && self.at_end.all(&self.health);
        while !drained && !self.carried.is_empty() && self.carried.len() < self.s.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.read(left).await {
                Read::Message => {}
                // Nothing more to wait for once every held partition is at its end.
                Read::End => drained = self.at_end.all(&self.health),
                Read::Error(e) => {
                    tracing::warn!(group = %self.s.group, error = %e, "consumer error");
                    break;
                }
                Read::Idle => break,
            }
        }
        self.forget_lost(None).await;
        self.last_tick = Instant::now();
        Some(std::mem::take(&mut self.carried))
    }

    /// Writes the batch until it is durable, dead letters included; None when the stage is
    /// stopping with a failing sink (the batch is not committed: whoever takes the partitions
    /// reads it again).
    async fn store(&mut self, batch: &mut InFlight<S::Item>) -> Option<Commit> {
        let mut backoff = Duration::from_millis(100);
        let mut paused = false;
        let commit = loop {
            let written = self.write_while_reading(batch).await;
            self.forget_lost(Some(batch)).await;
            let reason = match self.dead_letters(written, batch).await {
                Ok(commit) => break commit,
                Err(reason) => reason,
            };
            if self.health.stopping() {
                return None;
            }
            if !paused {
                tracing::warn!(group = %self.s.group, %reason, "sink failed; pausing and retrying the batch");
                paused = self.source.pause(true);
            }
            self.health.failed(reason);
            // Keep reading while paused so the group keeps us; a message can still arrive
            // from a partition assigned meanwhile: it waits in `carried` for the next batch.
            let until = Instant::now() + backoff;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                let _ = self.read(left).await;
                if !self.lost.is_empty() {
                    self.forget_lost(Some(batch)).await;
                    if paused {
                        // The new assignment is not paused: pause it too.
                        self.source.pause(true);
                    }
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        if paused {
            self.source.pause(false);
            tracing::info!(group = %self.s.group, "sink recovered; resuming");
        }
        Some(commit)
    }

    /// The sink's answer to one write, while the next batch is read into `carried` (up to
    /// `batch_size`), so fetching overlaps storing.
    async fn write_while_reading(&mut self, batch: &InFlight<S::Item>) -> Result<Commit, S::Error> {
        let mut write = std::pin::pin!(self.sink.write(batch.items.clone()));
        loop {
            let reading = self.carried.len() < self.s.batch_size && !self.health.stopping();
            let got = tokio::select! {
                biased;
                result = &mut write => return result,
                got = self.source.poll(), if reading => got,
            };
            self.note_revoked();
            match got {
                Polled::Message(m) => {
                    self.at_end.0.remove(&m.tp());
                    self.carried.push(m);
                }
                Polled::End(tp) => {
                    self.at_end.0.insert(tp);
                }
                Polled::Error(e) => {
                    tracing::warn!(error = %e, "consumer error while storing");
                    // Wait for the write alone.
                    return write.await;
                }
            }
        }
    }

    /// Keeps the batch's poison messages (or, when the sink refused the batch for good,
    /// every message of it) and says what to commit; Err(reason) to retry the batch.
    async fn dead_letters(
        &self,
        written: Result<Commit, S::Error>,
        batch: &InFlight<S::Item>,
    ) -> Result<Commit, String> {
        let (commit, keep) = match written {
            Ok(commit) => (commit, batch.poison.clone()),
            Err(e) if e.is_transient() => return Err(e.to_string()),
            Err(e) => {
                // Retrying cannot help: keep every message of the batch, with the reason.
                tracing::error!(error = %e, "batch refused for good; dead-lettering it");
                let reason = format!("{}: {e}", S::STAGE);
                let all = batch.raw.iter().map(|m| Poison::of(m, reason.clone()));
                (Commit::Batch, all.collect())
            }
        };
        self.dead.keep(S::STAGE, keep).await?;
        Ok(commit)
    }

    /// The batch is durable: count it, and commit (or rewind) as the sink said.
    async fn settle(&mut self, commit: Commit, batch: &InFlight<S::Item>) {
        self.health.progressed(!batch.raw.is_empty());
        let (next, sync) = match commit {
            Commit::Batch => (batch.next_offsets(), false),
            Commit::Offsets(o) => (o, true),
            Commit::Rewind {
                commit,
                from,
                reason,
            } => {
                tracing::warn!(group = %self.s.group, %reason, partitions = ?from.partitions(),
                    "sink lost open work; reading those partitions again");
                self.carried.retain(|m| !from.contains(&m.tp()));
                for (tp, offset) in from {
                    // Moved meanwhile: its new owner starts from the committed offset.
                    if self.health.is_assigned(&tp) {
                        self.source.seek(tp, offset).await;
                    }
                }
                self.health.failed(reason);
                // Whatever failed (storage, mostly) gets a moment before the same work again.
                sleep(Duration::from_secs(1)).await;
                (commit, true)
            }
        };
        self.pending.add(next);
        // The last commit before leaving must land before the new owner reads the offset.
        let now = sync || self.health.stopping();
        if now || self.pending.due(self.s.commit_interval) || self.at_end.all(&self.health) {
            self.flush(now).await;
        }
    }

    /// Commits what is pending (see `Pending::take`) and remembers it once the broker took it.
    async fn flush(&mut self, sync: bool) {
        let offsets = self.pending.take(&self.health.assigned());
        if self.source.commit(offsets.clone(), sync).await {
            self.pending.committed(&offsets);
        }
    }

    /// Commits what is durable (before the new owner reads the offset) and leaves the group.
    async fn leave(mut self) {
        self.flush(true).await;
        self.source.close().await;
    }
}

/// A batch's context for every line logged while it is handled: its partitions and offsets.
fn batch_span(stage: &'static str, raw: &[RawMessage]) -> tracing::Span {
    let mut first = Offsets::new();
    let mut last = Offsets::new();
    for m in raw {
        if first.get(&m.tp()).is_none() {
            first.insert(m.tp(), m.offset);
        }
        last.insert(m.tp(), m.offset);
    }
    let offsets: Vec<String> = first
        .iter()
        .map(|(tp, o)| format!("{}:{o}-{}", tp.partition, last.get(tp).unwrap_or(o)))
        .collect();
    tracing::info_span!("batch", stage, size = raw.len(), offsets = %offsets.join(","))
}
