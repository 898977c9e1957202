//! The worker side of the broker backend: what a monoio worker holds.
//!
//! - [`AmqpQueue`] is the receiver's [`Queue`]: each message completed on
//!   the worker joins a batch; a batch goes to the service thread when it
//!   holds `batch_max` messages or its window (`batch_window`) is over,
//!   and every client of the batch gets its answer when the broker has
//!   confirmed its message (250) or refused it (451 4.3.0).
//! - [`BrokerSource`] is the engine's [`Source`]: it decodes what the
//!   worker's consumer received and settles each attempt: delivered (ack);
//!   deferred (republished to its delay tier with the recipients still
//!   pending, confirmed, then ack); bounced (the DSN published to the
//!   delivery queue and confirmed first, by `queue_bounce`, then ack).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use verdant_queue::codec::{self, Record};
use verdant_queue::{
    Body, Delivery, Envelope, IdGenerator, LocalFuture, Location, Origin, Outcome, Queue,
    QueueError, QueueId, Source,
};

use verdant_metrics::Stage;

use crate::Topology;
use crate::publish::PublishError;
use crate::service::{Handle, Incoming, Outgoing, SettleError};

/// Spawns queue work on the worker's runtime (its CPU counts as queue).
fn spawn(task: impl std::future::Future<Output = ()> + 'static) {
    monoio::spawn(verdant_metrics::staged(Stage::Queue, task));
}

/// How soon a failed dead-lettering is tried again, at first and at most.
const DEAD_LETTER_RETRY_FIRST: Duration = Duration::from_secs(1);
const DEAD_LETTER_RETRY_MAX: Duration = Duration::from_secs(60);

/// How a worker batches its publishes.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Messages in one batch at most.
    pub max: usize,
    /// How long the first message of a batch waits for others.
    pub window: Duration,
}

/// The id space of a process: `node` (0..1024) and the worker (0..64)
/// make the 16-bit worker field of its queue ids, so that receivers on many
/// hosts never hand out the same id.
pub fn id_worker(node: u16, worker: u16) -> u16 {
    (node % 1024) * 64 + worker % 64
}

/// The SMTP reply for a message the broker did not take.
fn not_accepted(e: &PublishError) -> QueueError {
    QueueError::Rejected(format!(
        "451 4.3.0 message not queued ({e}); try again later"
    ))
}

type Waiter = flume::Sender<Result<(), PublishError>>;

/// A worker's queue ids, shared by its receiver and its engine (bounces
/// get ids too), so that they never hand out the same one.
pub type Ids = Rc<RefCell<IdGenerator>>;

/// The id generator of a worker of this process (see [`id_worker`]).
pub fn ids(id_worker: u16) -> Ids {
    Rc::new(RefCell::new(IdGenerator::new(id_worker, 0)))
}

struct Batcher {
    handle: Handle,
    queue: String,
    batching: Batching,
    ids: Ids,
    pending: RefCell<Vec<(Outgoing, Waiter)>>,
    /// Bumped at every flush: a window timer of an earlier batch finds
    /// another number and leaves the batch alone.
    batch_no: Cell<u64>,
}

/// The receiver's queue in a process that publishes to the broker.
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Rc<Batcher>,
}

impl AmqpQueue {
    /// A queue publishing to the delivery queue of `topology` through
    /// `handle`, taking its queue ids from `ids`.
    pub fn new(handle: Handle, topology: &Topology, batching: Batching, ids: Ids) -> Self {
        AmqpQueue {
            inner: Rc::new(Batcher {
                handle,
                queue: topology.delivery_queue(),
                batching: Batching {
                    max: batching.max.max(1),
                    window: batching.window,
                },
                ids,
                pending: RefCell::default(),
                batch_no: Cell::new(0),
            }),
        }
    }
}

