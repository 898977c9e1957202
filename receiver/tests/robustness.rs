//! Robustness: arbitrary bytes and mutated SMTP dialogues never panic the
//! session, never make it hold back more than one command line of input,
//! and every reply it writes is a well-formed SMTP reply line.
//!
//! A fixed-seed generator keeps the run repeatable; raise `ROUNDS` locally
//! to search longer. (Coverage-guided fuzzing needs a nightly toolchain,
//! which this project's machines do not have.)

use std::rc::Rc;

use verdant_queue::{QueueError, QueueId};
use verdant_receiver::session::MAX_COMMAND_LINE;
use verdant_receiver::{Event, Session, SessionConfig};
use verdant_testkit::Rng;

const ROUNDS: usize = 3000;
const MAX_SIZE: usize = 2000;

const DIALOGUE: &[u8] = b"EHLO fuzz.test\r\nMAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nline\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<c@example.net>\r\nBDAT 6\r\nab\r\ncdBDAT 4 LAST\r\nef\r\nRSET\r\nVRFY x\r\nNOOP\r\nHELP\r\nQUIT\r\n";

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"\r\n.\r\n",
    b"\n.\n",
    b"BDAT ",
    b"DATA\r\n",
    b"MAIL FROM:<",
    b">",
    b"RCPT TO:<",
    b" LAST",
    b"999999999999999999999",
    b"\0",
    b"\xff",
    b"SMTPUTF8",
    b"EHLO x\r\n",
    b"<>",
];

fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut v = if rng.below(4) == 0 {
        (0..rng.below(600)).map(|_| rng.next() as u8).collect()
    } else {
        DIALOGUE.to_vec()
    };
    for _ in 0..rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(4) {
            0 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            1 if at < v.len() => {
                let end = (at + rng.below(20)).min(v.len());
                v.drain(at..end);
            }
            2 if at < v.len() => v[at] = rng.next() as u8,
            _ => {
                let n = rng.below(1500);
                v.splice(at..at, std::iter::repeat_n(b'a', n));
            }
        }
    }
    v
}

fn check_replies(out: &[u8]) {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "unterminated reply"
    );
    let text = String::from_utf8_lossy(out);
    for line in text.split_terminator("\r\n") {
        let b = line.as_bytes();
        assert!(b.len() >= 4, "short reply line {line:?}");
        assert!(
            b[..3].iter().all(u8::is_ascii_digit),
            "bad code in {line:?}"
        );
        assert!(b[3] == b' ' || b[3] == b'-', "bad separator in {line:?}");
        assert!((b'2'..=b'5').contains(&b[0]), "bad class in {line:?}");
    }
}

#[test]
fn mutated_dialogues_never_break_the_session() {
    let cfg = Rc::new(SessionConfig {
        hostname: "fuzz.example".into(),
        max_message_size: MAX_SIZE,
        max_recipients: 3,
        max_errors: 50,
        client_networks: vec!["127.0.0.0/8".parse().unwrap()],
    });
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut messages = 0;
    for round in 0..ROUNDS {
        let input = mutate(&mut rng);
        let mut s = Session::new(cfg.clone(), "127.0.0.1".parse().unwrap());
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut closed = false;
        while pos < input.len() && !closed {
            let take = 1 + rng.below(64);
            buf.extend_from_slice(&input[pos..(pos + take).min(input.len())]);
            pos += take;
            loop {
                let (n, ev) = s.feed(&buf);
                assert!(n <= buf.len(), "round {round}: consumed more than given");
                buf.drain(..n);
                match ev {
                    Event::NeedMore => break,
                    Event::Flush => {
                        let out = std::mem::take(s.output());
                        assert!(out.len() < 2 * verdant_receiver::session::FLUSH_AT);
                        check_replies(&out);
                    }
                    Event::Close => {
                        closed = true;
                        break;
                    }
                    Event::Message => {
                        messages += 1;
                        let id = QueueId {
                            micros: round as u64,
                            worker: 0,
                        };
                        let (env, body) = s.message(id);
                        assert!(!env.recipients.is_empty());
                        // The limit applies to the content; our Received:
                        // header comes on top.
                        assert!(
                            body.len() <= MAX_SIZE + 300,
                            "round {round}: {} bytes",
                            body.len()
                        );
                        let fail = rng.below(5) == 0;
                        let result = if fail {
                            Err(QueueError::Storage(std::io::ErrorKind::Other))
                        } else {
                            Ok(())
                        };
                        s.queued(id, result);
                    }
                }
            }
            assert!(
                buf.len() < MAX_COMMAND_LINE,
                "round {round}: {} bytes held back",
                buf.len()
            );
            check_replies(&std::mem::take(s.output()));
        }
    }
    // The mutations must leave enough valid dialogues to reach the queue.
    assert!(
        messages > ROUNDS / 10,
        "only {messages} messages in {ROUNDS} rounds"
    );
}
