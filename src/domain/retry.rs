//! Retry policy: how long to wait before each retry of a failing external call.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Waits before retry 1, 2, 3, ...; past the end of the list each wait doubles.
    pub backoff: Vec<Duration>,
    /// No wait is longer than this.
    pub cap: Duration,
    /// Retries after the first attempt; 3 means at most 4 attempts.
    pub max_retries: u32,
    /// Each wait is spread by ± this fraction so that many workers do not retry in step.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: [5, 10, 20, 40].map(Duration::from_secs).to_vec(),
            cap: Duration::from_secs(300),
            max_retries: 3,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let idx = retry.saturating_sub(1) as usize;
        let base = match self.backoff.get(idx) {
            Some(d) => *d,
            None => {
                let last = self
                    .backoff
                    .last()
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                let extra = (idx + 1).saturating_sub(self.backoff.len()).min(32) as u32;
                last.saturating_mul(2u32.saturating_pow(extra))
            }
        };
        base.min(self.cap)
    }

    /// The wait before retry `retry`, spread by `unit` ∈ [0, 1): 0.5 gives the base delay.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let base = self.base_delay(retry);
        let spread = self.jitter.clamp(0.0, 1.0) * (unit.clamp(0.0, 1.0) * 2.0 - 1.0);
        base.mul_f64((1.0 + spread).max(0.0)).min(self.cap)
    }

    /// Whether a call that has already failed `failures` times may be tried again.
    pub fn may_retry(&self, failures: u32) -> bool {
        failures <= self.max_retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_the_seeds() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=6).map(|r| p.base_delay(r).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160]);
        assert_eq!(p.base_delay(7).as_secs(), 300, "capped at 5 minutes");
        assert_eq!(p.base_delay(40).as_secs(), 300);
    }

    #[test]
    fn jitter_stays_within_its_band_and_under_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(5));
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(4));
        assert!(p.delay(1, 0.999) <= Duration::from_secs(6));
        assert_eq!(p.delay(20, 0.999), Duration::from_secs(300));
    }

    #[test]
    fn three_retries_means_four_attempts() {
        let p = RetryPolicy::default();
        assert!(p.may_retry(1) && p.may_retry(3));
        assert!(!p.may_retry(4));
    }
}