impl Batcher {
    /// Sends the pending batch to the service thread.
    fn flush(self: &Rc<Self>) {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        self.batch_no.set(self.batch_no.get() + 1);
        if batch.is_empty() {
            return;
        }
        let handle = self.handle.clone();
        spawn(async move {
            let (items, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let results = handle.publish(items).await;
            for (waiter, result) in waiters.into_iter().zip(results) {
                let _ = waiter.send(result);
            }
        });
    }
}

impl Queue for AmqpQueue {
    fn next_id(&self) -> QueueId {
        self.inner.ids.borrow_mut().next_id()
    }

    async fn enqueue(
        &self,
        id: QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), QueueError> {
        let b = &self.inner;
        if !b.handle.available() {
            // Refuse at once rather than hold the client and its message.
            return Err(not_accepted(&PublishError::Broker(
                "broker unavailable".into(),
            )));
        }
        let mut data = Vec::new();
        codec::encode_message(&mut data, id, envelope, message);
        let (tx, rx) = flume::bounded(1);
        let first = {
            let mut pending = b.pending.borrow_mut();
            pending.push((
                Outgoing {
                    queue: b.queue.clone(),
                    data,
                    attempt: 0,
                    reason: None,
                },
                tx,
            ));
            pending.len() == 1
        };
        if b.pending.borrow().len() >= b.batching.max || b.batching.window.is_zero() {
            b.flush();
        } else if first {
            let me = b.clone();
            let no = b.batch_no.get();
            let window = b.batching.window;
            spawn(async move {
                monoio::time::sleep(window).await;
                if me.batch_no.get() == no {
                    me.flush();
                }
            });
        }
        match rx.recv_async().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(not_accepted(&e)),
            Err(_) => Err(not_accepted(&PublishError::Broker(
                "publisher stopped".into(),
            ))),
        }
    }
}

/// The engine's source in a process that consumes from the broker.
pub struct BrokerSource {
    handle: Handle,
    incoming: flume::Receiver<Incoming>,
    topology: Topology,
    ids: Ids,
    /// Messages that could not be decoded, sent to the dead-letter queue.
    undecodable: Cell<u64>,
}

impl BrokerSource {
    /// A source for one worker: `incoming` is its consumer's channel (from
    /// [`crate::service::start`]); bounces get their ids from `ids`.
    pub fn new(
        handle: Handle,
        incoming: flume::Receiver<Incoming>,
        topology: Topology,
        ids: Ids,
    ) -> Self {
        BrokerSource {
            handle,
            incoming,
            topology,
            ids,
            undecodable: Cell::new(0),
        }
    }

