//! Destination queues and their connections.
//!
//! Jobs (a message's recipients for one destination) wait in their
//! destination's queue on the worker. Connection tasks take jobs one after
//! another over a kept-open connection; a destination has at most
//! `max_connections` of them on this worker. A task with nothing to do
//! waits `idle_timeout` for more work, then says QUIT.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use verdant_queue::QueueId;

use crate::conn::{Conn, ConnError};
use crate::engine::Engine;
use crate::limits::{DestLimits, Pacer};
use crate::smtp::Reply;

/// What connections are pooled by: the static route taken, or the domain
/// whose MX hosts are used.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DestKey {
    /// A static route: these addresses, in order.
    Route(Vec<SocketAddr>),
    /// The MX hosts of this domain.
    Mx(String),
}

impl DestKey {
    fn name(&self) -> String {
        match self {
            DestKey::Route(a) => a.first().map_or_else(String::new, |a| format!("[{a}]")),
            DestKey::Mx(d) => d.clone(),
        }
    }
}

/// A message's recipients for one destination.
#[derive(Debug)]
pub struct Job {
    /// The message.
    pub id: QueueId,
    /// Indices of its recipients.
    pub rcpts: Vec<u32>,
    /// Already sent again once after a kept connection broke.
    pub retried: bool,
}

/// Addresses to try, in order, each with its MX host name if from DNS.
pub type Targets = Rc<Vec<(Option<String>, SocketAddr)>>;

struct Dest {
    queue: VecDeque<Job>,
    conns: usize,
    idle: HashMap<u64, Waker>,
    targets: Targets,
    limits: DestLimits,
    pacer: Pacer,
}

/// All destinations of one worker.
#[derive(Default)]
pub struct Dests {
    map: RefCell<HashMap<DestKey, Dest>>,
    next_task: Cell<u64>,
}

impl Dests {
    /// Queues a job, waking an idle connection of its destination or
    /// starting a new one if the limit allows.
    pub(crate) fn push(
        &self,
        engine: &Rc<Engine>,
        key: DestKey,
        targets: Vec<(Option<String>, SocketAddr)>,
        job: Job,
    ) {
        let spawn = {
            let mut map = self.map.borrow_mut();
            let d = map.entry(key.clone()).or_insert_with(|| Dest {
                queue: VecDeque::new(),
                conns: 0,
                idle: HashMap::new(),
                targets: Targets::default(),
                // A static route may carry several domains: it gets the
                // default limits; an MX destination those of its domain.
                limits: match &key {
                    DestKey::Mx(domain) => engine.cfg.limits.for_domain(domain),
                    DestKey::Route(_) => engine.cfg.limits.default,
                },
                pacer: Pacer::default(),
            });
            if d.targets.as_slice() != targets.as_slice() {
                d.targets = Rc::new(targets);
            }
            d.queue.push_back(job);
            if let Some(&task) = d.idle.keys().next() {
                let w = d.idle.remove(&task).expect("present");
                w.wake();
                false
            } else if d.conns < d.limits.max_connections.max(1) {
                d.conns += 1;
                true
            } else {
                false
            }
        };
        if spawn {
            let task = self.next_task.get();
            self.next_task.set(task + 1);
            monoio::spawn(verdant_metrics::staged(
                verdant_metrics::Stage::Deliver,
                connection(engine.clone(), key, task),
            ));
        }
    }

