//! The footprint ledger: an append-only file with one JSON line per hour
//! and sender domain (messages, bytes, CPU seconds, joules, grams CO2e and
//! the method), so that a period's footprint can be reported from it alone
//! (`verdant footprint`), without Prometheus' history.
//!
//! The hour in progress is kept in memory and saved every
//! [`SAVE_EVERY`] to `<ledger>.current` (written aside and renamed, so a
//! reader never sees half of it). When the hour ends its lines are
//! appended to the ledger; a process that starts and finds a `.current`
//! (left by a crash or a stop) appends it first. So at most
//! [`SAVE_EVERY`] of figures is lost to a crash, and a restart within an
//! hour only means two lines for that hour, which reports add up.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::domains;
use crate::footprint::PerMessage;

/// How often the hour in progress is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The domain of messages whose sender was not counted.
pub const UNKNOWN: &str = "(unknown)";

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The start of the hour, RFC 3339 UTC.
    pub hour: String,
    /// The sender domain.
    pub domain: String,
    /// Messages (accepted; in a process that only delivers, delivered).
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// CPU seconds charged to them.
    pub cpu_seconds: f64,
    /// Joules charged to them (before PUE).
    pub joules: f64,
    /// Grams CO2e charged to them.
    pub grams_co2e: f64,
    /// How energy and carbon were estimated.
    pub method: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    messages: u64,
    bytes: u64,
    cpu_seconds: f64,
    joules: f64,
    grams: f64,
}

/// The ledger of one process.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    current: PathBuf,
    /// Start of the hour in progress, seconds since the epoch.
    hour: u64,
    buckets: BTreeMap<String, Bucket>,
    method: String,
    last_save: Instant,
}

fn hour_now() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs - secs % 3600
}

impl Ledger {
    /// Opens (creating it and its directory if need be) the ledger at
    /// `path`, first appending what a previous process left in
    /// `<path>.current`. Turns on counting by sender domain.
    pub fn open(path: &Path) -> std::io::Result<Ledger> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut current = path.as_os_str().to_owned();
        current.push(".current");
        let current = PathBuf::from(current);
        let ledger = Ledger {
            path: path.to_owned(),
            current,
            hour: hour_now(),
            buckets: BTreeMap::new(),
            method: String::new(),
            last_save: Instant::now(),
        };
        match std::fs::read(&ledger.current) {
            Ok(left) => {
                ledger.append(&left)?;
                std::fs::remove_file(&ledger.current)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Make sure the ledger can be written before relying on it.
                ledger.append(b"")?;
            }
            Err(e) => return Err(e),
        }
        domains::enable();
        Ok(ledger)
    }

    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(bytes)?;
        if !bytes.is_empty() {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Closes the hour when it is over and saves the one in progress when
    /// due; called every interval, with messages or not.
    pub fn tick(&mut self) {
        let hour = hour_now();
        if hour != self.hour {
            self.close_hour();
            self.hour = hour;
        }
        if self.last_save.elapsed() >= SAVE_EVERY && !self.buckets.is_empty() {
            self.save();
        }
    }

    /// Charges an interval's messages, by sender domain, at `per`'s costs.
    pub fn charge(&mut self, per: &PerMessage, method: &str) {
        self.tick();
        self.method = method.to_owned();
        let counts = domains::drain();
        let by_domain = if per.received {
            counts.received
        } else {
            counts.delivered
        };
        let mut add = |domain: String, messages: u64, bytes: u64| {
            let b = self.buckets.entry(domain).or_default();
            let n = messages as f64;
            b.messages += messages;
            b.bytes += bytes;
            b.cpu_seconds += n * per.cpu.as_secs_f64();
            b.joules += n * per.joules;
            b.grams += n * per.grams;
        };
        if by_domain.is_empty() {
            add(UNKNOWN.to_owned(), per.messages, 0);
        }
        for (domain, t) in by_domain {
            add(domain, t.messages, t.bytes);
        }
    }

    fn lines(&self) -> Vec<u8> {
        let hour = verdant_queue::time::rfc3339(self.hour * 1_000_000);
        let mut out = Vec::new();
        for (domain, b) in &self.buckets {
            let line = Line {
                hour: hour.clone(),
                domain: domain.clone(),
                messages: b.messages,
                bytes: b.bytes,
                cpu_seconds: b.cpu_seconds,
                joules: b.joules,
                grams_co2e: b.grams,
                method: self.method.clone(),
            };
            serde_json::to_writer(&mut out, &line).expect("plain values serialize");
            out.push(b'\n');
        }
        out
    }

    /// Writes the hour in progress aside (atomically), for recovery.
    fn save(&mut self) {
        self.last_save = Instant::now();
        let mut tmp = self.current.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written =
            std::fs::write(&tmp, self.lines()).and_then(|()| std::fs::rename(&tmp, &self.current));
        if let Err(e) = written {
            eprintln!(
                "verdant: cannot save the footprint of this hour ({}): {e}",
                self.current.display()
            );
        }
    }

    /// Appends the hour so far to the ledger: the process is stopping.
    pub fn finish(&mut self) {
        self.close_hour();
    }

    /// Appends the finished hour to the ledger.
    fn close_hour(&mut self) {
        if self.buckets.is_empty() {
            return;
        }
        match self.append(&self.lines()) {
            Ok(()) => {
                self.buckets.clear();
                let _ = std::fs::remove_file(&self.current);
            }
            // Kept: appended with the next hour, or recovered at start.
            Err(e) => eprintln!(
                "verdant: cannot append to the footprint ledger {}: {e}",
                self.path.display()
            ),
        }
    }
}

