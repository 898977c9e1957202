//! The CPU accountant: a thread that, once per interval (1 s), measures
//! where the process's CPU time went and charges it to the messages
//! handled.
//!
//! The total of an interval is the process's CPU clock (every thread,
//! including the kernel's io_uring workers): that is what is charged, so
//! that what messages are charged adds up to what the OS reports. The
//! split over stages comes from, per thread:
//! - workers: the CPU time each charged to its stages by sampling itself
//!   ([`crate::stage`]), plus what it used since its last sample (its CPU
//!   clock, read once per interval), to the stage it is in;
//! - threads of one role (the broker thread: queue; the DNS thread:
//!   deliver): their CPU clock;
//! - the process's other threads, from `/proc/self/task`: the kernel's
//!   io_uring workers (`iou-wrk-*`, which do the spool's durable writes)
//!   and lapin's I/O threads do queue work, anything else is overhead.
//!
//! The interval's CPU time is shared out over the stages in proportion to
//! those measurements, and over the messages by the rule of
//! [`crate::attribute`].
//!
//! Workers count messages with [`count`], a relaxed store to a counter only
//! they write: nothing shared, no system call on the hot path.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attribute::{Carry, Charged, Measured, index};
use crate::cpu::{self, ThreadClock};
use crate::stage::{self, Stage, StageCell};

/// Messages a worker handled, per message stage ([`Stage::MESSAGE`]
/// order). Written by its worker only.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counts([AtomicU64; 3]);

impl Counts {
    fn add(&self, stage: usize, n: u64) {
        // One writer: a plain load and store, no locked instruction.
        let c = &self.0[stage];
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    fn read(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.0[i].load(Ordering::Relaxed))
    }
}

thread_local! {
    static COUNTS: Cell<Option<&'static Counts>> = const { Cell::new(None) };
}

/// Counts `n` messages handled by the calling thread in `stage` (a message
/// stage; others are ignored, as are threads not registered as workers).
pub fn count(stage: Stage, n: u64) {
    if let (Some(i), Some(counts)) = (index(stage), COUNTS.with(Cell::get)) {
        counts.add(i, n);
    }
}

/// How often the accountant reports.
#[derive(Debug, Clone, Copy)]
pub struct AccountConfig {
    /// Between two charged intervals.
    pub report_every: Duration,
}

impl Default for AccountConfig {
    fn default() -> Self {
        AccountConfig {
            report_every: Duration::from_secs(1),
        }
    }
}

/// One charged interval, as the reporters get it.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Wall time the interval covers.
    pub wall: Duration,
    /// The process's CPU time in the interval (all threads).
    pub process_cpu: Duration,
    /// What was charged to which messages.
    pub charged: Charged,
    /// Measured but not yet charged, after this interval.
    pub carried: Duration,
    /// The process is stopping: this is the last report.
    pub last: bool,
}

/// Totals since start: what the validation compares with the OS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// The process's CPU time over every interval reported.
    pub process_cpu: Duration,
    /// Charged to messages, per message stage.
    pub charged: [Duration; 3],
    /// Messages, per message stage.
    pub messages: [u64; 3],
    /// Measured but not yet charged.
    pub carried: Duration,
}

/// Receives every charged interval (on the accountant's thread: must not
/// block for long).
pub type Reporter = Box<dyn FnMut(&Report) + Send>;

struct Thread {
    tid: i32,
    clock: ThreadClock,
    /// `None`: the thread is always in `fixed`.
    cell: Option<&'static StageCell>,
    fixed: Stage,
    /// The clock at the last report.
    last: Duration,
    /// For a worker: the CPU time given to each stage so far (nanoseconds;
    /// see `report`).
    given: [i128; 4],
}

#[derive(Default)]
struct Shared {
    threads: Vec<Thread>,
    counts: Vec<&'static Counts>,
    reporters: Vec<Reporter>,
    totals: Totals,
    state: State,
    external: Option<External>,
}

/// Another process whose CPU time is counted as queue work.
struct External {
    comm: String,
    pid: Option<u32>,
    last: Duration,
}

