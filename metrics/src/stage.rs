//! What a worker thread is working on, and how much CPU each stage used.
//!
//! Each worker thread has one [`StageCell`]. A task whose work belongs to a
//! stage is wrapped in [`Staged`], which sets the cell when it is polled.
//! The stage stays set after the poll: most of a worker's CPU time is the
//! kernel doing the I/O that the tasks just polled have queued (io_uring
//! submits it when the runtime next enters the kernel), so that time goes
//! to the stage of the task polled last. Only a stage nested in another is
//! put back when its poll ends.
//!
//! The thread samples itself, by time: at the first stage switch after
//! each [`SAMPLE_EVERY`] of wall time, it reads its own CPU clock and
//! charges the CPU used since the previous sample to the stage that was
//! current until then, which is the stage it was in when the tick fell: an
//! unbiased time sample (a stage gets samples in proportion to the time it
//! runs), and exact for a thread that stays in one stage. A switch costs a
//! read of the monotonic clock (vDSO, no system call); a sample, one read
//! of the thread's own CPU clock, at most a thousand a second. No other
//! thread reads this thread's clock while it runs, and nothing is shared
//! but counters this thread alone writes, on a cache line of its own. The
//! accountant ([`crate::account`]) adds them up once per interval and
//! charges what no sample covered yet to the current stage.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Where CPU time goes. The message stages are those of the pipeline; the
/// rest is overhead shared out over them (see [`crate::account`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Nothing staged: the runtime itself (polling, submitting I/O) or an
    /// unwrapped task. Shared out over the message stages.
    Runtime = 0,
    /// SMTP sessions receiving mail.
    Receive = 1,
    /// Making messages durable: the spool's writes, the broker's publishes
    /// and acknowledgements.
    Queue = 2,
    /// Routing, DNS, the SMTP client, retries and bounces.
    Deliver = 3,
}

impl Stage {
    /// The stages messages are charged for, in label order.
    pub const MESSAGE: [Stage; 3] = [Stage::Receive, Stage::Queue, Stage::Deliver];

    /// The label value in metrics and reports.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Runtime => "runtime",
            Stage::Receive => "receive",
            Stage::Queue => "queue",
            Stage::Deliver => "deliver",
        }
    }

    fn from_u8(v: u8) -> Stage {
        match v {
            1 => Stage::Receive,
            2 => Stage::Queue,
            3 => Stage::Deliver,
            _ => Stage::Runtime,
        }
    }
}

/// Wall time between two samples of the thread's CPU clock (at most).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// One thread's current stage and the CPU time it sampled per stage,
/// padded to a cache line of its own. Written by its thread only.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct StageCell {
    stage: AtomicU8,
    /// Nanoseconds charged per stage (indexed by `Stage as usize`).
    cpu: [AtomicU64; 4],
    /// The thread's CPU clock, in nanoseconds, up to which `cpu` covers
    /// its time (the last sample, or the installation).
    at: AtomicU64,
}

impl StageCell {
    /// The stage the thread is in now.
    pub fn get(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Relaxed))
    }

    fn set(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    /// The CPU time sampled so far, per stage (indexed by `Stage as
    /// usize`).
    pub fn sampled(&self) -> [Duration; 4] {
        [0, 1, 2, 3].map(|i| Duration::from_nanos(self.cpu[i].load(Ordering::Relaxed)))
    }

    /// The thread's CPU clock up to which [`StageCell::sampled`] covers its
    /// time: what it used since is not charged to any stage yet.
    pub fn sampled_at(&self) -> Duration {
        Duration::from_nanos(self.at.load(Ordering::Relaxed))
    }

    fn covered_to(&self, clock: Duration) {
        let ns = u64::try_from(clock.as_nanos()).unwrap_or(u64::MAX);
        self.at.store(ns, Ordering::Relaxed);
    }

    fn charge(&self, stage: Stage, d: Duration) {
        // One writer: a plain load and store, no locked instruction.
        let c = &self.cpu[stage as usize];
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        c.store(
            c.load(Ordering::Relaxed).saturating_add(ns),
            Ordering::Relaxed,
        );
    }
}

