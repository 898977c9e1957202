//! The broker service thread: one per process, owning the one connection.
//!
//! Workers run monoio and never touch lapin. They talk to this thread
//! through channels:
//!
//! - [`Handle::publish`]: a batch of new messages (the receiver's), all
//!   published persistent and mandatory, every confirm awaited; one result
//!   per message.
//! - [`Handle::settle`]: the end of a delivery: publish what replaces it
//!   (its delay-tier copy, its bounce, or its dead letter), await those
//!   confirms, and only then acknowledge it.
//! - one [`Incoming`] channel per consuming worker, fed by that worker's
//!   consumer (its own AMQP channel, `basic.qos` prefetch).
//!
//! The thread reconnects by itself, with backoff (100 ms doubling to 5 s).
//! While the broker is unreachable or has blocked the connection (memory or
//! disk alarm), publishes fail at once, so receivers answer 451 instead of
//! buffering. Every connection has a generation; a [`Ticket`] of an earlier
//! generation cannot be acknowledged any more (the broker gave the message
//! back to its queue when the connection closed), and settling it reports
//! [`SettleError::Released`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Event};
use verdant_queue::Ticket;

use crate::ack::{Ack, AckTracker};
use crate::publish::{PublishError, check};
use crate::{Broker, Topology};

/// The header carrying how many delivery attempts a message has had.
pub const ATTEMPT_HEADER: &str = "x-verdant-attempt";

/// Commands waiting for the service thread, at most (senders wait beyond).
const COMMAND_QUEUE: usize = 4096;

/// Reconnection backoff.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How the service connects and what it consumes.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The broker URL (`amqp://user:pass@host:port/vhost`).
    pub url: String,
    /// The queues, declared at every (re)connection.
    pub topology: Topology,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// How long to wait for a publisher confirm before taking the message
    /// as not accepted.
    pub confirm_timeout: Duration,
    /// Consumers of the delivery queue (one per engine worker; 0 in a
    /// receiver-only process).
    pub consumers: usize,
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The queue (routing key on the default exchange).
    pub queue: String,
    /// The encoded message.
    pub data: Vec<u8>,
    /// Delivery attempts so far (the [`ATTEMPT_HEADER`]; 0: none sent).
    pub attempt: u32,
    /// Why it is dead-lettered (the [`crate::consume::REASON_HEADER`]).
    pub reason: Option<String>,
}

/// A message consumed from the delivery queue, for one worker.
#[derive(Debug)]
pub struct Incoming {
    /// What to settle it with.
    pub ticket: Ticket,
    /// The broker delivered it before (it may be a duplicate).
    pub redelivered: bool,
    /// The encoded message.
    pub data: Vec<u8>,
    /// Delivery attempts so far.
    pub attempt: u32,
}

/// Why a delivery could not be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The connection it came on is gone; the broker has put it back in its
    /// queue and hands it out again.
    #[error("the delivery's connection is gone; the broker hands it out again")]
    Released,
    /// A replacement (delay-tier copy, bounce, dead letter) was not
    /// accepted: the delivery stays unacknowledged.
    #[error("{0}")]
    Publish(PublishError),
}

enum Command {
    Publish {
        items: Vec<Outgoing>,
        reply: flume::Sender<Vec<Result<(), PublishError>>>,
    },
    Settle {
        ticket: Ticket,
        publish: Vec<Outgoing>,
        reply: flume::Sender<Result<(), SettleError>>,
    },
}

#[derive(Debug)]
struct Shared {
    /// The generation of the live connection; 0 while there is none.
    generation: AtomicU64,
    /// The broker has blocked the connection.
    blocked: AtomicBool,
}

/// A worker's way to the service thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: flume::Sender<Command>,
    shared: Arc<Shared>,
}

fn unavailable() -> PublishError {
    PublishError::Broker("broker unavailable".into())
}