impl External {
    /// The CPU time it used since the last call (none the first time, or
    /// after it restarted).
    fn used(&mut self) -> Duration {
        if let Some(pid) = self.pid
            && let Ok(now) = cpu::proc_stat(pid)
        {
            let d = now.saturating_sub(self.last);
            self.last = now;
            return d;
        }
        self.pid = cpu::find_process(&self.comm);
        self.last = self
            .pid
            .and_then(|p| cpu::proc_stat(p).ok())
            .unwrap_or_default();
        Duration::ZERO
    }
}

/// What one report carries to the next.
struct State {
    carry: Carry,
    last_counts: HashMap<usize, [u64; 3]>,
    others: HashMap<i32, Duration>,
    last_process: Duration,
    last_report: Instant,
    first_scan: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            carry: Carry::default(),
            last_counts: HashMap::new(),
            others: HashMap::new(),
            last_process: cpu::process_now(),
            last_report: Instant::now(),
            first_scan: true,
        }
    }
}

/// The process's accountant. Cheap to clone.
#[derive(Clone)]
pub struct Accountant {
    shared: Arc<Mutex<Shared>>,
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

static GLOBAL: std::sync::OnceLock<Accountant> = std::sync::OnceLock::new();

/// Starts the process's accountant, once; later calls return the first.
pub fn start(config: AccountConfig) -> std::io::Result<&'static Accountant> {
    if let Some(a) = GLOBAL.get() {
        return Ok(a);
    }
    let a = Accountant::start(config)?;
    Ok(GLOBAL.get_or_init(|| a))
}

/// The process's accountant, if started.
pub fn global() -> Option<&'static Accountant> {
    GLOBAL.get()
}

/// [`Accountant::register_worker`] on the process's accountant (nothing
/// if none was started).
pub fn register_worker(worker: usize) {
    if let Some(a) = global() {
        a.register_worker(worker);
    }
}

/// [`Accountant::register_thread`] on the process's accountant (nothing
/// if none was started).
pub fn register_thread(stage: Stage) {
    if let Some(a) = global() {
        a.register_thread(stage);
    }
}

impl Accountant {
    /// Starts a sampler thread (the process normally has one: see
    /// [`start`]).
    pub fn start(config: AccountConfig) -> std::io::Result<Accountant> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let me = Accountant {
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("verdant-cpu".into())
            .spawn(move || run(&shared, config))?;
        Ok(me)
    }

    /// Registers the calling thread as worker number `worker`: its stage is
    /// whatever its [`stage::Staged`] tasks set, [`count`] counts its
    /// messages, and it gets its own [`crate::ops`] handles.
    pub fn register_worker(&self, worker: usize) {
        crate::ops::install(worker);
        let cell: &'static StageCell = Box::leak(Box::default());
        let counts: &'static Counts = Box::leak(Box::default());
        stage::install(cell);
        COUNTS.with(|c| c.set(Some(counts)));
        self.register(Some(cell), Stage::Runtime, Some(counts));
    }

    /// Registers the calling thread as one whose CPU time all belongs to
    /// `stage` (the broker thread: queue; the DNS thread: deliver).
    pub fn register_thread(&self, stage: Stage) {
        self.register(None, stage, None);
    }

    /// Counts, from now on, the CPU time of another process on this host,
    /// the one whose command is `comm` (RabbitMQ's `beam.smp`), as this
    /// process's queue work: so that the footprint of messages that go
    /// through a local broker includes the broker's. Found again if it
    /// restarts. Only one process per broker host should count it.
    pub fn count_process(&self, comm: &str) {
        self.shared.lock().expect("accountant").external = Some(External {
            comm: comm.to_owned(),
            pid: None,
            last: Duration::ZERO,
        });
    }

    fn register(
        &self,
        cell: Option<&'static StageCell>,
        fixed: Stage,
        counts: Option<&'static Counts>,
    ) {
        let Ok(clock) = ThreadClock::current() else {
            return;
        };
        let thread = Thread {
            tid: gettid(),
            clock,
            cell,
            fixed,
            last: clock.now().unwrap_or_default(),
            given: [0; 4],
        };
        let mut shared = self.shared.lock().expect("accountant");
        shared.threads.push(thread);
        shared.counts.extend(counts);
    }

