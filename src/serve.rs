//! `verdant serve`: one thread per worker, each with its own monoio runtime
//! (io_uring, or epoll where io_uring is unavailable or
//! `MONOIO_FORCE_LEGACY_DRIVER=1`), its own SO_REUSEPORT listeners and its
//! own part of the spool.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context, anyhow};
use verdant_amqp::service::{Handle, Incoming, ServiceConfig};
use verdant_amqp::worker::{self as amqp_worker, AmqpQueue, Batching, BrokerSource, id_worker};
use verdant_amqp::{QueueKind, Topology};
use verdant_engine::conn::Timeouts;
use verdant_engine::dns::{DnsConfig, DnsHandle, DnsService};
use verdant_engine::engine::{Engine, EngineConfig};
use verdant_engine::limits::{DestLimits, Limits};
use verdant_engine::log::DeliveryLog;
use verdant_engine::retry::RetryPolicy;
use verdant_engine::route::Routes;
use verdant_queue::{Delivery, Queue, Source, Spool, SpoolOptions};
use verdant_receiver::{ConnLimiter, Receiver, SessionConfig};

use crate::config::{AmqpQueueType, QueueBackend, Settings};
use crate::control;

/// What a process runs: `verdant serve` both parts, `verdant receiver`
/// and `verdant engine` one each (with the broker between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// SMTP in and delivery out.
    Both,
    /// SMTP in, publishing to the broker.
    Receiver,
    /// Consuming from the broker and delivering.
    Engine,
}

/// Workers of a process on the broker at most: the queue ids' worker field
/// holds the node number times this plus the worker.
const MAX_BROKER_WORKERS: usize = 64;

/// The broker side of a worker.
#[derive(Clone)]
struct BrokerLink {
    handle: Handle,
    topology: Topology,
    batching: Batching,
    node: u16,
}

/// The broker's queue layout from the settings.
pub fn topology(settings: &Settings) -> Topology {
    Topology {
        prefix: settings.amqp.prefix.clone(),
        tiers: settings.amqp.tiers.clone(),
        kind: match settings.amqp.queue_type {
            AmqpQueueType::Classic => QueueKind::Classic,
            AmqpQueueType::Quorum => QueueKind::Quorum,
        },
    }
}

/// This process's node number (0..1024) for its queue ids: configured, or
/// drawn at start-up (two processes drawing the same one can only collide
/// on ids made in the same microsecond by the same worker number).
fn node_id(settings: &Settings) -> u16 {
    settings.amqp.node_id.unwrap_or_else(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(verdant_queue::now_micros());
        (h.finish() % 1024) as u16
    })
}

/// Starts the broker service thread and waits a little for its first
/// connection (it keeps trying in the background either way).
fn start_broker(
    settings: &Settings,
    consumers: usize,
) -> anyhow::Result<(BrokerLink, Vec<flume::Receiver<Incoming>>)> {
    let a = &settings.amqp;
    let topology = topology(settings);
    let (handle, incoming) = verdant_amqp::service::start(ServiceConfig {
        url: a.url.clone(),
        topology: topology.clone(),
        prefetch: a.prefetch,
        confirm_timeout: a.confirm_timeout,
        round_max: a.batch_max,
        consumers,
    })
    .context("starting the broker thread")?;
    let deadline = std::time::Instant::now() + a.confirm_timeout;
    while !handle.available() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if !handle.available() {
        eprintln!(
            "verdant: the broker is not reachable yet; starting anyway (new mail gets 451 until it is)"
        );
    }
    let link = BrokerLink {
        handle,
        topology,
        batching: Batching {
            max: a.batch_max,
            window: a.batch_window,
        },
        node: node_id(settings),
    };
    Ok((link, incoming))
}

