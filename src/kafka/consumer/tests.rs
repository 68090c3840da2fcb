//! The loop's rules with a scripted broker, sink and dead-letter list: no Kafka.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{Limits, StageHealth};
use super::offsets::{Offsets, TopicPartition};
use super::poison::{DeadLetters, Poison};
use super::run::Loop;
use super::settings::ConsumerSettings;
use super::sink::{Commit, Decoded, Retryable, Sink, Undecodable};
use super::source::{Polled, RawMessage, Source};

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

fn at(list: &[(i32, i64)]) -> Offsets {
    list.iter().map(|(p, o)| (tp(*p), *o)).collect()
}

/// A broker: one log per partition, read round-robin over the held partitions.
#[derive(Default)]
struct BrokerState {
    logs: BTreeMap<TopicPartition, Vec<String>>,
    position: BTreeMap<TopicPartition, i64>,
    at_end_sent: BTreeSet<TopicPartition>,
    paused: bool,
    pauses: usize,
    /// Messages returned so far.
    reads: usize,
    /// Revoke these partitions in the read after this many messages were returned (as
    /// librdkafka runs rebalance callbacks inside a read).
    revoke_after: Option<(usize, Vec<TopicPartition>)>,
    committed: Offsets,
    seeks: Vec<(TopicPartition, i64)>,
    closed: bool,
    turn: usize,
}

#[derive(Clone)]
struct Broker {
    state: Rc<RefCell<BrokerState>>,
    health: StageHealth,
}

impl Broker {
    fn new(health: &StageHealth, logs: &[(i32, &[&str])]) -> Self {
        let mut state = BrokerState::default();
        for (p, msgs) in logs {
            state
                .logs
                .insert(tp(*p), msgs.iter().map(|m| (*m).to_owned()).collect());
            state.position.insert(tp(*p), 0);
        }
        health.assign(logs.iter().map(|(p, _)| tp(*p)).collect());
        Broker {
            state: Rc::new(RefCell::new(state)),
            health: health.clone(),
        }
    }

    fn next(&self) -> Option<Polled> {
        let mut s = self.state.borrow_mut();
        if let Some((after, lost)) = s.revoke_after.clone() {
            if s.reads >= after {
                s.revoke_after = None;
                self.health.revoke(lost);
            }
        }
        if s.paused {
            return None;
        }
        let held: Vec<TopicPartition> = self.health.assigned().into_iter().collect();
        for i in 0..held.len() {
            let tp = held[(s.turn + i) % held.len()].clone();
            let pos = s.position[&tp];
            let msg = s.logs[&tp].get(pos as usize).cloned();
            match msg {
                Some(payload) => {
                    s.turn = s.turn.wrapping_add(i + 1);
                    s.position.insert(tp.clone(), pos + 1);
                    s.at_end_sent.remove(&tp);
                    s.reads += 1;
                    return Some(Polled::Message(RawMessage {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: pos,
                        key: None,
                        payload: payload.into_bytes(),
                    }));
                }
                None if s.at_end_sent.insert(tp.clone()) => return Some(Polled::End(tp)),
                None => {}
            }
        }
        None
    }
}