thread_local! {
    /// The calling thread's cell, once it has one (see [`install`]).
    static CELL: Cell<Option<&'static StageCell>> = const { Cell::new(None) };
    /// How many staged polls are under way on this thread (nesting).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// When the next sample is due (at the next stage switch after it).
    static DUE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The thread's CPU clock at the last sample.
    static LAST: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Gives the calling thread `cell` (leaked: a thread's cell lives as long
/// as the process, so the accountant may read it at any time).
pub fn install(cell: &'static StageCell) {
    CELL.with(|c| c.set(Some(cell)));
    let now = crate::cpu::thread_now();
    LAST.with(|l| l.set(now));
    cell.covered_to(now);
}

/// Charges the CPU used since the last sample to the current stage.
fn sample(cell: &StageCell) {
    let now = crate::cpu::thread_now();
    let before = LAST.with(|l| l.replace(now));
    cell.charge(cell.get(), now.saturating_sub(before));
    cell.covered_to(now);
}

/// A future whose polls count as `stage` on a thread with a cell; on other
/// threads it is the future itself.
pub struct Staged<F> {
    stage: Stage,
    inner: F,
}

/// Wraps `inner` so that its polls count as `stage`.
pub fn staged<F: Future>(stage: Stage, inner: F) -> Staged<F> {
    Staged { stage, inner }
}

impl<F: Future> Future for Staged<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self`, and `stage` is Copy.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let Some(cell) = CELL.with(Cell::get) else {
            return inner.poll(cx);
        };
        let depth = DEPTH.with(|d| d.replace(d.get() + 1));
        let before = cell.get();
        if depth == 0 && before != this.stage {
            let now = Instant::now();
            if DUE.with(Cell::get).is_none_or(|due| now >= due) {
                // The tick fell in the stretch of `before` that ends here.
                sample(cell);
                DUE.with(|d| d.set(Some(now + SAMPLE_EVERY)));
            }
        }
        cell.set(this.stage);
        let out = inner.poll(cx);
        DEPTH.with(|d| d.set(depth));
        if depth > 0 {
            // Nested in another stage's poll: that one goes on.
            cell.set(before);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn fresh() -> &'static StageCell {
        let cell: &'static StageCell = Box::leak(Box::default());
        install(cell);
        cell
    }

    #[test]
    fn a_staged_poll_sets_the_stage_and_leaves_it_for_the_runtime() {
        let cell = fresh();
        let mut seen = None;
        let mut fut = staged(
            Stage::Deliver,
            std::future::poll_fn(|_| {
                seen = Some(cell.get());
                Poll::Ready(())
            }),
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(()));
        assert_eq!(seen, Some(Stage::Deliver));
        // The kernel work that follows (the I/O just queued) is Deliver's.
        assert_eq!(cell.get(), Stage::Deliver);
    }

    #[test]
    fn nested_stages_restore_the_outer_one() {
        let cell = fresh();
        let mut inner_seen = None;
        let mut after_inner = None;
        let mut fut = staged(
            Stage::Receive,
            std::future::poll_fn(|cx| {
                let mut inner = staged(
                    Stage::Queue,
                    std::future::poll_fn(|_| {
                        inner_seen = Some(cell.get());
                        Poll::Ready(())
                    }),
                );
                let _ = Pin::new(&mut inner).poll(cx);
                after_inner = Some(cell.get());
                Poll::Ready(())
            }),
        );
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(&mut fut).poll(&mut cx);
        assert_eq!(inner_seen, Some(Stage::Queue));
        assert_eq!(after_inner, Some(Stage::Receive));
        assert_eq!(cell.get(), Stage::Receive);
    }

    /// Work done in a stage is charged to it by the samples taken at later
    /// stage switches.
    #[test]
    fn samples_charge_the_stage_that_ran() {
        let cell = fresh();
        let mut cx = Context::from_waker(Waker::noop());
        let burn = || {
            let mut x = 0u64;
            for i in 0..20_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        };
        for round in 0..400 {
            let stage = if round % 2 == 0 {
                Stage::Receive
            } else {
                Stage::Deliver
            };
            let mut fut = staged(
                stage,
                std::future::poll_fn(|_| {
                    if stage == Stage::Deliver {
                        burn();
                    }
                    Poll::Ready(())
                }),
            );
            let _ = Pin::new(&mut fut).poll(&mut cx);
        }
        let s = cell.sampled();
        let deliver = s[Stage::Deliver as usize];
        let receive = s[Stage::Receive as usize];
        assert!(deliver > Duration::ZERO, "{s:?}");
        // Time samples fall in deliver's stretches, where all the work is.
        assert!(deliver > receive * 4, "{s:?}");
    }
}