/// Starts the workers and runs until one of them fails.
pub fn run(mut settings: Settings, role: Role) -> anyhow::Result<()> {
    // A failed spool write must come back as an error (and a 451), never
    // kill the process, even when it is a file-size limit (SIGXFSZ).
    // SAFETY: setting a signal disposition to SIG_IGN at start-up, before
    // any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let workers = settings.server.workers;
    start_metrics(&settings, role)?;
    let broker_mode = role != Role::Both || settings.queue.backend == QueueBackend::Amqp;
    if role == Role::Engine {
        settings.server.listen.clear();
    }
    if role == Role::Receiver {
        settings.delivery.enabled = false;
    }
    if broker_mode && workers > MAX_BROKER_WORKERS {
        return Err(anyhow!(
            "at most {MAX_BROKER_WORKERS} workers per process on the broker, got {workers}"
        ));
    }
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
    let delivery = if settings.delivery.enabled {
        Some(delivery_setup(&settings)?)
    } else {
        None
    };
    // One command channel per worker, for the control socket.
    let (control_tx, control_rx): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| flume::bounded::<control::Request>(16))
        .unzip();
    let mut control_rx = control_rx.into_iter();
    let (broker, incoming) = if broker_mode {
        let consumers = if settings.delivery.enabled {
            workers
        } else {
            0
        };
        let (link, incoming) = start_broker(&settings, consumers)?;
        (Some(link), incoming)
    } else {
        (None, Vec::new())
    };
    let mut incoming = incoming.into_iter();
    let cores = core_ids();
    // Each worker reports once: Ok when it listens, or its start-up error.
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
    // The main thread waits for a worker to end (however it ends, panics
    // included) or for a signal to stop.
    let (exit_tx, exit_rx) = mpsc::channel::<MainEvent>();
    // Dropping the sender tells every listener to close (graceful stop).
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    // Installed before anything is announced, so that a SIGTERM right
    // after start-up is a graceful stop too, not the default kill.
    let signals = exit_tx.clone();
    let mut sigs = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .context("installing the signal handlers")?;
    std::thread::Builder::new()
        .name("verdant-signals".into())
        .spawn(move || {
            for sig in sigs.forever() {
                if signals.send(MainEvent::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    for worker in 0..workers {
        let settings = settings.clone();
        let session = session.clone();
        let limiter = limiter.clone();
        let delivery = delivery.clone();
        let control = control_rx.next().expect("one per worker");
        let broker = broker.clone();
        let incoming = incoming.next();
        let ready = ready_tx.clone();
        let exit = ExitNotice(exit_tx.clone(), worker);
        let drained = exit_tx.clone();
        let stop = stop_rx.clone();
        let core = if settings.server.pin_workers && !cores.is_empty() {
            Some(cores[worker % cores.len()])
        } else {
            None
        };
        std::thread::Builder::new()
            .name(format!("verdant-w{worker}"))
            .spawn(move || {
                let _exit = exit;
                verdant_metrics::account::register_worker(worker);
                if let Some(core) = core
                    && let Err(e) = monoio::utils::bind_to_cpu_set([core])
                {
                    eprintln!("verdant: worker {worker}: cannot pin to core {core}: {e:?}");
                }
                worker_main(Worker {
                    worker,
                    workers,
                    settings,
                    session,
                    limiter,
                    delivery,
                    broker,
                    incoming,
                    control,
                    stop,
                    drained,
                    ready,
                })
            })
            .context("spawning a worker thread")?;
    }
    drop(ready_tx);
    drop(stop_rx);
    for _ in 0..workers {
        let msg = ready_rx
            .recv()
            .map_err(|_| anyhow!("a worker exited during start-up"))??;
        eprintln!("verdant: {msg}");
    }
    let listening = settings
        .server
        .listen
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(b) = &broker {
        // Deferred mail waits in the broker's delay queues, not in a
        // worker: there is nothing for the control socket to steer.
        drop(control_tx);
        let queues = b.topology.delivery_queue();
        match role {
            Role::Engine => eprintln!(
                "verdant: delivering from the broker queue {queues} with {workers} worker(s)"
            ),
            _ => eprintln!(
                "verdant: accepting mail on {listening} with {workers} worker(s), queue {queues} on the broker{}",
                if settings.delivery.enabled {
                    ", delivering from it"
                } else {
                    ""
                }
            ),
        }
    } else {
        // The spool directory exists now (the workers opened it).
        control::serve(&settings.spool.dir, control_tx)?;
        eprintln!(
            "verdant: accepting mail on {listening} with {workers} worker(s), spool {}",
            settings.spool.dir.display()
        );
    }
    drop(exit_tx);
    // Workers run until told to stop; one that stops by itself (a bug, a
    // panic) takes the process down, so that a supervisor restarts it whole
    // rather than it limping on with fewer cores. Acknowledged mail is safe
    // in the spool either way.
    let signal = match exit_rx.recv() {
        Ok(MainEvent::Signal(sig)) => sig,
        Ok(MainEvent::Drained(worker)) => {
            return Err(anyhow!("worker {worker} stopped delivering unasked"));
        }
        Ok(MainEvent::WorkerExit(worker)) => {
            return Err(anyhow!("worker {worker} stopped unexpectedly"));
        }
        Err(_) => return Err(anyhow!("every worker stopped")),
    };
    // Graceful stop: close the listeners (new clients are refused), let the
    // open sessions finish (each 250 still waits for its durable write) and
    // the engines finish the attempts under way (no new one starts) for up
    // to SHUTDOWN_GRACE, then send the broker the last acknowledgements and
    // exit. A second signal exits at once. Attempts cut by the exit are
    // made again after the restart (at least once, as after a crash).
    eprintln!(
        "verdant: stopping on signal {signal}: no new connections; {} session(s) open, waiting up to {}s",
        limiter.open(),
        SHUTDOWN_GRACE.as_secs()
    );
    drop(stop_tx);
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    let mut drained = 0;
    while (limiter.open() > 0 || drained < workers) && std::time::Instant::now() < deadline {
        match exit_rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(MainEvent::Signal(_)) => break,
            Ok(MainEvent::WorkerExit(worker)) => {
                return Err(anyhow!("worker {worker} stopped while stopping"));
            }
            Ok(MainEvent::Drained(_)) => drained += 1,
            Err(_) => {}
        }
    }
    if let Some(b) = &broker {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        b.handle.close(left.max(std::time::Duration::from_secs(1)));
    }
    if let Some(accountant) = verdant_metrics::account::global() {
        // The last figures, into the footprint ledger.
        accountant.finish();
    }
    eprintln!(
        "verdant: stopped ({} session(s) cut, {} worker(s) with deliveries cut)",
        limiter.open(),
        workers - drained
    );
    Ok(())
}

/// A worker's once-a-second metrics work: its counts by sender domain to
/// the footprint ledger, its engine's queue gauges; worker 0 also reports
/// the process's open sessions.
async fn tick(worker: usize, engine: Option<Rc<Engine>>, limiter: Arc<ConnLimiter>) {
    let queue = verdant_metrics::ops::QueueGauges::new(worker);
    loop {
        monoio::time::sleep(std::time::Duration::from_secs(1)).await;
        verdant_metrics::domains::flush();
        if let Some(engine) = &engine {
            let (inflight, waiting) = engine.load();
            let age = engine.oldest().map_or(0.0, |t| {
                verdant_queue::now_micros().saturating_sub(t) as f64 / 1e6
            });
            queue.set(inflight, waiting, age);
        }
        if worker == 0 {
            verdant_metrics::ops::sessions_open(limiter.open());
        }
    }
}

/// Starts the CPU accountant and, if configured, the Prometheus endpoint.
/// A busy metrics port is reported, not fatal: mail matters more.
fn start_metrics(settings: &Settings, role: Role) -> anyhow::Result<()> {
    if !settings.metrics.enabled {
        return Ok(());
    }
    let accountant = verdant_metrics::account::start(Default::default())
        .context("starting the CPU accountant")?;
    if let Some(addr) = settings.metrics.listen {
        match verdant_metrics::export::install(addr) {
            Ok(()) => eprintln!("verdant: metrics on http://{addr}/metrics"),
            Err(e) => eprintln!("verdant: no metrics endpoint: {e}"),
        }
    }
    accountant.add_reporter(verdant_metrics::export::cpu_reporter());
    let mut model = settings.footprint.model(verdant_metrics::cpu::host_cpus());
    let on_broker = role != Role::Both || settings.queue.backend == QueueBackend::Amqp;
    if settings.footprint.count_broker && on_broker {
        // RabbitMQ runs in the Erlang VM, beam.smp.
        accountant.count_process("beam.smp");
        model.broker_counted = true;
    }
    // The functional unit: a message accepted, or, where none are, one
    // delivered.
    let unit = match role {
        Role::Engine => verdant_metrics::footprint::Unit::Delivered,
        Role::Both | Role::Receiver => verdant_metrics::footprint::Unit::Received,
    };
    let received = unit == verdant_metrics::footprint::Unit::Received;
    let ledger = settings.footprint.ledger.as_deref().and_then(|path| {
        match verdant_metrics::ledger::Ledger::open(path, received) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("verdant: no footprint ledger ({}): {e}", path.display());
                None
            }
        }
    });
    eprintln!(
        "verdant: footprint by {}",
        model.note(default_method(&model))
    );
    accountant.add_reporter(verdant_metrics::footprint::reporter(model, unit, ledger));
    Ok(())
}

