//! The delivery log: one JSON line per delivery attempt to a destination.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

/// One line of the delivery log.
#[derive(Debug, Serialize)]
pub struct Attempt<'a> {
    /// When the attempt ended (RFC 3339, UTC).
    pub time: String,
    /// Queue id.
    pub id: String,
    /// The recipients of this attempt.
    pub recipients: Vec<&'a str>,
    /// The destination: the domain, or the static route taken.
    pub destination: &'a str,
    /// The MX host name, when the route came from DNS.
    pub mx: Option<&'a str>,
    /// The address connected to, if any.
    pub ip: Option<String>,
    /// The reply code (local 4xx for connection failures).
    pub code: u16,
    /// The reply text.
    pub reply: String,
    /// Milliseconds spent.
    pub duration_ms: f64,
    /// Attempt number of the message (1 = first).
    pub attempt: u32,
    /// `delivered`, `deferred` or `bounced` — for these recipients.
    pub outcome: &'static str,
}

/// Appends attempt lines to a file (shared by the workers of a process:
/// each line is one `write` on an O_APPEND file, so lines never interleave).
pub struct DeliveryLog {
    file: Option<File>,
    line: Vec<u8>,
}

impl DeliveryLog {
    /// Opens (creates) the log; `None` logs nothing.
    pub fn open(path: Option<&Path>) -> io::Result<DeliveryLog> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Some(OpenOptions::new().create(true).append(true).open(p)?)
            }
            None => None,
        };
        Ok(DeliveryLog {
            file,
            line: Vec::new(),
        })
    }

    /// Writes one line. Logging never fails the delivery: errors are reported once.
    pub fn write(&mut self, a: &Attempt<'_>) {
        let Some(f) = &mut self.file else { return };
        self.line.clear();
        if serde_json::to_writer(&mut self.line, a).is_err() {
            return;
        }
        self.line.push(b'\n');
        if let Err(e) = f.write_all(&self.line) {
            eprintln!("verdant: delivery log write failed, logging stops: {e}");
            self.file = None;
        }
    }
}
