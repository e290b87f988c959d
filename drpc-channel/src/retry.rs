//! Connection backoff (gRPC's connection-backoff algorithm), the retry
//! policy, and retry throttling (gRPC's token bucket).

use drpc_core::Code;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long to wait between connection attempts to one endpoint:
/// `initial * multiplier^(n-1)`, capped at `max`, spread by ±`jitter`.
/// The defaults are gRPC's (connection-backoff.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectBackoff {
    pub initial: Duration,
    pub multiplier: f64,
    /// Fraction of the delay added or taken at random (0.2 = ±20 %).
    pub jitter: f64,
    pub max: Duration,
    /// How long one connection attempt may take.
    pub min_connect_timeout: Duration,
}

impl Default for ConnectBackoff {
    fn default() -> Self {
        ConnectBackoff {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
            min_connect_timeout: Duration::from_secs(20),
        }
    }
}

impl ConnectBackoff {
    /// The delay after the `failures`-th consecutive failure (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let base = (self.initial.as_secs_f64() * self.multiplier.powi(exp)).min(self.max.as_secs_f64());
        let spread = base * self.jitter.clamp(0.0, 1.0) * (fastrand::f64() * 2.0 - 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }
}

/// Which calls are tried again, how often and how far apart. Only calls
/// whose request the channel still holds and which have had no response
/// are retried: unary calls, and server-streaming calls before their first
/// message. Every attempt runs within the call's one deadline.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// The wait before retry n is random in `[0, min(initial * multiplier^(n-1), max)]`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// Status codes that make a call retryable.
    pub retryable_codes: Vec<Code>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            retryable_codes: vec![Code::Unavailable],
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> RetryPolicy {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    pub fn retries(&self, code: Code) -> bool {
        self.retryable_codes.contains(&code)
    }

    /// The wait before retry number `retry` (1-based), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(64) as i32;
        let cap = (self.initial_backoff.as_secs_f64() * self.multiplier.powi(exp)).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(cap.max(0.0) * fastrand::f64())
    }
}

/// Retry throttling, gRPC's token bucket: each retryable failure takes one
/// token, each success gives back `token_ratio`; retries are allowed only
/// while more than half of `max_tokens` remain. It keeps a failing fleet from
/// tripling its load with retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    pub max_tokens: f64,
    pub token_ratio: f64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget { max_tokens: 10.0, token_ratio: 0.1 }
    }
}

pub(crate) struct Throttle {
    budget: Option<RetryBudget>,
    tokens: Mutex<f64>,
    /// The bucket is full: successes need not touch the lock (the hot path).
    full: AtomicBool,
}

impl Throttle {
    pub(crate) fn new(budget: Option<RetryBudget>) -> Throttle {
        let tokens = budget.as_ref().map_or(0.0, |b| b.max_tokens);
        Throttle { budget, tokens: Mutex::new(tokens), full: AtomicBool::new(true) }
    }

    pub(crate) fn success(&self) {
        if let Some(b) = &self.budget {
            if self.full.load(Ordering::Relaxed) {
                return;
            }
            let mut t = self.tokens.lock().unwrap();
            *t = (*t + b.token_ratio).min(b.max_tokens);
            if *t >= b.max_tokens {
                self.full.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Records a retryable failure; returns whether a retry is allowed.
    pub(crate) fn failure_allows_retry(&self) -> bool {
        match &self.budget {
            None => true,
            Some(b) => {
                let mut t = self.tokens.lock().unwrap();
                *t = (*t - 1.0).max(0.0);
                self.full.store(false, Ordering::Relaxed);
                *t > b.max_tokens / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_backoff_grows_to_its_cap_with_jitter() {
        let b = ConnectBackoff::default();
        for _ in 0..200 {
            let first = b.delay(1).as_secs_f64();
            assert!((0.8..=1.2).contains(&first), "{first}");
            let third = b.delay(3).as_secs_f64();
            assert!((2.56 * 0.8..=2.56 * 1.2).contains(&third), "{third}");
            let late = b.delay(40).as_secs_f64();
            assert!((96.0..=144.0).contains(&late), "{late}");
        }
    }

    #[test]
    fn retry_backoff_is_full_jitter_under_the_cap() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(50));
            assert!(p.backoff(2) <= Duration::from_millis(100));
            assert!(p.backoff(30) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn throttle_stops_retries_below_half_and_recovers() {
        let t = Throttle::new(Some(RetryBudget { max_tokens: 10.0, token_ratio: 0.5 }));
        // 10 -> 9,8,7,6 allowed; 5 is not above half.
        assert!((0..4).all(|_| t.failure_allows_retry()));
        assert!(!t.failure_allows_retry());
        // Two successes: 5 -> 6; the next failure takes it to 5 again: refused.
        t.success();
        t.success();
        assert!(!t.failure_allows_retry());
        for _ in 0..4 {
            t.success();
        }
        assert!(t.failure_allows_retry());
        assert!(Throttle::new(None).failure_allows_retry());
    }
}
