//! The footprint ledger: an append-only file with one JSON line per hour
//! and sender domain (messages, bytes, CPU seconds, joules, grams CO2e and
//! the method), so that a period's footprint can be reported from it alone
//! (`verdant footprint`), without Prometheus' history.
//!
//! - **Costs and counts meet late.** An interval's costs come from the
//!   accountant; which domains its messages came from comes from the
//!   workers' counts, flushed once a second on their own clocks. The ledger
//!   pools both and, whenever it has both, shares the pooled costs over the
//!   pooled messages (each message the same). Costs that find no counts
//!   within [`WAIT`] go to [`UNKNOWN`]; counts that find no costs are
//!   recorded at no cost.
//! - **Crashes.** The hour in progress is kept in memory and saved every
//!   [`SAVE_EVERY`] to `<ledger>.current` (written aside, synced and
//!   renamed). When the hour ends, or the process stops, its lines are
//!   appended to the ledger; a process that starts and finds a `.current`
//!   (left by a crash) appends it first. Every line carries the `run` that
//!   wrote it, so a line both appended and still in `.current` (a crash
//!   between the two) is read once. A torn last line (a crash in the middle
//!   of an append) is skipped.
//! - **One writer.** The ledger is locked (`<ledger>.lock`, flock) by the
//!   process that writes it: give each process its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::domains::{self, Tally};

/// How often the hour in progress is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// How long pooled costs wait for the counts of their messages.
pub const WAIT: Duration = Duration::from_secs(10);

/// Messages whose senders were not counted.
pub const UNKNOWN: &str = "(unknown)";

/// Costs of intervals without any message, once no longer carried (no
/// messages: the process's idle footprint).
pub const IDLE: &str = "(idle)";

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
    /// The process run that wrote it (start time and pid).
    #[serde(default)]
    pub run: String,
}

/// What an interval cost, in all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// Messages of the interval (the functional unit).
    pub messages: u64,
    /// CPU seconds.
    pub cpu_seconds: f64,
    /// Joules.
    pub joules: f64,
    /// Grams CO2e.
    pub grams: f64,
}

impl Cost {
    fn add(&mut self, o: &Cost) {
        self.messages += o.messages;
        self.cpu_seconds += o.cpu_seconds;
        self.joules += o.joules;
        self.grams += o.grams;
    }

    fn is_empty(&self) -> bool {
        self.messages == 0 && self.cpu_seconds == 0.0 && self.joules == 0.0 && self.grams == 0.0
    }
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
    _lock: File,
    run: String,
    /// Count accepted messages by domain (else delivered ones).
    received: bool,
    /// Start of the hour in progress, seconds since the epoch.
    hour: u64,
    buckets: BTreeMap<String, Bucket>,
    /// Lines of finished hours not appended yet (an append failed).
    unwritten: Vec<u8>,
    method: String,
    last_save: Instant,
    pool: Cost,
    pool_since: Option<Instant>,
    counts: HashMap<String, Tally>,
    counts_since: Option<Instant>,
}

fn hour_now() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs - secs % 3600
}