    /// Waits for the next job of `key`, or `None` after the idle timeout.
    async fn next_job(&self, key: &DestKey, task: u64, idle: std::time::Duration) -> Option<Job> {
        let mut deadline = std::pin::pin!(monoio::time::sleep(idle));
        poll_fn(|cx| {
            let mut map = self.map.borrow_mut();
            let d = map.get_mut(key).expect("destination of a running task");
            if let Some(job) = d.queue.pop_front() {
                d.idle.remove(&task);
                return Poll::Ready(Some(job));
            }
            if deadline.as_mut().poll(cx).is_ready() {
                d.idle.remove(&task);
                return Poll::Ready(None);
            }
            d.idle.insert(task, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn targets(&self, key: &DestKey) -> Targets {
        self.map
            .borrow()
            .get(key)
            .map(|d| d.targets.clone())
            .unwrap_or_default()
    }

    /// Takes every job waiting for `key`.
    fn drain(&self, key: &DestKey) -> Vec<Job> {
        let mut map = self.map.borrow_mut();
        map.get_mut(key)
            .map(|d| d.queue.drain(..).collect())
            .unwrap_or_default()
    }

    /// Puts a job back at the head of its queue (for the calling task).
    fn retry_first(&self, key: &DestKey, job: Job) {
        if let Some(d) = self.map.borrow_mut().get_mut(key) {
            d.queue.push_front(job);
        }
    }

    fn limits(&self, key: &DestKey) -> Option<DestLimits> {
        self.map.borrow().get(key).map(|d| d.limits)
    }

    /// How long to wait before sending the next message to `key`, to keep
    /// to its rate.
    fn pace(&self, key: &DestKey) -> Duration {
        let mut map = self.map.borrow_mut();
        match map.get_mut(key) {
            Some(Dest {
                limits: DestLimits {
                    rate: Some(rate), ..
                },
                pacer,
                ..
            }) => pacer.reserve(*rate, Instant::now()),
            _ => Duration::ZERO,
        }
    }

    /// A connection task ended. Should jobs remain (queued after it gave
    /// up waiting), another task takes over.
    fn ended(&self, engine: &Rc<Engine>, key: &DestKey) {
        let respawn = {
            let mut map = self.map.borrow_mut();
            let Some(d) = map.get_mut(key) else { return };
            d.conns -= 1;
            if !d.queue.is_empty() && d.idle.is_empty() {
                d.conns += 1;
                true
            } else {
                if d.conns == 0 && d.queue.is_empty() {
                    map.remove(key);
                }
                false
            }
        };
        if respawn {
            let task = self.next_task.get();
            self.next_task.set(task + 1);
            monoio::spawn(verdant_metrics::staged(
                verdant_metrics::Stage::Deliver,
                connection(engine.clone(), key.clone(), task),
            ));
        }
    }
}

/// A connection task: opens a connection when it has a job and keeps it
/// for the next ones.
async fn connection(engine: Rc<Engine>, key: DestKey, task: u64) {
    let cfg = engine.cfg.clone();
    let name = key.name();
    let mut open: Option<(Conn, Option<String>)> = None;
    while let Some(job) = engine.dests.next_job(&key, task, cfg.idle_timeout).await {
        let Some((env, body)) = engine.job_content(job.id) else {
            continue;
        };
        let wait = engine.dests.pace(&key);
        if !wait.is_zero() {
            monoio::time::sleep(wait).await;
        }
        let started = Instant::now();
        if open.is_none() {
            match connect_any(&engine.dests.targets(&key), &cfg.hostname, cfg.timeouts).await {
                Ok(c) => open = Some(c),
                Err((reply, ip)) => {
                    // The destination is unreachable now: defer every job
                    // waiting for it too, rather than probing it again for
                    // each (a connect timeout apiece).
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    for j in std::iter::once(job).chain(engine.dests.drain(&key)) {
                        fail(&engine, &j, &name, None, ip, ms, &reply);
                    }
                    continue;
                }
            }
        }
        let (conn, mx) = open.as_mut().expect("just opened");
        let peer = conn.peer;
        let mx_name = mx.clone();
        if let Some(refusal) = conn.capabilities().refusal(&env, body.len()) {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            fail(
                &engine,
                &job,
                &name,
                mx_name.as_deref(),
                Some(peer),
                ms,
                &refusal,
            );
            continue;
        }
        let rcpts: Vec<&str> = job
            .rcpts
            .iter()
            .map(|&i| env.recipients[i as usize].as_str())
            .collect();
        let reused = conn.transactions > 0;
        let result = conn.transaction(&env, &rcpts, &body).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            // A kept connection the server closed while it was idle: not
            // this message's fault; send it again on a fresh connection.
            Err(ConnError::Io(_)) if reused && !job.retried => {
                open = None;
                engine.dests.retry_first(
                    &key,
                    Job {
                        retried: true,
                        ..job
                    },
                );
            }
            Ok(tx) => {
                engine.report(
                    job.id,
                    &job.rcpts,
                    &name,
                    mx_name.as_deref(),
                    Some(peer),
                    ms,
                    &tx.reply,
                    |k| tx.recipients[k].clone(),
                );
                let max = engine
                    .dests
                    .limits(&key)
                    .map_or(usize::MAX, |l| l.max_messages_per_connection);
                if conn.is_closing() {
                    open = None;
                } else if conn.transactions >= max {
                    let (c, _) = open.take().expect("open");
                    c.quit().await;
                }
            }
            Err(e) => {
                fail(
                    &engine,
                    &job,
                    &name,
                    mx_name.as_deref(),
                    Some(peer),
                    ms,
                    &e.reply(),
                );
                open = None;
            }
        }
    }
    if let Some((c, _)) = open {
        c.quit().await;
    }
    engine.dests.ended(&engine, &key);
}

/// Reports the same failure for every recipient of a job.
fn fail(
    engine: &Rc<Engine>,
    job: &Job,
    dest: &str,
    mx: Option<&str>,
    ip: Option<SocketAddr>,
    ms: f64,
    reply: &Reply,
) {
    engine.report(job.id, &job.rcpts, dest, mx, ip, ms, reply, |_| {
        Some(reply.clone())
    });
}

/// Connects to the first target that greets us; the reply to report if
/// none does (a local 4xx: the recipients are deferred).
async fn connect_any(
    targets: &Targets,
    helo: &str,
    timeouts: crate::conn::Timeouts,
) -> Result<(Conn, Option<String>), (Reply, Option<SocketAddr>)> {
    let mut last: Option<(ConnError, SocketAddr)> = None;
    for (host, addr) in targets.iter() {
        match Conn::open(*addr, helo, timeouts).await {
            Ok(c) => return Ok((c, host.clone())),
            Err(e) => last = Some((e, *addr)),
        }
    }
    Err(match last {
        // Every host refused or failed: try again later (RFC 5321 §4.5.4.1).
        Some((e, addr)) => {
            let r = e.reply();
            let reply = if r.is_permanent() {
                Reply::local(451, [4, 4, 1], format!("all hosts refused; last: {r}"))
            } else {
                r
            };
            (reply, Some(addr))
        }
        None => (
            Reply::local(451, [4, 4, 4], "no address to connect to"),
            None,
        ),
    })
}
