//! The consumer loop every sink shares: read a batch (up to `batch_size`, or what arrived
//! within `linger`, or what there was once every held partition is read to its end), hand it
//! to the sink until the sink says its effect is durable (reading the next batch meanwhile),
//! then commit the batch's offsets. While the sink fails, the partitions are paused (the
//! consumer stays in its group) and the same batch is retried with backoff: nothing is skipped.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

pub use super::group::StageHealth;
use super::group::{GroupContext, Limits, TopicPartition};
use super::priority::Foreground;

/// One consumed message, owned (never hold librdkafka's borrowed messages across awaits).
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group: String,
    pub topic: String,
    pub batch_size: usize,
    pub linger: Duration,
    /// When set, an idle consumer calls the sink with an empty batch this often (for sinks
    /// that flush on age, like the archive).
    pub tick: Option<Duration>,
    /// `group.instance.id` (static membership), when configured.
    pub instance_id: Option<String>,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_poll_interval_ms: u64,
    pub fetch_wait_max_ms: u64,
    /// Commits at most this often while a backlog lasts (`kafka.commit_interval_ms`).
    pub commit_interval: Duration,
    /// When readiness gives up on the stage.
    pub limits: Limits,
    /// Extra librdkafka properties (`kafka.consumer`), applied last.
    pub extra: std::collections::BTreeMap<String, String>,
    /// In a process that also acknowledges webhooks: the pause after each batch that keeps
    /// those acknowledgements fast (`kafka::priority`).
    pub foreground: Option<Arc<Foreground>>,
}

impl ConsumerSettings {
    /// A consumer group on `topic` with the shared Kafka settings (brokers, static membership).
    pub fn new(
        kafka: &crate::config::KafkaConfig,
        group: &str,
        topic: &str,
        batch_size: usize,
        linger: Duration,
    ) -> Self {
        ConsumerSettings {
            brokers: kafka.brokers.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            batch_size,
            linger,
            tick: None,
            instance_id: kafka.group_instance_id.clone(),
            session_timeout_ms: kafka.session_timeout_ms,
            heartbeat_interval_ms: kafka.heartbeat_interval_ms,
            max_poll_interval_ms: kafka.max_poll_interval_ms,
            fetch_wait_max_ms: kafka.fetch_wait_max_ms,
            commit_interval: Duration::from_millis(kafka.commit_interval_ms),
            limits: Limits {
                unassigned_grace: Duration::from_secs(kafka.unassigned_grace_s),
                stall_timeout: Duration::from_secs(kafka.stall_timeout_s),
            },
            extra: kafka.consumer.clone(),
            foreground: None,
        }
    }

    /// Yields to `foreground` between batches (see `kafka::priority`).
    pub fn yielding_to(mut self, foreground: Option<Arc<Foreground>>) -> Self {
        self.foreground = foreground;
        self
    }
}

/// What the loop hands its stage.
pub enum Event {
    /// A batch to make durable (possibly empty: an idle tick).
    Batch(Arc<Vec<RawMessage>>),
    /// These partitions went to another member: forget what is buffered of them (the new
    /// owner starts again from the committed offset). The answer is ignored.
    Revoked(Vec<TopicPartition>),
}

/// Runs `run_batches` as a task of the current System, logging why it ended if it does.
/// Stages use it through `kafka::sink::spawn`, which gives every stage the same contract.
pub(super) fn spawn<F, Fut>(settings: ConsumerSettings, health: StageHealth, sink: F)
where
    F: FnMut(Event) -> Fut + 'static,
    Fut: Future<Output = Result<Commit, String>> + 'static,
{
    actix_web::rt::spawn(async move {
        let group = settings.group.clone();
        match run_batches(settings, health.clone(), sink).await {
            Ok(()) => tracing::info!(%group, "consumer left its group"),
            Err(e) => tracing::error!(%group, error = %e, "consumer stopped"),
        }
        health.mark_stopped();
    });
}