impl Handle {
    /// Whether the broker is connected and not blocking publishes.
    pub fn available(&self) -> bool {
        self.shared.generation.load(Ordering::Acquire) != 0
            && !self.shared.blocked.load(Ordering::Acquire)
    }

    /// The generation of the live connection (0: none). Deliveries of any
    /// other generation will come again.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Publishes `items` and awaits their confirms: one result per item, in
    /// order, `Ok` only once the broker has stored it. Fails at once when
    /// the broker is unavailable.
    pub async fn publish(&self, items: Vec<Outgoing>) -> Vec<Result<(), PublishError>> {
        let n = items.len();
        if !self.available() {
            return vec![Err(unavailable()); n];
        }
        let (reply, rx) = flume::bounded(1);
        if self
            .tx
            .send_async(Command::Publish { items, reply })
            .await
            .is_err()
        {
            return vec![Err(unavailable()); n];
        }
        rx.recv_async()
            .await
            .unwrap_or_else(|_| vec![Err(unavailable()); n])
    }

    /// Publishes `publish` (confirmed), then acknowledges `ticket`.
    pub async fn settle(&self, ticket: Ticket, publish: Vec<Outgoing>) -> Result<(), SettleError> {
        if ticket.generation != self.generation() {
            return Err(SettleError::Released);
        }
        if !publish.is_empty() && !self.available() {
            return Err(SettleError::Publish(unavailable()));
        }
        let (reply, rx) = flume::bounded(1);
        let cmd = Command::Settle {
            ticket,
            publish,
            reply,
        };
        if self.tx.send_async(cmd).await.is_err() {
            return Err(SettleError::Released);
        }
        rx.recv_async().await.unwrap_or(Err(SettleError::Released))
    }
}

/// Starts the service thread. Returns the handle for the workers and one
/// receiver of [`Incoming`] messages per consumer. The thread connects in
/// the background (publishes fail until it has); it ends when every handle
/// is dropped.
pub fn start(cfg: ServiceConfig) -> std::io::Result<(Handle, Vec<flume::Receiver<Incoming>>)> {
    let (tx, rx) = flume::bounded(COMMAND_QUEUE);
    let shared = Arc::new(Shared {
        generation: AtomicU64::new(0),
        blocked: AtomicBool::new(false),
    });
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..cfg.consumers {
        // The prefetch window bounds what is in flight; the channel only
        // needs to hold one window.
        let (s, r) = flume::bounded(usize::from(cfg.prefetch).max(1));
        senders.push(s);
        receivers.push(r);
    }
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("verdant-broker".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the broker thread's runtime");
            rt.block_on(run(cfg, rx, thread_shared, senders));
        })?;
    Ok((Handle { tx, shared }, receivers))
}

/// Why a connection's service loop ended.
enum End {
    /// Every handle is gone: the process is stopping.
    Closed,
    /// The connection failed.
    Lost(String),
}

async fn run(
    cfg: ServiceConfig,
    rx: flume::Receiver<Command>,
    shared: Arc<Shared>,
    incoming: Vec<flume::Sender<Incoming>>,
) {
    let mut generation = 0u64;
    let mut backoff = BACKOFF_FIRST;
    let mut last_error = String::new();
    loop {
        generation += 1;
        match open(&cfg, generation, &incoming).await {
            Ok(session) => {
                backoff = BACKOFF_FIRST;
                eprintln!("verdant: connected to the broker (connection {generation})");
                last_error.clear();
                shared.blocked.store(false, Ordering::Release);
                shared.generation.store(generation, Ordering::Release);
                let end = session.serve(&cfg, &rx, &shared).await;
                shared.generation.store(0, Ordering::Release);
                match end {
                    End::Closed => {
                        let _ = session.broker.close().await;
                        return;
                    }
                    End::Lost(e) => {
                        eprintln!("verdant: lost the broker connection ({e}); reconnecting");
                    }
                }
            }
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    eprintln!(
                        "verdant: cannot connect to the broker: {e}; retrying (publishes get 451 meanwhile)"
                    );
                    last_error = e;
                }
            }
        }
        // Wait before the next try, failing what arrives meanwhile.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                cmd = rx.recv_async() => match cmd {
                    Ok(cmd) => fail(cmd),
                    Err(_) => return,
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn fail(cmd: Command) {
    match cmd {
        Command::Publish { items, reply } => {
            let _ = reply.send(vec![Err(unavailable()); items.len()]);
        }
        Command::Settle { reply, .. } => {
            let _ = reply.send(Err(SettleError::Released));
        }
    }
}

