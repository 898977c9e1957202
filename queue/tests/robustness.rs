//! Robustness of the decoders: random and mutated records and segments never
//! panic, and a scan never reads past what the frames claim.

use verdant_queue::codec::{self, Record};
use verdant_queue::spool::frame::{self, Frames};
use verdant_queue::{Envelope, Outcome, QueueId};
use verdant_testkit::Rng;

fn valid_segment() -> Vec<u8> {
    let id = QueueId {
        micros: 7,
        worker: 1,
    };
    let env = Envelope {
        sender: "a@example.com".into(),
        recipients: vec!["b@example.net".into(), "c@example.org".into()],
        received_at: 1,
        flags: 0,
    };
    let mut seg = Vec::new();
    frame::append(&mut seg, |o| {
        codec::encode_message(o, id, &env, b"Subject: x\r\n\r\nbody\r\n")
    });
    frame::append(&mut seg, |o| {
        codec::encode_outcome(
            o,
            id,
            &Outcome::Deferred {
                until: 9,
                attempt: 2,
                pending: vec![1],
                error: "451 4.4.1 later".into(),
            },
        )
    });
    frame::append(&mut seg, |o| {
        codec::encode_outcome(o, id, &Outcome::Delivered)
    });
    seg
}

#[test]
fn mutated_segments_and_records_never_panic() {
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    let base = valid_segment();
    for _ in 0..20_000 {
        let mut seg = base.clone();
        for _ in 0..1 + rng.below(4) {
            if seg.is_empty() {
                break;
            }
            let at = rng.below(seg.len());
            match rng.below(3) {
                0 => seg[at] = rng.next() as u8,
                1 => seg.truncate(at),
                _ => seg.insert(at, rng.next() as u8),
            }
        }
        let mut frames = Frames::new(&seg);
        for (offset, payload) in frames.by_ref() {
            assert!(offset + frame::HEADER + payload.len() <= seg.len());
            // A frame that passed its checksum may still be nonsense if the
            // mutation hit before the header: decoding must not panic.
            if let Ok(Record::Message { envelope, body, .. }) = codec::decode(payload) {
                assert!(body.len() <= payload.len());
                assert!(envelope.recipients.len() <= payload.len());
            }
        }
        assert!(frames.valid_len() <= seg.len());
        // Raw payloads without framing.
        let start = rng.below(seg.len().max(1));
        let _ = codec::decode(&seg[start.min(seg.len())..]);
    }
}
