//! The delivery engine of one worker: takes messages from the worker's
//! queue, routes each recipient group, hands the groups to destination
//! queues ([`crate::dest`]), and turns the per-recipient results into the
//! message's outcome: delivered, deferred for a retry, or bounced.
//!
//! Everything here lives on the worker's runtime: a message received on
//! core k is delivered by core k, no state is shared between workers.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use verdant_queue::{
    Body, Delivery, LocalFuture, Outcome, QueueError, QueueId, Source, now_micros,
};

use verdant_metrics::{Stage, ops};

use crate::conn::Timeouts;
use crate::dest::{DestKey, Dests, Job};
use crate::dns::{DnsError, DnsHandle};
use crate::log::{Attempt, DeliveryLog};
use crate::retry::RetryPolicy;
use crate::route::{Routes, domain_of};
use crate::smtp::Reply;

/// Settings of the engine (shared by the workers' engines).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Our name in EHLO and in bounces.
    pub hostname: String,
    /// Static routes (win over DNS).
    pub routes: Routes,
    /// Client timeouts.
    pub timeouts: Timeouts,
    /// Per-destination limits on this worker.
    pub limits: crate::limits::Limits,
    /// How long an idle connection is kept for reuse.
    pub idle_timeout: Duration,
    /// The retry schedule.
    pub retry: RetryPolicy,
}

/// Messages one worker keeps in flight (with their content in memory).
pub const MAX_IN_FLIGHT: usize = 10_000;

/// How soon to record an outcome again after the queue failed to, at
/// first and at most (doubling in between).
const SETTLE_RETRY_FIRST: Duration = Duration::from_secs(1);
const STORAGE_RETRY: Duration = Duration::from_secs(60);

/// `Received:` headers a message may carry before it is taken for a loop
/// (Postfix's hopcount_limit).
pub const MAX_HOPS: usize = 50;

/// Counts the `Received:` header fields of a raw message.
fn hops(raw: &[u8]) -> usize {
    crate::dsn::header_section(raw)
        .split(|&b| b == b'\n')
        .filter(|line| {
            line.get(..9)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"received:"))
        })
        .count()
}

/// The recipient indices an attempt covers.
fn pending_indices(pending: &Option<Vec<u32>>, n: usize) -> Vec<usize> {
    match pending {
        Some(p) => p.iter().map(|&i| i as usize).filter(|&i| i < n).collect(),
        None => (0..n).collect(),
    }
}

/// How the recipients of a message are split into transactions.
#[derive(PartialEq, Eq, Hash)]
enum Group {
    Route(Vec<SocketAddr>),
    Mx(String),
}

/// Where one recipient of a message in flight stands.
#[derive(Clone, Debug)]
enum Rcpt {
    /// Not part of this attempt (done earlier).
    Skip,
    Pending,
    Delivered,
    Failed(Reply),
}

struct InFlight {
    delivery: Delivery,
    body: Rc<[u8]>,
    attempt: u32,
    rcpts: Vec<Rcpt>,
    groups_left: usize,
}

/// One worker's engine.
pub struct Engine {
    pub(crate) cfg: Rc<EngineConfig>,
    source: Rc<dyn Source>,
    dns: Option<DnsHandle>,
    inflight: RefCell<HashMap<QueueId, InFlight>>,
    /// Deferred messages by next attempt time (microseconds).
    deferred: RefCell<BinaryHeap<Reverse<(u64, QueueId)>>>,
    /// Deferred messages and when each is due.
    waiting: RefCell<HashMap<QueueId, (u64, Delivery)>>,
    pub(crate) dests: Dests,
    /// Messages waiting for room in flight (content left in the spool).
    backlog: RefCell<std::collections::VecDeque<Delivery>>,
    /// Messages handed out while another delivery of the same id is still
    /// in flight (the broker redelivered it after a reconnect): each waits
    /// for the earlier attempt to end, so attempts of one id never overlap.
    parked: RefCell<HashMap<QueueId, Vec<Delivery>>>,
    log: RefCell<DeliveryLog>,
    /// Stopping: no new attempt starts (see [`Engine::drain`]).
    draining: Cell<bool>,
    /// Messages whose attempt is over and whose outcome (or bounce) is not
    /// yet recorded.
    settling: RefCell<HashSet<QueueId>>,
}