/// One consumer channel and where its acks go.
struct ConsumerLink {
    channel: Channel,
    acks: Arc<Mutex<AckTracker>>,
    /// Acks in the order computed, sent by one task per channel (a multiple
    /// ack overtaking an earlier single one would name an acked tag).
    ack_tx: tokio::sync::mpsc::UnboundedSender<Ack>,
}

/// A live connection: the publisher channel and the consumers.
struct Session {
    broker: Broker,
    generation: u64,
    publisher: Channel,
    consumers: Vec<ConsumerLink>,
}

async fn open(
    cfg: &ServiceConfig,
    generation: u64,
    incoming: &[flume::Sender<Incoming>],
) -> Result<Session, crate::Error> {
    let broker = Broker::connect(&cfg.url).await?;
    cfg.topology.declare(&broker).await?;
    let publisher = broker.channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumers = Vec::new();
    for (i, sender) in incoming.iter().enumerate() {
        let channel = broker.channel().await?;
        channel
            .basic_qos(cfg.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("verdant-{}-{generation}-{i}", std::process::id());
        let stream = channel
            .basic_consume(
                cfg.topology.delivery_queue().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let acks = Arc::new(Mutex::new(AckTracker::new(cfg.prefetch)));
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<Ack>();
        let ack_channel = channel.clone();
        tokio::spawn(async move {
            while let Some(ack) = ack_rx.recv().await {
                let opts = BasicAckOptions {
                    multiple: ack.multiple,
                };
                if ack_channel.basic_ack(ack.tag, opts).await.is_err() {
                    // The channel is gone: the broker requeues what was
                    // not acknowledged, and the service reconnects.
                    return;
                }
            }
        });
        tokio::spawn(forward(
            stream,
            acks.clone(),
            sender.clone(),
            i as u32,
            generation,
        ));
        consumers.push(ConsumerLink {
            channel,
            acks,
            ack_tx,
        });
    }
    Ok(Session {
        broker,
        generation,
        publisher,
        consumers,
    })
}

/// Passes one consumer's deliveries to its worker.
async fn forward(
    mut stream: lapin::Consumer,
    acks: Arc<Mutex<AckTracker>>,
    to: flume::Sender<Incoming>,
    consumer: u32,
    generation: u64,
) {
    while let Some(Ok(d)) = stream.next().await {
        let attempt = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(ATTEMPT_HEADER).cloned())
            .and_then(|v| match v {
                AMQPValue::LongUInt(n) => Some(n),
                AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
                _ => None,
            })
            .unwrap_or(0);
        acks.lock().expect("ack tracker").delivered(d.delivery_tag);
        let item = Incoming {
            ticket: Ticket {
                consumer,
                generation,
                tag: d.delivery_tag,
            },
            redelivered: d.redelivered,
            data: d.data,
            attempt,
        };
        if to.send_async(item).await.is_err() {
            return;
        }
    }
}

impl Session {
    async fn serve(
        &self,
        cfg: &ServiceConfig,
        rx: &flume::Receiver<Command>,
        shared: &Shared,
    ) -> End {
        let mut events = self.broker.conn.events_listener();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                cmd = rx.recv_async() => match cmd {
                    Ok(cmd) => self.handle(cfg, cmd, shared),
                    Err(_) => return End::Closed,
                },
                event = events.next() => match event {
                    Some(Event::ConnectionBlocked(reason)) => {
                        eprintln!("verdant: the broker blocked publishing ({reason}); new messages get 451");
                        shared.blocked.store(true, Ordering::Release);
                    }
                    Some(Event::ConnectionUnblocked) => {
                        eprintln!("verdant: the broker unblocked publishing");
                        shared.blocked.store(false, Ordering::Release);
                    }
                    Some(Event::Error(e)) => return End::Lost(e.to_string()),
                    Some(_) => {}
                    None => return End::Lost("connection events ended".into()),
                },
                _ = tick.tick() => {
                    if !self.broker.conn.status().connected() {
                        return End::Lost("connection closed".into());
                    }
                    if !self.publisher.status().connected()
                        || self.consumers.iter().any(|c| !c.channel.status().connected())
                    {
                        return End::Lost("a channel was closed by the broker".into());
                    }
                }
            }
        }
    }

    fn handle(&self, cfg: &ServiceConfig, cmd: Command, shared: &Shared) {
        match cmd {
            Command::Publish { items, reply } => {
                if shared.blocked.load(Ordering::Acquire) {
                    let _ = reply.send(vec![Err(unavailable()); items.len()]);
                    return;
                }
                let channel = self.publisher.clone();
                let timeout = cfg.confirm_timeout;
                tokio::spawn(async move {
                    let results = publish_all(&channel, &items, timeout).await;
                    let _ = reply.send(results);
                });
            }
            Command::Settle {
                ticket,
                publish,
                reply,
            } => {
                let link = match self.consumers.get(ticket.consumer as usize) {
                    Some(link) if ticket.generation == self.generation => link,
                    _ => {
                        let _ = reply.send(Err(SettleError::Released));
                        return;
                    }
                };
                let channel = self.publisher.clone();
                let acks = link.acks.clone();
                let ack_tx = link.ack_tx.clone();
                let timeout = cfg.confirm_timeout;
                tokio::spawn(async move {
                    for r in publish_all(&channel, &publish, timeout).await {
                        if let Err(e) = r {
                            let _ = reply.send(Err(SettleError::Publish(e)));
                            return;
                        }
                    }
                    // Compute and queue the acks under one lock, so they
                    // go out in the order computed.
                    let mut tracker = acks.lock().expect("ack tracker");
                    for ack in tracker.settle(ticket.tag) {
                        let _ = ack_tx.send(ack);
                    }
                    drop(tracker);
                    let _ = reply.send(Ok(()));
                });
            }
        }
    }
}

