//! The compact binary encoding of queue records.
//!
//! One encoding serves the spool and (later) the wire between services: a
//! version byte, a kind byte, the queue id, then the kind's fields. Integers
//! are little-endian; strings are length-prefixed. A message record ends
//! with the raw message, so decoding borrows it without copying.
//!
//! ```
//! use verdant_queue::{codec, Envelope, QueueId, Record};
//! let id = QueueId { micros: 1, worker: 0 };
//! let env = Envelope { sender: "a@example.com".into(), recipients: vec!["b@example.net".into()], ..Default::default() };
//! let mut buf = Vec::new();
//! codec::encode_message(&mut buf, id, &env, b"Subject: hi\r\n\r\nbody\r\n");
//! match codec::decode(&buf).unwrap() {
//!     Record::Message { id: got, envelope, body } => {
//!         assert_eq!((got, envelope, body), (id, env, &b"Subject: hi\r\n\r\nbody\r\n"[..]));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

use crate::{Envelope, Outcome, QueueId};

/// The encoding version written today. Decoders accept every version up to it.
pub const VERSION: u8 = 1;

const KIND_MESSAGE: u8 = 1;
const KIND_OUTCOME: u8 = 2;

const OUTCOME_DELIVERED: u8 = 1;
const OUTCOME_DEFERRED: u8 = 2;
const OUTCOME_BOUNCED: u8 = 3;
const OUTCOME_REMOVED: u8 = 4;

/// A decoded record, borrowing the message body from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A message accepted into the queue.
    Message {
        /// Its queue id.
        id: QueueId,
        /// Its envelope.
        envelope: Envelope,
        /// The raw message (headers and body, CRLF line ends, unstuffed).
        body: &'a [u8],
    },
    /// The outcome of a delivery attempt for a message recorded earlier.
    Outcome {
        /// The message's queue id.
        id: QueueId,
        /// What happened.
        outcome: Outcome,
    },
}

/// A record could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("record truncated")]
    Truncated,
    /// Written by a newer Verdant.
    #[error("unsupported record version {0}")]
    Version(u8),
    /// Unknown record or outcome kind.
    #[error("unknown record kind {0}")]
    Kind(u8),
    /// A string field is not UTF-8.
    #[error("address is not UTF-8")]
    Utf8,
}

/// Appends the encoding of a message record to `out`.
pub fn encode_message(out: &mut Vec<u8>, id: QueueId, env: &Envelope, body: &[u8]) {
    out.reserve(
        32 + env.sender.len()
            + env.recipients.iter().map(|r| r.len() + 2).sum::<usize>()
            + body.len(),
    );
    out.extend_from_slice(&[VERSION, KIND_MESSAGE]);
    out.extend_from_slice(&id.to_bytes());
    out.extend_from_slice(&env.received_at.to_le_bytes());
    out.push(env.flags);
    put_str(out, &env.sender);
    out.extend_from_slice(&(env.recipients.len() as u32).to_le_bytes());
    for r in &env.recipients {
        put_str(out, r);
    }
    out.extend_from_slice(body);
}

/// Appends the encoding of an outcome record to `out`.
pub fn encode_outcome(out: &mut Vec<u8>, id: QueueId, outcome: &Outcome) {
    out.extend_from_slice(&[VERSION, KIND_OUTCOME]);
    out.extend_from_slice(&id.to_bytes());
    match outcome {
        Outcome::Delivered => out.push(OUTCOME_DELIVERED),
        Outcome::Bounced => out.push(OUTCOME_BOUNCED),
        Outcome::Removed => out.push(OUTCOME_REMOVED),
        Outcome::Deferred {
            until,
            attempt,
            pending,
            error,
        } => {
            out.push(OUTCOME_DEFERRED);
            out.extend_from_slice(&until.to_le_bytes());
            out.extend_from_slice(&attempt.to_le_bytes());
            out.extend_from_slice(&(pending.len() as u32).to_le_bytes());
            for p in pending {
                out.extend_from_slice(&p.to_le_bytes());
            }
            // Added in 0.1 after the first records: a trailing field, so a
            // record without it still decodes (with an empty error).
            let error = &error[..error.floor_char_boundary(1000)];
            put_str(out, error);
        }
    }
}

