//! A consumer stage's standing in its group, as the loop and readiness see it: the partitions
//! it holds now (from librdkafka's rebalance callbacks), the ones it lost since the loop last
//! looked, its lag per partition, when it last made a batch durable, and its last failure.
//!
//! `/readyz` reads [`StageHealth::problem`]; Prometheus reads the gauges set here
//! (`alertpipe_consumer_lag{stage,partition}`, `..._last_progress_timestamp_seconds{stage}`,
//! `..._assigned_partitions{stage}`, `..._sink_failing{stage}`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};

use crate::kafka::connection::ErrorLog;
use crate::metrics as m;

pub use super::offsets::TopicPartition;

/// When a stage stops being ready (`kafka.unassigned_grace_s`, `kafka.stall_timeout_s`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub unassigned_grace: Duration,
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            unassigned_grace: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug)]
struct State {
    last_error: Option<String>,
    assigned: BTreeSet<TopicPartition>,
    /// Lost since the loop last took them (it drops their messages and tells the sink).
    revoked: Vec<TopicPartition>,
    /// Since when the stage holds no partition (None while it holds some).
    unassigned_since: Option<Instant>,
    /// Since when the stage waits for its group to say what it holds: from the (re)join, or
    /// from a revocation that left it nothing, until the next assignment (even an empty one:
    /// a member idle by design is not waiting).
    waiting_since: Option<Instant>,
    lag: BTreeMap<TopicPartition, i64>,
    last_progress: Instant,
}

/// A stage's health, shared by its consumer loop, its rebalance callbacks and `/readyz`;
/// also how shutdown asks the loop to stop and learns that it has.
#[derive(Debug, Clone)]
pub struct StageHealth {
    name: &'static str,
    limits: Limits,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    stopped: Arc<tokio::sync::watch::Sender<bool>>,
    /// What the stage's clients said about reaching the brokers (`kafka::connection`).
    errors: ErrorLog,
}

impl StageHealth {
    pub fn new(name: &'static str, limits: Limits) -> Self {
        let now = Instant::now();
        // Start counts as progress: the "lag and no progress" rule needs the series from the
        // start, not only after a first batch.
        metrics::gauge!(m::CONSUMER_LAST_PROGRESS, "stage" => name).set(unix_now());
        metrics::gauge!(m::CONSUMER_ASSIGNED, "stage" => name).set(0.0);
        m::init_stage(name);
        StageHealth {
            name,
            limits,
            state: Arc::new(Mutex::new(State {
                last_error: None,
                assigned: BTreeSet::new(),
                revoked: Vec::new(),
                unassigned_since: Some(now),
                waiting_since: Some(now),
                lag: BTreeMap::new(),
                last_progress: now,
            })),
            stop: Arc::default(),
            stopped: Arc::new(tokio::sync::watch::channel(false).0),
            errors: ErrorLog::default(),
        }
    }

    /// Its consumer's connection errors name the cause when the stage gets no partitions.
    pub fn reporting(mut self, errors: ErrorLog) -> Self {
        self.errors = errors;
        self
    }