impl Engine {
    /// An engine delivering what `source` hands out (the worker's spool,
    /// or its broker consumer).
    pub fn new(
        cfg: Rc<EngineConfig>,
        source: Rc<dyn Source>,
        dns: Option<DnsHandle>,
        log: DeliveryLog,
    ) -> Rc<Engine> {
        Rc::new(Engine {
            cfg,
            source,
            dns,
            inflight: RefCell::default(),
            deferred: RefCell::default(),
            waiting: RefCell::default(),
            dests: Dests::default(),
            backlog: RefCell::default(),
            parked: RefCell::default(),
            log: RefCell::new(log),
            draining: Cell::new(false),
            settling: RefCell::default(),
        })
    }

    /// Runs forever: recovered messages first (each at its recorded retry
    /// time), then whatever the source hands out.
    pub async fn run(self: Rc<Self>, recovered: Vec<Delivery>) {
        let now = now_micros();
        for d in recovered {
            match d.outcome {
                Some(Outcome::Deferred { until, .. }) if until > now => self.defer_until(d, until),
                _ => self.start(d),
            }
        }
        monoio::spawn(verdant_metrics::staged(
            Stage::Deliver,
            self.clone().retry_loop(),
        ));
        loop {
            for d in self.source.next_ready().await {
                self.start(d);
            }
        }
    }

    /// Messages in flight and waiting for a retry.
    pub fn load(&self) -> (usize, usize) {
        (self.inflight.borrow().len(), self.waiting.borrow().len())
    }

    /// When the oldest message this engine holds (in flight, waiting for
    /// room or for its next attempt) was received, in microseconds since
    /// the epoch. A walk over them all: for a once-a-second gauge.
    pub fn oldest(&self) -> Option<u64> {
        let inflight = self.inflight.borrow();
        let waiting = self.waiting.borrow();
        let backlog = self.backlog.borrow();
        inflight
            .values()
            .map(|f| f.delivery.envelope.received_at)
            .chain(waiting.values().map(|(_, d)| d.envelope.received_at))
            .chain(backlog.iter().map(|d| d.envelope.received_at))
            .min()
    }

    fn defer_until(&self, d: Delivery, until: u64) {
        self.deferred.borrow_mut().push(Reverse((until, d.id)));
        self.waiting.borrow_mut().insert(d.id, (until, d));
    }

    /// Starts the retries that are due, checking a few times a second.
    async fn retry_loop(self: Rc<Self>) {
        loop {
            monoio::time::sleep(Duration::from_millis(200)).await;
            let now = now_micros();
            loop {
                let due = {
                    let mut heap = self.deferred.borrow_mut();
                    match heap.peek() {
                        Some(Reverse((t, _))) if *t <= now => {
                            heap.pop().map(|Reverse(entry)| entry)
                        }
                        _ => None,
                    }
                };
                let Some((due_at, id)) = due else { break };
                // A heap entry left by an earlier schedule of this message
                // (it was retried by hand, or deferred again since) is stale.
                let current =
                    matches!(self.waiting.borrow().get(&id), Some((until, _)) if *until == due_at);
                if current && let Some((_, d)) = self.waiting.borrow_mut().remove(&id) {
                    self.start(d);
                }
            }
        }
    }

