//! Bounded retries with exponential backoff and full jitter, shared by mail and Teams.

use std::future::Future;
use std::time::Duration;

pub use crate::config::RetryPolicy;

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying (4xx SMTP reply, timeout, refused connection, 429/5xx from Teams);
    /// `after` when the peer said how long to wait (Retry-After).
    Transient {
        reason: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help (5xx SMTP reply, other 4xx from Teams).
    Permanent(String),
}

/// The final outcome after retries: attempts made and the last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaveUp {
    pub attempts: u32,
    pub reason: String,
    pub permanent: bool,
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` (n >= 1): random in [0, min(max, base * 2^(n-1))].
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.max);
        cap.mul_f64(fastrand::f64())
    }

    pub async fn run<F, Fut>(&self, mut attempt: F) -> Result<u32, GaveUp>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<(), Failure>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match attempt(n).await {
                Ok(()) => return Ok(n),
                Err(Failure::Permanent(reason)) => {
                    return Err(GaveUp {
                        attempts: n,
                        reason,
                        permanent: true,
                    })
                }
                Err(Failure::Transient { reason, after }) => {
                    if n >= self.max_attempts {
                        return Err(GaveUp {
                            attempts: n,
                            reason,
                            permanent: false,
                        });
                    }
                    // A peer's Retry-After wins over our backoff (within reason).
                    let wait =
                        after.map_or_else(|| self.backoff(n), |a| a.min(Duration::from_secs(300)));
                    tracing::debug!(attempt = n, %reason, ?wait, "send failed; retrying");
                    actix_web::rt::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        }
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for n in 1..40 {
            assert!(p.backoff(n) <= Duration::from_secs(2));
        }
        assert!(p.backoff(1) <= Duration::from_millis(100));
    }

    #[actix_web::test]
    async fn transient_failures_are_retried_then_given_up() {
        let r = policy()
            .run(|n| async move {
                if n < 3 {
                    Err(Failure::Transient {
                        reason: "451".into(),
                        after: None,
                    })
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(r, Ok(3));
        let r = policy()
            .run(|_| async {
                Err(Failure::Transient {
                    reason: "451".into(),
                    after: None,
                })
            })
            .await;
        assert_eq!(r.unwrap_err().attempts, 4);
    }

    #[actix_web::test]
    async fn permanent_failures_stop_at_once() {
        let r = policy()
            .run(|_| async { Err(Failure::Permanent("550".into())) })
            .await;
        assert_eq!(
            r,
            Err(GaveUp {
                attempts: 1,
                reason: "550".into(),
                permanent: true
            })
        );
    }
}
