//! Read-only views of a spool for operators (`verdant queue list|show`).
//!
//! Inspection never writes: it may run beside a live server, whose segments
//! it reads as they are (a tail being written looks torn and is skipped).

use std::io;
use std::path::Path;

use serde::Serialize;

use crate::spool::scan::{self, ScanOptions, ScannedMessage};
use crate::time::rfc3339;
use crate::{Outcome, QueueId};

/// One live message, as `verdant queue list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageInfo {
    /// Queue id.
    pub id: String,
    /// Envelope sender; empty for the null sender.
    pub sender: String,
    /// Envelope recipients (those still pending).
    pub recipients: Vec<String>,
    /// Size of the raw message in bytes.
    pub size: u64,
    /// When it was received (RFC 3339, UTC).
    pub received_at: String,
    /// Its Message-ID header, if any.
    pub message_id: Option<String>,
    /// `queued` or `deferred`.
    pub state: String,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (deferred messages).
    pub next_attempt: Option<String>,
    /// Why the last attempt failed (deferred messages).
    pub last_error: Option<String>,
}

/// Lists the spool's live messages (without a final outcome), oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<MessageInfo>> {
    let names = scan::list_segments(dir)?;
    let s = scan::scan(dir, &names, ScanOptions { message_ids: true })?;
    let mut msgs: Vec<&ScannedMessage> = s
        .messages
        .values()
        .filter(|m| !m.outcome.as_ref().is_some_and(Outcome::is_final))
        .collect();
    msgs.sort_by_key(|m| m.id);
    Ok(msgs.into_iter().map(info).collect())
}

/// Finds one message (live or not, as long as its segment exists) and reads
/// its raw content.
pub fn show(dir: &Path, id: QueueId) -> io::Result<Option<(MessageInfo, Vec<u8>)>> {
    let names = scan::list_segments(dir)?;
    let s = scan::scan(dir, &names, ScanOptions { message_ids: true })?;
    let Some(m) = s.messages.get(&id) else {
        return Ok(None);
    };
    let body = scan::read_body(dir, m)?;
    Ok(Some((info(m), body)))
}

fn info(m: &ScannedMessage) -> MessageInfo {
    let mut attempts = 0;
    let mut next_attempt = None;
    let mut last_error = None;
    let (state, recipients) = match &m.outcome {
        None => ("queued".to_string(), m.envelope.recipients.clone()),
        Some(Outcome::Deferred {
            until,
            attempt,
            pending,
            error,
        }) => {
            attempts = *attempt;
            next_attempt = Some(rfc3339(*until));
            last_error = Some(error.clone());
            (
                "deferred".to_string(),
                pending
                    .iter()
                    .filter_map(|&i| m.envelope.recipients.get(i as usize).cloned())
                    .collect(),
            )
        }
        Some(Outcome::Delivered) => ("delivered".into(), m.envelope.recipients.clone()),
        Some(Outcome::Bounced) => ("bounced".into(), m.envelope.recipients.clone()),
        Some(Outcome::Removed) => ("removed".into(), m.envelope.recipients.clone()),
    };
    MessageInfo {
        id: m.id.to_string(),
        sender: m.envelope.sender.clone(),
        recipients,
        size: m.body_len,
        received_at: rfc3339(m.envelope.received_at),
        message_id: m.message_id.clone(),
        state,
        attempts,
        next_attempt,
        last_error,
    }
}