    /// Starts an attempt: groups the pending recipients by domain and
    /// routes each group.
    fn start(self: &Rc<Self>, mut d: Delivery) {
        if self.draining.get() {
            // Left to the queue: the spool keeps it, the broker requeues it
            // when the connection closes; either hands it out after the
            // restart, never attempted twice.
            return;
        }
        if !self.source.is_live(&d) {
            // The broker took it back (its connection was lost) and hands
            // it out again; a copy handed out since may be waiting here.
            let id = d.id;
            drop(d);
            if !self.busy(&id) {
                self.unpark(id);
            }
            return;
        }
        if self.busy(&d.id) {
            self.parked.borrow_mut().entry(d.id).or_default().push(d);
            return;
        }
        if self.inflight.borrow().len() >= MAX_IN_FLIGHT {
            // Bound the memory held by message contents: beyond this many
            // messages in flight, later ones wait with their content on disk.
            d.release_body();
            self.backlog.borrow_mut().push_back(d);
            return;
        }
        let (attempt, pending): (u32, Option<Vec<u32>>) = match &d.outcome {
            Some(Outcome::Deferred {
                attempt, pending, ..
            }) => (attempt + 1, Some(pending.clone())),
            _ => (1, None),
        };
        let mut unreadable = false;
        let body: Rc<[u8]> = match &d.body {
            Body::Memory(b) => b.clone(),
            Body::Spool(loc) => match self.source.read_body(loc) {
                Ok(b) => b.into(),
                Err(e) => {
                    // The record was durable and checked at start: a read
                    // error is the disk's. Try again later, until the
                    // message is too old: then it bounces (with no content
                    // to return) rather than waiting forever.
                    eprintln!(
                        "verdant: {}: cannot read the message from the spool: {e}",
                        d.id
                    );
                    if !self.cfg.retry.expired(d.envelope.received_at, now_micros()) {
                        let until = now_micros() + self.cfg.retry.initial.as_micros() as u64;
                        self.defer_until(d, until);
                        return;
                    }
                    unreadable = true;
                    Rc::from(Vec::new())
                }
            },
        };
        let n = d.envelope.recipients.len();
        let mut rcpts = vec![Rcpt::Skip; n];
        let fail_all = if unreadable {
            Some(Reply::local(
                554,
                [5, 3, 0],
                "message content unreadable in the spool; given up",
            ))
        } else if hops(&body) > MAX_HOPS {
            // A mail loop (RFC 5321 §6.3): bounce rather than circulate.
            Some(Reply::local(
                554,
                [5, 4, 6],
                format!("mail loop: more than {MAX_HOPS} Received: headers"),
            ))
        } else {
            None
        };
        if let Some(reply) = fail_all {
            let group: Vec<u32> = pending_indices(&pending, n)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            for &i in &group {
                rcpts[i as usize] = Rcpt::Pending;
            }
            let id = d.id;
            let f = InFlight {
                delivery: d,
                body,
                attempt,
                rcpts,
                groups_left: 1,
            };
            self.inflight.borrow_mut().insert(id, f);
            self.report(id, &group, "local", None, None, 0.0, &reply, |_| {
                Some(reply.clone())
            });
            return;
        }
        for i in pending_indices(&pending, n) {
            rcpts[i] = Rcpt::Pending;
        }
        // One group per destination: recipients of domains sharing a
        // static route go in one transaction; other domains each in theirs.
        let mut groups: HashMap<Group, Vec<u32>> = HashMap::new();
        for (i, r) in rcpts.iter_mut().enumerate() {
            if !matches!(r, Rcpt::Pending) {
                continue;
            }
            match domain_of(&d.envelope.recipients[i]) {
                Some(domain) => {
                    let g = match self.cfg.routes.lookup(&domain) {
                        Some(addrs) => Group::Route(addrs.to_vec()),
                        None => Group::Mx(domain),
                    };
                    groups.entry(g).or_default().push(i as u32);
                }
                None => {
                    *r = Rcpt::Failed(Reply::local(
                        550,
                        [5, 1, 3],
                        "recipient address has no domain",
                    ));
                }
            }
        }
        let id = d.id;
        self.inflight.borrow_mut().insert(
            id,
            InFlight {
                delivery: d,
                body,
                attempt,
                rcpts,
                groups_left: groups.len(),
            },
        );
        if groups.is_empty() {
            self.finish(id);
            return;
        }
        for (group, rcpts) in groups {
            match group {
                Group::Route(addrs) => {
                    let targets = addrs.iter().map(|a| (None, *a)).collect();
                    let key = DestKey::Route(addrs);
                    self.dests.push(
                        self,
                        key,
                        targets,
                        Job {
                            id,
                            rcpts,
                            retried: false,
                        },
                    );
                }
                Group::Mx(domain) => {
                    monoio::spawn(verdant_metrics::staged(
                        Stage::Deliver,
                        self.clone().resolve_then_queue(id, domain, rcpts),
                    ));
                }
            }
        }
    }

