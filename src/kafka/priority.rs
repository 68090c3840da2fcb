//! The acknowledgement path first. A process that runs the ingest role beside consumer stages
//! shares two cores, the broker and PostgreSQL between them: a webhook acknowledgement waits
//! on the broker, which is also serving the stages' fetches, and on cores busy with their
//! batches. Background work can wait; an Alertmanager retry cannot.
//!
//! The webhook reports how long each acknowledgement took ([`Foreground::observe`]). Every
//! `WINDOW` the slowest one of the window is compared with the target: above it, the pause
//! every consumer stage of the process takes after each batch doubles (at least `STEP`, at
//! most `MAX_PAUSE`); under it, or with no webhook traffic at all, the pause shrinks by a
//! quarter down to none. Stages therefore run flat out when the webhook is quiet or fast,
//! and hand the cores to it while it is slow; they catch up when the storm passes. Nothing
//! is skipped: a paused stage only reads later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_millis(100);
const STEP: Duration = Duration::from_millis(10);
/// Well under any poll interval or session timeout: a pausing member stays in its group.
const MAX_PAUSE: Duration = Duration::from_millis(1000);

/// Shared by the webhook (writes) and the consumer loops (read) of one process.
#[derive(Debug)]
pub struct Foreground {
    target_us: u64,
    epoch: Instant,
    /// Slowest acknowledgement in the current window, µs.
    window_max_us: AtomicU64,
    /// When the current window started, µs since `epoch`.
    window_start_us: AtomicU64,
    /// The pause after each batch, µs.
    pause_us: AtomicU64,
}

impl Foreground {
    /// `target`: the acknowledgement time the stages yield to keep (zero: never yield).
    pub fn new(target: Duration) -> Self {
        metrics::gauge!(crate::metrics::BACKGROUND_PAUSE).set(0.0);
        Foreground {
            target_us: target.as_micros() as u64,
            epoch: Instant::now(),
            window_max_us: AtomicU64::new(0),
            window_start_us: AtomicU64::new(0),
            pause_us: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// One acknowledgement took `took`.
    pub fn observe(&self, took: Duration) {
        if self.target_us == 0 {
            return;
        }
        self.window_max_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        self.adjust(self.now_us());
    }

    /// How long a stage waits after a batch, now.
    pub fn pause(&self) -> Duration {
        if self.target_us == 0 {
            return Duration::ZERO;
        }
        self.adjust(self.now_us());
        Duration::from_micros(self.pause_us.load(Ordering::Relaxed))
    }

    /// Closes the window when it is over (whoever looks first does it).
    fn adjust(&self, now_us: u64) {
        let start = self.window_start_us.load(Ordering::Relaxed);
        if now_us < start + WINDOW.as_micros() as u64 {
            return;
        }
        if self
            .window_start_us
            .compare_exchange(start, now_us, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let slowest = self.window_max_us.swap(0, Ordering::AcqRel);
        let pause = self.pause_us.load(Ordering::Relaxed);
        // Windows nobody looked at had no acknowledgements: each shrinks the pause too.
        let quiet = ((now_us - start) / WINDOW.as_micros() as u64).saturating_sub(1);
        let mut next = if slowest > self.target_us {
            (pause * 2).clamp(STEP.as_micros() as u64, MAX_PAUSE.as_micros() as u64)
        } else {
            pause * 3 / 4
        };
        for _ in 0..quiet.min(64) {
            next = next * 3 / 4;
        }
        if next < 1000 {
            next = 0;
        }
        self.pause_us.store(next, Ordering::Relaxed);
        if next != pause {
            metrics::gauge!(crate::metrics::BACKGROUND_PAUSE).set(next as f64 / 1e6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_windows(f: &Foreground, n: u64) {
        // Pretend `n` windows passed, each closed by a look.
        for _ in 0..n {
            let start = f.window_start_us.load(Ordering::Relaxed);
            f.adjust(start + WINDOW.as_micros() as u64);
        }
    }

    #[test]
    fn slow_acknowledgements_make_stages_pause_longer_up_to_the_cap() {
        let f = Foreground::new(Duration::from_millis(25));
        assert_eq!(f.pause(), Duration::ZERO);
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            f.window_max_us.fetch_max(80_000, Ordering::Relaxed);
            after_windows(&f, 1);
            let p = Duration::from_micros(f.pause_us.load(Ordering::Relaxed));
            assert!(p >= last && p <= MAX_PAUSE, "{p:?} after {last:?}");
            last = p;
        }
        assert_eq!(last, MAX_PAUSE);
    }

    #[test]
    fn fast_or_no_acknowledgements_let_stages_run_flat_out_again() {
        let f = Foreground::new(Duration::from_millis(25));
        f.pause_us
            .store(MAX_PAUSE.as_micros() as u64, Ordering::Relaxed);
        f.window_max_us.fetch_max(3_000, Ordering::Relaxed);
        after_windows(&f, 1);
        let p = f.pause_us.load(Ordering::Relaxed);
        assert!(p < MAX_PAUSE.as_micros() as u64 && p > 0, "{p}");
        // No webhook traffic at all: the pause goes away, also when nobody looked meanwhile.
        let start = f.window_start_us.load(Ordering::Relaxed);
        f.adjust(start + 40 * WINDOW.as_micros() as u64);
        assert_eq!(f.pause_us.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_zero_target_never_pauses() {
        let f = Foreground::new(Duration::ZERO);
        f.observe(Duration::from_secs(3));
        after_windows(&f, 3);
        assert_eq!(f.pause(), Duration::ZERO);
    }
}
