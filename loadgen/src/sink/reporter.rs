//! The reporter thread: adds up what the workers hand over, keeps the
//! latest [`Report`] for [`super::Sink::report`], writes `--stats-json`
//! every second, and makes the final report once every worker ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stats::{Report, Tally};

/// How often the stats file is rewritten and workers hand over their counts.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How long workers get to end after a stop before the final report is
/// made without them (their last counts are then missing).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What workers send the reporter.
pub(crate) enum Msg {
    /// Counts since the worker's previous hand-over.
    Tally(Tally),
    /// The worker's thread ended (sent on drop, so also after a panic);
    /// its last tally was sent before.
    Exited(usize),
}

/// What the reporter shares with the [`super::Sink`] handle; read on
/// demand, written once per hand-over, never touched by workers.
#[derive(Default)]
pub(crate) struct Shared {
    /// The latest report.
    pub(crate) latest: Mutex<Report>,
    /// A worker that ended while the sink was not stopping.
    pub(crate) dead_worker: Mutex<Option<usize>>,
}

/// Runs until every worker's sender is gone (all workers ended) or the
/// grace after a stop ran out; returns the final report.
pub(crate) fn run(
    rx: Receiver<Msg>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    stats_json: Option<PathBuf>,
    started: Instant,
) -> Report {
    let mut total = Tally::new();
    let mut next_write = started + REPORT_EVERY;
    let mut stop_seen: Option<Instant> = None;
    let mut write_failed = false;
    loop {
        let wait = next_write.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Tally(t)) => {
                total.add(&t);
                *shared.latest.lock().expect("report lock") =
                    total.report(started.elapsed(), false);
            }
            Ok(Msg::Exited(w)) => {
                if !stop.load(Ordering::Relaxed) {
                    shared
                        .dead_worker
                        .lock()
                        .expect("worker lock")
                        .get_or_insert(w);
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_write {
            next_write += REPORT_EVERY;
            if let Some(path) = &stats_json {
                let r = total.report(started.elapsed(), false);
                if let Err(e) = r.write_json(path)
                    && !write_failed
                {
                    // Once: the sink goes on; the final write will retry.
                    write_failed = true;
                    eprintln!("verdant sink: cannot write {}: {e}", path.display());
                }
            }
            if stop.load(Ordering::Relaxed) {
                let since = *stop_seen.get_or_insert_with(Instant::now);
                if since.elapsed() >= STOP_GRACE {
                    eprintln!("verdant sink: a worker did not stop; its last counts are missing");
                    break;
                }
            }
        }
    }
    let report = total.report(started.elapsed(), true);
    if let Some(path) = &stats_json
        && let Err(e) = report.write_json(path)
    {
        eprintln!("verdant sink: cannot write {}: {e}", path.display());
    }
    *shared.latest.lock().expect("report lock") = report.clone();
    report
}