    async fn resolve_then_queue(self: Rc<Self>, id: QueueId, domain: String, rcpts: Vec<u32>) {
        let Some(dns) = self.dns.clone() else {
            let r = Reply::local(451, [4, 4, 3], "no route and no DNS resolver configured");
            self.report(id, &rcpts, &domain, None, None, 0.0, &r, |_| {
                Some(r.clone())
            });
            return;
        };
        let started = std::time::Instant::now();
        match dns.resolve(&domain).await {
            Ok(targets) => {
                let list = targets
                    .iter()
                    .flat_map(|t| t.addrs.iter().map(|a| (Some(t.host.clone()), *a)))
                    .collect();
                let key = DestKey::Mx(domain);
                self.dests.push(
                    &self,
                    key,
                    list,
                    Job {
                        id,
                        rcpts,
                        retried: false,
                    },
                );
            }
            Err(e) => {
                let text = format!("cannot route to {domain}: {e}");
                let r = match e {
                    // RFC 7505 §4.1: the null MX status.
                    DnsError::NullMx => Reply::local(556, [5, 1, 10], text),
                    // RFC 3463: bad destination system address.
                    DnsError::NoSuchDomain | DnsError::InvalidDomain(_) => {
                        Reply::local(550, [5, 1, 2], text)
                    }
                    // RFC 3463: unable to route.
                    DnsError::NoAddress => Reply::local(550, [5, 4, 4], text),
                    DnsError::Temporary(_) => Reply::local(451, [4, 4, 3], text),
                };
                let ms = started.elapsed().as_secs_f64() * 1e3;
                self.report(id, &rcpts, &domain, None, None, ms, &r, |_| Some(r.clone()));
            }
        }
    }

    /// The message and body of a job, for a connection about to send it.
    pub(crate) fn job_content(&self, id: QueueId) -> Option<(verdant_queue::Envelope, Rc<[u8]>)> {
        let inflight = self.inflight.borrow();
        let f = inflight.get(&id)?;
        Some((f.delivery.envelope.clone(), f.body.clone()))
    }

