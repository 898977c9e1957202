//! Sharing one interval's measured CPU time out over the messages of that
//! interval (sans-I/O: numbers in, numbers out).
//!
//! The rule, so that what is charged to messages adds up to what the
//! process used:
//!
//! 1. Each message stage (receive, queue, deliver) is charged the CPU time
//!    measured in it.
//! 2. Overhead (the runtime itself, threads of no stage) is shared out over
//!    the stages that handled messages in the interval, in proportion to
//!    their own CPU time (evenly if they used none).
//! 3. A stage's time is divided evenly over the messages it handled in the
//!    interval. Time of an interval in which a stage handled no message
//!    (and overhead of an interval without any message) is carried to the
//!    next interval in which it does, so nothing is lost: charged plus
//!    carried always equals measured.

use std::time::Duration;

use crate::stage::Stage;

/// CPU time measured in one interval, by where it went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    /// Per message stage, in [`Stage::MESSAGE`] order.
    pub stages: [Duration; 3],
    /// Overhead: the runtime and threads of no stage.
    pub overhead: Duration,
}

/// What one interval charges, per message stage ([`Stage::MESSAGE`]
/// order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charged {
    /// Messages the stage handled in the interval.
    pub messages: [u64; 3],
    /// CPU time charged to those messages in all.
    pub total: [Duration; 3],
}

impl Charged {
    /// The CPU time each message of `stage` was charged (zero for a stage
    /// without messages).
    pub fn per_message(&self, stage: usize) -> Duration {
        match self.messages[stage] {
            0 => Duration::ZERO,
            n => self.total[stage] / u32::try_from(n).unwrap_or(u32::MAX),
        }
    }

    /// All CPU time charged in the interval.
    pub fn sum(&self) -> Duration {
        self.total.iter().sum()
    }
}

/// Time measured but not yet charged to any message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carry {
    /// Per message stage.
    pub stages: [Duration; 3],
    /// Overhead of intervals in which no stage handled a message.
    pub overhead: Duration,
}

impl Carry {
    /// All of it.
    pub fn sum(&self) -> Duration {
        self.stages.iter().sum::<Duration>() + self.overhead
    }

    /// Charges one interval: `measured` plus what was carried, over
    /// `messages` (per stage, [`Stage::MESSAGE`] order).
    pub fn charge(&mut self, measured: Measured, messages: [u64; 3]) -> Charged {
        let mut stage_time = [Duration::ZERO; 3];
        for (i, t) in stage_time.iter_mut().enumerate() {
            *t = measured.stages[i] + self.stages[i];
        }
        let overhead = measured.overhead + self.overhead;
        let active: Vec<usize> = (0..3).filter(|&i| messages[i] > 0).collect();
        let mut charged = Charged {
            messages,
            ..Charged::default()
        };
        if active.is_empty() {
            self.stages = stage_time;
            self.overhead = overhead;
            return charged;
        }
        // Overhead in proportion to the active stages' own time, in
        // nanoseconds (u128: no overflow), the rounding remainder to the
        // last active stage so that nothing is lost.
        let weights: Vec<u128> = active.iter().map(|&i| stage_time[i].as_nanos()).collect();
        let weight_sum: u128 = weights.iter().sum();
        let overhead_ns = overhead.as_nanos();
        let mut given = 0u128;
        for (k, &i) in active.iter().enumerate() {
            let share = if k + 1 == active.len() {
                overhead_ns - given
            } else {
                (overhead_ns * weights[k])
                    .checked_div(weight_sum)
                    .unwrap_or(overhead_ns / active.len() as u128)
            };
            given += share;
            charged.total[i] = stage_time[i] + nanos(share);
            stage_time[i] = Duration::ZERO;
        }
        self.stages = stage_time;
        self.overhead = Duration::ZERO;
        charged
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// The index of a message stage in [`Stage::MESSAGE`] order.
pub fn index(stage: Stage) -> Option<usize> {
    Stage::MESSAGE.iter().position(|&s| s == stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn measured(stages: [u64; 3], overhead: u64) -> Measured {
        Measured {
            stages: stages.map(ms),
            overhead: ms(overhead),
        }
    }

    #[test]
    fn table() {
        // (measured stages, overhead, messages, charged totals, carry after)
        type Row = ([u64; 3], u64, [u64; 3], [u64; 3], [u64; 3], u64);
        let rows: &[Row] = &[
            // All stages busy: overhead split 1:2:1 by their own time.
            ([10, 20, 10], 8, [5, 5, 5], [12, 24, 12], [0, 0, 0], 0),
            // Receive only: everything, overhead included, to receive;
            // the idle deliver stage's time waits for its messages.
            ([10, 0, 3], 5, [10, 0, 0], [15, 0, 0], [0, 0, 3], 0),
            // No messages at all: all carried.
            ([4, 0, 0], 6, [0, 0, 0], [0, 0, 0], [4, 0, 0], 6),
            // Active stages that used no time share overhead evenly.
            ([0, 0, 0], 10, [1, 0, 1], [5, 0, 5], [0, 0, 0], 0),
        ];
        for &(stages, overhead, messages, want, carry_stages, carry_overhead) in rows {
            let mut carry = Carry::default();
            let got = carry.charge(measured(stages, overhead), messages);
            assert_eq!(
                got.total,
                want.map(ms),
                "{stages:?} {overhead} {messages:?}"
            );
            assert_eq!(carry.stages, carry_stages.map(ms));
            assert_eq!(carry.overhead, ms(carry_overhead));
        }
    }

    #[test]
    fn carried_time_is_charged_to_the_next_messages() {
        let mut carry = Carry::default();
        carry.charge(measured([4, 0, 0], 6), [0, 0, 0]);
        let got = carry.charge(measured([6, 0, 0], 0), [4, 0, 0]);
        assert_eq!(got.total[0], ms(16));
        assert_eq!(got.per_message(0), ms(4));
        assert_eq!(carry.sum(), Duration::ZERO);
    }

    /// Whatever the intervals, charged + carried == measured, to the
    /// nanosecond.
    #[test]
    fn nothing_is_lost() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = move |below: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % below
        };
        let mut carry = Carry::default();
        let (mut measured_sum, mut charged_sum) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..10_000 {
            let m = Measured {
                stages: [0; 3].map(|_: u64| Duration::from_nanos(next(1_000_000))),
                overhead: Duration::from_nanos(next(300_000)),
            };
            let messages = [0; 3].map(|_: u64| if next(3) == 0 { 0 } else { next(50) });
            measured_sum += m.stages.iter().sum::<Duration>() + m.overhead;
            charged_sum += carry.charge(m, messages).sum();
            assert_eq!(charged_sum + carry.sum(), measured_sum);
        }
    }
}
