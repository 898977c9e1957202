//! What the sink counts and measures, and the report made of it.
//!
//! Each worker counts into its own [`Tally`] (no atomics, no sharing on the
//! hot path) and hands it over once a second, starting a fresh one; the
//! reporter adds the tallies up into the sink's [`Report`].

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::faults::Class;

/// Highest latency the histogram tells apart: 24 hours in microseconds.
/// Larger samples are recorded as this value.
const LATENCY_MAX_US: u64 = 24 * 3600 * 1_000_000;

/// Counts of one worker since it last handed them over, or of the sink.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    pub(crate) connections: u64,
    pub(crate) messages_accepted: u64,
    pub(crate) messages_refused_temp: u64,
    pub(crate) messages_refused_perm: u64,
    pub(crate) recipients_accepted: u64,
    pub(crate) recipients_refused_temp: u64,
    pub(crate) recipients_refused_perm: u64,
    pub(crate) bytes: u64,
    /// Unix microseconds of the first and last accepted message (0: none).
    pub(crate) first_accepted_at: u64,
    pub(crate) last_accepted_at: u64,
    /// End-to-end latency samples, microseconds, 3 significant digits.
    pub(crate) latency: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            connections: 0,
            messages_accepted: 0,
            messages_refused_temp: 0,
            messages_refused_perm: 0,
            recipients_accepted: 0,
            recipients_refused_temp: 0,
            recipients_refused_perm: 0,
            bytes: 0,
            first_accepted_at: 0,
            last_accepted_at: 0,
            latency: Histogram::new_with_max(LATENCY_MAX_US, 3).expect("valid histogram bounds"),
        }
    }

    /// Counts an accepted message of `bytes` octets for `recipients`,
    /// accepted at `now` (Unix micros), and its latency if it had a stamp.
    pub(crate) fn accept(&mut self, now: u64, recipients: usize, bytes: usize, sent: Option<u64>) {
        self.messages_accepted += 1;
        self.recipients_accepted += recipients as u64;
        self.bytes += bytes as u64;
        if self.first_accepted_at == 0 {
            self.first_accepted_at = now;
        }
        self.last_accepted_at = now;
        if let Some(sent) = sent {
            // A stamp from the future (clocks apart) counts as zero.
            self.latency.saturating_record(now.saturating_sub(sent));
        }
    }

    /// Counts a recipient refused at RCPT.
    pub(crate) fn refuse_recipient(&mut self, class: Class) {
        match class {
            Class::Temporary => self.recipients_refused_temp += 1,
            Class::Permanent => self.recipients_refused_perm += 1,
        }
    }

    /// Counts a message refused at end of data.
    pub(crate) fn refuse_message(&mut self, class: Class) {
        match class {
            Class::Temporary => self.messages_refused_temp += 1,
            Class::Permanent => self.messages_refused_perm += 1,
        }
    }

    /// The counts so far; counting starts again from zero.
    pub(crate) fn take(&mut self) -> Tally {
        let mut fresh = Tally::new();
        std::mem::swap(self, &mut fresh);
        fresh
    }

    /// Adds `other`'s counts to these.
    pub(crate) fn add(&mut self, other: &Tally) {
        self.connections += other.connections;
        self.messages_accepted += other.messages_accepted;
        self.messages_refused_temp += other.messages_refused_temp;
        self.messages_refused_perm += other.messages_refused_perm;
        self.recipients_accepted += other.recipients_accepted;
        self.recipients_refused_temp += other.recipients_refused_temp;
        self.recipients_refused_perm += other.recipients_refused_perm;
        self.bytes += other.bytes;
        if other.first_accepted_at != 0
            && (self.first_accepted_at == 0 || other.first_accepted_at < self.first_accepted_at)
        {
            self.first_accepted_at = other.first_accepted_at;
        }
        self.last_accepted_at = self.last_accepted_at.max(other.last_accepted_at);
        // Same bounds on both sides, so this cannot fail.
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds");
    }

    /// The report of these counts after `elapsed`.
    pub(crate) fn report(&self, elapsed: Duration, finished: bool) -> Report {
        let h = &self.latency;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Report {
            finished,
            elapsed_secs: elapsed.as_secs_f64(),
            connections: self.connections,
            messages_accepted: self.messages_accepted,
            messages_refused_temp: self.messages_refused_temp,
            messages_refused_perm: self.messages_refused_perm,
            recipients_accepted: self.recipients_accepted,
            recipients_refused_temp: self.recipients_refused_temp,
            recipients_refused_perm: self.recipients_refused_perm,
            bytes: self.bytes,
            first_accepted_at: self.first_accepted_at,
            last_accepted_at: self.last_accepted_at,
            latency_us: Latency {
                samples: h.len(),
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                max: if h.is_empty() { 0 } else { h.max() },
            },
        }
    }
}