/// Publishes every item, then awaits every confirm (each within `timeout`
/// of the publishing): one result per item.
async fn publish_all(
    channel: &Channel,
    items: &[Outgoing],
    timeout: Duration,
) -> Vec<Result<(), PublishError>> {
    let mut pending = Vec::with_capacity(items.len());
    for item in items {
        let confirm = channel
            .basic_publish(
                "".into(),
                item.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &item.data,
                properties(item),
            )
            .await;
        pending.push(confirm);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut results = Vec::with_capacity(pending.len());
    for confirm in pending {
        results.push(match confirm {
            Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                Ok(c) => check(c),
                Err(_) => Err(PublishError::Broker(format!(
                    "no confirm from the broker within {timeout:?}"
                ))),
            },
            Err(e) => Err(PublishError::Broker(e.to_string())),
        });
    }
    results
}

fn properties(item: &Outgoing) -> BasicProperties {
    let props = BasicProperties::default().with_delivery_mode(crate::publish::PERSISTENT);
    let mut headers = FieldTable::default();
    if item.attempt > 0 {
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(item.attempt));
    }
    if let Some(reason) = &item.reason {
        headers.insert(
            crate::consume::REASON_HEADER.into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
    }
    if headers.inner().is_empty() {
        props
    } else {
        props.with_headers(headers)
    }
}