fn aside(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl Ledger {
    /// Opens (creating it and its directory if need be) the ledger at
    /// `path`, locks it, and first appends what a previous process left in
    /// `<path>.current`. Turns on counting by sender domain: `received`
    /// counts accepted messages, else delivered ones (a process that only
    /// delivers).
    pub fn open(path: &Path, received: bool) -> std::io::Result<Ledger> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let lock = File::create(aside(path, ".lock"))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "another process writes this ledger (give each its own footprint.ledger)",
            ));
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ledger = Ledger {
            path: path.to_owned(),
            current: aside(path, ".current"),
            _lock: lock,
            run: format!("{secs}-{}", std::process::id()),
            received,
            hour: hour_now(),
            buckets: BTreeMap::new(),
            unwritten: Vec::new(),
            method: String::new(),
            last_save: Instant::now(),
            pool: Cost::default(),
            pool_since: None,
            counts: HashMap::new(),
            counts_since: None,
        };
        ledger.recover()?;
        domains::enable();
        Ok(ledger)
    }

    /// Appends what a previous process left aside, but for lines it had
    /// already appended (a crash between the append and the removal).
    fn recover(&self) -> std::io::Result<()> {
        let left = match std::fs::read_to_string(&self.current) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Make sure the ledger can be written before relying on it.
                return self.append(b"");
            }
            Err(e) => return Err(e),
        };
        let written: HashSet<Key> = parse(&self.path)?.iter().map(key).collect();
        let mut out = Vec::new();
        for l in left.lines() {
            match serde_json::from_str::<Line>(l) {
                Ok(line) if !written.contains(&key(&line)) => {
                    out.extend_from_slice(l.as_bytes());
                    out.push(b'\n');
                }
                _ => {}
            }
        }
        self.append(&out)?;
        std::fs::remove_file(&self.current)
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

    /// Pools an interval's cost (its messages' counts by domain follow).
    pub fn charge(&mut self, cost: &Cost, method: &str) {
        self.method = method.to_owned();
        if self.pool.is_empty() {
            self.pool_since = Some(Instant::now());
        }
        self.pool.add(cost);
        self.tick();
    }

    /// Records the cost of intervals without messages (released from the
    /// carry): the process's idle footprint.
    pub fn idle(&mut self, cost: &Cost, method: &str) {
        self.method = method.to_owned();
        self.add(IDLE.to_owned(), 0, 0, cost, 1.0);
    }

    /// Every interval, with messages or not: takes in the workers' counts,
    /// shares pooled costs over them, closes the hour when it is over and
    /// saves the one in progress when due.
    pub fn tick(&mut self) {
        let counts = domains::drain();
        let by_domain = if self.received {
            counts.received
        } else {
            counts.delivered
        };
        if !by_domain.is_empty() && self.counts.is_empty() {
            self.counts_since = Some(Instant::now());
        }
        for (d, t) in by_domain {
            let e = self.counts.entry(d).or_default();
            e.messages += t.messages;
            e.bytes += t.bytes;
        }
        self.settle(false);
        let hour = hour_now();
        if hour != self.hour {
            self.close_hour();
            self.hour = hour;
        }
        if self.last_save.elapsed() >= SAVE_EVERY && !self.buckets.is_empty() {
            self.save();
        }
    }

    /// Shares the pool over the pooled counts; what waited too long (or,
    /// when stopping, anything) is recorded on its own.
    fn settle(&mut self, stopping: bool) {
        let waited =
            |since: Option<Instant>| stopping || since.is_some_and(|t| t.elapsed() >= WAIT);
        let messages: u64 = self.counts.values().map(|t| t.messages).sum();
        if messages > 0 && !self.pool.is_empty() {
            let pool = std::mem::take(&mut self.pool);
            for (domain, t) in std::mem::take(&mut self.counts) {
                let share = t.messages as f64 / messages as f64;
                self.add(domain, t.messages, t.bytes, &pool, share);
            }
            self.pool_since = None;
            self.counts_since = None;
            return;
        }
        if !self.pool.is_empty() && waited(self.pool_since) {
            let pool = std::mem::take(&mut self.pool);
            self.add(UNKNOWN.to_owned(), pool.messages, 0, &pool, 1.0);
            self.pool_since = None;
        }
        if messages > 0 && waited(self.counts_since) {
            for (domain, t) in std::mem::take(&mut self.counts) {
                self.add(domain, t.messages, t.bytes, &Cost::default(), 0.0);
            }
            self.counts_since = None;
        }
    }

    fn add(&mut self, domain: String, messages: u64, bytes: u64, cost: &Cost, share: f64) {
        let b = self.buckets.entry(domain).or_default();
        b.messages += messages;
        b.bytes += bytes;
        b.cpu_seconds += cost.cpu_seconds * share;
        b.joules += cost.joules * share;
        b.grams += cost.grams * share;
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
                run: self.run.clone(),
            };
            serde_json::to_writer(&mut out, &line).expect("plain values serialize");
            out.push(b'\n');
        }
        out
    }

    /// Writes the hour in progress aside (synced, renamed), for recovery.
    fn save(&mut self) {
        self.last_save = Instant::now();
        let tmp = aside(&self.current, ".tmp");
        let mut body = self.unwritten.clone();
        body.extend(self.lines());
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_data()))
            .and_then(|()| std::fs::rename(&tmp, &self.current));
        if let Err(e) = written {
            eprintln!(
                "verdant: cannot save the footprint of this hour ({}): {e}",
                self.current.display()
            );
        }
    }

    /// Appends the hour so far to the ledger: the process is stopping.
    pub fn finish(&mut self) {
        self.settle(true);
        self.close_hour();
    }

    /// Appends the finished hour (and any earlier one whose append
    /// failed) to the ledger.
    fn close_hour(&mut self) {
        self.unwritten.extend(self.lines());
        self.buckets.clear();
        if self.unwritten.is_empty() {
            return;
        }
        match self.append(&self.unwritten) {
            Ok(()) => {
                self.unwritten.clear();
                let _ = std::fs::remove_file(&self.current);
            }
            // Kept, in memory and in `.current`, for the next try.
            Err(e) => {
                eprintln!(
                    "verdant: cannot append to the footprint ledger {}: {e}",
                    self.path.display()
                );
                self.save();
            }
        }
    }
}

