//! Operational metrics of the hot path: sessions, messages, bytes,
//! attempts and outcomes, delivery latency.
//!
//! Each worker gets its own handles at registration, labelled with its
//! number, so that every counter a worker increments is an atomic only that
//! worker writes (Prometheus adds the workers up); the handles live in a
//! thread-local, so a call costs no registry lookup. On a thread without
//! them (the sink, tests of the libraries) every call does nothing.
//! Destinations are labelled by domain for the first
//! [`MAX_DESTINATIONS`] a worker sees, the rest as [`OTHER`].

use std::cell::RefCell;
use std::collections::HashMap;

use metrics::{Counter, Gauge, Histogram};

use crate::catalog::{
    ATTEMPTS, BROKER_BLOCKED, BROKER_CONFIRM, BROKER_CONNECTED, BROKER_ROUND, DELIVERY_LATENCY,
    DESTINATION_ATTEMPTS, MESSAGES_FINISHED, MESSAGES_RECEIVED, QUEUE_MESSAGES, QUEUE_OLDEST,
    RECEIVED_BYTES, SESSIONS, SESSIONS_OPEN,
};

/// Destination domains one worker labels, at most.
pub const MAX_DESTINATIONS: usize = 100;

/// The destination label beyond [`MAX_DESTINATIONS`].
pub const OTHER: &str = "(other)";

/// The class of an SMTP reply, as labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 2xx: accepted.
    Success,
    /// 4xx, a connection failure or a timeout: to try again.
    Temporary,
    /// 5xx: refused for good.
    Permanent,
}

