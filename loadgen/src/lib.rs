//! Verdant's load generator and test sink: the two ends of a benchmark or
//! of an end-to-end test, with Verdant (or any MTA) in between.
//!
//! - [`sink`]: `verdant sink`, an SMTP server that accepts and discards
//!   mail, counts it, measures end-to-end latency, optionally keeps what it
//!   got for tests to read, and injects 4xx/5xx replies at set rates. It
//!   is the receiver's own session code with a counting
//!   [`verdant_queue::Queue`], so it is as fast as the receiver without
//!   the disk.
//! - [`stamp`]: the [`SENT_HEADER`] timestamp the load generator writes
//!   and the sink reads; latency is measured with no channel between the
//!   two ends but the mail itself.
//! - The load generator (`verdant loadgen`) comes next.
#![warn(missing_docs)]

pub mod sink;
pub mod stamp;

pub use sink::{Report, Sink, SinkConfig};
pub use stamp::{SENT_HEADER, find_sent, sent_header};
