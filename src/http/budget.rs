//! An in-flight budget shared by one route's requests: a request takes `n` units (alerts,
//! bytes) until it is answered. Past the limit the route refuses at once (503 / 429) instead
//! of queueing. A single request larger than the whole budget still passes when alone.

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Budget {
    used: AtomicUsize,
    max: usize,
    /// Gauge that follows the units in use, when the route exports one.
    gauge: Option<&'static str>,
}

/// Holds its units until dropped (also when the client goes away mid-request).
pub struct Slot<'a> {
    budget: &'a Budget,
    n: usize,
}

impl Budget {
    pub fn new(max: usize, gauge: Option<&'static str>) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            max,
            gauge,
        }
    }

    pub fn take(&self, n: usize) -> Option<Slot<'_>> {
        let prev = self.used.fetch_add(n, Ordering::AcqRel);
        if prev > 0 && prev + n > self.max {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return None;
        }
        self.report(prev + n);
        Some(Slot { budget: self, n })
    }

    fn report(&self, now: usize) {
        if let Some(g) = self.gauge {
            metrics::gauge!(g).set(now as f64);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let now = self.budget.used.fetch_sub(self.n, Ordering::AcqRel) - self.n;
        self.budget.report(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_under_the_limit_and_releases_on_drop() {
        let b = Budget::new(10, None);
        let a = b.take(6).unwrap();
        assert!(b.take(5).is_none(), "6 + 5 > 10");
        let c = b.take(4).unwrap();
        drop(a);
        drop(c);
        let big = b.take(50).expect("alone, larger than the budget");
        assert!(b.take(1).is_none());
        drop(big);
        assert!(b.take(10).is_some());
    }
}
