//! Reading segments back: crash recovery and inspection share this code.
//!
//! A scan reads every frame of a set of segments, keeps the message records
//! (envelope and where the body lies, not the body itself) and applies the
//! outcome records to them. Outcomes are applied after all messages are
//! known, because after a change of the worker count an outcome may sit in a
//! segment of another worker than its message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::frame::{self, Damage, Frames};
use crate::codec::{self, Record};
use crate::{Envelope, Outcome, QueueId};

/// Identifies a segment file: `{worker:04}-{seq:016x}.seg` in the spool directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentName {
    /// Worker that wrote it.
    pub worker: u16,
    /// Its place in that worker's sequence of segments.
    pub seq: u64,
}

impl SegmentName {
    /// The file name.
    pub fn file_name(self) -> String {
        format!("{:04}-{:016x}.seg", self.worker, self.seq)
    }

    /// Parses a file name written by [`SegmentName::file_name`].
    pub fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(".seg")?;
        let (w, s) = stem.split_once('-')?;
        if w.len() != 4 || s.len() != 16 {
            return None;
        }
        Some(SegmentName {
            worker: w.parse().ok()?,
            seq: u64::from_str_radix(s, 16).ok()?,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// Lists the segment files in `dir`, in (worker, seq) order. A missing
/// directory holds no segments.
pub fn list_segments(dir: &Path) -> io::Result<Vec<SegmentName>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str().and_then(SegmentName::parse) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A message found by a scan.
#[derive(Clone, Debug)]
pub struct ScannedMessage {
    /// Its queue id.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Envelope,
    /// The segment holding it.
    pub segment: SegmentName,
    /// Offset of the body within the segment file.
    pub body_offset: u64,
    /// Length of the body.
    pub body_len: u64,
    /// The Message-ID header, if asked for and present.
    pub message_id: Option<String>,
    /// The latest outcome recorded, if any.
    pub outcome: Option<Outcome>,
}

/// What a scan learnt about one segment.
#[derive(Clone, Debug, Default)]
pub struct ScannedSegment {
    /// Messages in it without a final outcome.
    pub live: u32,
    /// Other segments holding messages whose outcomes this one records.
    /// While any of them exists, this segment must stay (see the spool's
    /// deletion rule).
    pub pins: BTreeSet<SegmentName>,
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Why the valid prefix ends before the file does.
    pub damage: Option<Damage>,
}

/// The result of scanning a set of segments.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every message found, with its latest outcome.
    pub messages: HashMap<QueueId, ScannedMessage>,
    /// Every segment scanned.
    pub segments: BTreeMap<SegmentName, ScannedSegment>,
    /// The highest id stamp (microseconds) per worker among all records,
    /// messages and outcomes: the floor for that worker's next ids.
    pub highest: BTreeMap<u16, u64>,
    /// Records that failed to decode although their checksum matched
    /// (written by a newer version, or a bug): counted, never fatal.
    pub undecodable: u64,
}

/// Options of a scan.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanOptions {
    /// Extract each message's Message-ID header (for inspection).
    pub message_ids: bool,
}

/// Scans the named segments of `dir`.
pub fn scan(dir: &Path, names: &[SegmentName], opts: ScanOptions) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut outcomes: Vec<(SegmentName, QueueId, Outcome)> = Vec::new();
    for &name in names {
        let path = dir.join(name.file_name());
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            // Deleted by a running server between listing and reading.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mut frames = Frames::new(&data);
        for (offset, payload) in frames.by_ref() {
            let decoded = codec::decode(payload);
            if let Ok(Record::Message { id, .. } | Record::Outcome { id, .. }) = &decoded {
                let h = scan.highest.entry(id.worker).or_default();
                *h = (*h).max(id.micros);
            }
            match decoded {
                Ok(Record::Message { id, envelope, body }) => {
                    let body_offset = (offset + frame::HEADER + payload.len() - body.len()) as u64;
                    scan.messages.insert(
                        id,
                        ScannedMessage {
                            id,
                            envelope,
                            segment: name,
                            body_offset,
                            body_len: body.len() as u64,
                            message_id: opts.message_ids.then(|| message_id(body)).flatten(),
                            outcome: None,
                        },
                    );
                }
                Ok(Record::Outcome { id, outcome }) => outcomes.push((name, id, outcome)),
                Err(_) => scan.undecodable += 1,
            }
        }
        scan.segments.insert(
            name,
            ScannedSegment {
                valid_len: frames.valid_len() as u64,
                file_len: data.len() as u64,
                damage: frames.damage(),
                ..Default::default()
            },
        );
    }
    for (seg, id, outcome) in outcomes {
        let Some(msg) = scan.messages.get_mut(&id) else {
            // Its message's segment was deleted already: nothing to do.
            continue;
        };
        if msg.segment != seg {
            scan.segments
                .get_mut(&seg)
                .expect("scanned")
                .pins
                .insert(msg.segment);
        }
        if supersedes(&outcome, msg.outcome.as_ref()) {
            msg.outcome = Some(outcome);
        }
    }
    for msg in scan.messages.values() {
        if !msg.outcome.as_ref().is_some_and(Outcome::is_final) {
            scan.segments.get_mut(&msg.segment).expect("scanned").live += 1;
        }
    }
    Ok(scan)
}