/// What identifies a line: its run, hour and domain (a run writes one
/// line per hour and domain).
type Key = (String, String, String);

fn key(l: &Line) -> Key {
    (l.run.clone(), l.hour.clone(), l.domain.clone())
}

/// The lines of a ledger file; a torn last line (a crash in the middle of
/// an append) is skipped, a damaged line before it is an error.
fn parse(path: &Path) -> std::io::Result<Vec<Line>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(line) => out.push(line),
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {e}", path.display(), i + 1),
                ));
            }
        }
    }
    Ok(out)
}

/// Reads a ledger: its lines, in order, then those of the hour in progress
/// (`.current`) that it does not hold yet.
pub fn read(path: &Path) -> std::io::Result<Vec<Line>> {
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no ledger at {}", path.display()),
        ));
    }
    let mut out = parse(path)?;
    let written: HashSet<Key> = out.iter().map(key).collect();
    if let Ok(text) = std::fs::read_to_string(aside(path, ".current")) {
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Line>(l).ok())
                .filter(|l| !written.contains(&key(l))),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(messages: u64) -> Cost {
        Cost {
            messages,
            cpu_seconds: messages as f64 * 0.0001,
            joules: messages as f64 * 0.01,
            grams: messages as f64 * 0.000_001,
        }
    }

    fn current(path: &Path) -> PathBuf {
        aside(path, ".current")
    }

    #[test]
    fn the_hour_in_progress_survives_a_crash_and_lines_add_up() {
        let _turn = crate::domains::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("footprint").join("ledger.jsonl");
        {
            let mut l = Ledger::open(&path, true).unwrap();
            // Costs first, counts a moment later: they meet.
            l.charge(&cost(3), "test method");
            crate::domains::received("a@example.com", 100);
            crate::domains::received("b@example.com", 50);
            crate::domains::received("c@other.test", 10);
            crate::domains::flush();
            l.tick();
            l.save();
            // Dropped without closing the hour, as a crash would.
        }
        assert_eq!(read(&path).unwrap().len(), 2, "read sees the saved hour");
        let l = Ledger::open(&path, true).unwrap();
        drop(l);
        let lines = read(&path).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let ex = lines.iter().find(|l| l.domain == "example.com").unwrap();
        assert_eq!((ex.messages, ex.bytes), (2, 150));
        assert!((ex.cpu_seconds - 0.0002).abs() < 1e-12);
        assert!((ex.joules - 0.02).abs() < 1e-12);
        assert_eq!(ex.method, "test method");
        assert!(ex.hour.ends_with(":00:00Z"));
        assert!(!current(&path).exists(), "nothing left aside once appended");
    }

    #[test]
    fn a_line_both_appended_and_aside_is_read_and_recovered_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let line = Line {
            hour: "2026-12-01T10:00:00Z".into(),
            domain: "a.test".into(),
            messages: 5,
            bytes: 1,
            cpu_seconds: 0.1,
            joules: 1.0,
            grams_co2e: 0.1,
            method: "m".into(),
            run: "1-2".into(),
        };
        let text = serde_json::to_string(&line).unwrap() + "\n";
        // A crash between the append and the removal of `.current`.
        std::fs::write(&path, &text).unwrap();
        std::fs::write(current(&path), &text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
        drop(Ledger::open(&path, true).unwrap());
        assert_eq!(read(&path).unwrap().len(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn costs_without_counts_are_unknown_and_stopping_settles_everything() {
        let _turn = crate::domains::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&path, true).unwrap();
        let _ = crate::domains::drain();
        l.charge(&cost(5), "m");
        l.idle(&cost(0), "m");
        l.finish();
        let lines = read(&path).unwrap();
        let unknown = lines.iter().find(|l| l.domain == UNKNOWN).unwrap();
        assert_eq!(unknown.messages, 5);
        assert!(lines.iter().any(|l| l.domain == IDLE && l.messages == 0));
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let _first = Ledger::open(&path, true).unwrap();
        let second = Ledger::open(&path, true).unwrap_err();
        assert!(second.to_string().contains("another process"), "{second}");
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_damage_before_it_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let good = r#"{"hour":"2026-12-01T10:00:00Z","domain":"a","messages":1,"bytes":1,"cpu_seconds":0.0,"joules":0.0,"grams_co2e":0.0,"method":"m"}"#;
        std::fs::write(&path, format!("{good}\n{{\"hour\": \"2026-")).unwrap();
        assert_eq!(
            read(&path).unwrap().len(),
            1,
            "old lines without `run` still read"
        );
        std::fs::write(&path, format!("{{\"hour\": 1}}\n{good}\n")).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("ledger.jsonl:1"), "{e}");
        let missing = read(&dir.path().join("none.jsonl")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
