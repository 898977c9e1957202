//! Queue identifiers.

use std::fmt;
use std::str::FromStr;

/// A message's queue id: the microsecond it was received and the worker that
/// received it.
///
/// Ids are unique without coordination: each worker hands out strictly
/// increasing microsecond stamps (`max(now, last + 1)`), and the worker number
/// separates workers. After a restart a worker continues above the highest id
/// it recovered, so a slow clock cannot reuse an id. Displayed as 20
/// upper-case hex digits, which sort by receive time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    /// Microseconds since the Unix epoch (possibly nudged forward for uniqueness).
    pub micros: u64,
    /// The worker (core) that accepted the message.
    pub worker: u16,
}

impl QueueId {
    /// Encoded size in bytes.
    pub const LEN: usize = 10;

    /// Little-endian encoding used in spool records and on the wire.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0; Self::LEN];
        b[..8].copy_from_slice(&self.micros.to_le_bytes());
        b[8..].copy_from_slice(&self.worker.to_le_bytes());
        b
    }

    /// Inverse of [`QueueId::to_bytes`].
    pub fn from_bytes(b: [u8; Self::LEN]) -> Self {
        let mut m = [0; 8];
        m.copy_from_slice(&b[..8]);
        QueueId {
            micros: u64::from_le_bytes(m),
            worker: u16::from_le_bytes([b[8], b[9]]),
        }
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}{:04X}", self.micros, self.worker)
    }
}

/// The text was not 20 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("invalid queue id {0:?}: expected 20 hex digits")]
pub struct ParseQueueIdError(String);

impl FromStr for QueueId {
    type Err = ParseQueueIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseQueueIdError(s.to_string());
        if s.len() != 20 || !s.is_ascii() {
            return Err(err());
        }
        let micros = u64::from_str_radix(&s[..16], 16).map_err(|_| err())?;
        let worker = u16::from_str_radix(&s[16..], 16).map_err(|_| err())?;
        Ok(QueueId { micros, worker })
    }
}

/// Hands out the ids of one worker: strictly increasing, never below the
/// clock, never below an id already used.
#[derive(Debug)]
pub struct IdGenerator {
    worker: u16,
    last: u64,
}

impl IdGenerator {
    /// A generator for `worker` whose next id is above `floor` (the highest
    /// id this worker recovered from its spool, or 0).
    pub fn new(worker: u16, floor: u64) -> Self {
        IdGenerator {
            worker,
            last: floor,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> QueueId {
        let now = crate::now_micros();
        self.last = now.max(self.last + 1);
        QueueId {
            micros: self.last,
            worker: self.worker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = QueueId {
            micros: 0x0001_2345_6789_ABCD,
            worker: 7,
        };
        let s = id.to_string();
        assert_eq!(s, "000123456789ABCD0007");
        assert_eq!(s.parse::<QueueId>().unwrap(), id);
        assert_eq!(QueueId::from_bytes(id.to_bytes()), id);
    }

    #[test]
    fn bad_ids_are_rejected() {
        for bad in [
            "",
            "123",
            "000123456789ABCD000",
            "000123456789ABCD000G",
            "é00123456789ABCD000",
        ] {
            assert!(bad.parse::<QueueId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generator_is_strictly_increasing_and_above_floor() {
        let floor = crate::now_micros() + 1_000_000;
        let mut g = IdGenerator::new(3, floor);
        let a = g.next_id();
        let b = g.next_id();
        assert!(a.micros > floor);
        assert!(b > a);
        assert_eq!(b.worker, 3);
    }
}
