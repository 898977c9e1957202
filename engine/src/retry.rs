//! When to try again: exponential backoff with a ceiling, and when to give up.

use std::time::Duration;

/// The retry schedule (defaults like Postfix: 5 min doubling to 4 h, give
/// up after 5 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Age at which a message still failing temporarily is bounced.
    pub give_up: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(300),
            max: Duration::from_secs(4 * 3600),
            give_up: Duration::from_secs(5 * 86_400),
        }
    }
}

impl RetryPolicy {
    /// The wait after attempt number `attempt` (1 = the first) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    /// Whether a message received at `received_at` should be given up at
    /// `now` (both microseconds since the epoch).
    pub fn expired(&self, received_at: u64, now: u64) -> bool {
        now.saturating_sub(received_at) >= self.give_up.as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling() {
        let p = RetryPolicy::default();
        let mins: Vec<u64> = (1..=8).map(|a| p.delay(a).as_secs() / 60).collect();
        assert_eq!(mins, vec![5, 10, 20, 40, 80, 160, 240, 240]);
        assert_eq!(p.delay(1000), p.max);
    }

    #[test]
    fn expiry() {
        let p = RetryPolicy {
            give_up: Duration::from_secs(10),
            ..Default::default()
        };
        assert!(!p.expired(0, 9_999_999));
        assert!(p.expired(0, 10_000_000));
    }
}