    /// Messages sent to the dead-letter queue because they could not be
    /// decoded.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.get()
    }

    /// Turns one consumed message into a delivery, or dead-letters it.
    fn accept(&self, m: Incoming) -> Option<Delivery> {
        if m.ticket.generation != self.handle.generation() {
            // Its connection is gone: the broker hands it out again.
            return None;
        }
        match codec::decode(&m.data) {
            Ok(Record::Message { id, envelope, body }) => {
                let outcome = (m.attempt > 0).then(|| Outcome::Deferred {
                    until: 0,
                    attempt: m.attempt,
                    pending: (0..envelope.recipients.len() as u32).collect(),
                    error: String::new(),
                });
                Some(Delivery {
                    id,
                    envelope,
                    body: Body::Memory(body.into()),
                    origin: Origin::Broker(m.ticket),
                    outcome,
                })
            }
            Ok(Record::Outcome { .. }) => {
                self.dead_letter(m, "an outcome record, not a message".into());
                None
            }
            Err(e) => {
                self.dead_letter(m, format!("cannot decode: {e}"));
                None
            }
        }
    }

    fn dead_letter(&self, m: Incoming, reason: String) {
        self.undecodable.set(self.undecodable.get() + 1);
        eprintln!(
            "verdant: a message from the broker goes to {}: {reason}",
            self.topology.dead_letter_queue()
        );
        let handle = self.handle.clone();
        let item = Outgoing {
            queue: self.topology.dead_letter_queue(),
            data: m.data,
            attempt: m.attempt,
            reason: Some(reason),
        };
        spawn(async move {
            // Until stored there, or taken back by the broker: left alone,
            // it would hold a prefetch slot for the life of the connection.
            let mut wait = DEAD_LETTER_RETRY_FIRST;
            loop {
                match handle.settle(m.ticket, vec![item.clone()]).await {
                    Ok(()) | Err(SettleError::Released) => return,
                    Err(e) => {
                        eprintln!(
                            "verdant: cannot dead-letter a message ({e}); trying again in {wait:?}"
                        );
                        monoio::time::sleep(wait).await;
                        wait = (wait * 2).min(DEAD_LETTER_RETRY_MAX);
                    }
                }
            }
        });
    }

    /// What replaces a delivery on the broker once its attempt is over.
    fn replacements(
        &self,
        delivery: &Delivery,
        outcome: &Outcome,
    ) -> Result<Vec<Outgoing>, QueueError> {
        let mut out = Vec::new();
        if let Outcome::Deferred {
            attempt, pending, ..
        } = outcome
        {
            // The copy in the delay queue names only the recipients still
            // to do; it comes back to the delivery queue when its TTL ends.
            let mut env = delivery.envelope.clone();
            env.recipients = pending
                .iter()
                .filter_map(|&i| delivery.envelope.recipients.get(i as usize).cloned())
                .collect();
            let Body::Memory(body) = &delivery.body else {
                // Broker deliveries keep their content (see `release_body`).
                return Err(QueueError::Storage(std::io::ErrorKind::InvalidInput));
            };
            let mut data = Vec::new();
            codec::encode_message(&mut data, delivery.id, &env, body);
            let tiers = self.topology.tiers.len();
            let tier = (*attempt as usize).saturating_sub(1).min(tiers - 1);
            out.push(Outgoing {
                queue: self.topology.delay_queue(tier),
                data,
                attempt: *attempt,
                reason: None,
            });
        }
        Ok(out)
    }
}

impl Source for BrokerSource {
    fn next_ready(&self) -> LocalFuture<'_, Vec<Delivery>> {
        Box::pin(async move {
            loop {
                let Ok(first) = self.incoming.recv_async().await else {
                    // The service thread is gone: the process is stopping.
                    return std::future::pending().await;
                };
                let mut out: Vec<Delivery> = self.accept(first).into_iter().collect();
                for m in self.incoming.try_iter().take(256) {
                    out.extend(self.accept(m));
                }
                if !out.is_empty() {
                    return out;
                }
            }
        })
    }

    fn read_body(&self, _loc: &Location) -> std::io::Result<Vec<u8>> {
        // Broker deliveries keep their content in memory.
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "broker deliveries have no spool location",
        ))
    }

    fn queue_bounce<'a>(
        &'a self,
        envelope: &'a Envelope,
        dsn: &'a [u8],
    ) -> LocalFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let id = self.ids.borrow_mut().next_id();
            let mut data = Vec::new();
            codec::encode_message(&mut data, id, envelope, dsn);
            let item = Outgoing::new(self.topology.delivery_queue(), data);
            match self.handle.publish(vec![item]).await.pop() {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(not_accepted(&e)),
                None => Err(not_accepted(&PublishError::Broker("no result".into()))),
            }
        })
    }

    fn settle<'a>(
        &'a self,
        delivery: &'a Delivery,
        outcome: &'a Outcome,
    ) -> LocalFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let Origin::Broker(ticket) = delivery.origin else {
                return Err(QueueError::Storage(std::io::ErrorKind::InvalidInput));
            };
            let publish = self.replacements(delivery, outcome)?;
            match self.handle.settle(ticket, publish).await {
                Ok(()) => Ok(()),
                Err(SettleError::Released) => Err(QueueError::Released),
                Err(SettleError::Publish(e)) => Err(not_accepted(&e)),
            }
        })
    }

    fn keeps_deferred(&self) -> bool {
        true
    }

    fn is_live(&self, delivery: &Delivery) -> bool {
        match delivery.origin {
            Origin::Broker(ticket) => ticket.generation == self.handle.generation(),
            Origin::Spool(_) => false,
        }
    }
}
