//! Turning permanent failures into a bounce: the DSN (see [`crate::dsn`])
//! and the envelope it travels in.

use verdant_queue::{Delivery, Envelope, now_micros};

use crate::dsn::{self, Action, DsnInput, FailedRecipient};
use crate::smtp::Reply;

/// Builds the bounce for the `failed` recipients (index, reply) of `d`.
/// `expired`: the message was given up after temporary failures. The
/// envelope has the null sender (RFC 5321 §4.5.5: a bounce is never
/// bounced) and the original sender as its one recipient; the caller must
/// not call this for a message whose sender is null.
pub fn build(
    hostname: &str,
    d: &Delivery,
    original: &[u8],
    failed: &[(usize, Reply)],
    expired: bool,
) -> (Envelope, Vec<u8>) {
    let diagnostics: Vec<String> = failed
        .iter()
        .map(|(_, r)| {
            if expired && !r.is_permanent() {
                format!("smtp; {r} (delivery time expired)")
            } else {
                format!("smtp; {r}")
            }
        })
        .collect();
    let statuses: Vec<String> = failed
        .iter()
        .map(|(_, r)| {
            if expired && !r.is_permanent() {
                // RFC 3463 4.4.7 "delivery time expired", reported failed.
                "4.4.7".to_string()
            } else {
                r.status()
            }
        })
        .collect();
    let recipients: Vec<FailedRecipient<'_>> = failed
        .iter()
        .enumerate()
        .map(|(k, (i, _))| FailedRecipient {
            address: &d.envelope.recipients[*i],
            status: &statuses[k],
            action: Action::Failed,
            diagnostic: Some(&diagnostics[k]),
            remote_mta: None,
        })
        .collect();
    let now = now_micros();
    let id = d.id.to_string();
    let message = dsn::build(&DsnInput {
        reporting_mta: hostname,
        queue_id: &id,
        original_sender: &d.envelope.sender,
        arrival_date: d.envelope.received_at,
        now,
        recipients: &recipients,
        original,
        message_id: format!("<{id}.dsn@{hostname}>"),
    });
    let envelope = Envelope {
        sender: String::new(),
        recipients: vec![d.envelope.sender.clone()],
        received_at: now,
        // The returned headers may carry 8-bit or UTF-8 text as the
        // original did.
        flags: d.envelope.flags,
    };
    (envelope, message)
}
