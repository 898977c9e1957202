//! What the queue hands to the delivery side.

use std::rc::Rc;

use crate::spool::scan::{ScannedMessage, SegmentName};
use crate::{Envelope, Outcome, QueueId};

/// Where a message's content lies in the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The segment holding the message record.
    pub segment: SegmentName,
    /// Offset of the raw message in the segment file.
    pub offset: u64,
    /// Length of the raw message.
    pub len: u64,
}

/// A message's content: in memory when it was just received (no disk read
/// on the way out), in the spool when it was recovered or waited long.
#[derive(Clone, Debug)]
pub enum Body {
    /// The raw message, shared by every connection delivering a part of it.
    Memory(Rc<[u8]>),
    /// Read it from the spool when needed ([`crate::Spool::read_body`]).
    Spool(Location),
}

/// Where a delivery came from. The engine passes it back untouched to
/// [`crate::Source::settle`]; only the backend that made it looks inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A message in the embedded spool, its content at this location (also
    /// while a copy is in memory, so the copy can be dropped).
    Spool(Location),
    /// A message consumed from the broker.
    Broker(Ticket),
}

/// Identifies one delivery of a message by the broker, for its
/// acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Which of the process's consumers received it.
    pub consumer: u32,
    /// The consumer's connection generation: a ticket of an earlier
    /// connection cannot be acknowledged (the broker has already given the
    /// message to another consumer).
    pub generation: u64,
    /// The broker's delivery tag on that consumer's channel.
    pub tag: u64,
}

/// A message ready for delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Its queue id.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Envelope,
    /// Its content.
    pub body: Body,
    /// Where it came from, so that its backend can settle it.
    pub origin: Origin,
    /// The latest outcome recorded (a deferral, for a recovered message).
    pub outcome: Option<Outcome>,
}

impl Delivery {
    /// Lets go of the in-memory content when the spool holds it, so that a
    /// message waiting long costs no memory. Broker deliveries keep theirs
    /// (the broker's prefetch window bounds how many there are).
    pub fn release_body(&mut self) {
        if let Origin::Spool(loc) = self.origin {
            self.body = Body::Spool(loc);
        }
    }

    /// A message found in the spool at start-up.
    pub fn recovered(m: ScannedMessage) -> Delivery {
        let location = Location {
            segment: m.segment,
            offset: m.body_offset,
            len: m.body_len,
        };
        Delivery {
            id: m.id,
            envelope: m.envelope,
            body: Body::Spool(location),
            origin: Origin::Spool(location),
            outcome: m.outcome,
        }
    }
}