    /// Records the results of one attempt for a group of recipients;
    /// `result(i)` is `None` for the i-th recipient of the group delivered,
    /// or the reply that refused it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn report(
        self: &Rc<Self>,
        id: QueueId,
        rcpts: &[u32],
        destination: &str,
        mx: Option<&str>,
        ip: Option<SocketAddr>,
        duration_ms: f64,
        reply: &Reply,
        result: impl Fn(usize) -> Option<Reply>,
    ) {
        let done = {
            let mut inflight = self.inflight.borrow_mut();
            let Some(f) = inflight.get_mut(&id) else {
                return;
            };
            // One log line per distinct result: the delivered recipients
            // with the final reply, each refusal with its own reply.
            let mut lines: Vec<(Option<Reply>, Vec<&str>)> = Vec::new();
            for (k, &i) in rcpts.iter().enumerate() {
                let r = result(k);
                let name = f.delivery.envelope.recipients[i as usize].as_str();
                match lines.iter_mut().find(|(x, _)| *x == r) {
                    Some((_, names)) => names.push(name),
                    None => lines.push((r.clone(), vec![name])),
                }
                f.rcpts[i as usize] = match r {
                    None => Rcpt::Delivered,
                    Some(reply) => Rcpt::Failed(reply),
                };
            }
            let time = verdant_queue::time::rfc3339(now_micros());
            let mut log = self.log.borrow_mut();
            for (r, names) in lines {
                let (logged, outcome) = match &r {
                    None => (reply, "delivered"),
                    Some(x) if x.is_permanent() => (x, "bounced"),
                    Some(x) => (x, "deferred"),
                };
                let class = match &r {
                    None => ops::Class::Success,
                    Some(x) => ops::Class::of(x.code),
                };
                ops::attempt(destination, class, names.len() as u64);
                log.write(&Attempt {
                    time: time.clone(),
                    id: id.to_string(),
                    recipients: names,
                    destination,
                    mx,
                    ip: ip.map(|a| a.to_string()),
                    code: logged.code,
                    reply: logged.to_string(),
                    // Microsecond precision is plenty for a log.
                    duration_ms: (duration_ms * 1000.0).round() / 1000.0,
                    attempt: f.attempt,
                    outcome,
                });
            }
            drop(log);
            f.groups_left -= 1;
            f.groups_left == 0
        };
        if done {
            self.finish(id);
        }
    }

    /// All groups of an attempt are done: record the outcome.
    fn finish(self: &Rc<Self>, id: QueueId) {
        let Some(f) = self.inflight.borrow_mut().remove(&id) else {
            return;
        };
        let next = self.backlog.borrow_mut().pop_front();
        if let Some(next) = next {
            self.start(next);
        }
        let now = now_micros();
        let expired = self.cfg.retry.expired(f.delivery.envelope.received_at, now);
        let mut temp = Vec::new();
        let mut bounced = Vec::new();
        let mut error = String::new();
        for (i, r) in f.rcpts.iter().enumerate() {
            if let Rcpt::Failed(reply) = r {
                if reply.is_permanent() || expired {
                    bounced.push((i, reply.clone()));
                } else {
                    temp.push(i as u32);
                    error = reply.to_string();
                }
            }
        }
        let outcome = if !temp.is_empty() {
            Outcome::Deferred {
                until: now + self.cfg.retry.delay(f.attempt).as_micros() as u64,
                attempt: f.attempt,
                pending: temp,
                error,
            }
        } else if bounced.is_empty() && !f.rcpts.iter().any(|r| matches!(r, Rcpt::Failed(_))) {
            Outcome::Delivered
        } else {
            Outcome::Bounced
        };
        let mut delivery = f.delivery;
        let finished = match outcome {
            Outcome::Delivered => ops::Outcome::Delivered,
            Outcome::Deferred { .. } => ops::Outcome::Deferred,
            _ => ops::Outcome::Bounced,
        };
        let latency = (finished == ops::Outcome::Delivered)
            .then(|| now.saturating_sub(delivery.envelope.received_at) as f64 / 1e6);
        ops::finished(finished, latency);
        let bounce = (!bounced.is_empty() && !delivery.envelope.sender.is_empty()).then(|| {
            crate::bounce::build(&self.cfg.hostname, &delivery, &f.body, &bounced, expired)
        });
        // The bounce, then the outcome, must be durable before the message
        // is forgotten or retried. What cannot be made durable yet (disk
        // error, broker refusing) is tried again, with backoff, until it is
        // (or the broker takes the message back): the attempt is not made
        // again, and a bounce queued is not queued twice. A crash in between
        // hands the message out again after the restart: at least once.
        delivery.release_body();
        self.settling.borrow_mut().insert(id);
        verdant_metrics::count(Stage::Deliver, 1);
        verdant_metrics::domains::delivered(&delivery.envelope.sender, f.body.len() as u64);
        let me = self.clone();
        monoio::spawn(verdant_metrics::staged(Stage::Deliver, async move {
            let live = match &bounce {
                Some((env, dsn)) => {
                    me.persist(&delivery, "queue the bounce", || {
                        me.source.queue_bounce(env, dsn)
                    })
                    .await
                }
                None => true,
            };
            let settled = live
                && me
                    .persist(&delivery, "record the outcome", || {
                        me.source.settle(&delivery, &outcome)
                    })
                    .await;
            if settled {
                // The outcome recorded: a queue operation of the message.
                verdant_metrics::count(Stage::Queue, 1);
            }
            if settled
                && let Outcome::Deferred { until, .. } = outcome
                && !me.source.keeps_deferred()
            {
                delivery.outcome = Some(outcome);
                me.defer_until(delivery, until);
            }
            me.settling.borrow_mut().remove(&id);
            // Only now may another copy of the message start.
            me.unpark(id);
        }));
    }

    /// Runs `op` until it succeeds (true) or the backend has taken
    /// `delivery` back (false), waiting longer after each failure.
    async fn persist<'a>(
        &self,
        delivery: &Delivery,
        what: &str,
        mut op: impl FnMut() -> LocalFuture<'a, Result<(), QueueError>>,
    ) -> bool {
        let mut wait = SETTLE_RETRY_FIRST;
        loop {
            match op().await {
                Ok(()) => return true,
                // The broker hands it out again (maybe to another engine).
                Err(QueueError::Released) => return false,
                Err(e) => {
                    eprintln!(
                        "verdant: {}: cannot {what} ({e}); trying again in {wait:?}",
                        delivery.id
                    );
                    monoio::time::sleep(wait).await;
                    wait = (wait * 2).min(STORAGE_RETRY);
                    if !self.source.is_live(delivery) {
                        return false;
                    }
                }
            }
        }
    }

    /// Whether an attempt of `id` is under way or its outcome not yet
    /// recorded: another copy must wait (attempts of one id never overlap).
    fn busy(&self, id: &QueueId) -> bool {
        self.inflight.borrow().contains_key(id) || self.settling.borrow().contains(id)
    }

    /// For a graceful stop: starts no new attempt from now on, and returns
    /// once every attempt under way has ended and its outcome is recorded,
    /// so that nothing delivered is delivered again after the restart. The
    /// caller bounds how long it waits.
    pub async fn drain(&self) {
        self.draining.set(true);
        while !self.inflight.borrow().is_empty() || !self.settling.borrow().is_empty() {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the next copy of `id` handed out while one was in flight.
    fn unpark(self: &Rc<Self>, id: QueueId) {
        let next = {
            let mut parked = self.parked.borrow_mut();
            let Some(list) = parked.get_mut(&id) else {
                return;
            };
            let d = list.remove(0);
            if list.is_empty() {
                parked.remove(&id);
            }
            d
        };
        self.start(next);
    }
}

/// An operator's command for the engines (`verdant queue retry|remove`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Control {
    /// Try deferred messages now: one (`id`) or all (`id` = None).
    Retry {
        /// The queue id, or every deferred message.
        id: Option<String>,
    },
    /// Drop a deferred message, with or without a bounce to its sender.
    Remove {
        /// The queue id.
        id: String,
        /// Send the sender a bounce (a DSN saying the message was removed).
        bounce: bool,
    },
}

