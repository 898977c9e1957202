//! Per-destination limits: how hard Verdant may push one destination.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The limits of one destination on one worker (the server-wide figures
/// of the configuration divided among the workers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DestLimits {
    /// Concurrent connections.
    pub max_connections: usize,
    /// Messages per connection before it is closed.
    pub max_messages_per_connection: usize,
    /// Messages per second; `None`: as fast as the destination answers.
    pub rate: Option<f64>,
}

/// The default limits and those set per domain.
#[derive(Clone, Debug)]
pub struct Limits {
    /// For any destination without its own.
    pub default: DestLimits,
    /// Per domain (lower-case).
    pub per_domain: HashMap<String, DestLimits>,
}

impl Limits {
    /// The limits for mail to `domain`.
    pub fn for_domain(&self, domain: &str) -> DestLimits {
        self.per_domain.get(domain).copied().unwrap_or(self.default)
    }
}

/// Spaces messages to a destination at most `rate` per second: each
/// message reserves the next free slot. No burst allowance: a destination
/// that asked for 10 per second gets one every 100 ms.
#[derive(Debug)]
pub struct Pacer {
    next: Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            next: Instant::now(),
        }
    }
}

impl Pacer {
    /// Reserves the next slot at `rate` per second; returns how long to
    /// wait for it.
    pub fn reserve(&mut self, rate: f64, now: Instant) -> Duration {
        let slot = self.next.max(now);
        self.next = slot + Duration::from_secs_f64(1.0 / rate.max(1e-6));
        slot - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_messages() {
        let t0 = Instant::now();
        let mut p = Pacer { next: t0 };
        let waits: Vec<u128> = (0..4).map(|_| p.reserve(10.0, t0).as_millis()).collect();
        assert_eq!(waits, vec![0, 100, 200, 300]);
        // After a quiet second there is no backlog (and no burst credit).
        let later = t0 + Duration::from_secs(2);
        assert_eq!(p.reserve(10.0, later), Duration::ZERO);
        assert_eq!(p.reserve(10.0, later).as_millis(), 100);
    }

    #[test]
    fn per_domain_limits() {
        let d = DestLimits {
            max_connections: 5,
            max_messages_per_connection: 100,
            rate: None,
        };
        let slow = DestLimits {
            rate: Some(1.0),
            ..d
        };
        let l = Limits {
            default: d,
            per_domain: HashMap::from([("slow.example".to_string(), slow)]),
        };
        assert_eq!(l.for_domain("slow.example"), slow);
        assert_eq!(l.for_domain("other.example"), d);
    }
}