/// Reads a ledger: its lines, in order. A line that does not parse is an
/// error that names it (the ledger is append-only: it should not happen).
pub fn read(path: &Path) -> std::io::Result<Vec<Line>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line = serde_json::from_str(l).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), i + 1),
            )
        })?;
        out.push(line);
    }
    // Also what the running (or crashed) process has not appended yet.
    let mut current = path.as_os_str().to_owned();
    current.push(".current");
    if let Ok(text) = std::fs::read_to_string(PathBuf::from(current)) {
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per(messages: u64) -> PerMessage {
        PerMessage {
            messages,
            received: true,
            cpu: Duration::from_micros(100),
            joules: 0.01,
            grams: 0.000_001,
        }
    }

    #[test]
    fn the_hour_in_progress_survives_a_restart_and_lines_add_up() {
        let _turn = crate::domains::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("footprint").join("ledger.jsonl");
        {
            let mut l = Ledger::open(&path).unwrap();
            crate::domains::received("a@example.com", 100);
            crate::domains::received("b@example.com", 50);
            crate::domains::received("c@other.test", 10);
            crate::domains::flush();
            l.charge(&per(3), "test method");
            l.save();
            // Dropped without closing the hour, as a crash would.
        }
        assert!(read(&path).unwrap().len() == 2, "read sees the saved hour");
        let l = Ledger::open(&path).unwrap();
        drop(l);
        let lines = read(&path).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let ex = lines.iter().find(|l| l.domain == "example.com").unwrap();
        assert_eq!((ex.messages, ex.bytes), (2, 150));
        assert!((ex.cpu_seconds - 0.0002).abs() < 1e-12);
        assert!((ex.joules - 0.02).abs() < 1e-12);
        assert_eq!(ex.method, "test method");
        assert!(ex.hour.ends_with(":00:00Z"));
        // Nothing left aside once appended.
        let mut current = path.as_os_str().to_owned();
        current.push(".current");
        assert!(!PathBuf::from(current).exists());
    }

    #[test]
    fn messages_without_counted_senders_are_unknown() {
        let _turn = crate::domains::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&path).unwrap();
        let _ = crate::domains::drain();
        l.charge(&per(5), "m");
        l.close_hour();
        let lines = read(&path).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].domain.as_str(), lines[0].messages), (UNKNOWN, 5));
    }

    #[test]
    fn a_damaged_line_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::fs::write(&path, "{\"hour\": 1}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("ledger.jsonl:1"), "{e}");
    }
}