/// The method the footprint will use: RAPL where readable, else CCF.
fn default_method(model: &verdant_metrics::energy::Model) -> verdant_metrics::energy::Method {
    match verdant_metrics::energy::Rapl::open() {
        Some(_) => verdant_metrics::energy::Method::Rapl,
        None => verdant_metrics::energy::Method::Ccf(model.cpu),
    }
}

/// How long a graceful stop waits for open sessions.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// What the main thread waits for.
enum MainEvent {
    /// A worker thread ended.
    WorkerExit(usize),
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// A worker's engine has no attempt under way any more (graceful stop).
    Drained(usize),
}

/// Tells the main thread that a worker thread ended, on drop, so also when
/// it unwinds from a panic.
struct ExitNotice(mpsc::Sender<MainEvent>, usize);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(MainEvent::WorkerExit(self.1));
    }
}

/// What a worker thread starts with.
struct Worker {
    worker: usize,
    workers: usize,
    settings: Settings,
    session: SessionConfig,
    limiter: Arc<ConnLimiter>,
    delivery: Option<(EngineConfig, Option<DnsHandle>)>,
    /// Set when the queue is the broker.
    broker: Option<BrokerLink>,
    /// This worker's consumer, when it delivers from the broker.
    incoming: Option<flume::Receiver<Incoming>>,
    control: flume::Receiver<control::Request>,
    stop: flume::Receiver<()>,
    /// Told when the engine has drained, after the stop.
    drained: mpsc::Sender<MainEvent>,
    ready: mpsc::Sender<anyhow::Result<String>>,
}

