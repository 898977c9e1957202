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

/// A message ready for delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Its queue id.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Envelope,
    /// Its content.
    pub body: Body,
    /// Where the content lies in the spool (also when it is in memory).
    pub location: Location,
    /// The latest outcome recorded (a deferral, for a recovered message).
    pub outcome: Option<Outcome>,
}

impl Delivery {
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
            location,
            outcome: m.outcome,
        }
    }
}
