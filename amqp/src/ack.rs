//! Which acknowledgements to send, as outcomes become durable out of order.
//!
//! The engine settles deliveries in any order (a slow destination holds its
//! message while later ones finish). The broker wants few acks: one
//! `basic.ack` with `multiple = true` covers every delivery up to its tag.
//! [`AckTracker`] sends one for the contiguous settled prefix, and, so that
//! one slow message cannot hold a whole prefetch window unacknowledged, acks
//! the settled tags beyond it one by one once they are many.
//!
//! The rule the broker enforces: the tag of an ack must be delivered and
//! not yet acknowledged, or it closes the channel (`PRECONDITION_FAILED -
//! unknown delivery tag`). Every ack this tracker produces names a tag that
//! was delivered, settled and never named before; a multiple ack may cover
//! tags acked singly before, which the broker allows.

use std::collections::BTreeSet;

/// One `basic.ack` to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The delivery tag.
    pub tag: u64,
    /// Whether it covers every earlier tag too.
    pub multiple: bool,
}

/// The acknowledgement state of one consumer channel.
#[derive(Debug)]
pub struct AckTracker {
    /// Delivered, outcome not yet durable.
    unsettled: BTreeSet<u64>,
    /// Settled, not yet acknowledged (all above the lowest unsettled tag).
    settled: BTreeSet<u64>,
    /// How many settled tags may wait behind an unsettled one before they
    /// are acknowledged singly.
    spill: usize,
}

impl AckTracker {
    /// A tracker for a channel with `prefetch` unacknowledged deliveries at
    /// most: settled tags behind a slow one are acked singly once they are
    /// half the window.
    pub fn new(prefetch: u16) -> Self {
        AckTracker {
            unsettled: BTreeSet::new(),
            settled: BTreeSet::new(),
            spill: (usize::from(prefetch) / 2).max(1),
        }
    }

    /// The broker delivered `tag`.
    pub fn delivered(&mut self, tag: u64) {
        self.unsettled.insert(tag);
    }

    /// The outcome of `tag` is durable: the acks to send now, in order. An
    /// unknown or already settled tag gives none.
    pub fn settle(&mut self, tag: u64) -> Vec<Ack> {
        if !self.unsettled.remove(&tag) {
            return Vec::new();
        }
        self.settled.insert(tag);
        let mut acks = Vec::new();
        let prefix_end = self.unsettled.first().copied().unwrap_or(u64::MAX);
        if let Some(&highest) = self.settled.range(..prefix_end).next_back() {
            acks.push(Ack {
                tag: highest,
                multiple: true,
            });
            self.settled = self.settled.split_off(&(highest + 1));
        }
        if self.settled.len() >= self.spill {
            acks.extend(
                std::mem::take(&mut self.settled)
                    .into_iter()
                    .map(|tag| Ack {
                        tag,
                        multiple: false,
                    }),
            );
        }
        acks
    }

    /// Deliveries not yet acknowledged (settled or not).
    pub fn outstanding(&self) -> usize {
        self.unsettled.len() + self.settled.len()
    }
}

