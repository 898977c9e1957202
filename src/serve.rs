//! `verdant serve`: one thread per worker, each with its own monoio runtime
//! (io_uring, or epoll where io_uring is unavailable or
//! `MONOIO_FORCE_LEGACY_DRIVER=1`), its own SO_REUSEPORT listeners and its
//! own part of the spool.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context, anyhow};
use verdant_queue::{Spool, SpoolOptions};
use verdant_receiver::{ConnLimiter, Receiver, SessionConfig};

use crate::config::Settings;

/// Starts the workers and runs until one of them fails.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    // A failed spool write must come back as an error (and a 451), never
    // kill the process, even when it is a file-size limit (SIGXFSZ).
    // SAFETY: setting a signal disposition to SIG_IGN at start-up, before
    // any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let workers = settings.server.workers;
    let limiter = ConnLimiter::new(
        settings.smtp.max_connections,
        settings.smtp.max_connections_per_ip,
    );
    let session = SessionConfig {
        hostname: settings.server.hostname.clone(),
        max_message_size: settings.smtp.max_message_size,
        max_recipients: settings.smtp.max_recipients,
        max_errors: settings.smtp.max_errors,
        client_networks: settings.smtp.client_networks.clone(),
    };
    let cores = core_ids();
    // Each worker reports once: Ok when it listens, or its start-up error.
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
    // And once more when its thread ends, however it ends (panics included).
    let (exit_tx, exit_rx) = mpsc::channel::<usize>();
    for worker in 0..workers {
        let settings = settings.clone();
        let session = session.clone();
        let limiter = limiter.clone();
        let ready = ready_tx.clone();
        let exit = ExitNotice(exit_tx.clone(), worker);
        let core = if settings.server.pin_workers && !cores.is_empty() {
            Some(cores[worker % cores.len()])
        } else {
            None
        };
        std::thread::Builder::new()
            .name(format!("verdant-w{worker}"))
            .spawn(move || {
                let _exit = exit;
                if let Some(core) = core
                    && let Err(e) = monoio::utils::bind_to_cpu_set([core])
                {
                    eprintln!("verdant: worker {worker}: cannot pin to core {core}: {e:?}");
                }
                worker_main(worker, workers, settings, session, limiter, ready)
            })
            .context("spawning a worker thread")?;
    }
    drop(ready_tx);
    drop(exit_tx);
    for _ in 0..workers {
        let msg = ready_rx
            .recv()
            .map_err(|_| anyhow!("a worker exited during start-up"))??;
        eprintln!("verdant: {msg}");
    }
    eprintln!(
        "verdant: accepting mail on {} with {workers} worker(s), spool {}",
        settings
            .server
            .listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        settings.spool.dir.display()
    );
    // Workers run forever; one that stops (a bug, a panic) takes the
    // process down, so that a supervisor restarts it whole rather than it
    // limping on with fewer cores. Acknowledged mail is safe in the spool.
    let worker = exit_rx.recv().unwrap_or(0);
    Err(anyhow!("worker {worker} stopped unexpectedly"))
}

/// Tells the main thread that a worker thread ended, on drop, so also when
/// it unwinds from a panic.
struct ExitNotice(mpsc::Sender<usize>, usize);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

fn worker_main(
    worker: usize,
    workers: usize,
    settings: Settings,
    session: SessionConfig,
    limiter: Arc<ConnLimiter>,
    ready: mpsc::Sender<anyhow::Result<String>>,
) {
    // Only this thread submits to its ring, and it needs no interrupt to
    // run completions (it reaps them every loop turn): both flags cut kernel
    // work per operation (Linux 5.19+ and 6.0+). Older kernels refuse them;
    // then the plain ring, or epoll, is used.
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun().setup_single_issuer();
    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .uring_builder(urb)
        .enable_timer()
        .build()
        .or_else(|_| {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
        });
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(anyhow!(
                "worker {worker}: cannot build its runtime: {e}"
            )));
            return;
        }
    };
    let driver = match &rt {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    rt.block_on(async move {
        let opened = Spool::open(SpoolOptions {
            dir: settings.spool.dir.clone(),
            worker: worker as u16,
            workers: workers as u16,
            commit_window: settings.spool.commit_window,
            segment_size: settings.spool.segment_size,
        });
        let (spool, recovered) = match opened {
            Ok(x) => x,
            Err(e) => {
                let _ = ready.send(Err(anyhow!(
                    "worker {worker}: opening the spool in {}: {e}",
                    settings.spool.dir.display()
                )));
                return;
            }
        };
        let mut listeners = Vec::new();
        for addr in &settings.server.listen {
            match verdant_receiver::bind(*addr) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    let _ = ready.send(Err(anyhow!(
                        "worker {worker}: cannot listen on {addr}: {e}"
                    )));
                    return;
                }
            }
        }
        let rx = Rc::new(Receiver {
            config: Rc::new(session),
            command_timeout: settings.smtp.command_timeout,
            data_timeout: settings.smtp.data_timeout,
            queue: spool,
            limiter,
        });
        let _ = ready.send(Ok(format!(
            "worker {worker}: driver {driver}, {} message(s) recovered from the spool",
            recovered.len()
        )));
        drop(ready);
        // Until the delivery engine exists, recovered messages stay in the
        // spool; they are live and listed by `verdant queue list`.
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(monoio::spawn(verdant_receiver::serve(l, rx.clone())));
        }
        for t in tasks {
            t.await;
        }
    });
}

/// The cores this process may run on, for pinning.
fn core_ids() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}
