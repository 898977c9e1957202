//! Verdant's queue: the message and envelope types, their compact binary
//! encoding, the [`Queue`] boundary, and the embedded durable [`Spool`].
//!
//! The receiver hands every accepted message to a [`Queue`] and answers the
//! client's end of data with 250 only once [`Queue::enqueue`] resolved: a
//! queue backend must not resolve before the message survives a crash (an
//! fsync for the spool, a publisher confirm for the broker backend). The
//! delivery engine consumes from the same boundary; receiver and engine never
//! meet anywhere else.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use verdant_queue::{Envelope, Queue, Spool, SpoolOptions};
//! let (spool, recovered) = Spool::open(SpoolOptions {
//!     dir: "./var/spool".into(),
//!     worker: 0,
//!     workers: 1,
//!     commit_window: std::time::Duration::ZERO,
//!     segment_size: 64 << 20,
//! })?;
//! println!("{} messages recovered", recovered.len());
//! let id = spool.next_id();
//! let env = Envelope { sender: "a@example.com".into(), recipients: vec!["b@example.net".into()], ..Default::default() };
//! spool.enqueue(id, &env, b"Subject: hi\r\n\r\nhello\r\n").await?; // durable now
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod codec;
mod delivery;
mod envelope;
mod id;
pub mod inspect;
pub mod spool;
pub mod time;

use std::future::Future;
use std::pin::Pin;

pub use codec::Record;
pub use delivery::{Body, Delivery, Location, Origin, Ticket};
pub use envelope::{Envelope, Outcome};
pub use id::{IdGenerator, ParseQueueIdError, QueueId};
pub use spool::{Spool, SpoolOptions};

/// Where accepted messages go: the boundary between receiver and engine.
///
/// Implementations live on one worker's runtime (no `Send` needed) and are
/// called on the hot path: `next_id` must not block or do I/O, and
/// `enqueue` must not hold the worker's event loop while it waits.
pub trait Queue {
    /// A fresh queue id for a message about to be received (it goes into
    /// the `Received:` header before the message is complete).
    fn next_id(&self) -> QueueId;

    /// Makes the message durable. Resolves `Ok` only once the message would
    /// survive a crash of the process or the machine; an `Err` means it was
    /// not accepted: the client is told to retry (451 4.3.0), or gets the
    /// reply of a [`QueueError::Rejected`].
    fn enqueue(
        &self,
        id: QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> impl Future<Output = Result<(), QueueError>>;
}

/// A future on one worker's runtime (not `Send`), as [`Source`] returns.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The delivery side of the queue boundary: where the engine takes
/// messages from and where it settles each attempt.
///
/// One per worker, on the worker's runtime. Two implementations: the
/// embedded [`Spool`] and the broker consumer of `verdant-amqp`.
///
/// The contract that keeps mail from being lost: a message handed out by
/// [`Source::next_ready`] stays the backend's responsibility until
/// [`Source::settle`] resolved `Ok` for it. Until then a crash (of the
/// process, the machine or the connection to the broker) hands it out
/// again, so delivery is at least once.
pub trait Source {
    /// Waits for messages ready for delivery and returns them (at least
    /// one), oldest first. Must be called from one task at a time.
    fn next_ready(&self) -> LocalFuture<'_, Vec<Delivery>>;

    /// Reads back the content of a delivery whose body is
    /// [`Body::Spool`]. Blocking, but normally served from the page cache.
    fn read_body(&self, loc: &Location) -> std::io::Result<Vec<u8>>;

    /// Queues a bounce (a DSN, its envelope addressed to the sender of a
    /// failed message) durably, as new mail to deliver. The engine calls it
    /// before settling the failed message, and again only if it failed, so
    /// that a failure later in the settling cannot send the bounce twice.
    fn queue_bounce<'a>(
        &'a self,
        envelope: &'a Envelope,
        dsn: &'a [u8],
    ) -> LocalFuture<'a, Result<(), QueueError>>;

    /// Makes the outcome of an attempt durable. On `Err` nothing may be
    /// assumed: the engine keeps the message and settles it again later.
    ///
    /// A [`Outcome::Deferred`] outcome is either recorded (the engine keeps
    /// the message and retries it when due, [`Source::keeps_deferred`] =
    /// false) or handed to the backend, which gives it back through
    /// [`Source::next_ready`] when its delay is over (`true`, the broker's
    /// delay queues).
    fn settle<'a>(
        &'a self,
        delivery: &'a Delivery,
        outcome: &'a Outcome,
    ) -> LocalFuture<'a, Result<(), QueueError>>;

    /// Whether the backend holds deferred messages itself until they are
    /// due (the engine then forgets them once settled).
    fn keeps_deferred(&self) -> bool;

    /// Whether `delivery` is still this backend's to deliver. A broker
    /// delivery stops being so when the connection it came on is lost: the
    /// broker has put the message back in its queue and hands it out again,
    /// so a copy the engine still holds would only be a duplicate. Cheap:
    /// called before every attempt.
    fn is_live(&self, delivery: &Delivery) -> bool {
        let _ = delivery;
        true
    }
}

/// Why the queue could not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Writing or syncing the storage failed.
    #[error("queue storage failed: {0}")]
    Storage(std::io::ErrorKind),
    /// The queue refuses this message on purpose (`verdant sink` injecting
    /// failures; a backend with a policy). The text is the whole SMTP reply
    /// line the client gets, without CRLF, e.g. `554 5.7.1 go away` or
    /// `451 4.7.1 try later`. The receiver sends it verbatim if it is one
    /// line starting with a 4xx or 5xx code, and 451 4.3.0 otherwise (see
    /// `verdant_receiver::policy::is_refusal`).
    #[error("queue refused the message: {0}")]
    Rejected(String),
    /// Only from [`Source::settle`]: the backend has taken the message
    /// back and will hand it out again (its broker connection was lost,
    /// and with it the delivery). The engine forgets this copy.
    #[error("the broker took the message back")]
    Released,
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