/// Decodes one record (the payload of a spool frame, or a wire message).
pub fn decode(input: &[u8]) -> Result<Record<'_>, DecodeError> {
    let mut r = Reader(input);
    let version = r.u8()?;
    if version == 0 || version > VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8()?;
    let id = QueueId::from_bytes(r.array()?);
    match kind {
        KIND_MESSAGE => {
            let received_at = r.u64()?;
            let flags = r.u8()?;
            let sender = r.string()?;
            let n = r.u32()? as usize;
            // Each recipient takes at least its 2-byte length: bound the
            // allocation by what the input can hold.
            if n > r.0.len() / 2 {
                return Err(DecodeError::Truncated);
            }
            let mut recipients = Vec::with_capacity(n);
            for _ in 0..n {
                recipients.push(r.string()?);
            }
            Ok(Record::Message {
                id,
                envelope: Envelope {
                    sender,
                    recipients,
                    received_at,
                    flags,
                },
                body: r.0,
            })
        }
        KIND_OUTCOME => {
            let outcome = match r.u8()? {
                OUTCOME_DELIVERED => Outcome::Delivered,
                OUTCOME_BOUNCED => Outcome::Bounced,
                OUTCOME_REMOVED => Outcome::Removed,
                OUTCOME_DEFERRED => {
                    let until = r.u64()?;
                    let attempt = r.u32()?;
                    let n = r.u32()? as usize;
                    if n > r.0.len() / 4 {
                        return Err(DecodeError::Truncated);
                    }
                    let pending = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
                    let error = if r.0.is_empty() {
                        String::new()
                    } else {
                        r.string()?
                    };
                    Outcome::Deferred {
                        until,
                        attempt,
                        pending,
                        error,
                    }
                }
                k => return Err(DecodeError::Kind(k)),
            };
            Ok(Record::Outcome { id, outcome })
        }
        k => Err(DecodeError::Kind(k)),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Addresses are capped far below 64 KiB by the SMTP parser (RFC 5321
    // §4.5.3.1.3: 256 octets); truncating here would corrupt, so assert.
    let len = u16::try_from(s.len()).expect("address longer than 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> QueueId {
        QueueId {
            micros: 1_780_000_000_000_000,
            worker: 1,
        }
    }

    #[test]
    fn message_round_trip() {
        let env = Envelope {
            sender: String::new(),
            recipients: vec!["a@x.example".into(), "b@ü.example".into()],
            received_at: 42,
            flags: Envelope::SMTPUTF8 | Envelope::BODY_8BITMIME,
        };
        let mut buf = Vec::new();
        encode_message(&mut buf, id(), &env, b"X: y\r\n\r\n\xff\r\n");
        assert_eq!(
            decode(&buf).unwrap(),
            Record::Message {
                id: id(),
                envelope: env,
                body: b"X: y\r\n\r\n\xff\r\n"
            }
        );
    }

    #[test]
    fn outcome_round_trip() {
        for outcome in [
            Outcome::Delivered,
            Outcome::Bounced,
            Outcome::Removed,
            Outcome::Deferred {
                until: 7,
                attempt: 3,
                pending: vec![0, 2],
                error: "451 4.4.1 connection refused".into(),
            },
        ] {
            let mut buf = Vec::new();
            encode_outcome(&mut buf, id(), &outcome);
            assert_eq!(decode(&buf).unwrap(), Record::Outcome { id: id(), outcome });
        }
    }

    /// Version 1 as written by the first release: pinned bytes, so a change
    /// of the encoding that breaks old spools fails here.
    #[test]
    fn version_1_bytes_still_decode() {
        let bytes: &[u8] = &[
            1, 1, // version, kind message
            2, 0, 0, 0, 0, 0, 0, 0, 5, 0, // id: micros 2, worker 5
            9, 0, 0, 0, 0, 0, 0, 0, // received_at 9
            0, // flags
            1, 0, b'a', // sender "a"
            1, 0, 0, 0, 1, 0, b'b', // one recipient "b"
            b'h', b'i',
        ];
        let Record::Message { id, envelope, body } = decode(bytes).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(
            id,
            QueueId {
                micros: 2,
                worker: 5
            }
        );
        assert_eq!(envelope.sender, "a");
        assert_eq!(envelope.recipients, vec!["b".to_string()]);
        assert_eq!(envelope.received_at, 9);
        assert_eq!(body, b"hi");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = Vec::new();
        let env = Envelope {
            sender: "s@x".into(),
            recipients: vec!["r@y".into()],
            ..Default::default()
        };
        encode_message(&mut buf, id(), &env, b"");
        // Any prefix that cuts a header field must fail, never panic.
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err(), "prefix {n} decoded");
        }
        let mut out = Vec::new();
        encode_outcome(
            &mut out,
            id(),
            &Outcome::Deferred {
                until: 1,
                attempt: 1,
                pending: vec![1, 2, 3],
                error: "451 x".into(),
            },
        );
        // The error is an optional trailing field: the prefix without it
        // is a complete record of the first format.
        let without_error = out.len() - 2 - 5;
        for n in 0..out.len() {
            if n == without_error {
                assert!(
                    decode(&out[..n]).is_ok(),
                    "the old format no longer decodes"
                );
            } else {
                assert!(decode(&out[..n]).is_err(), "prefix {n} decoded");
            }
        }
    }

    /// A deferral written before the error field existed still decodes.
    #[test]
    fn deferral_without_error_decodes() {
        let mut bytes = vec![VERSION, KIND_OUTCOME];
        bytes.extend_from_slice(&id().to_bytes());
        bytes.push(OUTCOME_DEFERRED);
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            decode(&bytes).unwrap(),
            Record::Outcome {
                id: id(),
                outcome: Outcome::Deferred {
                    until: 7,
                    attempt: 2,
                    pending: vec![0],
                    error: String::new()
                }
            }
        );
    }

    #[test]
    fn bad_version_and_kind() {
        assert_eq!(decode(&[0, 1]), Err(DecodeError::Version(0)));
        assert_eq!(
            decode(&[VERSION + 1, 1]),
            Err(DecodeError::Version(VERSION + 1))
        );
        let mut buf = vec![VERSION, 9];
        buf.extend_from_slice(&id().to_bytes());
        assert_eq!(decode(&buf), Err(DecodeError::Kind(9)));
    }
}