impl Source for Broker {
    async fn poll(&self) -> Polled {
        loop {
            if let Some(p) = self.next() {
                return p;
            }
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn pause(&self, on: bool) -> bool {
        let mut s = self.state.borrow_mut();
        s.paused = on;
        s.pauses += usize::from(on);
        true
    }

    async fn commit(&self, next: Offsets, _sync: bool) -> bool {
        self.state.borrow_mut().committed.extend(next);
        true
    }

    async fn seek(&self, tp: TopicPartition, offset: i64) {
        let mut s = self.state.borrow_mut();
        s.seeks.push((tp.clone(), offset));
        s.position.insert(tp, offset);
    }

    async fn close(self) {
        self.state.borrow_mut().closed = true;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{what}")]
struct FakeError {
    what: &'static str,
    transient: bool,
}

impl Retryable for FakeError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

#[derive(Default)]
struct SinkState {
    /// Every write: the (partition, offset, item) it was given.
    writes: Vec<Vec<(i32, i64, String)>>,
    /// Answers for the next writes, in order (then Ok(Commit::Batch)).
    answers: Vec<Result<Commit, FakeError>>,
    /// How long a write takes.
    slow: Duration,
    forgotten: Vec<TopicPartition>,
}

#[derive(Clone, Default)]
struct FakeSink(Rc<RefCell<SinkState>>);

impl Sink for FakeSink {
    type Item = String;
    type Error = FakeError;
    const STAGE: &'static str = "fake";

    fn decode(&self, msg: &RawMessage) -> Result<String, Undecodable> {
        match std::str::from_utf8(&msg.payload) {
            Ok(s) if !s.starts_with("poison") => Ok(s.to_owned()),
            _ => Err(Undecodable("not a fake item".into())),
        }
    }

    fn write(
        &self,
        batch: Arc<Vec<Decoded<String>>>,
    ) -> impl std::future::Future<Output = Result<Commit, FakeError>> + 'static {
        let state = self.0.clone();
        async move {
            let slow = state.borrow().slow;
            actix_web::rt::time::sleep(slow).await;
            let mut s = state.borrow_mut();
            s.writes.push(
                batch
                    .iter()
                    .map(|d| (d.partition, d.offset, d.item.clone()))
                    .collect(),
            );
            if s.answers.is_empty() {
                Ok(Commit::Batch)
            } else {
                s.answers.remove(0)
            }
        }
    }

    fn forget(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        self.0.borrow_mut().forgotten.extend(partitions);
        std::future::ready(())
    }
}

#[derive(Clone, Default)]
struct Kept {
    items: Rc<RefCell<Vec<Poison>>>,
    /// Fail this many keeps first.
    failures: Rc<RefCell<usize>>,
}

impl DeadLetters for Kept {
    async fn keep(&self, _stage: &'static str, items: Vec<Poison>) -> Result<(), String> {
        if items.is_empty() {
            return Ok(());
        }
        let mut f = self.failures.borrow_mut();
        if *f > 0 {
            *f -= 1;
            return Err("dead-letter topic unavailable".into());
        }
        self.items.borrow_mut().extend(items);
        Ok(())
    }
}

struct Harness {
    broker: Broker,
    sink: FakeSink,
    kept: Kept,
    health: StageHealth,
}

fn settings(batch_size: usize) -> ConsumerSettings {
    ConsumerSettings {
        connection: Default::default(),
        group: "loop-test".into(),
        topic: "t".into(),
        batch_size,
        linger: Duration::from_millis(20),
        tick: None,
        instance_id: None,
        session_timeout_ms: 0,
        heartbeat_interval_ms: 0,
        max_poll_interval_ms: 0,
        fetch_wait_max_ms: 0,
        commit_interval: Duration::ZERO,
        limits: Limits::default(),
        extra: BTreeMap::new(),
        foreground: None,
        look: Duration::from_millis(20),
        rejoin_after: Duration::from_secs(3600),
    }
}

fn harness(logs: &[(i32, &[&str])]) -> Harness {
    let health = StageHealth::new("fake", Limits::default());
    Harness {
        broker: Broker::new(&health, logs),
        sink: FakeSink::default(),
        kept: Kept::default(),
        health,
    }
}

impl Harness {
    /// Runs the loop until `done` holds (at most 5 s), then stops it and waits for it to leave.
    async fn run_until(&self, batch_size: usize, done: impl Fn(&Harness) -> bool) {
        let run = Loop::new(
            settings(batch_size),
            self.broker.clone(),
            self.sink.clone(),
            self.kept.clone(),
            self.health.clone(),
        )
        .run();
        let task = actix_web::rt::spawn(run);
        let until = Instant::now() + Duration::from_secs(5);
        while !done(self) {
            assert!(Instant::now() < until, "the loop did not get there in 5 s");
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        self.health.request_stop();
        task.await.expect("the loop ends when asked to stop");
        assert!(self.broker.state.borrow().closed, "it left its group");
    }

    fn committed(&self) -> Offsets {
        self.broker.state.borrow().committed.clone()
    }

    /// Every (partition, offset) the sink was given, over all writes.
    fn written(&self) -> BTreeSet<(i32, i64)> {
        let s = self.sink.0.borrow();
        s.writes
            .iter()
            .flatten()
            .map(|(p, o, _)| (*p, *o))
            .collect()
    }
}

#[actix_web::test]
async fn a_poison_message_is_dead_lettered_whole_and_the_rest_is_written_and_committed() {
    let h = harness(&[(0, &["a", "poison!", "c", "d"])]);
    h.run_until(10, |h| h.committed() == at(&[(0, 4)])).await;
    assert_eq!(h.written(), BTreeSet::from([(0, 0), (0, 2), (0, 3)]));
    let kept = h.kept.items.borrow();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].offset, kept[0].payload.as_slice()),
        (1, &b"poison!"[..])
    );
    assert_eq!(kept[0].reason, "not a fake item");
}

#[actix_web::test]
async fn a_transient_failure_pauses_and_retries_the_same_batch_and_commits_only_after() {
    let h = harness(&[(0, &["a", "b", "c"])]);
    {
        let mut s = h.sink.0.borrow_mut();
        for _ in 0..2 {
            s.answers.push(Err(FakeError {
                what: "database down",
                transient: true,
            }));
        }
    }
    let saw_failing = Rc::new(RefCell::new(false));
    let seen = saw_failing.clone();
    h.run_until(10, move |h| {
        if h.health.error().as_deref() == Some("database down") {
            assert!(h.committed().is_empty(), "nothing committed while failing");
            *seen.borrow_mut() = true;
        }
        h.committed() == at(&[(0, 3)])
    })
    .await;
    let s = h.sink.0.borrow();
    assert_eq!(
        s.writes.len(),
        3,
        "two failures, then the same batch once more"
    );
    assert!(
        s.writes.iter().all(|w| w == &s.writes[0]),
        "always the same batch"
    );
    assert_eq!(s.writes[0].len(), 3);
    assert!(*saw_failing.borrow(), "readiness named the failure");
    assert!(h.health.error().is_none(), "recovered");
    let b = h.broker.state.borrow();
    assert_eq!(b.pauses, 1, "paused once for the whole outage");
    assert!(!b.paused, "resumed");
    assert!(h.kept.items.borrow().is_empty());
}

#[actix_web::test]
async fn a_batch_refused_for_good_is_dead_lettered_whole_and_committed() {
    let h = harness(&[(0, &["a", "b"])]);
    h.sink.0.borrow_mut().answers.push(Err(FakeError {
        what: "constraint violated",
        transient: false,
    }));
    h.run_until(10, |h| h.committed() == at(&[(0, 2)])).await;
    assert_eq!(h.sink.0.borrow().writes.len(), 1, "not retried");
    let kept = h.kept.items.borrow();
    let offsets: Vec<i64> = kept.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![0, 1]);
    assert!(kept.iter().all(|p| p.reason == "fake: constraint violated"));
}