/// What a sink lets the loop commit once it returns Ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Everything in the batch is durable.
    Batch,
    /// Only up to these next offsets, per (topic, partition) (the archive keeps open files).
    /// Committed synchronously: the archive's file names depend on it (see `archive::actor`).
    Offsets(Vec<(String, i32, i64)>),
    /// As `Offsets`, and the sink lost what it held of the partitions in `from` (an archive
    /// file failed mid-write): read them again from these offsets.
    Rewind {
        commit: Vec<(String, i32, i64)>,
        from: Vec<(String, i32, i64)>,
        reason: String,
    },
}

/// The held partitions read to their end (librdkafka's partition EOF), so nothing more is there
/// to fill a batch with: the loop stores what it has instead of waiting out `linger`. Under a
/// trickle a batch is then one message (stored at once, not `linger` later); under load, or
/// behind, partitions are never at their end and batches fill as before.
#[derive(Default)]
struct AtEnd(std::collections::BTreeSet<i32>);

impl AtEnd {
    /// What `recv` answered, sorted: a message (its partition is no longer at its end), the
    /// end of a partition (`None`), or an error.
    fn take(
        &mut self,
        got: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
    ) -> Result<Option<RawMessage>, KafkaError> {
        match got {
            Ok(m) => {
                self.0.remove(&m.partition());
                Ok(Some(own(&m)))
            }
            Err(KafkaError::PartitionEOF(p)) => {
                self.0.insert(p);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every partition this member holds is read to its end.
    fn all(&self, health: &StageHealth) -> bool {
        let held = health.assigned();
        !held.is_empty() && held.iter().all(|(_, p)| self.0.contains(p))
    }
}

/// Offsets of durable batches not committed yet: during a backlog one commit per
/// `kafka.commit_interval_ms` instead of one per batch (see `KafkaConfig::commit_interval_ms`).
#[derive(Default)]
struct Pending {
    next: BTreeMap<(String, i32), i64>,
    /// When the oldest of them became durable.
    since: Option<Instant>,
    /// What this member last committed per partition: the same offset again is not sent
    /// (the archive answers every batch with the offsets below its open files, which move
    /// only when files close, and commits them synchronously).
    last: BTreeMap<(String, i32), i64>,
}

impl Pending {
    /// Later batches' offsets replace earlier ones (a rewind's too: they are committed in the
    /// order they were made durable).
    fn add(&mut self, next: Vec<(String, i32, i64)>) {
        if next.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        for (topic, partition, offset) in next {
            self.next.insert((topic, partition), offset);
        }
    }

    fn any(&self) -> bool {
        !self.next.is_empty()
    }

    fn due(&self, every: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= every)
    }

    /// Empties it, keeping only what this member holds (a commit for a partition that moved
    /// would rewind its new owner's progress; its owner reads those messages again instead)
    /// and what differs from this member's last commit.
    fn take(&mut self, health: &StageHealth) -> Vec<(String, i32, i64)> {
        self.since = None;
        // Forget what is no longer held: if it comes back, its offset may have moved.
        self.last.retain(|tp, _| health.is_assigned(tp));
        let last = &self.last;
        std::mem::take(&mut self.next)
            .into_iter()
            .filter(|(tp, o)| health.is_assigned(tp) && last.get(tp) != Some(o))
            .map(|((t, p), o)| (t, p, o))
            .collect()
    }

    /// Remembers a commit the broker took.
    fn committed(&mut self, offsets: &[(String, i32, i64)]) {
        for (t, p, o) in offsets {
            self.last.insert((t.clone(), *p), *o);
        }
    }
}

/// Commits what is pending (see `Pending::take`) and remembers it once the broker took it.
async fn flush(
    consumer: &Arc<GroupConsumer>,
    pending: &mut Pending,
    health: &StageHealth,
    sync: bool,
) {
    let offsets = pending.take(health);
    if commit(consumer, offsets.clone(), sync).await {
        pending.committed(&offsets);
    }
}

fn own(m: &rdkafka::message::BorrowedMessage<'_>) -> RawMessage {
    RawMessage {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// A consumer in the stage's group; `static_id`: join with this `group.instance.id`.
fn create(
    s: &ConsumerSettings,
    health: &StageHealth,
    static_id: Option<&str>,
) -> Result<GroupConsumer, KafkaError> {
    let mut c = ClientConfig::new();
    if let Some(id) = static_id {
        c.set("group.instance.id", id);
    }
    c.set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("socket.connection.setup.timeout.ms", "3000")
        // A crashed member holds its partitions until its session expires: keep that short
        // so a restarted process resumes within seconds (librdkafka's default is 45 s).
        .set("session.timeout.ms", s.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", s.heartbeat_interval_ms.to_string())
        .set("max.poll.interval.ms", s.max_poll_interval_ms.to_string())
        // `kafka.fetch_wait_max_ms`: how long an empty fetch may wait for data.
        .set("fetch.wait.max.ms", s.fetch_wait_max_ms.to_string())
        // The roles' topics are created at start-up, concurrently with this subscription: a
        // consumer that subscribed first sees UnknownTopicOrPartition and only looks again at
        // the next metadata refresh (librdkafka's default: 5 minutes). Look every 2 s instead.
        .set("topic.metadata.refresh.interval.ms", "2000")
        // Lag per partition comes from librdkafka's statistics (see `group::GroupContext`).
        .set("statistics.interval.ms", "1000")
        // Say when a partition has been read to its end (`AtEnd`): a batch then stops waiting
        // out its linger once nothing more is there to read.
        .set("enable.partition.eof", "true")
        // Prefetch ten batches, not librdkafka's 100,000 messages / 64 MB per partition: a
        // stage that pauses (`kafka::priority`) soon stops costing the broker fetches, and a
        // backlog does not sit in memory three times over. Much less starves the loop
        // (2,000 / 4 MB halved the persist stage's end-to-end rate, `benches/persist.rs`).
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "16384");
    for (k, v) in &s.extra {
        c.set(k, v);
    }
    let consumer: GroupConsumer = c.create_with_context(GroupContext {
        health: health.clone(),
    })?;
    consumer.subscribe(&[s.topic.as_str()])?;
    Ok(consumer)
}

/// How long one wait for a message lasts: the loop looks at its group this often.
const LOOK: Duration = Duration::from_secs(1);

/// Runs until the task is dropped. `sink` gets each batch (shared, so retries are cheap) and
/// answers Ok once the effect is durable, or Err(reason) to have the same batch retried.
async fn run_batches<F, Fut>(
    s: ConsumerSettings,
    health: StageHealth,
    mut sink: F,
) -> Result<(), KafkaError>
where
    F: FnMut(Event) -> Fut,
    Fut: Future<Output = Result<Commit, String>>,
{
    let consumer = Arc::new(create(&s, &health, s.instance_id.as_deref())?);
    let mut carried: Vec<RawMessage> = Vec::new();
    let mut last_tick = Instant::now();
    let mut at_end = AtEnd::default();
    let mut pending = Pending::default();
    loop {
        if health.stopping() {
            // The last commit before leaving must land before the new owner reads the offset.
            flush(&consumer, &mut pending, &health, true).await;
            // Closing the consumer leaves the group: its partitions move at once.
            close(consumer).await;
            return Ok(());
        }
        if pending.due(s.commit_interval) || (pending.any() && at_end.all(&health)) {
            flush(&consumer, &mut pending, &health, false).await;
        }
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            let wait = s.tick.map_or(LOOK, |t| t.min(LOOK));
            match actix_web::rt::time::timeout(wait, consumer.recv()).await {
                Ok(got) => match at_end.take(got) {
                    Ok(Some(m)) => {
                        // Revocations seen inside this recv concern what came before it
                        // (nothing here): the stage forgets them; `m` is of the new assignment.
                        forget_revoked(&health, &mut batch, &mut sink).await;
                        batch.push(m);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(group = %s.group, error = %e, "consumer error");
                        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
                Err(_) => {
                    forget_revoked(&health, &mut batch, &mut sink).await;
                    if let Some(fg) = &s.foreground {
                        // Quiet: let the pause (and its gauge) shrink.
                        fg.pause();
                    }
                    // Idle: a tick with an empty batch when the stage wants one.
                    match s.tick {
                        Some(t) if last_tick.elapsed() >= t => {}
                        _ => continue,
                    }
                }
            }
        }
        let deadline = Instant::now() + s.linger;
        // Already read to the end (during the last store, say): nothing to linger for.
        let mut drained = !batch.is_empty() && at_end.all(&health);
        while !drained && !batch.is_empty() && batch.len() < s.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match actix_web::rt::time::timeout(left, consumer.recv()).await {
                Ok(got) => match at_end.take(got) {
                    Ok(Some(m)) => {
                        // A rebalance ran inside recv: what came before it may be stale.
                        forget_revoked(&health, &mut batch, &mut sink).await;
                        batch.push(m);
                    }
                    // Nothing more to wait for once every held partition is at its end.
                    Ok(None) => drained = at_end.all(&health),
                    Err(e) => {
                        tracing::warn!(group = %s.group, error = %e, "consumer error");
                        break;
                    }
                },
                Err(_) => break,
            }
        }
        forget_revoked(&health, &mut batch, &mut sink).await;
        last_tick = Instant::now();
        let counted = !batch.is_empty();
        let mut batch = Arc::new(batch);
        let mut backoff = Duration::from_millis(100);
        let mut paused = false;
        let commit_what = loop {
            let (result, revoked) = store_while_reading(
                sink(Event::Batch(batch.clone())),
                &consumer,
                &health,
                &mut carried,
                &mut at_end,
                s.batch_size,
            )
            .await;
            if !revoked.is_empty() {
                // Partitions lost while the sink stored: what was read of them is stale.
                let _ = sink(Event::Revoked(revoked)).await;
            }
            match result {
                Ok(c) => break c,
                Err(reason) => {
                    if health.stopping() {
                        // Shutting down with a failing sink: this batch is not committed;
                        // whoever takes the partitions reads it again.
                        flush(&consumer, &mut pending, &health, true).await;
                        close(consumer).await;
                        return Ok(());
                    }
                    if !paused {
                        tracing::warn!(group = %s.group, %reason, "sink failed; pausing and retrying the batch");
                        paused = pause(&consumer, true);
                    }
                    health.failed(reason);
                    // Keep polling while paused so the group keeps us; a message can still
                    // arrive from a partition assigned meanwhile: keep it for the next batch.
                    let until = Instant::now() + backoff;
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        let got = actix_web::rt::time::timeout(left, consumer.recv()).await;
                        // Revocations seen inside this recv concern what came before `m`.
                        let revoked = health.take_revoked();
                        if !revoked.is_empty() {
                            carried.retain(|m| !revoked.contains(&(m.topic.clone(), m.partition)));
                            batch = Arc::new(
                                batch
                                    .iter()
                                    .filter(|m| !revoked.contains(&(m.topic.clone(), m.partition)))
                                    .cloned()
                                    .collect(),
                            );
                            let _ = sink(Event::Revoked(revoked)).await;
                            if paused {
                                // The new assignment is not paused: pause it too.
                                pause(&consumer, true);
                            }
                        }
                        if let Ok(Ok(Some(m))) = got.map(|g| at_end.take(g)) {
                            carried.push(m);
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if paused {
            pause(&consumer, false);
            tracing::info!(group = %s.group, "sink recovered; resuming");
        }
        health.progressed(counted);
        let (next, sync) = match commit_what {
            Commit::Batch => (batch_offsets(&batch), false),
            Commit::Offsets(o) => (o, true),
            Commit::Rewind {
                commit,
                from,
                reason,
            } => {
                tracing::warn!(group = %s.group, %reason, partitions = ?from,
                    "sink lost open work; reading those partitions again");
                carried.retain(|m| {
                    !from
                        .iter()
                        .any(|(t, p, _)| *t == m.topic && *p == m.partition)
                });
                rewind(&consumer, &health, from).await;
                health.failed(reason);
                // Whatever failed (storage, mostly) gets a moment before the same work again.
                actix_web::rt::time::sleep(Duration::from_secs(1)).await;
                (commit, true)
            }
        };
        pending.add(next);
        // The last commit before leaving must land before the new owner reads the offset.
        let now = sync || health.stopping();
        if now || pending.due(s.commit_interval) || at_end.all(&health) {
            flush(&consumer, &mut pending, &health, now).await;
        }
        if let (true, Some(fg)) = (counted, &s.foreground) {
            let pause = fg.pause();
            if !pause.is_zero() && !health.stopping() {
                actix_web::rt::time::sleep(pause).await;
            }
        }
    }
}

/// Closes a consumer off the System's thread: rust-rdkafka's drop polls until librdkafka has
/// left the group, which can take as long as the coordinator takes to answer, and would stall
/// every stage and actor on this thread meanwhile. Waits at most 10 s for it.
async fn close(consumer: Arc<GroupConsumer>) {
    let closing = actix_web::rt::task::spawn_blocking(move || drop(consumer));
    if actix_web::rt::time::timeout(Duration::from_secs(10), closing)
        .await
        .is_err()
    {
        tracing::warn!("a consumer is still closing after 10 s; going on without it");
    }
}

/// Drops from `batch` what belongs to partitions revoked since the last look, and has the
/// stage forget them.
/// Awaits the sink's answer while reading the next batch (up to `batch_size` into
/// `carried`), so fetching overlaps storing. Revocations seen after a read concern what came
/// before it: those messages leave `carried` at once, and the partitions are returned for the
/// sink to forget once it has answered.
async fn store_while_reading<Fut>(
    store: Fut,
    consumer: &GroupConsumer,
    health: &StageHealth,
    carried: &mut Vec<RawMessage>,
    at_end: &mut AtEnd,
    batch_size: usize,
) -> (Result<Commit, String>, Vec<TopicPartition>)
where
    Fut: Future<Output = Result<Commit, String>>,
{
    let mut store = std::pin::pin!(store);
    let mut revoked: Vec<TopicPartition> = Vec::new();
    loop {
        tokio::select! {
            biased;
            result = &mut store => return (result, revoked),
            got = consumer.recv(), if carried.len() < batch_size && !health.stopping() => {
                let lost = health.take_revoked();
                if !lost.is_empty() {
                    carried.retain(|m| !lost.contains(&(m.topic.clone(), m.partition)));
                    revoked.extend(lost);
                }
                match at_end.take(got) {
                    Ok(Some(m)) => carried.push(m),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error while storing");
                        // Wait for the store alone.
                        return (store.await, revoked);
                    }
                }
            }
        }
    }
}

async fn forget_revoked<F, Fut>(health: &StageHealth, batch: &mut Vec<RawMessage>, sink: &mut F)
where
    F: FnMut(Event) -> Fut,
    Fut: Future<Output = Result<Commit, String>>,
{
    let revoked = health.take_revoked();
    if revoked.is_empty() {
        return;
    }
    batch.retain(|m| !revoked.contains(&(m.topic.clone(), m.partition)));
    let _ = sink(Event::Revoked(revoked)).await;
}

fn batch_offsets(batch: &[RawMessage]) -> Vec<(String, i32, i64)> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = next.entry((&m.topic, m.partition)).or_insert(m.offset + 1);
        *e = (*e).max(m.offset + 1);
    }
    next.into_iter()
        .map(|((t, p), o)| (t.to_owned(), p, o))
        .collect()
}

fn pause(consumer: &GroupConsumer, on: bool) -> bool {
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let r = if on {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    drop(assignment);
    r.is_ok()
}

/// Moves the fetch position of held partitions back to the given offsets.
async fn rewind(
    consumer: &Arc<GroupConsumer>,
    health: &StageHealth,
    from: Vec<(String, i32, i64)>,
) {
    for (topic, partition, offset) in from {
        if !health.is_assigned(&(topic.clone(), partition)) {
            continue; // moved meanwhile: its new owner starts from the committed offset
        }
        let c = consumer.clone();
        let (t, p) = (topic.clone(), partition);
        let sought = actix_web::rt::task::spawn_blocking(move || {
            c.seek(&t, p, Offset::Offset(offset), Duration::from_secs(5))
        })
        .await;
        match sought {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(%topic, partition, offset, error = %e, "cannot seek back")
            }
            Err(e) => tracing::error!(%topic, partition, offset, error = %e, "seek task failed"),
        }
    }
}

/// Commits the given next offsets. Asynchronous unless `sync`: a lost commit only means
/// redelivery, which every sink absorbs; the archive's names need its commits in order.
/// False when the commit failed (for an asynchronous one: could not be queued).
async fn commit(consumer: &Arc<GroupConsumer>, next: Vec<(String, i32, i64)>, sync: bool) -> bool {
    if next.is_empty() {
        return true;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in next {
        if let Err(e) = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, "cannot build commit list");
        }
    }
    let result = if sync {
        let c = consumer.clone();
        actix_web::rt::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .unwrap_or_else(|e| {
                Err(KafkaError::Canceled).inspect_err(|_| {
                    tracing::warn!(error = %e, "commit task failed");
                })
            })
    } else {
        consumer.commit(&tpl, CommitMode::Async)
    };
    if let Err(e) = &result {
        tracing::warn!(error = %e, "offset commit failed; the batch may be redelivered");
    }
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> StageHealth {
        let h = StageHealth::new(
            "pending-test",
            Limits {
                unassigned_grace: Duration::from_secs(60),
                stall_timeout: Duration::from_secs(60),
            },
        );
        h.assign(vec![("t".to_owned(), 0), ("t".to_owned(), 1)]);
        h
    }

    #[test]
    fn pending_offsets_keep_the_latest_per_partition_and_only_what_is_held() {
        let h = health();
        let mut p = Pending::default();
        assert!(!p.any() && !p.due(Duration::ZERO), "nothing to commit");
        p.add(vec![("t".into(), 0, 10), ("t".into(), 1, 5)]);
        p.add(vec![("t".into(), 0, 20), ("t".into(), 2, 7)]);
        h.revoke(vec![("t".to_owned(), 1)]);
        // Partition 1 moved (its new owner reads from the committed offset); 2 was never ours.
        assert_eq!(p.take(&h), vec![("t".to_owned(), 0, 20)]);
        assert!(!p.any() && !p.due(Duration::ZERO), "taken");
    }

    #[test]
    fn an_offset_already_committed_is_not_committed_again_while_held() {
        let h = health();
        let mut p = Pending::default();
        p.add(vec![("t".into(), 0, 10), ("t".into(), 1, 5)]);
        let first = p.take(&h);
        assert_eq!(first.len(), 2);
        p.committed(&first);
        // The archive answers every batch with the same offsets until a file closes.
        p.add(vec![("t".into(), 0, 10), ("t".into(), 1, 6)]);
        assert_eq!(p.take(&h), vec![("t".to_owned(), 1, 6)]);
        // A commit that failed is not remembered: the same offset goes again.
        p.add(vec![("t".into(), 1, 6)]);
        assert_eq!(p.take(&h), vec![("t".to_owned(), 1, 6)]);
        // Lost and taken back: its offset may have moved meanwhile, so it is sent again.
        h.revoke(vec![("t".to_owned(), 0)]);
        p.add(vec![("t".into(), 1, 7)]);
        p.take(&h);
        h.assign(vec![("t".to_owned(), 0)]);
        p.add(vec![("t".into(), 0, 10)]);
        assert_eq!(p.take(&h), vec![("t".to_owned(), 0, 10)]);
    }

    #[test]
    fn pending_offsets_fall_due_an_interval_after_the_oldest() {
        let h = health();
        let mut p = Pending::default();
        p.add(vec![("t".into(), 0, 1)]);
        assert!(p.due(Duration::ZERO), "interval 0 commits every batch");
        assert!(!p.due(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        p.add(vec![("t".into(), 0, 2)]);
        // The clock runs from the oldest uncommitted batch, not the newest.
        assert!(p.due(Duration::from_millis(20)));
        assert_eq!(p.take(&h), vec![("t".to_owned(), 0, 2)]);
        p.add(Vec::new());
        assert!(!p.due(Duration::ZERO), "an empty batch starts no clock");
    }
}