/// The fewest acks that acknowledge what `acks` (in the order computed by
/// one [`AckTracker`]) would: the highest multiple ack covers every tag up
/// to it (the tracker emits one only when all of them are settled), so only
/// the singles above it are still needed. Every tag named is one `acks`
/// names, so none is named twice.
pub fn coalesce(acks: &[Ack]) -> Vec<Ack> {
    let covered = acks.iter().filter(|a| a.multiple).map(|a| a.tag).max();
    let mut out: Vec<Ack> = covered
        .map(|tag| Ack {
            tag,
            multiple: true,
        })
        .into_iter()
        .collect();
    out.extend(
        acks.iter()
            .filter(|a| !a.multiple && covered.is_none_or(|c| a.tag > c)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi(tag: u64) -> Ack {
        Ack {
            tag,
            multiple: true,
        }
    }

    fn single(tag: u64) -> Ack {
        Ack {
            tag,
            multiple: false,
        }
    }

    #[test]
    fn in_order_settlement_acks_each_prefix() {
        let mut t = AckTracker::new(100);
        for tag in 1..=3 {
            t.delivered(tag);
        }
        assert_eq!(t.settle(1), vec![multi(1)]);
        assert_eq!(t.settle(2), vec![multi(2)]);
        assert_eq!(t.settle(3), vec![multi(3)]);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn out_of_order_waits_for_the_gap_then_acks_once() {
        let mut t = AckTracker::new(100);
        for tag in 1..=4 {
            t.delivered(tag);
        }
        assert_eq!(t.settle(3), vec![]);
        assert_eq!(t.settle(2), vec![]);
        assert_eq!(t.settle(4), vec![]);
        // The gap closes: one ack covers all four.
        assert_eq!(t.settle(1), vec![multi(4)]);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn unknown_and_repeated_tags_give_no_ack() {
        let mut t = AckTracker::new(100);
        t.delivered(1);
        assert_eq!(t.settle(7), vec![]);
        assert_eq!(t.settle(1), vec![multi(1)]);
        assert_eq!(t.settle(1), vec![], "a tag is never acknowledged twice");
    }

    #[test]
    fn a_slow_message_does_not_hold_the_window() {
        let mut t = AckTracker::new(8);
        for tag in 1..=10 {
            t.delivered(tag);
        }
        // Tag 1 is slow; 2..=4 wait behind it, the 4th settled spills.
        assert_eq!(t.settle(2), vec![]);
        assert_eq!(t.settle(3), vec![]);
        assert_eq!(t.settle(4), vec![]);
        assert_eq!(
            t.settle(5),
            vec![single(2), single(3), single(4), single(5)]
        );
        assert_eq!(t.outstanding(), 6);
        // Later ones wait again, then the slow one covers them all in one
        // multiple ack (naming 7, never acknowledged before).
        assert_eq!(t.settle(7), vec![]);
        assert_eq!(t.settle(1), vec![multi(1)]);
        assert_eq!(t.settle(6), vec![multi(7)]);
        assert_eq!(t.outstanding(), 3);
    }

    #[test]
    fn coalescing_keeps_the_highest_multiple_and_the_singles_above_it() {
        assert_eq!(coalesce(&[]), vec![]);
        assert_eq!(coalesce(&[multi(1), multi(2), multi(3)]), vec![multi(3)]);
        assert_eq!(
            coalesce(&[single(4), single(5), multi(2), single(7), multi(5)]),
            vec![multi(5), single(7)]
        );
        assert_eq!(
            coalesce(&[single(4), single(6)]),
            vec![single(4), single(6)]
        );
    }

    /// Whatever the settlement order, every tag is acknowledged exactly
    /// once (singly, or covered by one multiple ack naming an unacked tag),
    /// also when the acks go out coalesced in arbitrary runs.
    #[test]
    fn every_order_acknowledges_every_tag_exactly_once() {
        let mut rng = verdant_testkit::Rng(0x5eed_ac4e);
        for round in 0..400 {
            let coalesced = round % 2 == 1;
            let n = 1 + rng.below(40) as u64;
            let mut t = AckTracker::new(1 + rng.below(16) as u16);
            for tag in 1..=n {
                t.delivered(tag);
            }
            let mut order: Vec<u64> = (1..=n).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            let mut settled = BTreeSet::new();
            let mut acked = BTreeSet::new();
            let mut queued = Vec::new();
            let last = *order.last().unwrap();
            for tag in order {
                settled.insert(tag);
                queued.extend(t.settle(tag));
                // Plain: every ack as computed. Coalesced: runs of random
                // length, as the ack sender drains its queue.
                if coalesced && tag != last && rng.below(3) != 0 {
                    continue;
                }
                let run = std::mem::take(&mut queued);
                let run = if coalesced { coalesce(&run) } else { run };
                for ack in run {
                    assert!(acked.insert(ack.tag), "tag {} named twice", ack.tag);
                    if ack.multiple {
                        assert!(
                            (1..ack.tag).all(|x| settled.contains(&x)),
                            "a multiple ack covers an unsettled tag"
                        );
                        acked.extend(1..ack.tag);
                    }
                }
            }
            assert_eq!(acked, (1..=n).collect(), "all acknowledged");
            assert_eq!(t.outstanding(), 0);
        }
    }
}
