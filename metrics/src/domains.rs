//! Messages and bytes by sender domain, for the footprint ledger.
//!
//! Each worker counts into a map of its own (thread-local: no lock, no
//! sharing on the hot path) and hands it over once a second ([`flush`])
//! through a bounded channel the ledger drains. At most [`MAX_DOMAINS`]
//! domains a worker and a second; the rest count as [`OTHER`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Distinct domains one worker counts between two flushes, at most.
pub const MAX_DOMAINS: usize = 10_000;

/// Where the domains beyond [`MAX_DOMAINS`] count.
pub const OTHER: &str = "(other)";

/// The domain of bounces and other mail with the null sender `<>`.
pub const NULL_SENDER: &str = "(null sender)";

/// Messages and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Messages.
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
}

/// Counts by sender domain: what was accepted, what was delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted and delivered beyond [`MAX_DOMAINS`], merged into the maps
    /// as [`OTHER`] when flushed.
    other: [Tally; 2],
    /// Messages accepted, by sender domain.
    pub received: HashMap<String, Tally>,
    /// Messages whose delivery attempt ended, by sender domain.
    pub delivered: HashMap<String, Tally>,
}

impl Counts {
    fn is_empty(&self) -> bool {
        self.received.is_empty() && self.delivered.is_empty() && self.other == [Tally::default(); 2]
    }

    /// Moves the counts beyond [`MAX_DOMAINS`] into the maps, as [`OTHER`].
    fn fold_other(&mut self) {
        for (map, t) in [
            (&mut self.received, self.other[0]),
            (&mut self.delivered, self.other[1]),
        ] {
            if t.messages > 0 {
                let e = map.entry(OTHER.to_owned()).or_default();
                e.messages += t.messages;
                e.bytes += t.bytes;
            }
        }
        self.other = [Tally::default(); 2];
    }

    /// Adds `other` in.
    pub fn merge(&mut self, other: Counts) {
        for (mine, theirs) in [
            (&mut self.received, other.received),
            (&mut self.delivered, other.delivered),
        ] {
            for (d, t) in theirs {
                let e = mine.entry(d).or_default();
                e.messages += t.messages;
                e.bytes += t.bytes;
            }
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static CHANNEL: OnceLock<(flume::Sender<Counts>, flume::Receiver<Counts>)> = OnceLock::new();

thread_local! {
    static LOCAL: RefCell<Counts> = RefCell::default();
}

/// Turns counting on (the ledger does, when it opens).
pub(crate) fn enable() {
    CHANNEL.get_or_init(|| flume::bounded(1024));
    ENABLED.store(true, Ordering::Relaxed);
}

/// The domain of `sender` as the ledger names it: lower case, after the
/// last `@`; the null sender has a name of its own.
pub fn domain_of(sender: &str) -> &str {
    if sender.is_empty() {
        return NULL_SENDER;
    }
    sender.rsplit_once('@').map_or(sender, |(_, d)| d)
}

fn add(received: bool, sender: &str, bytes: u64) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let raw = domain_of(sender);
    // Domains are mostly lower case already: a copy only for those not.
    let lower;
    let domain = if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = raw.to_ascii_lowercase();
        lower.as_str()
    } else {
        raw
    };
    LOCAL.with(|l| {
        let l = &mut *l.borrow_mut();
        let (map, other) = if received {
            (&mut l.received, &mut l.other[0])
        } else {
            (&mut l.delivered, &mut l.other[1])
        };
        let full = map.len() >= MAX_DOMAINS;
        let tally = match map.get_mut(domain) {
            Some(t) => t,
            None if full => other,
            None => map.entry(domain.to_owned()).or_default(),
        };
        tally.messages += 1;
        tally.bytes += bytes;
    });
}

/// Counts a message of `sender` (`bytes` long) accepted on this thread.
pub fn received(sender: &str, bytes: u64) {
    add(true, sender, bytes);
}

/// Counts a message of `sender` whose delivery attempt ended on this
/// thread.
pub fn delivered(sender: &str, bytes: u64) {
    add(false, sender, bytes);
}

/// Hands this thread's counts to the ledger (workers call it once a
/// second). Never blocks: should the ledger fall a second behind the
/// channel's 1,024 flushes, the counts stay here for the next flush.
pub fn flush() {
    let Some((tx, _)) = CHANNEL.get() else {
        return;
    };
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        if l.is_empty() {
            return;
        }
        l.fold_other();
        if let Err(e) = tx.try_send(std::mem::take(&mut *l)) {
            *l = e.into_inner();
        }
    });
}

/// Everything flushed since the last drain.
pub(crate) fn drain() -> Counts {
    let mut all = Counts::default();
    if let Some((_, rx)) = CHANNEL.get() {
        for c in rx.try_iter() {
            all.merge(c);
        }
    }
    all
}

/// The counts are process-wide: tests that use them take turns.
#[cfg(test)]
pub(crate) static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lower_case_and_bounded() {
        let _turn = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(domain_of("a@Example.COM"), "Example.COM");
        assert_eq!(domain_of(""), NULL_SENDER);
        assert_eq!(domain_of("no-at-sign"), "no-at-sign");
        enable();
        received("a@Example.com", 10);
        received("b@example.com", 5);
        delivered("", 7);
        for i in 0..MAX_DOMAINS + 5 {
            received(&format!("x@d{i}.test"), 1);
        }
        flush();
        let c = drain();
        assert_eq!(
            c.received["example.com"],
            Tally {
                messages: 2,
                bytes: 15
            }
        );
        assert_eq!(c.delivered[NULL_SENDER].messages, 1);
        assert_eq!(c.received.len(), MAX_DOMAINS + 1, "the rest is (other)");
        assert_eq!(c.received[OTHER].messages, 6);
        assert_eq!(drain(), Counts::default(), "drained once");
    }
}