fn worker_main(w: Worker) {
    let Worker {
        worker,
        workers,
        settings,
        session,
        limiter,
        delivery,
        broker,
        incoming,
        control,
        stop,
        drained,
        ready,
    } = w;
    let rt = verdant_net::runtime();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(anyhow!(
                "worker {worker}: cannot build its runtime: {e}"
            )));
            return;
        }
    };
    let driver = verdant_net::driver_name(&rt);
    rt.block_on(async move {
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
        let log = match &delivery {
            Some(_) => match DeliveryLog::open(settings.delivery.log.as_deref()) {
                Ok(log) => Some(log),
                Err(e) => {
                    let _ = ready.send(Err(anyhow!(
                        "worker {worker}: cannot open the delivery log: {e}"
                    )));
                    return;
                }
            },
            None => None,
        };
        // The queue: this worker's part of the spool, or the broker.
        // On the broker, the worker's receiver and engine share its ids.
        let broker_ids = amqp_worker::ids(
            broker
                .as_ref()
                .map_or(0, |link| id_worker(link.node, worker as u16)),
        );
        let (spool, source, recovered, queued): (Option<Spool>, Option<Rc<dyn Source>>, _, _) =
            match &broker {
                None => {
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
                    let source: Option<Rc<dyn Source>> = delivery.as_ref().map(|_| {
                        spool.attach_consumer();
                        Rc::new(spool.clone()) as Rc<dyn Source>
                    });
                    let note = format!("{} message(s) recovered from the spool", recovered.len());
                    (Some(spool), source, recovered, note)
                }
                Some(link) => {
                    let source: Option<Rc<dyn Source>> = incoming.map(|rx| {
                        Rc::new(BrokerSource::new(
                            link.handle.clone(),
                            rx,
                            link.topology.clone(),
                            broker_ids.clone(),
                        )) as Rc<dyn Source>
                    });
                    let note = format!("queue ids {:04X}", id_worker(link.node, worker as u16));
                    (None, source, Vec::new(), note)
                }
            };
        let engine = match (delivery, source, log) {
            (Some((cfg, dns)), Some(source), Some(log)) => {
                Some(Engine::new(Rc::new(cfg), source, dns, log))
            }
            _ => None,
        };
        if settings.metrics.enabled {
            monoio::spawn(tick(worker, engine.clone(), limiter.clone()));
        }
        if let Some(engine) = &engine {
            let recovered = recovered.into_iter().map(Delivery::recovered).collect();
            monoio::spawn(verdant_metrics::staged(
                verdant_metrics::Stage::Deliver,
                engine.clone().run(recovered),
            ));
            let engine = engine.clone();
            monoio::spawn(async move {
                while let Ok(req) = control.recv_async().await {
                    let result = engine.control(&req.cmd).await;
                    let _ = req.reply.send(result);
                }
            });
        } else {
            monoio::spawn(async move {
                // Receive-only: nothing is deferred, nothing to steer.
                while let Ok(req) = control.recv_async().await {
                    let _ = req.reply.send(Default::default());
                }
            });
        }
        let _ = ready.send(Ok(format!(
            "worker {worker}: driver {driver}, {queued}, delivery {}",
            if engine.is_some() { "on" } else { "off" }
        )));
        drop(ready);
        let config = Rc::new(session);
        let stopped = stop.clone();
        match (spool, broker) {
            (Some(spool), _) => {
                accept(listeners, receiver(&settings, config, spool, limiter), stop).await
            }
            (None, Some(link)) => {
                let queue = AmqpQueue::new(
                    link.handle.clone(),
                    &link.topology,
                    link.batching,
                    broker_ids,
                );
                accept(listeners, receiver(&settings, config, queue, limiter), stop).await
            }
            (None, None) => unreachable!("a worker has a spool or a broker"),
        }
        // The listeners closed for a graceful stop: sessions go on, and the
        // engine finishes what it has under way, until the main thread
        // ends the process.
        // (An engine-only worker has no listener to wait for.)
        let _ = stopped.recv_async().await;
        if let Some(engine) = &engine {
            engine.drain().await;
        }
        // The last counts by sender domain, before the final report.
        verdant_metrics::domains::flush();
        let _ = drained.send(MainEvent::Drained(worker));
        std::future::pending::<()>().await;
    });
}

