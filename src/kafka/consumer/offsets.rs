//! Where a stage is in its partitions: typed topic-partitions and next offsets, and the
//! commits that are due (`Pending`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Per partition, the offset of the next message to read: what Kafka commits, and where a
/// rewind reads from again. Later values for a partition replace earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(BTreeMap<TopicPartition, i64>);

impl Offsets {
    pub fn new() -> Self {
        Offsets::default()
    }

    pub fn insert(&mut self, tp: TopicPartition, next: i64) {
        self.0.insert(tp, next);
    }

    /// Raises the partition's next offset to `next` if it is below it.
    pub fn raise(&mut self, tp: TopicPartition, next: i64) {
        let e = self.0.entry(tp).or_insert(next);
        *e = (*e).max(next);
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<i64> {
        self.0.get(tp).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, i64)> {
        self.0.iter().map(|(tp, o)| (tp, *o))
    }

    pub fn contains(&self, tp: &TopicPartition) -> bool {
        self.0.contains_key(tp)
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.0.keys().cloned().collect()
    }

    pub fn extend(&mut self, other: Offsets) {
        self.0.extend(other.0);
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&TopicPartition, i64) -> bool) {
        self.0.retain(|tp, o| keep(tp, *o));
    }
}

impl FromIterator<(TopicPartition, i64)> for Offsets {
    fn from_iter<I: IntoIterator<Item = (TopicPartition, i64)>>(iter: I) -> Self {
        Offsets(iter.into_iter().collect())
    }
}

impl IntoIterator for Offsets {
    type Item = (TopicPartition, i64);
    type IntoIter = std::collections::btree_map::IntoIter<TopicPartition, i64>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Offsets of durable batches not committed yet: during a backlog one commit per
/// `kafka.commit_interval_ms` instead of one per batch (see `KafkaConfig::commit_interval_ms`).
#[derive(Default)]
pub(super) struct Pending {
    next: Offsets,
    /// When the oldest of them became durable.
    since: Option<Instant>,
    /// What this member last committed per partition: the same offset again is not sent
    /// (the archive answers every batch with the offsets below its open files, which move
    /// only when files close, and commits them synchronously).
    last: Offsets,
}

impl Pending {
    /// Later batches' offsets replace earlier ones (a rewind's too: they are committed in the
    /// order they were made durable).
    pub(super) fn add(&mut self, next: Offsets) {
        if next.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        self.next.extend(next);
    }

    pub(super) fn any(&self) -> bool {
        !self.next.is_empty()
    }

    pub(super) fn due(&self, every: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= every)
    }

    /// Empties it, keeping only what this member holds (a commit for a partition that moved
    /// would rewind its new owner's progress; its owner reads those messages again instead)
    /// and what differs from this member's last commit.
    /// `held`: the partitions this member holds now.
    pub(super) fn take(&mut self, held: &BTreeSet<TopicPartition>) -> Offsets {
        self.since = None;
        // Forget what is no longer held: if it comes back, its offset may have moved.
        self.last.retain(|tp, _| held.contains(tp));
        let last = &self.last;
        let mut next = std::mem::take(&mut self.next);
        next.retain(|tp, o| held.contains(tp) && last.get(tp) != Some(o));
        next
    }

    /// Remembers a commit the broker took.
    pub(super) fn committed(&mut self, offsets: &Offsets) {
        self.last.extend(offsets.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn offsets(list: &[(i32, i64)]) -> Offsets {
        list.iter().map(|(p, o)| (tp(*p), *o)).collect()
    }

    /// The partitions held, as the group's rebalances change them.
    struct Held(BTreeSet<TopicPartition>);

    impl Held {
        fn revoke(&mut self, tps: Vec<TopicPartition>) {
            tps.iter().for_each(|t| {
                self.0.remove(t);
            });
        }
        fn assign(&mut self, tps: Vec<TopicPartition>) {
            self.0.extend(tps);
        }
    }

    fn health() -> Held {
        Held([tp(0), tp(1)].into_iter().collect())
    }

    #[test]
    fn pending_offsets_keep_the_latest_per_partition_and_only_what_is_held() {
        let mut h = health();
        let mut p = Pending::default();
        assert!(!p.any() && !p.due(Duration::ZERO), "nothing to commit");
        p.add(offsets(&[(0, 10), (1, 5)]));
        p.add(offsets(&[(0, 20), (2, 7)]));
        h.revoke(vec![tp(1)]);
        // Partition 1 moved (its new owner reads from the committed offset); 2 was never ours.
        assert_eq!(p.take(&h.0), offsets(&[(0, 20)]));
        assert!(!p.any() && !p.due(Duration::ZERO), "taken");
    }

    #[test]
    fn an_offset_already_committed_is_not_committed_again_while_held() {
        let mut h = health();
        let mut p = Pending::default();
        p.add(offsets(&[(0, 10), (1, 5)]));
        let first = p.take(&h.0);
        assert_eq!(first.len(), 2);
        p.committed(&first);
        // The archive answers every batch with the same offsets until a file closes.
        p.add(offsets(&[(0, 10), (1, 6)]));
        assert_eq!(p.take(&h.0), offsets(&[(1, 6)]));
        // A commit that failed is not remembered: the same offset goes again.
        p.add(offsets(&[(1, 6)]));
        assert_eq!(p.take(&h.0), offsets(&[(1, 6)]));
        // Lost and taken back: its offset may have moved meanwhile, so it is sent again.
        h.revoke(vec![tp(0)]);
        p.add(offsets(&[(1, 7)]));
        p.take(&h.0);
        h.assign(vec![tp(0)]);
        p.add(offsets(&[(0, 10)]));
        assert_eq!(p.take(&h.0), offsets(&[(0, 10)]));
    }

    #[test]
    fn pending_offsets_fall_due_an_interval_after_the_oldest() {
        let h = health();
        let mut p = Pending::default();
        p.add(offsets(&[(0, 1)]));
        assert!(p.due(Duration::ZERO), "interval 0 commits every batch");
        assert!(!p.due(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        p.add(offsets(&[(0, 2)]));
        // The clock runs from the oldest uncommitted batch, not the newest.
        assert!(p.due(Duration::from_millis(20)));
        assert_eq!(p.take(&h.0), offsets(&[(0, 2)]));
        p.add(Offsets::new());
        assert!(!p.due(Duration::ZERO), "an empty batch starts no clock");
    }
}