#[actix_web::test]
async fn dead_letters_that_cannot_be_kept_hold_the_commit_back() {
    let h = harness(&[(0, &["poison", "b"])]);
    *h.kept.failures.borrow_mut() = 2;
    h.run_until(10, |h| h.committed() == at(&[(0, 2)])).await;
    assert_eq!(h.kept.items.borrow().len(), 1, "kept once it could be");
    assert_eq!(
        h.sink.0.borrow().writes.len(),
        3,
        "the write is retried with them"
    );
}

#[actix_web::test]
async fn a_rewind_reads_the_partition_again_from_where_the_sink_says() {
    let h = harness(&[(0, &["a", "b", "c", "d"])]);
    h.sink.0.borrow_mut().answers.push(Ok(Commit::Rewind {
        commit: at(&[(0, 1)]),
        from: at(&[(0, 1)]),
        reason: "storage failed mid-file".into(),
    }));
    h.run_until(4, |h| h.committed() == at(&[(0, 4)])).await;
    assert_eq!(h.broker.state.borrow().seeks, vec![(tp(0), 1)]);
    let s = h.sink.0.borrow();
    let second: Vec<i64> = s.writes[1].iter().map(|w| w.1).collect();
    assert_eq!(second, vec![1, 2, 3], "read again from offset 1");
}