impl Class {
    /// The class of reply code `code` (a local failure has the code it
    /// stands for).
    pub fn of(code: u16) -> Class {
        match code {
            200..=299 => Class::Success,
            500..=599 => Class::Permanent,
            _ => Class::Temporary,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Class::Success => "2xx",
            Class::Temporary => "4xx",
            Class::Permanent => "5xx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How an attempt ended for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every recipient done.
    Delivered,
    /// Some recipients to try again later.
    Deferred,
    /// Failed for good (a bounce goes to the sender).
    Bounced,
}

struct Handles {
    worker: String,
    sessions: Counter,
    received: Counter,
    received_bytes: Counter,
    attempts: [Counter; 3],
    finished: [Counter; 3],
    latency: Histogram,
    /// Per destination (at most [`MAX_DESTINATIONS`]), per class.
    destinations: HashMap<String, [Counter; 3]>,
    /// Every destination beyond those, per class.
    other: [Counter; 3],
}

thread_local! {
    static HANDLES: RefCell<Option<Handles>> = const { RefCell::new(None) };
}

/// Gives the calling thread (worker `worker`) its handles.
pub(crate) fn install(worker: usize) {
    let w = worker.to_string();
    let class = |name: &'static str, c: Class| metrics::counter!(name, "worker" => w.clone(), "class" => c.label());
    let outcome = |o: &'static str| metrics::counter!(MESSAGES_FINISHED.name, "worker" => w.clone(), "outcome" => o);
    let handles = Handles {
        sessions: metrics::counter!(SESSIONS.name, "worker" => w.clone()),
        received: metrics::counter!(MESSAGES_RECEIVED.name, "worker" => w.clone()),
        received_bytes: metrics::counter!(RECEIVED_BYTES.name, "worker" => w.clone()),
        attempts: [Class::Success, Class::Temporary, Class::Permanent]
            .map(|c| class(ATTEMPTS.name, c)),
        finished: [
            outcome("delivered"),
            outcome("deferred"),
            outcome("bounced"),
        ],
        latency: metrics::histogram!(DELIVERY_LATENCY.name, "worker" => w.clone()),
        destinations: HashMap::new(),
        other: destination(&w, OTHER),
        worker: w,
    };
    HANDLES.with(|h| *h.borrow_mut() = Some(handles));
}

/// The per-class counters of one destination.
fn destination(worker: &str, domain: &str) -> [Counter; 3] {
    [Class::Success, Class::Temporary, Class::Permanent].map(|c| {
        metrics::counter!(DESTINATION_ATTEMPTS.name,
            "worker" => worker.to_owned(),
            "domain" => domain.to_owned(),
            "class" => c.label())
    })
}

fn with(f: impl FnOnce(&mut Handles)) {
    HANDLES.with(|h| {
        if let Some(h) = h.borrow_mut().as_mut() {
            f(h);
        }
    });
}

/// An SMTP session began.
pub fn session() {
    with(|h| h.sessions.increment(1));
}

/// A message of `bytes` was accepted (250).
pub fn received(bytes: u64) {
    with(|h| {
        h.received.increment(1);
        h.received_bytes.increment(bytes);
    });
}

/// A delivery transaction to `domain` ended for `recipients` recipients
/// with a reply of `class`.
pub fn attempt(domain: &str, class: Class, recipients: u64) {
    with(|h| {
        h.attempts[class.index()].increment(recipients);
        // A lookup by &str: no allocation but for a destination's first.
        if !h.destinations.contains_key(domain) && h.destinations.len() < MAX_DESTINATIONS {
            let counters = destination(&h.worker, domain);
            h.destinations.insert(domain.to_owned(), counters);
        }
        let counters = h.destinations.get(domain).unwrap_or(&h.other);
        counters[class.index()].increment(recipients);
    });
}

/// A message's attempt ended with `outcome`; `latency`: seconds from
/// its reception to its delivery, when delivered.
pub fn finished(outcome: Outcome, latency: Option<f64>) {
    with(|h| {
        let i = match outcome {
            Outcome::Delivered => 0,
            Outcome::Deferred => 1,
            Outcome::Bounced => 2,
        };
        h.finished[i].increment(1);
        if let Some(l) = latency {
            h.latency.record(l);
        }
    });
}

/// One worker's engine queue, as gauges (set once a second).
pub struct QueueGauges {
    inflight: Gauge,
    waiting: Gauge,
    oldest: Gauge,
}

impl QueueGauges {
    /// The gauges of worker `worker`.
    pub fn new(worker: usize) -> Self {
        let w = worker.to_string();
        QueueGauges {
            inflight: metrics::gauge!(QUEUE_MESSAGES.name, "worker" => w.clone(), "state" => "inflight"),
            waiting: metrics::gauge!(QUEUE_MESSAGES.name, "worker" => w.clone(), "state" => "waiting"),
            oldest: metrics::gauge!(QUEUE_OLDEST.name, "worker" => w),
        }
    }

    /// Messages with an attempt under way, waiting for their next, and the
    /// age of the oldest in seconds.
    pub fn set(&self, inflight: usize, waiting: usize, oldest: f64) {
        self.inflight.set(inflight as f64);
        self.waiting.set(waiting as f64);
        self.oldest.set(oldest);
    }
}

/// The broker connection went up (true) or down.
pub fn broker_connected(up: bool) {
    metrics::gauge!(BROKER_CONNECTED.name).set(if up { 1.0 } else { 0.0 });
}

/// The broker started (true) or stopped blocking publishes.
pub fn broker_blocked(blocked: bool) {
    metrics::gauge!(BROKER_BLOCKED.name).set(if blocked { 1.0 } else { 0.0 });
}

/// A publish round of `messages` took `seconds` to its last confirm.
pub fn broker_round(messages: usize, seconds: f64) {
    static HANDLES: std::sync::OnceLock<(Histogram, Histogram)> = std::sync::OnceLock::new();
    let (round, confirm) = HANDLES.get_or_init(|| {
        (
            metrics::histogram!(BROKER_ROUND.name),
            metrics::histogram!(BROKER_CONFIRM.name),
        )
    });
    round.record(messages as f64);
    confirm.record(seconds);
}

/// The process's open SMTP sessions, now.
pub fn sessions_open(n: usize) {
    metrics::gauge!(SESSIONS_OPEN.name).set(n as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(Class::of(250), Class::Success);
        assert_eq!(Class::of(451), Class::Temporary);
        assert_eq!(Class::of(421), Class::Temporary);
        assert_eq!(Class::of(554), Class::Permanent);
        assert_eq!(Class::of(0), Class::Temporary);
    }

    #[test]
    fn calls_without_handles_do_nothing() {
        session();
        received(10);
        attempt("example.com", Class::Success, 1);
        finished(Outcome::Delivered, Some(0.5));
    }
}