    /// Calls `reporter` with every charged interval from now on.
    pub fn add_reporter(&self, reporter: Reporter) {
        self.shared
            .lock()
            .expect("accountant")
            .reporters
            .push(reporter);
    }

    /// Reports what happened since the last report, as the last one (the
    /// reporters then save what they keep): call it when the process stops.
    pub fn finish(&self) {
        report(&mut self.shared.lock().expect("accountant"), true);
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        self.shared.lock().expect("accountant").totals
    }
}

/// What the other threads of the process (unregistered) used, by stage:
/// the kernel's io_uring workers and lapin's I/O threads do queue work.
fn stage_of_unregistered(name: &str) -> Stage {
    if name.starts_with("iou-wrk") || name.starts_with("lapin") {
        Stage::Queue
    } else {
        Stage::Runtime
    }
}

fn run(shared: &Mutex<Shared>, config: AccountConfig) {
    loop {
        std::thread::sleep(config.report_every);
        report(&mut shared.lock().expect("accountant"), false);
    }
}

/// Measures and charges the time since the last report, and hands the
/// result to every reporter.
fn report(s: &mut Shared, last: bool) {
    let st = &mut s.state;
    let wall = st.last_report.elapsed();
    st.last_report = Instant::now();
    // Where the time went, by stage (indexed by `Stage as usize`), in
    // nanoseconds.
    let mut weight = [0i128; 4];
    let ns = |d: Duration| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
    for t in &mut s.threads {
        let Some(now) = t.clock.now() else { continue };
        let used = now.saturating_sub(t.last);
        t.last = now;
        match t.cell {
            None => weight[t.fixed as usize] += ns(used),
            Some(cell) => {
                // What the worker has given each stage by sampling itself,
                // and, for the stage it is in, what it used since its last
                // sample. Given as the change of those cumulative figures:
                // when a later sample charges that tail to another stage,
                // the tail moves there, and nothing counts twice.
                let sampled = cell.sampled();
                let tail = now.saturating_sub(cell.sampled_at());
                let current = cell.get() as usize;
                for (i, w) in weight.iter_mut().enumerate() {
                    let mut target = ns(sampled[i]);
                    if i == current {
                        target += ns(tail);
                    }
                    *w += target - t.given[i];
                    t.given[i] = target;
                }
            }
        }
    }
    // Threads no one registered, from /proc (10 ms granularity).
    let registered: Vec<i32> = s.threads.iter().map(|t| t.tid).collect();
    let mut seen = Vec::new();
    for (tid, name, cpu) in cpu::tasks_with_ids() {
        if registered.contains(&tid) {
            continue;
        }
        let base = if st.first_scan { cpu } else { Duration::ZERO };
        let before = st.others.insert(tid, cpu).unwrap_or(base);
        weight[stage_of_unregistered(&name) as usize] += ns(cpu.saturating_sub(before));
        seen.push(tid);
    }
    // Threads that ended (io_uring's workers come and go).
    st.others.retain(|tid, _| seen.contains(tid));
    st.first_scan = false;
    let process = cpu::process_now();
    let mut process_cpu = process.saturating_sub(st.last_process);
    st.last_process = process;
    if let Some(ext) = &mut s.external {
        let used = ext.used();
        weight[Stage::Queue as usize] += ns(used);
        process_cpu += used;
    }
    // A stage given back more than it got in this interval (its tail of
    // the last one was sampled into another) weighs nothing.
    let weight = weight.map(|w| Duration::from_nanos(u64::try_from(w.max(0)).unwrap_or(u64::MAX)));
    let measured = split(process_cpu, weight);
    let mut messages = [0u64; 3];
    for (k, counts) in s.counts.iter().enumerate() {
        let now = counts.read();
        let before = st.last_counts.insert(k, now).unwrap_or([0; 3]);
        for (i, m) in messages.iter_mut().enumerate() {
            *m += now[i] - before[i];
        }
    }
    let charged = st.carry.charge(measured, messages);
    let carried = st.carry.sum();
    s.totals.process_cpu += process_cpu;
    for (i, n) in messages.iter().enumerate() {
        s.totals.charged[i] += charged.total[i];
        s.totals.messages[i] += n;
    }
    s.totals.carried = carried;
    let report = Report {
        wall,
        process_cpu,
        charged,
        carried,
        last,
    };
    for r in &mut s.reporters {
        r(&report);
    }
}