#[actix_web::test]
async fn a_partition_revoked_mid_batch_leaves_every_buffer_and_is_never_committed() {
    let six: &[&str] = &["0", "1", "2", "3", "4", "5"];
    let h = harness(&[(0, six), (1, six)]);
    h.sink.0.borrow_mut().slow = Duration::from_millis(40);
    // Reads alternate partitions: the first batch is p0 0-1 and p1 0-1; during its write the
    // loop reads p0 2 and p1 2, then the group takes p1 away.
    h.broker.state.borrow_mut().revoke_after = Some((6, vec![tp(1)]));
    h.run_until(4, |h| h.committed().get(&tp(0)) == Some(6))
        .await;
    assert_eq!(
        h.sink.0.borrow().forgotten,
        vec![tp(1)],
        "the sink forgot p1"
    );
    let p1: Vec<(i32, i64)> = h.written().into_iter().filter(|(p, _)| *p == 1).collect();
    assert_eq!(
        p1,
        vec![(1, 0), (1, 1)],
        "nothing of p1 read before the revocation is written after it"
    );
    assert_eq!(
        h.committed(),
        at(&[(0, 6)]),
        "p1 is its new owner's to commit"
    );
    let p0: Vec<i64> = h
        .written()
        .into_iter()
        .filter(|(p, _)| *p == 0)
        .map(|w| w.1)
        .collect();
    assert_eq!(
        p0,
        (0..6).collect::<Vec<_>>(),
        "p0 goes on, every message once"
    );
}

#[actix_web::test]
async fn a_stage_its_group_leaves_without_partitions_joins_again_and_keeps_its_sink() {
    let h = harness(&[(0, &["a"])]);
    // The group took everything and has said nothing since (a broker restarted mid-join).
    h.health.revoke(vec![tp(0)]);
    let mut s = settings(10);
    s.rejoin_after = Duration::from_millis(50);
    let run = Loop::new(
        s,
        h.broker.clone(),
        h.sink.clone(),
        h.kept.clone(),
        h.health.clone(),
    )
    .run();
    let back = actix_web::rt::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the loop gave up on its group within 5 s");
    assert!(back.is_some(), "it hands back the sink to join again with");
    assert!(
        h.broker.state.borrow().closed,
        "the old consumer is closed first"
    );
    assert!(
        h.health
            .waiting_for_group()
            .is_some_and(|w| w < Duration::from_secs(1)),
        "the new join waits for its assignment anew"
    );
}

#[actix_web::test]
async fn a_member_idle_by_design_does_not_join_again() {
    // More members than partitions: the group answered with an empty assignment.
    let h = harness(&[]);
    assert_eq!(h.health.waiting_for_group(), None);
    let mut s = settings(10);
    s.rejoin_after = Duration::from_millis(20);
    let run = Loop::new(
        s,
        h.broker.clone(),
        h.sink.clone(),
        h.kept.clone(),
        h.health.clone(),
    )
    .run();
    let task = actix_web::rt::spawn(run);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    h.health.request_stop();
    let out = task.await.expect("the loop ends when asked to stop");
    assert!(out.is_none(), "it stayed in its group until asked to stop");
}
