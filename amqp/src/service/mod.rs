//! The broker service thread: one per process, owning its connections to
//! the broker.
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
//! Publishing goes in rounds, one at a time (see [`crate::publish`] for
//! why): while a round awaits its confirms, the batches and settlements
//! that arrive gather into the next one, up to `round_max` messages. So the
//! broker sees big batches exactly when it is busy, like a group commit.
//!
//! Publishing and consuming use two connections, as RabbitMQ advises: a
//! broker under a memory or disk alarm blocks connections that publish,
//! and acknowledgements must still get through.
//!
//! The thread reconnects by itself, with backoff (100 ms doubling to 5 s).
//! While the broker is unreachable or has blocked publishing, publishes
//! fail at once, so receivers answer 451 instead of buffering. Every
//! connection has a generation; a [`Ticket`] of an earlier generation
//! cannot be acknowledged any more (the broker gave the message back to its
//! queue when the connection closed), and settling it reports
//! [`SettleError::Released`].

mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use verdant_queue::Ticket;

use crate::Topology;
pub use crate::publish::Outgoing;
use crate::publish::PublishError;
use session::{End, Session};

/// Commands waiting for the service thread, at most (senders wait beyond).
const COMMAND_QUEUE: usize = 1024;

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
    /// as not accepted (and the connection as broken); also the limit for
    /// connecting.
    pub confirm_timeout: Duration,
    /// Messages in one publish round at most.
    pub round_max: usize,
    /// Consumers of the delivery queue (one per engine worker; 0 in a
    /// receiver-only process).
    pub consumers: usize,
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
    /// A replacement (delay-tier copy, bounce, dead letter) was refused by
    /// the broker: the delivery stays unacknowledged, and may be settled
    /// again.
    #[error("{0}")]
    Publish(PublishError),
}

/// Replies to publishing.
type PublishReply = flume::Sender<Vec<Result<(), PublishError>>>;
/// Replies to a settlement.
type SettleReply = flume::Sender<Result<(), SettleError>>;

enum Command {
    Publish {
        items: Vec<Outgoing>,
        reply: PublishReply,
    },
    Settle {
        ticket: Ticket,
        publish: Vec<Outgoing>,
        reply: SettleReply,
    },
    /// A settlement with nothing to publish first: no answer.
    Ack { ticket: Ticket },
    /// Finish what was asked, send the acks, close the connections, answer.
    Close { reply: flume::Sender<()> },
}

impl Command {
    /// Answers it without doing it: the broker is not there.
    fn fail(self) {
        match self {
            Command::Publish { items, reply } => {
                let _ = reply.send(vec![Err(unavailable()); items.len()]);
            }
            Command::Settle { reply, .. } => {
                let _ = reply.send(Err(SettleError::Released));
            }
            // Its connection is gone: the broker hands it out again.
            Command::Ack { .. } => {}
            Command::Close { reply } => {
                let _ = reply.send(());
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// The generation of the live connection; 0 while there is none.
    generation: AtomicU64,
    /// The broker has blocked the publishing connection.
    blocked: AtomicBool,
}

impl Shared {
    /// Makes `generation` the live one (0: none).
    fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
        verdant_metrics::ops::broker_connected(generation != 0);
    }

    /// The broker blocks publishing, or no longer does.
    fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Release);
        verdant_metrics::ops::broker_blocked(blocked);
    }
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
    ///
    /// With nothing to publish (the message was delivered) it returns once
    /// the acknowledgement is queued: the ack is all there is to make
    /// durable, and if it is lost with the connection the broker hands the
    /// message out again, as it would after any `Released`.
    pub async fn settle(&self, ticket: Ticket, publish: Vec<Outgoing>) -> Result<(), SettleError> {
        if ticket.generation != self.generation() {
            return Err(SettleError::Released);
        }
        if publish.is_empty() {
            return match self.tx.send_async(Command::Ack { ticket }).await {
                Ok(()) => Ok(()),
                Err(_) => Err(SettleError::Released),
            };
        }
        if !self.available() {
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

impl Handle {
    /// Stops the service for a graceful exit: the publish round in flight
    /// and what waits for it are finished, the acknowledgements computed
    /// are sent, and the connections closed. Blocks the calling thread (not
    /// a worker) for at most `limit`; the process may exit afterwards.
    pub fn close(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let (reply, rx) = flume::bounded(1);
        if self
            .tx
            .send_deadline(Command::Close { reply }, deadline)
            .is_ok()
        {
            let _ = rx.recv_deadline(deadline);
        }
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
            // Everything this thread does is queue work.
            verdant_metrics::account::register_thread(verdant_metrics::Stage::Queue);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the broker thread's runtime");
            rt.block_on(run(cfg, rx, thread_shared, senders));
        })?;
    Ok((Handle { tx, shared }, receivers))
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
        match Session::open(&cfg, generation, &incoming, &shared).await {
            Ok(session) => {
                backoff = BACKOFF_FIRST;
                eprintln!("verdant: connected to the broker (connection {generation})");
                last_error.clear();
                let end = session.serve(&cfg, &rx, &shared).await;
                shared.set_generation(0);
                match end {
                    End::Closed(_) => return,
                    End::Lost(e) => {
                        eprintln!("verdant: lost the broker connection ({e}); reconnecting");
                    }
                }
            }
            Err(e) => {
                shared.set_generation(0);
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
                    Ok(cmd) => cmd.fail(),
                    Err(_) => return,
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
