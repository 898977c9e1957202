//! `--keep DIR`: accepted messages written out for tests to read.
//!
//! Each message becomes `DIR/<queue id>.eml` (the content as the sink
//! received it, with its `Received:` header) and `DIR/<queue id>.json`
//! (its envelope, a [`KeptEnvelope`]). The queue id is the one in the
//! sink's `250 2.0.0 Ok: queued as <id>` reply; ids sort by arrival time.
//! The `.json` is written after the `.eml`, and both before the 250: a
//! reader that finds a `.json` finds its `.eml` complete.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use verdant_queue::{Envelope, QueueId};

/// The sidecar of a kept message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptEnvelope {
    /// `MAIL FROM` address; empty for the null sender.
    pub sender: String,
    /// `RCPT TO` addresses the sink accepted, in order.
    pub recipients: Vec<String>,
    /// When the message was complete, Unix microseconds.
    pub received_at: u64,
}

/// Writes one message and its envelope into `dir`.
pub(crate) async fn keep(
    dir: &Path,
    id: QueueId,
    envelope: &Envelope,
    message: &[u8],
) -> io::Result<()> {
    let sidecar = KeptEnvelope {
        sender: envelope.sender.clone(),
        recipients: envelope.recipients.clone(),
        received_at: envelope.received_at,
    };
    let json = serde_json::to_vec(&sidecar).map_err(io::Error::other)?;
    // Owned buffers: io_uring holds them while the write is in flight.
    write(&dir.join(format!("{id}.eml")), message.to_vec()).await?;
    write(&dir.join(format!("{id}.json")), json).await
}

/// Creates `path` with `data`, through the worker's runtime (so on io_uring
/// the write does not hold the worker's event loop).
async fn write(path: &Path, data: Vec<u8>) -> io::Result<()> {
    let file = monoio::fs::File::from_std(std::fs::File::create(path)?)?;
    let (res, _) = file.write_all_at(data, 0).await;
    res?;
    file.close().await
}
