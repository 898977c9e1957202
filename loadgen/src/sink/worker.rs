//! One sink worker: a thread with its own monoio runtime (io_uring, or
//! epoll where unavailable or with `MONOIO_FORCE_LEGACY_DRIVER=1`), its own
//! `SO_REUSEPORT` listener, its own counts. Its sessions are the receiver's
//! own ([`serve_connection`]); only the queue and the recipient hook are
//! the sink's.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use verdant_receiver::policy::RecipientHook;
use verdant_receiver::server::serve_connection;
use verdant_receiver::{ConnLimiter, Receiver, SessionConfig};

use super::faults::{Faults, Injector};
use super::queue::{Refuser, SinkQueue, WorkerState};
use super::reporter::{Msg, REPORT_EVERY};

/// How often a worker looks at the stop flag. The flag is an atomic read
/// by this timer only, never by sessions.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How long a stopping worker waits for its sessions to end.
const DRAIN: Duration = Duration::from_secs(5);

/// Everything a worker needs, moved into its thread.
pub(crate) struct Setup {
    pub(crate) index: usize,
    pub(crate) addr: SocketAddr,
    pub(crate) session: SessionConfig,
    pub(crate) command_timeout: Duration,
    pub(crate) data_timeout: Duration,
    pub(crate) limiter: Arc<ConnLimiter>,
    pub(crate) keep: Option<PathBuf>,
    pub(crate) faults: Faults,
    pub(crate) seed: u64,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) reports: mpsc::Sender<Msg>,
}

/// A started worker: the address it listens on and its I/O driver; or why
/// it could not start.
pub(crate) type Ready = Result<(SocketAddr, &'static str), String>;

/// Starts the worker's thread; it reports on `ready` once it accepts.
pub(crate) fn spawn(setup: Setup, ready: mpsc::Sender<Ready>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("verdant-sink-w{}", setup.index))
        .spawn(move || {
            let _exit = ExitNotice(setup.reports.clone(), setup.index);
            let mut rt = match verdant_net::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(format!(
                        "worker {}: cannot build its runtime: {e}",
                        setup.index
                    )));
                    return;
                }
            };
            let driver = verdant_net::driver_name(&rt);
            let drained = rt.block_on(run(setup, driver, ready));
            if !drained {
                // Sessions still in flight: dropping the runtime under them
                // could close their sockets outside it. Leak it instead;
                // this only happens when the sink is being shut down anyway.
                std::mem::forget(rt);
            }
        })
        .map(drop)
}

/// Serves until the stop flag is set, then ends its sessions and makes its
/// final report. Returns whether every session ended.
async fn run(s: Setup, driver: &'static str, ready: mpsc::Sender<Ready>) -> bool {
    let listener = match verdant_receiver::bind(s.addr).and_then(|l| {
        let local = l.local_addr()?;
        Ok((l, local))
    }) {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "worker {}: cannot listen on {}: {e}",
                s.index, s.addr
            )));
            return true;
        }
    };
    let (listener, local) = listener;
    let state = Rc::new(WorkerState::new(Injector::new(s.faults.clone(), s.seed)));
    // No hook at all when no recipient is ever refused: sessions then skip
    // the call, exactly as in `verdant serve`.
    let hook = s
        .faults
        .refuses_recipients()
        .then(|| Rc::new(Refuser(state.clone())) as Rc<dyn RecipientHook>);
    let rx = Rc::new(Receiver {
        config: Rc::new(s.session),
        command_timeout: s.command_timeout,
        data_timeout: s.data_timeout,
        queue: SinkQueue::new(s.index as u16, state.clone(), s.keep),
        limiter: s.limiter,
    });
    let conns = Rc::new(RefCell::new(HashSet::new()));
    let _ = ready.send(Ok((local, driver)));
    drop(ready);

    monoio::select! {
        _ = accept(listener, rx, hook, state.clone(), conns.clone()) => {}
        _ = tick(&state, &s.stop, &s.reports) => {}
    }
    // The listener is closed now. Shut the open connections' sockets: each
    // session's pending read or write fails, so its task ends and drops its
    // connection on this runtime. Nothing is accepted from here on.
    state.stopping.set(true);
    for &fd in conns.borrow().iter() {
        // SAFETY: `fd` belongs to a session that has not ended (sessions
        // leave the set as they end, before their descriptor can be reused),
        // and shutdown(2) does not close it.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    let deadline = Instant::now() + DRAIN;
    while !conns.borrow().is_empty() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = state.tally.borrow_mut().take();
    let _ = s.reports.send(Msg::Tally(last));
    conns.borrow().is_empty()
}

/// Accepts connections and runs the receiver's session loop on each.
async fn accept(
    listener: TcpListener,
    rx: Rc<Receiver<SinkQueue>>,
    hook: Option<Rc<dyn RecipientHook>>,
    state: Rc<WorkerState>,
    conns: Rc<RefCell<HashSet<RawFd>>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                state.tally.borrow_mut().connections += 1;
                let fd = stream.as_raw_fd();
                conns.borrow_mut().insert(fd);
                let (rx, hook, conns) = (rx.clone(), hook.clone(), conns.clone());
                monoio::spawn(async move {
                    serve_connection(stream, peer, rx, hook).await;
                    // The stream was dropped (closed) just now; no other
                    // task ran in between, so `fd` cannot be reused yet.
                    conns.borrow_mut().remove(&fd);
                });
            }
            Err(e) => {
                // As in the receiver: back off when out of descriptors or
                // memory instead of spinning; other errors are one client's.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
                ) {
                    eprintln!("verdant sink: accept failed: {e}; pausing 100 ms");
                    monoio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Hands the worker's counts to the reporter every [`REPORT_EVERY`];
/// returns when the sink stops (or the reporter is gone).
async fn tick(state: &WorkerState, stop: &AtomicBool, reports: &mpsc::Sender<Msg>) {
    let mut last = Instant::now();
    loop {
        monoio::time::sleep(STOP_POLL).await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if last.elapsed() >= REPORT_EVERY {
            last = Instant::now();
            let t = state.tally.borrow_mut().take();
            if reports.send(Msg::Tally(t)).is_err() {
                return;
            }
        }
    }
}

/// Tells the reporter that a worker thread ended, on drop, so also when it
/// unwinds from a panic.
struct ExitNotice(mpsc::Sender<Msg>, usize);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::Exited(self.1));
    }
}