/// What the sink counted since it started: the JSON object of
/// `--stats-json` and the numbers of the summary line.
///
/// A message is *accepted* when the client got `250` for it (the sink
/// counts it just before answering); its recipients then count as accepted.
/// Refusals are counted when they are answered: recipients at `RCPT`,
/// messages at end of data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `true` in the last report, written when the sink stopped.
    #[serde(rename = "final")]
    pub finished: bool,
    /// Seconds since the sink started.
    pub elapsed_secs: f64,
    /// Connections accepted.
    pub connections: u64,
    /// Messages answered with 250.
    pub messages_accepted: u64,
    /// Messages refused with a 4xx at end of data.
    pub messages_refused_temp: u64,
    /// Messages refused with a 5xx at end of data.
    pub messages_refused_perm: u64,
    /// Recipients of the accepted messages.
    pub recipients_accepted: u64,
    /// Recipients refused with a 4xx at RCPT.
    pub recipients_refused_temp: u64,
    /// Recipients refused with a 5xx at RCPT.
    pub recipients_refused_perm: u64,
    /// Size of the accepted messages, in octets as the sink stores them
    /// (after dot-unstuffing, with the sink's own `Received:` header).
    pub bytes: u64,
    /// When the first message was accepted, Unix microseconds (0: none yet).
    pub first_accepted_at: u64,
    /// When the last message was accepted, Unix microseconds (0: none yet).
    /// With [`Report::first_accepted_at`] this gives the sink-side rate
    /// over the time mail actually flowed.
    pub last_accepted_at: u64,
    /// End-to-end latency of the accepted messages that carried the
    /// [`crate::SENT_HEADER`] stamp.
    pub latency_us: Latency,
}

/// Latency percentiles in microseconds, to 3 significant digits (the
/// histogram's resolution); all 0 when there is no sample.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// How many messages carried a stamp.
    pub samples: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest sample (24 h for anything longer).
    pub max: u64,
}

impl Report {
    /// Accepted messages per second between the first and the last one
    /// (0 with fewer than two, or when they were accepted at the same
    /// microsecond).
    pub fn accepted_per_sec(&self) -> f64 {
        let span = self.last_accepted_at.saturating_sub(self.first_accepted_at);
        if self.messages_accepted < 2 || span == 0 {
            return 0.0;
        }
        (self.messages_accepted - 1) as f64 / (span as f64 / 1e6)
    }

    /// The one-line human summary.
    pub fn summary(&self) -> String {
        let l = &self.latency_us;
        format!(
            "{} connection(s); messages: {} accepted, {} temp-refused, {} perm-refused; \
             recipients: {} accepted, {} temp-refused, {} perm-refused; {} bytes; \
             {:.1} msg/s; latency µs ({} samples) p50 {} p90 {} p99 {} max {}; {:.1} s",
            self.connections,
            self.messages_accepted,
            self.messages_refused_temp,
            self.messages_refused_perm,
            self.recipients_accepted,
            self.recipients_refused_temp,
            self.recipients_refused_perm,
            self.bytes,
            self.accepted_per_sec(),
            l.samples,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            self.elapsed_secs,
        )
    }

    /// Writes the report as a JSON object to `path`, atomically: to a
    /// temporary file beside it, then renamed over it, so that a reader
    /// never sees half a report.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, self)?;
        f.write_all(b"\n")?;
        drop(f);
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_and_take_starts_afresh() {
        let mut a = Tally::new();
        a.connections = 2;
        a.accept(1_000_000, 2, 100, Some(999_000));
        a.accept(3_000_000, 1, 50, None);
        a.refuse_recipient(Class::Temporary);
        a.refuse_message(Class::Permanent);
        let mut b = Tally::new();
        b.accept(500_000, 3, 10, Some(500_100)); // from the future: 0
        let mut total = Tally::new();
        total.add(&a.take());
        total.add(&b);
        assert_eq!(a.messages_accepted, 0);
        assert!(a.latency.is_empty());
        let r = total.report(Duration::from_secs(2), true);
        assert_eq!(
            (
                r.connections,
                r.messages_accepted,
                r.recipients_accepted,
                r.bytes
            ),
            (2, 3, 6, 160)
        );
        assert_eq!((r.recipients_refused_temp, r.messages_refused_perm), (1, 1));
        assert_eq!(
            (r.first_accepted_at, r.last_accepted_at),
            (500_000, 3_000_000)
        );
        assert_eq!(r.latency_us.samples, 2);
        assert_eq!(r.latency_us.p50, 0);
        assert!(
            (999..=1001).contains(&r.latency_us.max),
            "{:?}",
            r.latency_us
        );
        assert!((r.accepted_per_sec() - 0.8).abs() < 1e-9);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["final"], true);
        assert_eq!(json["latency_us"]["samples"], 2);
        assert!(r.summary().contains("3 accepted"));
    }

    #[test]
    fn json_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        let r = Report {
            messages_accepted: 7,
            ..Default::default()
        };
        r.write_json(&path).unwrap();
        r.write_json(&path).unwrap();
        let back: Report = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
