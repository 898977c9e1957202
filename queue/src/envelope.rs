//! The envelope of a message and the outcome of a delivery attempt.

/// What the SMTP transaction said about a message, apart from its content.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The reverse-path; empty for the null sender `<>` (bounces).
    pub sender: String,
    /// The forward-paths, in the order they were accepted.
    pub recipients: Vec<String>,
    /// When the message was accepted, in microseconds since the Unix epoch.
    pub received_at: u64,
    /// [`Envelope::BODY_8BITMIME`], [`Envelope::SMTPUTF8`].
    pub flags: u8,
}

impl Envelope {
    /// `MAIL FROM:<..> BODY=8BITMIME` (RFC 6152): the content may hold 8-bit octets.
    pub const BODY_8BITMIME: u8 = 1;
    /// `MAIL FROM:<..> SMTPUTF8` (RFC 6531): addresses or headers hold UTF-8.
    pub const SMTPUTF8: u8 = 2;
}

/// The result of a delivery attempt, as recorded in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every recipient was accepted by its destination. Final.
    Delivered,
    /// Some recipients are still pending; retry at `until` (microseconds
    /// since the epoch). `pending` holds indices into
    /// [`Envelope::recipients`], so a retry skips the recipients already
    /// done. Not final.
    Deferred {
        /// Next attempt, microseconds since the Unix epoch.
        until: u64,
        /// Number of attempts made so far.
        attempt: u32,
        /// Indices of the recipients still pending.
        pending: Vec<u32>,
        /// The last error, for operators (`verdant queue list`).
        error: String,
    },
    /// Failed permanently; a bounce was queued where one is due. Final.
    Bounced,
    /// Removed by an operator. Final.
    Removed,
}

impl Outcome {
    /// A final outcome ends the message's life in the queue.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Deferred { .. })
    }
}