/// Shares `total` out over the stages in proportion to `weight` (indexed
/// by `Stage as usize`; the runtime's share is overhead), to the
/// nanosecond: the parts add up to `total`. No weight at all: overhead.
fn split(total: Duration, weight: [Duration; 4]) -> Measured {
    let sum: u128 = weight.iter().map(Duration::as_nanos).sum();
    let total_ns = total.as_nanos();
    if sum == 0 {
        return Measured {
            stages: [Duration::ZERO; 3],
            overhead: total,
        };
    }
    let part = |w: Duration| total_ns * w.as_nanos() / sum;
    let stages = [1, 2, 3].map(|i| part(weight[i]));
    let overhead = total_ns - stages.iter().sum::<u128>();
    let d = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    Measured {
        stages: stages.map(d),
        overhead: d(overhead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that spends its CPU in deliver polls and next to none in
    /// receive polls: the accountant gives deliver nearly all of it.
    #[test]
    fn the_stage_that_burns_the_cpu_is_charged_for_it() {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};
        let a = Accountant::start(AccountConfig {
            report_every: Duration::from_millis(200),
        })
        .unwrap();
        let worker = a.clone();
        std::thread::spawn(move || {
            worker.register_worker(7);
            let mut cx = Context::from_waker(Waker::noop());
            let until = Instant::now() + Duration::from_millis(1300);
            while Instant::now() < until {
                for stage in [Stage::Receive, Stage::Deliver] {
                    let mut poll = crate::stage::staged(
                        stage,
                        std::future::poll_fn(|_| {
                            count(stage, 1);
                            if stage == Stage::Deliver {
                                let t = Instant::now();
                                while t.elapsed() < Duration::from_micros(200) {
                                    std::hint::spin_loop();
                                }
                            }
                            Poll::Ready(())
                        }),
                    );
                    let _ = Pin::new(&mut poll).poll(&mut cx);
                }
            }
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t = a.totals();
        let (receive, deliver) = (t.charged[0], t.charged[2]);
        assert!(t.messages[0] > 100 && t.messages[2] > 100, "{t:?}");
        assert!(
            deliver > (receive + deliver) * 8 / 10,
            "deliver {deliver:?}, receive {receive:?}"
        );
    }

    /// Another process's CPU is read from /proc (here: this very test
    /// process, found by its command name).
    #[test]
    fn another_process_is_found_and_its_cpu_counted() {
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let mut ext = External {
            comm: comm.trim().to_owned(),
            pid: None,
            last: Duration::ZERO,
        };
        assert_eq!(ext.used(), Duration::ZERO, "the first look only finds it");
        assert!(ext.pid.is_some());
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(120) {
            std::hint::spin_loop();
        }
        assert!(ext.used() >= Duration::from_millis(50));
    }

    #[test]
    fn the_split_is_proportional_and_adds_up() {
        let ms = Duration::from_millis;
        let m = split(ms(100), [ms(10), ms(20), ms(10), ms(10)]);
        assert_eq!(m.stages, [ms(40), ms(20), ms(20)]);
        assert_eq!(m.overhead, ms(20));
        let m = split(ms(7), [Duration::ZERO; 4]);
        assert_eq!(m.overhead, ms(7));
        let odd = split(
            Duration::from_nanos(10),
            [ms(1), ms(1), ms(1), Duration::ZERO],
        );
        assert_eq!(
            odd.stages.iter().sum::<Duration>() + odd.overhead,
            Duration::from_nanos(10)
        );
    }
}
