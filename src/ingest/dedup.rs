//! DedupActor: drops repeats of the same alert state within a window.
//!
//! Alertmanager in HA mode sends each notification from every replica, and each group flush
//! resends the whole group. A state (see `AlertEvent::dedup_key`) is *admitted* once: it is
//! pending until Kafka acknowledged it (`Settle { delivered: true }` makes it seen), and is
//! forgotten if the produce failed, so the sender's retry is not mistaken for a repeat.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::domain::{AlertEvent, AlertStatus};
use crate::metrics as m;

/// An alert state's identity in the table: a 128-bit hash of what `AlertEvent::dedup_key`
/// names (fingerprint, status, start, and the end of a resolved state), keyed by two random
/// SipHash keys of this process. The table holds no strings; two different states share a
/// key with probability about 2^-128, and no sender can aim for it (the keys are secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey(u128);

impl DedupKey {
    pub fn of(a: &AlertEvent) -> DedupKey {
        static SEEDS: OnceLock<(std::hash::RandomState, std::hash::RandomState)> = OnceLock::new();
        let (s1, s2) = SEEDS.get_or_init(Default::default);
        let feed = |h: &mut std::hash::DefaultHasher| {
            a.fingerprint.as_str().hash(h);
            let resolved = a.status == AlertStatus::Resolved;
            resolved.hash(h);
            a.starts_at
                .timestamp_nanos_opt()
                .unwrap_or(i64::MIN)
                .hash(h);
            if resolved {
                a.ends_at
                    .and_then(|t| t.timestamp_nanos_opt())
                    .unwrap_or(0)
                    .hash(h);
            }
        };
        let (mut h1, mut h2) = (s1.build_hasher(), s2.build_hasher());
        feed(&mut h1);
        feed(&mut h2);
        DedupKey(u128::from(h1.finish()) << 64 | u128::from(h2.finish()))
    }
}

/// The table's hasher: a `DedupKey` is already a uniform hash, so its low half is used as is.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Which of these keys are new? New ones are marked pending. Answer is one bool per key.
#[derive(Message)]
#[rtype(result = "Vec<bool>")]
pub struct Admit {
    pub keys: Vec<DedupKey>,
}

/// The outcome for keys earlier admitted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle {
    pub keys: Vec<DedupKey>,
    pub delivered: bool,
}

pub struct DedupActor {
    window: Duration,
    max_entries: usize,
    mailbox_capacity: usize,
    seen: DedupTable,
}

impl DedupActor {
    pub fn new(window: Duration, max_entries: usize, mailbox_capacity: usize) -> Self {
        DedupActor {
            window,
            max_entries,
            mailbox_capacity,
            seen: DedupTable::default(),
        }
    }
}

impl Actor for DedupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Supervised for DedupActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        // Forgetting states only risks a duplicate message, which every sink absorbs.
        self.seen = DedupTable::default();
    }
}

impl Handler<Admit> for DedupActor {
    type Result = MessageResult<Admit>;

    fn handle(&mut self, msg: Admit, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        self.seen.expire(now, self.window, self.max_entries);
        let fresh: Vec<bool> = msg
            .keys
            .into_iter()
            .map(|k| self.seen.admit(k, now))
            .collect();
        let dups = fresh.iter().filter(|f| !**f).count();
        if dups > 0 {
            metrics::counter!(m::DEDUPLICATED).increment(dups as u64);
        }
        metrics::gauge!(m::DEDUP_ENTRIES).set(self.seen.len() as f64);
        MessageResult(fresh)
    }
}

impl Handler<Settle> for DedupActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Self::Context) {
        let now = Instant::now();
        for k in msg.keys {
            if msg.delivered {
                self.seen.confirm(k, now);
            } else {
                self.seen.forget(k);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Seen,
}

/// Keys with insertion order for expiry. Plain data, tested without actors.
#[derive(Default)]
struct DedupTable {
    entries: HashMap<DedupKey, (State, Instant), BuildHasherDefault<Prehashed>>,
    order: VecDeque<(Instant, DedupKey)>,
}

impl DedupTable {
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the key was unknown (now pending).
    fn admit(&mut self, key: DedupKey, now: Instant) -> bool {
        if self.entries.contains_key(&key) {
            return false;
        }
        self.entries.insert(key, (State::Pending, now));
        self.order.push_back((now, key));
        true
    }

    fn confirm(&mut self, key: DedupKey, now: Instant) {
        if let Some(e) = self.entries.get_mut(&key) {
            *e = (State::Seen, now);
        }
        // The window runs from delivery; the order queue keeps the admit time, which only
        // makes expiry checks look at it earlier (it re-checks the stored time).
    }

    fn forget(&mut self, key: DedupKey) {
        self.entries.remove(&key);
    }

    fn expire(&mut self, now: Instant, window: Duration, max_entries: usize) {
        while let Some((t, key)) = self.order.front() {
            let over_capacity = self.entries.len() > max_entries;
            if !over_capacity && now.duration_since(*t) < window {
                break;
            }
            let key = *key;
            self.order.pop_front();
            match self.entries.get(&key) {
                // Confirmed later than admitted and still inside the window: requeue.
                Some((State::Seen, at)) if !over_capacity && now.duration_since(*at) < window => {
                    let at = *at;
                    self.order.push_back((at, key));
                }
                // Pending entries are never expired by age (a produce is in flight).
                Some((State::Pending, _)) if !over_capacity => {
                    self.order.push_back((now, key));
                    break;
                }
                _ => {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u128) -> DedupKey {
        DedupKey(n)
    }

    #[test]
    fn repeats_are_refused_until_the_window_passes() {
        let mut t = DedupTable::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        assert!(t.admit(k(1), t0));
        t.confirm(k(1), t0);
        assert!(!t.admit(k(1), t0));
        t.expire(t0 + Duration::from_secs(30), w, 100);
        assert!(!t.admit(k(1), t0 + Duration::from_secs(30)));
        t.expire(t0 + Duration::from_secs(61), w, 100);
        assert!(t.admit(k(1), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn a_failed_delivery_is_forgotten() {
        let mut t = DedupTable::default();
        let t0 = Instant::now();
        assert!(t.admit(k(1), t0));
        assert!(!t.admit(k(1), t0), "pending counts as seen");
        t.forget(k(1));
        assert!(t.admit(k(1), t0), "retry after failure is admitted");
    }

    #[test]
    fn capacity_bounds_memory() {
        let mut t = DedupTable::default();
        let t0 = Instant::now();
        for i in 0..1000 {
            t.admit(k(i), t0);
            t.confirm(k(i), t0);
        }
        t.expire(t0, Duration::from_secs(60), 100);
        assert_eq!(t.len(), 100);
        assert!(!t.admit(k(999), t0), "newest kept");
    }
}