/// What one engine did with a [`Control`] command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControlResult {
    /// Messages the command applied to.
    pub affected: usize,
    /// Messages it could not touch because an attempt is under way.
    pub busy: usize,
}

impl Engine {
    /// Carries out an operator's command on this worker's messages. A
    /// removal is durable (its outcome recorded) when this returns.
    pub async fn control(self: &Rc<Self>, cmd: &Control) -> ControlResult {
        let mut result = ControlResult::default();
        match cmd {
            Control::Retry { id: None } => {
                let all: Vec<Delivery> = self
                    .waiting
                    .borrow_mut()
                    .drain()
                    .map(|(_, (_, d))| d)
                    .collect();
                result.affected = all.len();
                for d in all {
                    self.start(d);
                }
            }
            Control::Retry { id: Some(id) } => {
                let Ok(id) = id.parse::<QueueId>() else {
                    return result;
                };
                let d = self.waiting.borrow_mut().remove(&id);
                if let Some((_, d)) = d {
                    result.affected = 1;
                    self.start(d);
                } else if self.inflight.borrow().contains_key(&id) {
                    result.busy = 1;
                }
            }
            Control::Remove { id, bounce } => {
                let Ok(id) = id.parse::<QueueId>() else {
                    return result;
                };
                if self.busy(&id) {
                    result.busy = 1;
                    return result;
                }
                let Some((until, d)) = self.waiting.borrow_mut().remove(&id) else {
                    return result;
                };
                let bounce = (*bounce && !d.envelope.sender.is_empty()).then(|| {
                    let pending = match &d.outcome {
                        Some(Outcome::Deferred { pending, .. }) => Some(pending.clone()),
                        _ => None,
                    };
                    let pending = pending_indices(&pending, d.envelope.recipients.len());
                    let reply =
                        Reply::local(550, [5, 0, 0], "removed from the queue by the postmaster");
                    let failed: Vec<(usize, Reply)> =
                        pending.into_iter().map(|i| (i, reply.clone())).collect();
                    let body: Rc<[u8]> = match &d.body {
                        Body::Memory(b) => b.clone(),
                        Body::Spool(loc) => self.source.read_body(loc).unwrap_or_default().into(),
                    };
                    crate::bounce::build(&self.cfg.hostname, &d, &body, &failed, false)
                });
                let bounced = match &bounce {
                    Some((env, dsn)) => self.source.queue_bounce(env, dsn).await,
                    None => Ok(()),
                };
                let settled = match bounced {
                    Ok(()) => self.source.settle(&d, &Outcome::Removed).await,
                    Err(e) => Err(e),
                };
                match settled {
                    Ok(()) => result.affected = 1,
                    Err(QueueError::Released) => {}
                    Err(e) => {
                        eprintln!("verdant: {id}: cannot record the removal: {e}");
                        self.defer_until(d, until);
                    }
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_counting_stops_at_the_body() {
        let mut raw = "Received: a\r\nreceived: b\r\nX: y\r\n\r\n".to_string();
        raw.push_str("Received: in the body\r\n");
        assert_eq!(hops(raw.as_bytes()), 2);
        assert_eq!(hops(b""), 0);
    }
}