/// Whether `new` replaces `old` as a message's latest outcome. A final
/// outcome is never replaced (nothing is written after it); among deferrals
/// the later attempt wins, whatever segment order the scan saw them in.
fn supersedes(new: &Outcome, old: Option<&Outcome>) -> bool {
    match (new, old) {
        (_, None) => true,
        (_, Some(o)) if o.is_final() => false,
        (n, Some(_)) if n.is_final() => true,
        (Outcome::Deferred { attempt: a, .. }, Some(Outcome::Deferred { attempt: b, .. })) => {
            a >= b
        }
        _ => false,
    }
}

/// The Message-ID header of a raw message, if any (case-insensitive name,
/// folded value unfolded, surrounding space trimmed).
pub fn message_id(raw: &[u8]) -> Option<String> {
    let headers_end = memchr::memmem::find(raw, b"\r\n\r\n").map_or(raw.len(), |i| i + 2);
    let headers = &raw[..headers_end];
    let mut lines = headers.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line
            .get(..11)
            .filter(|n| n.eq_ignore_ascii_case(b"message-id:"))
            .map(|_| &line[11..])
        else {
            continue;
        };
        let mut v = String::from_utf8_lossy(value).into_owned();
        while let Some(next) =
            lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        {
            v.push_str(&String::from_utf8_lossy(next));
        }
        let v = v.trim().to_string();
        return (!v.is_empty()).then_some(v);
    }
    None
}

/// Reads a message's body back from its segment.
pub fn read_body(dir: &Path, msg: &ScannedMessage) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let path: PathBuf = dir.join(msg.segment.file_name());
    let file = std::fs::File::open(&path)?;
    let mut buf = vec![0; msg.body_len as usize];
    file.read_exact_at(&mut buf, msg.body_offset)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let n = SegmentName {
            worker: 3,
            seq: 0x1f,
        };
        assert_eq!(n.file_name(), "0003-000000000000001f.seg");
        assert_eq!(SegmentName::parse(&n.file_name()), Some(n));
        for bad in [
            "0003-1f.seg",
            "x003-000000000000001f.seg",
            "0003-000000000000001f.tmp",
            "junk",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn message_id_extraction() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"Message-ID: <a@b>\r\nX: y\r\n\r\nbody", Some("<a@b>")),
            (b"X: y\r\nmessage-id:   <c@d>  \r\n\r\n", Some("<c@d>")),
            (b"Message-Id:\r\n <folded@x>\r\n\r\n", Some("<folded@x>")),
            (b"X: y\r\n\r\nMessage-ID: <in-body@x>\r\n", None),
            (b"Subject: no id\r\n\r\n", None),
            (b"", None),
        ];
        for (raw, want) in cases {
            assert_eq!(
                message_id(raw).as_deref(),
                *want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn supersede_rules() {
        let d = |attempt| Outcome::Deferred {
            until: 0,
            attempt,
            pending: vec![],
            error: String::new(),
        };
        assert!(supersedes(&d(1), None));
        assert!(supersedes(&d(2), Some(&d(1))));
        assert!(!supersedes(&d(1), Some(&d(2))));
        assert!(supersedes(&Outcome::Delivered, Some(&d(5))));
        assert!(!supersedes(&d(9), Some(&Outcome::Delivered)));
        assert!(!supersedes(&Outcome::Bounced, Some(&Outcome::Delivered)));
    }
}