fn receiver<Q: Queue>(
    settings: &Settings,
    config: Rc<SessionConfig>,
    queue: Q,
    limiter: Arc<ConnLimiter>,
) -> Rc<Receiver<Q>> {
    Rc::new(Receiver {
        config,
        command_timeout: settings.smtp.command_timeout,
        data_timeout: settings.smtp.data_timeout,
        queue,
        limiter,
    })
}

/// Serves SMTP on every listener until the stop signal, then returns.
async fn accept<Q: Queue + 'static>(
    listeners: Vec<monoio::net::TcpListener>,
    rx: Rc<Receiver<Q>>,
    stop: flume::Receiver<()>,
) {
    let mut tasks = Vec::new();
    for l in listeners {
        let stop = stop.clone();
        let stopped = async move {
            let _ = stop.recv_async().await;
        };
        tasks.push(monoio::spawn(verdant_receiver::serve(
            l,
            rx.clone(),
            stopped,
        )));
    }
    for t in tasks {
        t.await;
    }
}

/// The delivery engine's settings for every worker, and the DNS service
/// (one thread for the process) they share.
fn delivery_setup(settings: &Settings) -> anyhow::Result<(EngineConfig, Option<DnsHandle>)> {
    let d = &settings.delivery;
    let mut nameservers = d.nameservers.clone();
    if nameservers.is_empty() {
        nameservers = system_nameservers();
    }
    let dns = if nameservers.is_empty() {
        eprintln!(
            "verdant: no DNS server configured or in /etc/resolv.conf: only static routes work"
        );
        None
    } else {
        let mut cfg = DnsConfig::new(nameservers);
        cfg.mx_port = d.mx_port;
        Some(DnsService::start(cfg).context("starting the DNS service")?)
    };
    let workers = settings.server.workers.max(1);
    let cfg = EngineConfig {
        hostname: settings.server.hostname.clone(),
        routes: Routes::new(d.routes.iter().map(|(dom, a)| (dom.clone(), vec![*a]))),
        timeouts: Timeouts {
            connect: d.connect_timeout,
            command: d.command_timeout,
            data: d.data_timeout,
        },
        // Limits are for the whole server; each worker takes its share.
        limits: Limits {
            default: DestLimits {
                max_connections: d.max_connections_per_destination.div_ceil(workers),
                max_messages_per_connection: d.max_messages_per_connection,
                rate: None,
            },
            per_domain: d
                .destinations
                .iter()
                .map(|(domain, s)| {
                    let limits = DestLimits {
                        max_connections: s.max_connections.div_ceil(workers),
                        max_messages_per_connection: s.max_messages_per_connection,
                        rate: s
                            .max_messages_per_second
                            .map(|r| f64::from(r) / workers as f64),
                    };
                    (domain.clone(), limits)
                })
                .collect(),
        },
        idle_timeout: d.idle_timeout,
        retry: RetryPolicy {
            initial: d.retry_initial,
            max: d.retry_max,
            give_up: d.give_up,
        },
    };
    Ok((cfg, dns))
}

/// The `nameserver` lines of /etc/resolv.conf, port 53.
fn system_nameservers() -> Vec<std::net::SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .collect()
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