    /// Shutdown: finish the batch in hand, commit it, leave the group.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(super) fn mark_stopped(&self) {
        self.stopped.send_replace(true);
    }

    /// Resolves once the stage's consumer loop has ended.
    pub async fn stopped(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave it inconsistent: every write is one
        // assignment. Keep serving with the data as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the stage is not ready, if it is not: its sink fails, it has held no partition
    /// for longer than the grace, or it has lag and made nothing durable for too long.
    pub fn problem(&self) -> Option<String> {
        let s = self.lock();
        if let Some(e) = &s.last_error {
            return Some(e.clone());
        }
        if let Some(since) = s.unassigned_since {
            let idle = since.elapsed();
            if idle > self.limits.unassigned_grace {
                return Some(self.errors.with_cause(format!(
                    "no partition assigned for {} s (group coordinator or broker)",
                    idle.as_secs()
                )));
            }
        }
        let lag: i64 = s.lag.values().sum();
        let still = s.last_progress.elapsed();
        if lag > 0 && still > self.limits.stall_timeout {
            return Some(format!(
                "lag {lag} and no batch made durable for {} s",
                still.as_secs()
            ));
        }
        None
    }

    /// The last sink failure, if the stage is failing now.
    pub fn error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// How long the stage has held no partition (None while it holds some).
    pub fn unassigned_for(&self) -> Option<Duration> {
        self.lock().unassigned_since.map(|t| t.elapsed())
    }

    /// How long the stage has waited for an assignment since it joined or lost everything
    /// (None once its group answered, an empty assignment included).
    pub(super) fn waiting_for_group(&self) -> Option<Duration> {
        self.lock().waiting_since.map(|t| t.elapsed())
    }

    /// The stage joins its group again (a new consumer): it waits for an assignment anew.
    pub(super) fn rejoining(&self) {
        self.lock().waiting_since = Some(Instant::now());
    }

    pub fn assigned(&self) -> BTreeSet<TopicPartition> {
        self.lock().assigned.clone()
    }

    pub fn is_assigned(&self, tp: &TopicPartition) -> bool {
        self.lock().assigned.contains(tp)
    }

    pub(super) fn failed(&self, reason: String) {
        metrics::gauge!(m::CONSUMER_FAILING, "stage" => self.name).set(1.0);
        self.lock().last_error = Some(reason);
    }

    /// A batch (or an idle tick) went through the sink.
    pub(super) fn progressed(&self, counted: bool) {
        metrics::gauge!(m::CONSUMER_FAILING, "stage" => self.name).set(0.0);
        if counted {
            metrics::counter!(m::CONSUMER_BATCHES, "stage" => self.name).increment(1);
            metrics::gauge!(m::CONSUMER_LAST_PROGRESS, "stage" => self.name).set(unix_now());
        }
        let mut s = self.lock();
        s.last_error = None;
        if counted {
            s.last_progress = Instant::now();
        }
    }

    /// Lag per partition (high watermark minus what is durable), for the partitions held.
    pub(super) fn set_lag(&self, lag: BTreeMap<TopicPartition, i64>) {
        let mut s = self.lock();
        if lag.values().all(|l| *l == 0) {
            // Nothing waiting counts as keeping up.
            s.last_progress = Instant::now();
        }
        for (tp, l) in &lag {
            metrics::gauge!(m::CONSUMER_LAG, "stage" => self.name, "partition" => tp.partition.to_string())
                .set(*l as f64);
        }
        s.lag = lag;
    }

    /// Partitions lost since the last call.
    pub(super) fn take_revoked(&self) -> Vec<TopicPartition> {
        std::mem::take(&mut self.lock().revoked)
    }

    pub(super) fn assign(&self, tps: Vec<TopicPartition>) {
        let mut s = self.lock();
        // Each held partition's lag series exists from its assignment (0 until librdkafka's
        // statistics know better, within `statistics.interval.ms`).
        for tp in &tps {
            metrics::gauge!(m::CONSUMER_LAG, "stage" => self.name, "partition" => tp.partition.to_string())
                .set(0.0);
        }
        // A partition revoked and assigned again stays in `revoked`: what the loop holds of it
        // predates the revocation, and librdkafka fetches it again from the committed offset.
        s.assigned.extend(tps);
        s.waiting_since = None;
        self.count(&mut s);
    }

    pub(super) fn revoke(&self, tps: Vec<TopicPartition>) {
        let mut s = self.lock();
        for tp in tps {
            s.assigned.remove(&tp);
            s.lag.remove(&tp);
            metrics::gauge!(m::CONSUMER_LAG, "stage" => self.name, "partition" => tp.partition.to_string())
                .set(0.0);
            s.revoked.push(tp);
        }
        if s.assigned.is_empty() && s.waiting_since.is_none() {
            s.waiting_since = Some(Instant::now());
        }
        self.count(&mut s);
    }

    fn count(&self, s: &mut State) {
        metrics::gauge!(m::CONSUMER_ASSIGNED, "stage" => self.name).set(s.assigned.len() as f64);
        match (s.assigned.is_empty(), s.unassigned_since) {
            (true, None) => s.unassigned_since = Some(Instant::now()),
            (false, Some(_)) => s.unassigned_since = None,
            _ => {}
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// librdkafka's client context for a stage's consumer: records rebalances in its health.
pub struct GroupContext {
    pub health: StageHealth,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.health.errors.note(&error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.health.errors.log(level, fac, log_message);
    }

    /// Every `statistics.interval.ms`: the lag of each held partition, from the broker's
    /// high watermark and the group's committed offset as librdkafka last saw them.
    fn stats(&self, stats: Statistics) {
        let held = self.health.assigned();
        let mut lag = BTreeMap::new();
        for (topic, t) in &stats.topics {
            for (p, s) in &t.partitions {
                let tp = TopicPartition::new(topic.clone(), *p);
                if !held.contains(&tp) {
                    continue;
                }
                let l = if s.consumer_lag >= 0 {
                    s.consumer_lag
                } else if s.hi_offset >= 0 && s.app_offset >= 0 {
                    // Nothing committed yet: what is fetched but not handed to the stage.
                    (s.hi_offset - s.app_offset).max(0)
                } else {
                    continue;
                };
                lag.insert(tp, l);
            }
        }
        self.health.set_lag(lag);
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = partitions(tpl);
                tracing::info!(stage = self.health.name, partitions = ?tps, "partitions assigned");
                self.health.assign(tps);
            }
            Rebalance::Revoke(tpl) => {
                let tps = partitions(tpl);
                tracing::info!(stage = self.health.name, partitions = ?tps, "partitions revoked");
                self.health.revoke(tps);
            }
            Rebalance::Error(e) => {
                tracing::warn!(stage = self.health.name, error = %e, "rebalance failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn a_stage_without_partitions_past_the_grace_is_not_ready() {
        let h = StageHealth::new(
            "x",
            Limits {
                unassigned_grace: Duration::ZERO,
                stall_timeout: Duration::from_secs(60),
            },
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.problem().expect("unassigned").contains("no partition"));
        h.assign(vec![tp(0), tp(1)]);
        assert_eq!(h.problem(), None);
        h.revoke(vec![tp(0)]);
        assert_eq!(h.problem(), None, "one partition left");
        assert_eq!(h.take_revoked(), vec![tp(0)]);
        assert!(h.take_revoked().is_empty());
        h.revoke(vec![tp(1)]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.problem().is_some());
    }

    #[test]
    fn lag_without_progress_past_the_stall_timeout_is_not_ready() {
        let h = StageHealth::new(
            "y",
            Limits {
                unassigned_grace: Duration::from_secs(60),
                stall_timeout: Duration::ZERO,
            },
        );
        h.assign(vec![tp(0)]);
        h.set_lag(BTreeMap::from([(tp(0), 0)]));
        assert_eq!(h.problem(), None, "no lag: keeping up");
        h.set_lag(BTreeMap::from([(tp(0), 5)]));
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.problem().expect("stalled").contains("lag 5"));
        h.progressed(true);
        let h2 = StageHealth::new("z", Limits::default());
        h2.failed("db down".into());
        assert_eq!(h2.problem().as_deref(), Some("db down"));
        h2.progressed(false);
        assert_eq!(h2.error(), None);
    }

    #[test]
    fn a_partition_assigned_again_is_still_reported_revoked_once() {
        let h = StageHealth::new("w", Limits::default());
        h.assign(vec![tp(0)]);
        h.revoke(vec![tp(0)]);
        h.assign(vec![tp(0)]);
        assert_eq!(
            h.take_revoked(),
            vec![tp(0)],
            "what the loop holds of it is stale"
        );
        assert!(h.is_assigned(&tp(0)));
    }
}

/// Where a group stands on a topic, read from outside the group (it joins nothing): what it
/// has committed and what it has not consumed yet.
pub struct Probe {
    consumer: rdkafka::consumer::BaseConsumer,
}

/// Where a group stands on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPosition {
    pub partition: i32,
    /// The committed offset (None: never committed).
    pub committed: Option<i64>,
    /// Messages not committed yet.
    pub lag: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPosition {
    pub partitions: Vec<PartitionPosition>,
    /// Messages not committed yet, over all partitions.
    pub lag: i64,
}

impl Probe {
    pub fn new(
        conn: &crate::kafka::Connection,
        group: &str,
    ) -> Result<Probe, rdkafka::error::KafkaError> {
        let consumer = conn
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Probe { consumer })
    }

    /// Blocking (several round trips to the broker).
    pub fn position(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<GroupPosition, rdkafka::error::KafkaError> {
        use rdkafka::consumer::Consumer;
        use rdkafka::{Offset, TopicPartitionList};
        let partitions: Vec<i32> = {
            let md = self.consumer.fetch_metadata(Some(topic), timeout)?;
            md.topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect()
        };
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(topic, *p);
        }
        // Drop every list the consumer returned before the consumer (librdkafka #3796).
        let committed: Vec<Option<i64>> = {
            let c = self.consumer.committed_offsets(tpl, timeout)?;
            partitions
                .iter()
                .map(|p| match c.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                })
                .collect()
        };
        let mut pos = GroupPosition::default();
        for (p, at) in partitions.iter().zip(committed) {
            let (low, high) = self.consumer.fetch_watermarks(topic, *p, timeout)?;
            let lag = (high - at.unwrap_or(low)).max(0);
            pos.lag += lag;
            pos.partitions.push(PartitionPosition {
                partition: *p,
                committed: at,
                lag,
            });
        }
        Ok(pos)
    }
}
