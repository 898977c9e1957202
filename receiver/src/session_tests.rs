//! Table-driven tests of the SMTP session.
//!
//! Every script goes through [`Setup::run`], which feeds the session exactly
//! the way the I/O loop in `server.rs` does: one buffer, `feed(&buf[start..])`,
//! advance by what was consumed, enqueue on [`Event::Message`], read more on
//! [`Event::NeedMore`], stop at [`Event::Close`]. The split strategy decides
//! which pieces the "reads" return, so the same script can be fed whole, in
//! two pieces at every position, or one byte at a time.

use std::io::ErrorKind;

use super::*;

/// The queue id every accepted message gets.
const ID: QueueId = QueueId {
    micros: 0x0123_4567_89AB_CDEF,
    worker: 7,
};
/// `ID` as displayed.
const ID_STR: &str = "0123456789ABCDEF0007";

const GREETING: &str = "220 mx.test ESMTP Verdant\r\n";
const EHLO_REPLY: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
                          250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n";
const HELO_REPLY: &str = "250 mx.test\r\n";
const OK: &str = "250 2.0.0 Ok\r\n";
const MAIL_OK: &str = "250 2.1.0 Ok\r\n";
const RCPT_OK: &str = "250 2.1.5 Ok\r\n";
const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
const QUEUED: &str = "250 2.0.0 Ok: queued as 0123456789ABCDEF0007\r\n";
const QUEUE_FAILED: &str = "451 4.3.0 Error: queue file write error, try again later\r\n";
const BYE: &str = "221 2.0.0 Bye\r\n";
const UNKNOWN: &str = "500 5.5.2 Error: command not recognized\r\n";
const LINE_TOO_LONG: &str = "500 5.5.2 Error: line too long\r\n";
const BARE: &str =
    "554 5.6.0 Error: bare <CR> or <LF> in message; lines must end with <CR><LF>\r\n";
const TEXT_LINE_TOO_LONG: &str = "554 5.6.0 Error: message line longer than 1000 octets\r\n";
const TOO_BIG: &str = "552 5.3.4 Error: message size exceeds fixed maximum message size\r\n";
const TOO_MANY_ERRORS: &str = "421 4.7.0 mx.test Error: too many errors\r\n";
const NEED_HELO: &str = "503 5.5.1 Error: send HELO/EHLO first\r\n";
const NEED_MAIL: &str = "503 5.5.1 Error: need MAIL command\r\n";
const NEED_RCPT: &str = "503 5.5.1 Error: need RCPT command\r\n";
const NO_RCPT: &str = "554 5.5.1 Error: no valid recipients\r\n";
const NESTED_MAIL: &str = "503 5.5.1 Error: nested MAIL command\r\n";
const NOT_IMPLEMENTED: &str = "502 5.5.1 Error: command not implemented\r\n";

/// The transaction most tests start with.
const TX: &str = "EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n";
/// The greeting and the replies to [`TX`].
fn tx_replies() -> String {
    format!("{GREETING}{EHLO_REPLY}{MAIL_OK}{RCPT_OK}")
}

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 10_000,
        max_recipients: 3,
        max_errors: 5,
        client_networks: vec!["127.0.0.0/8".parse().unwrap()],
    }
}

/// How the script is cut into the pieces successive reads return.
#[derive(Clone, Copy, Debug)]
enum Split<'a> {
    /// One read.
    Whole,
    /// Two reads, cut before this offset.
    At(usize),
    /// One byte per read.
    Bytes,
    /// Reads of this many bytes.
    Every(usize),
    /// Cut before each of these ascending offsets.
    Points(&'a [usize]),
}

fn pieces<'s>(script: &'s [u8], split: Split<'_>) -> Vec<&'s [u8]> {
    match split {
        Split::Whole => vec![script],
        Split::At(k) => vec![&script[..k], &script[k..]],
        Split::Bytes => script.chunks(1).collect(),
        Split::Every(n) => script.chunks(n).collect(),
        Split::Points(points) => {
            let mut v = Vec::new();
            let mut from = 0;
            for &p in points {
                v.push(&script[from..p]);
                from = p;
            }
            v.push(&script[from..]);
            v
        }
    }
}

/// What a client saw and what the queue got.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    /// Everything the session wrote, greeting included.
    out: String,
    /// Messages the queue accepted: envelope (`received_at` zeroed) and
    /// content (the `Received:` date replaced by `DATE`).
    messages: Vec<(Envelope, Vec<u8>)>,
    /// Whether the session returned [`Event::Close`].
    closed: bool,
    /// How many times the session returned [`Event::Message`].
    offered: usize,
}

impl Run {
    fn bodies(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
            .collect()
    }
}

/// A session's surroundings: its configuration, its peer and its queue.
struct Setup {
    cfg: SessionConfig,
    peer: IpAddr,
    /// The queue's answer to the n-th message (from 0).
    queue: fn(usize) -> Result<(), QueueError>,
}

impl Setup {
    fn new() -> Self {
        Setup {
            cfg: config(),
            peer: "127.0.0.1".parse().unwrap(),
            queue: |_| Ok(()),
        }
    }

    fn peer(mut self, ip: &str) -> Self {
        self.peer = ip.parse().unwrap();
        self
    }

    fn cfg(mut self, f: impl FnOnce(&mut SessionConfig)) -> Self {
        f(&mut self.cfg);
        self
    }

    fn queue(mut self, q: fn(usize) -> Result<(), QueueError>) -> Self {
        self.queue = q;
        self
    }

    /// Runs `script` through a new session, as the I/O loop would.
    fn run(&self, script: &[u8], split: Split<'_>) -> Run {
        let before = verdant_queue::now_micros();
        let mut s = Session::new(Rc::new(self.cfg.clone()), self.peer);
        let mut out = Vec::new();
        let mut raw = Vec::new();
        let mut offered = 0;
        let mut buf: Vec<u8> = Vec::new();
        let mut start = 0;
        let mut reads = pieces(script, split).into_iter();
        let closed = loop {
            let close = loop {
                let (n, event) = s.feed(&buf[start..]);
                assert!(
                    n <= buf.len() - start,
                    "consumed {n} of {} bytes",
                    buf.len() - start
                );
                start += n;
                match event {
                    Event::NeedMore => break false,
                    Event::Close => break true,
                    Event::Flush => {}
                    Event::Message => {
                        let result = (self.queue)(offered);
                        offered += 1;
                        let (envelope, body) = s.message(ID);
                        let message = (envelope.clone(), body.to_vec());
                        s.queued(ID, result.clone());
                        if result.is_ok() {
                            raw.push(message);
                        }
                    }
                }
            };
            out.append(s.output());
            if close {
                break true;
            }
            buf.drain(..start);
            start = 0;
            // What server.rs relies on: only an incomplete command line is
            // left over, never content.
            assert!(
                buf.len() < MAX_COMMAND_LINE,
                "{} bytes left unconsumed",
                buf.len()
            );
            assert!(
                buf.is_empty() || !s.in_content(),
                "content left unconsumed: {:?}",
                String::from_utf8_lossy(&buf)
            );
            match reads.next() {
                Some(p) => buf.extend_from_slice(p),
                None => break false,
            }
        };
        let after = verdant_queue::now_micros();
        let messages = raw
            .into_iter()
            .map(|(mut envelope, body)| {
                assert!(
                    (before..=after).contains(&envelope.received_at),
                    "received_at {} not in {before}..={after}",
                    envelope.received_at
                );
                envelope.received_at = 0;
                (envelope, normalize_date(body, before, after))
            })
            .collect();
        Run {
            out: String::from_utf8(out).expect("replies are UTF-8"),
            messages,
            closed,
            offered,
        }
    }
}

/// Runs `script` whole with the default setup.
fn run(script: &str) -> Run {
    Setup::new().run(script.as_bytes(), Split::Whole)
}

/// Checks that the `Received:` header's date is an RFC 5322 date of a second
/// between `before` and `after`, and replaces it with `DATE`.
fn normalize_date(body: Vec<u8>, before: u64, after: u64) -> Vec<u8> {
    assert!(body.starts_with(b"Received: "), "no Received: header first");
    // The header ends at the first CRLF not followed by a folding tab.
    let end = (0..body.len() - 1)
        .find(|&i| &body[i..i + 2] == b"\r\n" && body.get(i + 2) != Some(&b'\t'))
        .expect("Received: header ends");
    let semi = body[..end]
        .windows(2)
        .rposition(|w| w == b"; ")
        .expect("Received: header has a date");
    let date = std::str::from_utf8(&body[semi + 2..end]).unwrap();
    let ok = (before / 1_000_000..=after / 1_000_000)
        .any(|sec| verdant_queue::time::rfc5322(sec * 1_000_000) == date);
    assert!(ok, "bad Received: date {date:?}");
    let mut v = body[..semi + 2].to_vec();
    v.extend_from_slice(b"DATE");
    v.extend_from_slice(&body[end..]);
    v
}

/// The `Received:` header a message gets, with `DATE` for the date.
fn received(helo: &str, peer: &str, with: &str, rcpt: Option<&str>) -> String {
    let rcpt = rcpt.map_or(String::new(), |r| format!("\r\n\tfor <{r}>"));
    format!(
        "Received: from {helo} ([{peer}])\r\n\tby mx.test (Verdant) with {with} id {ID_STR}{rcpt}; DATE\r\n"
    )
}

fn envelope(sender: &str, recipients: &[&str], flags: u8) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        received_at: 0,
        flags,
    }
}

/// Splits the script at every position, and one byte at a time, and checks
/// the result is the same as feeding it whole; returns that result.
fn same_at_every_split(setup: &Setup, script: &[u8]) -> Run {
    let whole = setup.run(script, Split::Whole);
    for k in 0..=script.len() {
        assert_eq!(
            setup.run(script, Split::At(k)),
            whole,
            "split at {k}: {:?} | {:?}",
            String::from_utf8_lossy(&script[..k]),
            String::from_utf8_lossy(&script[k..])
        );
    }
    assert_eq!(setup.run(script, Split::Bytes), whole, "byte by byte");
    whole
}

// 1. A full transaction.

#[test]
fn full_transaction() {
    let script = format!("{TX}DATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n");
    let r = run(&script);
    assert_eq!(
        r.out,
        format!("{}{GO_AHEAD}{QUEUED}{BYE}", tx_replies()),
        "transcript"
    );
    assert!(r.closed);
    assert_eq!(r.offered, 1);
    let want_body = format!(
        "{}Subject: hi\r\n\r\n.dot\r\nbody\r\n",
        received(
            "client.example",
            "127.0.0.1",
            "ESMTP",
            Some("b@example.net")
        )
    );
    assert_eq!(
        r.messages,
        vec![(
            envelope("a@example.com", &["b@example.net"], 0),
            want_body.into_bytes()
        )]
    );
    assert!(!r.bodies()[0].contains("????"), "placeholder left in");
    // The EHLO reply, line by line.
    for ext in [
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(
            r.out.contains(&format!("250-{ext}\r\n")) || r.out.contains(&format!("250 {ext}\r\n")),
            "EHLO reply lacks {ext}"
        );
    }
    assert!(!r.out.contains("STARTTLS") && !r.out.contains("AUTH"));
}

#[test]
fn message_details() {
    // (script after EHLO, envelope, content after the Received: header)
    let cases: Vec<(&str, Envelope, &str)> = vec![
        (
            "MAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\nDATA\r\n\u{e9}t\u{e9}\r\n.\r\n",
            envelope("", &["b@example.net"], Envelope::BODY_8BITMIME),
            "\u{e9}t\u{e9}\r\n",
        ),
        (
            "MAIL FROM:<a@example.com> BODY=7BIT\r\nRCPT TO:<b@example.net>\r\nDATA\r\n.\r\n",
            envelope("a@example.com", &["b@example.net"], 0),
            "",
        ),
        (
            "MAIL FROM:<a@example.com> SMTPUTF8 SIZE=10000\r\nRCPT TO:<b@example.net>\r\nDATA\r\n...\r\n.x\r\n.\r\n",
            envelope("a@example.com", &["b@example.net"], Envelope::SMTPUTF8),
            "..\r\nx\r\n",
        ),
        (
            "mail from:<a@example.com>\r\nrcpt to:<b@example.net>\r\ndata\r\nx\r\n.\r\n",
            envelope("a@example.com", &["b@example.net"], 0),
            "x\r\n",
        ),
    ];
    for (script, env, content) in cases {
        let r = run(&format!("EHLO client.example\r\n{script}"));
        assert_eq!(
            r.out,
            format!("{}{GO_AHEAD}{QUEUED}", tx_replies()),
            "{script:?}"
        );
        let want = format!(
            "{}{content}",
            received(
                "client.example",
                "127.0.0.1",
                // RFC 6531 §3.7.3: SMTPUTF8 transactions are "UTF8SMTP".
                if script.contains("SMTPUTF8") {
                    "UTF8SMTP"
                } else {
                    "ESMTP"
                },
                Some("b@example.net")
            )
        );
        assert_eq!(r.messages, vec![(env, want.into_bytes())], "{script:?}");
    }
}

#[test]
fn received_header_names_no_recipient_when_several() {
    let script = format!("{TX}RCPT TO:<c@example.net>\r\nDATA\r\nx\r\n.\r\n");
    let r = run(&script);
    assert_eq!(
        r.out,
        format!("{}{RCPT_OK}{GO_AHEAD}{QUEUED}", tx_replies())
    );
    assert_eq!(
        r.bodies(),
        vec![format!(
            "{}x\r\n",
            received("client.example", "127.0.0.1", "ESMTP", None)
        )]
    );
    assert_eq!(
        r.messages[0].0.recipients,
        vec!["b@example.net", "c@example.net"]
    );
}

#[test]
fn client_name_is_sanitized_in_received() {
    // A name cannot break the header it is written into.
    let r = run("EHLO a(b)\"c;\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\r\n.\r\n");
    assert!(r.out.ends_with(QUEUED), "{}", r.out);
    assert!(
        r.bodies()[0].starts_with("Received: from a(b)\"c; ([127.0.0.1])\r\n\tby mx.test"),
        "{}",
        r.bodies()[0]
    );
}

// 2. Pipelining, split at every byte boundary.

const PIPELINED: &str = "EHLO client.example\r\n\
    MAIL FROM:<a@example.com>\r\n\
    RCPT TO:<b@example.net>\r\n\
    RCPT TO:<c@example.net>\r\n\
    DATA\r\n\
    Subject: one\r\n\
    \r\n\
    ..stuffed\r\n\
    .\r\n\
    MAIL FROM:<d@example.com>\r\n\
    RCPT TO:<e@example.net>\r\n\
    BDAT 10 LAST\r\n\
    chunk on\r\n\
    QUIT\r\n";

#[test]
fn pipelined_script_is_split_proof() {
    let script = PIPELINED.as_bytes();
    let r = same_at_every_split(&Setup::new(), script);
    assert_eq!(
        r.out,
        format!(
            "{GREETING}{EHLO_REPLY}{MAIL_OK}{RCPT_OK}{RCPT_OK}{GO_AHEAD}{QUEUED}\
             {MAIL_OK}{RCPT_OK}{QUEUED}{BYE}"
        )
    );
    assert!(r.closed);
    assert_eq!(
        r.messages,
        vec![
            (
                envelope("a@example.com", &["b@example.net", "c@example.net"], 0),
                format!(
                    "{}Subject: one\r\n\r\n.stuffed\r\n",
                    received("client.example", "127.0.0.1", "ESMTP", None)
                )
                .into_bytes()
            ),
            (
                envelope("d@example.com", &["e@example.net"], 0),
                format!(
                    "{}chunk on\r\n",
                    received(
                        "client.example",
                        "127.0.0.1",
                        "ESMTP",
                        Some("e@example.net")
                    )
                )
                .into_bytes()
            ),
        ]
    );
    // Many random cuts at once.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..300 {
        let mut points = Vec::new();
        let mut at = 0;
        loop {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            at += 1 + (seed % 40) as usize;
            if at >= script.len() {
                break;
            }
            points.push(at);
        }
        assert_eq!(
            Setup::new().run(script, Split::Points(&points)),
            r,
            "cut at {points:?}"
        );
    }
}

// 3. SMTP smuggling (CVE-2023-51764).

#[test]
fn smuggling_variants_are_rejected() {
    const SMUGGLED: &str = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled";
    for variant in ["\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r\n.\r"] {
        // (what follows the smuggled message, replies after the 554)
        let tails: [(&str, String); 2] = [
            // The smuggled message's own end is the real end of data.
            ("\r\n.\r\nQUIT\r\n", BYE.to_string()),
            // A real end of data after that: an empty line and "." are
            // then commands, and both unknown.
            (
                "\r\n.\r\n\r\n.\r\nQUIT\r\n",
                format!("{UNKNOWN}{UNKNOWN}{BYE}"),
            ),
        ];
        for (tail, after) in tails {
            let script = format!("{TX}DATA\r\nhello{variant}{SMUGGLED}{tail}");
            let setup = Setup::new().cfg(|c| c.max_errors = 10);
            let r = same_at_every_split(&setup, script.as_bytes());
            assert_eq!(
                r.out,
                format!("{}{GO_AHEAD}{BARE}{after}", tx_replies()),
                "{variant:?} {tail:?}"
            );
            assert_eq!((r.offered, r.messages.len()), (0, 0), "{variant:?}");
            // The smuggled MAIL, RCPT and DATA got no reply.
            assert_eq!(r.out.matches("250 2.1.0").count(), 1, "{variant:?}");
            assert_eq!(r.out.matches("250 2.1.5").count(), 1, "{variant:?}");
            assert_eq!(r.out.matches("354 ").count(), 1, "{variant:?}");
            assert!(r.closed);
        }
    }
}

#[test]
fn bare_line_ends_anywhere_in_content_are_rejected() {
    for content in [
        "a\nb\r\n", "a\rb\r\n", "a\r\r\n", "\n", "\r\n\n", "x\r\n.\n", ".\r.\r\n", "..\n", "a\r",
    ] {
        let script = format!("{TX}DATA\r\n{content}\r\n.\r\nNOOP\r\n");
        let r = same_at_every_split(&Setup::new(), script.as_bytes());
        assert_eq!(
            r.out,
            format!("{}{GO_AHEAD}{BARE}{OK}", tx_replies()),
            "{content:?}"
        );
        assert_eq!(r.offered, 0, "{content:?}");
    }
}

// 4. Over-long lines.

#[test]
fn command_line_length_limit() {
    // "NOOP " + padding + CRLF: exactly 512 octets is fine, 513 is not.
    let line = |len: usize| format!("NOOP {}\r\n", "x".repeat(len - 7));
    for (len, reply) in [
        (511, OK),
        (512, OK),
        (513, LINE_TOO_LONG),
        (2000, LINE_TOO_LONG),
    ] {
        let script = format!("EHLO c\r\n{}NOOP\r\n", line(len));
        assert_eq!(line(len).len(), len);
        let r = same_at_every_split(&Setup::new(), script.as_bytes());
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO_REPLY}{reply}{OK}"),
            "{len}-octet line"
        );
        assert!(!r.closed);
    }
}

#[test]
fn endless_command_line_is_not_buffered() {
    let mut s = Session::new(Rc::new(config()), "127.0.0.1".parse().unwrap());
    s.output().clear();
    assert_eq!(s.feed(b"EHLO c\r\n"), (8, Event::NeedMore));
    s.output().clear();
    // Up to 511 octets may wait for the rest of the line; fed again with
    // more, they are all consumed.
    assert_eq!(s.feed(&[b'x'; 511]), (0, Event::NeedMore));
    assert_eq!(s.feed(&[b'x'; 512]), (512, Event::NeedMore));
    assert!(s.output().is_empty());
    let piece = vec![b'x'; 1024];
    for _ in 0..100 {
        assert_eq!(s.feed(&piece), (piece.len(), Event::NeedMore));
        assert!(s.output().is_empty());
    }
    assert_eq!(s.feed(b"xx\r\nNOOP\r\n"), (10, Event::NeedMore));
    assert_eq!(
        String::from_utf8_lossy(s.output()),
        format!("{LINE_TOO_LONG}{OK}")
    );

    // The same through the driver, one byte per read: it checks that never
    // more than 511 octets are left over.
    let script = format!("EHLO c\r\n{}\r\nNOOP\r\n", "y".repeat(100 * 1024));
    for split in [Split::Bytes, Split::Every(1000), Split::Every(4096)] {
        let r = Setup::new().run(script.as_bytes(), split);
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO_REPLY}{LINE_TOO_LONG}{OK}"),
            "{split:?}"
        );
    }
}

#[test]
fn text_line_length_limit() {
    // (line without CRLF, accepted)
    let cases = [
        ("a".repeat(998), true),
        ("a".repeat(999), false),
        ("a".repeat(5000), false),
        (format!("{}\r", "a".repeat(997)), false), // bare CR, not too long
    ];
    for (line, ok) in cases {
        let script = format!("{TX}DATA\r\nshort\r\n{line}\r\nshort\r\n.\r\nNOOP\r\n");
        let r = Setup::new().run(script.as_bytes(), Split::Every(7));
        assert_eq!(r, run(&script), "{} octets, split", line.len());
        if ok {
            assert_eq!(r.out, format!("{}{GO_AHEAD}{QUEUED}{OK}", tx_replies()));
            assert_eq!(
                r.bodies(),
                vec![format!(
                    "{}short\r\n{line}\r\nshort\r\n",
                    received(
                        "client.example",
                        "127.0.0.1",
                        "ESMTP",
                        Some("b@example.net")
                    )
                )]
            );
        } else {
            let err = if line.ends_with('\r') {
                BARE
            } else {
                TEXT_LINE_TOO_LONG
            };
            assert_eq!(
                r.out,
                format!("{}{GO_AHEAD}{err}{OK}", tx_replies()),
                "{} octets",
                line.len() + 2
            );
            assert_eq!(r.offered, 0);
        }
    }
}

#[test]
fn text_line_limit_applies_in_bdat_too() {
    for (len, ok) in [(998, true), (999, false)] {
        let chunk = format!("{}\r\n", "b".repeat(len));
        let script = format!("{TX}BDAT {} LAST\r\n{chunk}NOOP\r\n", chunk.len());
        let r = run(&script);
        let reply = if ok { QUEUED } else { TEXT_LINE_TOO_LONG };
        assert_eq!(r.out, format!("{}{reply}{OK}", tx_replies()), "{len}");
        assert_eq!(r.offered, usize::from(ok));
    }
}

/// RFC 5321 §4.5.3.1.6: the 1000-octet limit does not count the leading
/// dot added for transparency.
#[test]

fn dot_stuffed_text_line_of_1000_octets() {
    // The line is "." + 997 octets + CRLF: 1000 octets, 1001 on the wire.
    let script = format!("{TX}DATA\r\n..{}\r\n.\r\n", "a".repeat(997));
    let r = run(&script);
    assert_eq!(r.out, format!("{}{GO_AHEAD}{QUEUED}", tx_replies()));
}

// 5. Oversize.

#[test]
fn size_parameter_above_the_limit() {
    for (size, reply) in [
        ("9999", MAIL_OK),
        ("10000", MAIL_OK),
        ("10001", TOO_BIG),
        ("4294967296000", TOO_BIG),
        ("18446744073709551614", TOO_BIG),
        // From usize::MAX on, smtp-proto sees no number.
        (
            "18446744073709551615",
            "501 5.5.4 Error: invalid parameter SIZE\r\n",
        ),
    ] {
        let r = run(&format!(
            "EHLO c\r\nMAIL FROM:<a@b.c> SIZE={size}\r\nMAIL FROM:<a@b.c>\r\n"
        ));
        // After a 552 (or 501) there is no transaction: the second MAIL is
        // fine.
        let second = if reply == MAIL_OK {
            NESTED_MAIL
        } else {
            MAIL_OK
        };
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO_REPLY}{reply}{second}"),
            "SIZE={size}"
        );
    }
}

#[test]
fn content_above_the_limit() {
    // 100 lines of 100 octets is exactly the limit of 10000.
    let line = "x".repeat(98) + "\r\n";
    let at_limit = line.repeat(100);
    // One octet more: the last line is 101 octets.
    let over = format!("{}{}\r\n", line.repeat(99), "x".repeat(99));
    assert_eq!((at_limit.len(), over.len()), (10_000, 10_001));
    // DATA counts after dot-unstuffing; BDAT has no dot rules.
    let stuffed = format!(".{}", line.repeat(100));
    let huge = ("z".repeat(998) + "\r\n").repeat(1000);
    // (content, accepted with DATA, accepted with BDAT)
    for (content, data_ok, bdat_ok) in [
        (&at_limit, true, true),
        (&over, false, false),
        (&huge, false, false),
        (&stuffed, true, false),
    ] {
        for bdat in [false, true] {
            let ok = if bdat { bdat_ok } else { data_ok };
            let send = if bdat {
                format!("BDAT {} LAST\r\n{content}", content.len())
            } else {
                format!("DATA\r\n{content}.\r\n")
            };
            let script = format!("{TX}{send}MAIL FROM:<a@b.c>\r\nQUIT\r\n");
            let r = Setup::new().run(script.as_bytes(), Split::Every(1500));
            let go = if bdat { "" } else { GO_AHEAD };
            let reply = if ok { QUEUED } else { TOO_BIG };
            assert_eq!(
                r.out,
                format!("{}{go}{reply}{MAIL_OK}{BYE}", tx_replies()),
                "{} octets, BDAT {bdat}",
                content.len()
            );
            assert_eq!(r.offered, usize::from(ok));
            if ok {
                let body = &r.messages[0].1;
                assert!(body.ends_with(at_limit.as_bytes()));
            }
        }
    }
}

// 6. Bad syntax.

#[test]
fn syntax_errors() {
    const MAIL: &str = "MAIL FROM:<a@example.com>\r\n";
    const UTF8_MAIL: &str = "MAIL FROM:<a@example.com> SMTPUTF8\r\n";
    // (commands before, the command, its reply's start)
    let cases: &[(&str, &str, &str)] = &[
        (
            "",
            "MAIL FROM <a@example.com>",
            "501 5.5.4 Syntax: MAIL FROM:<reverse-path>",
        ),
        (
            "",
            "MAIL <a@example.com>",
            "501 5.5.4 Syntax: MAIL FROM:<reverse-path>",
        ),
        (
            "",
            "MAIL FROM:a@example.com",
            "501 5.5.4 Syntax: MAIL FROM:<reverse-path>",
        ),
        ("", "MAIL", "501 5.5.4 Syntax: MAIL FROM:<reverse-path>"),
        ("", "MAIL FROM:<bad address>", "501 5.1.7 "),
        ("", "MAIL FROM:<bad address", "501 5.1.7 "),
        ("", "MAIL FROM:<a..b@example.com>", "501 5.1.7 "),
        ("", "MAIL FROM:<noatsign>", "501 5.1.7 "),
        ("", "MAIL FROM:<a@b@c>", "501 5.1.7 "),
        (
            "",
            "MAIL FROM:<a@example.com",
            "501 5.5.4 Syntax: MAIL FROM:",
        ),
        ("", "MAIL FROM:<a@example.com> RET=FULL", "555 5.5.4 "),
        ("", "MAIL FROM:<a@example.com> RET=HDRS", "555 5.5.4 "),
        ("", "MAIL FROM:<a@example.com> ENVID=abc", "555 5.5.4 "),
        (
            "",
            "MAIL FROM:<a@example.com> BODY=BINARYMIME",
            "555 5.5.4 ",
        ),
        ("", "MAIL FROM:<a@example.com> REQUIRETLS", "555 5.5.4 "),
        ("", "MAIL FROM:<a@example.com> MT-PRIORITY=3", "555 5.5.4 "),
        ("", "MAIL FROM:<a@example.com> BY=120;R", "555 5.5.4 "),
        ("", "MAIL FROM:<a@example.com> CONPERM", "555 5.5.4 "),
        ("", "MAIL FROM:<a@example.com> HOLDFOR=60", "555 5.5.4 "),
        (
            "",
            "MAIL FROM:<a@example.com> HOLDUNTIL=2000000000",
            "555 5.5.4 ",
        ),
        ("", "MAIL FROM:<a@example.com> AUTH=<>", "555 5.5.4 "),
        ("", "MAIL FROM:<a@example.com> MTRK=abc:60", "555 5.5.4 "),
        (
            "",
            "MAIL FROM:<a@example.com> SOLICIT=org.example",
            "555 5.5.4 ",
        ),
        ("", "MAIL FROM:<a@example.com> TRANSID=<x@y>", "555 5.5.4 "),
        (
            "",
            "MAIL FROM:<a@example.com> FOO=BAR",
            "555 5.5.4 Error: unsupported parameter FOO=BAR",
        ),
        (
            "",
            "MAIL FROM:<a@example.com> SIZE=abc",
            "501 5.5.4 Error: invalid parameter SIZE",
        ),
        (
            "",
            "MAIL FROM:<a@example.com> BODY=9BIT",
            "501 5.5.4 Error: invalid parameter BODY",
        ),
        (
            "",
            "MAIL FROM:<a@example.com> BODY=8BITMIME SMTPUTF8 SIZE=1",
            "250 2.1.0 ",
        ),
        ("", "MAIL FROM:<j\u{f6}s\u{e9}@example.com>", "553 5.6.7 "),
        (
            "",
            "MAIL FROM:<j\u{f6}s\u{e9}@example.com> SMTPUTF8",
            "250 2.1.0 ",
        ),
        (
            "",
            "MAIL FROM:<a@b\u{fc}cher.example> SMTPUTF8",
            "250 2.1.0 ",
        ),
        (
            MAIL,
            "RCPT TO:b@example.net",
            "501 5.5.4 Syntax: RCPT TO:<forward-path>",
        ),
        (
            MAIL,
            "RCPT TO b@example.net",
            "501 5.5.4 Syntax: RCPT TO:<forward-path>",
        ),
        (MAIL, "RCPT", "501 5.5.4 Syntax: RCPT TO:<forward-path>"),
        (MAIL, "RCPT TO:<>", "501 5.1.3 "),
        (MAIL, "RCPT TO:<bad address>", "501 5.1.3 "),
        (MAIL, "RCPT TO:<b@example.net> NOTIFY=SUCCESS", "555 5.5.4 "),
        (
            MAIL,
            "RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net",
            "555 5.5.4 ",
        ),
        (
            MAIL,
            "RCPT TO:<b@example.net> FOO=1",
            "555 5.5.4 Error: unsupported parameter FOO=1",
        ),
        (MAIL, "RCPT TO:<j\u{f6}s\u{e9}@example.net>", "553 5.6.7 "),
        (
            UTF8_MAIL,
            "RCPT TO:<j\u{f6}s\u{e9}@example.net>",
            "250 2.1.5 ",
        ),
        (UTF8_MAIL, "RCPT TO:<b@example.net>", "250 2.1.5 "),
        ("", "FOO", "500 5.5.2 Error: command not recognized"),
        ("", "FOO BAR", "500 5.5.2 Error: command not recognized"),
        ("", "", "500 5.5.2 "),
        ("", ".", "500 5.5.2 "),
        ("", "MAILX FROM:<a@example.com>", "500 5.5.2 "),
        ("", "EHLO", "501 5.5.4 Syntax: EHLO domain"),
        ("", "EHLO ", "501 5.5.4 Syntax: EHLO domain"),
        ("", "HELO", "501 5.5.4 Syntax: HELO domain"),
        ("", "BDAT", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
        ("", "BDAT abc", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
        ("", "BDAT -1", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
        (
            "",
            "BDAT 10 FIRST",
            "501 5.5.4 Syntax: BDAT chunk-size [LAST]",
        ),
        ("", "VRFY", "501 5.5.4 Syntax: VRFY string"),
    ];
    for &(before, line, want) in cases {
        let prefix = run(&format!("EHLO c\r\n{before}")).out;
        // The command, then a NOOP that shows the session goes on.
        let r = run(&format!("EHLO c\r\n{before}{line}\r\nNOOP\r\n"));
        let reply = r
            .out
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(OK))
            .unwrap_or_else(|| panic!("{line:?}: {:?}", r.out));
        assert!(
            reply.starts_with(want)
                && reply.ends_with("\r\n")
                && reply.matches("\r\n").count() == 1,
            "{line:?}: got {reply:?}, want {want:?}"
        );
        assert!(!r.closed, "{line:?}");
    }
}

#[test]
fn mail_parameters_reach_the_envelope() {
    for (params, flags) in [
        ("", 0),
        (" BODY=7BIT", 0),
        (" BODY=8BITMIME", Envelope::BODY_8BITMIME),
        (" SMTPUTF8", Envelope::SMTPUTF8),
        (
            " SMTPUTF8 BODY=8BITMIME",
            Envelope::SMTPUTF8 | Envelope::BODY_8BITMIME,
        ),
    ] {
        let r = run(&format!(
            "EHLO c\r\nMAIL FROM:<a@b.c>{params}\r\nRCPT TO:<d@e.f>\r\nDATA\r\n.\r\n"
        ));
        assert_eq!(r.messages.len(), 1, "{params:?}: {}", r.out);
        assert_eq!(r.messages[0].0.flags, flags, "{params:?}");
    }
}

// 7. Commands out of order.

#[test]
fn commands_out_of_order() {
    // (script, replies after the greeting, closed)
    let cases: &[(&str, String, bool)] = &[
        (
            "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n",
            format!("{NEED_HELO}{NEED_MAIL}"),
            false,
        ),
        (
            "EHLO c\r\nRCPT TO:<d@e.f>\r\n",
            format!("{EHLO_REPLY}{NEED_MAIL}"),
            false,
        ),
        (
            "EHLO c\r\nDATA\r\n",
            format!("{EHLO_REPLY}{NEED_RCPT}"),
            false,
        ),
        (
            "EHLO c\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n",
            format!("{EHLO_REPLY}{MAIL_OK}{NO_RCPT}"),
            false,
        ),
        (
            "EHLO c\r\nMAIL FROM:<a@b.c>\r\nMAIL FROM:<x@b.c>\r\nRCPT TO:<d@e.f>\r\n",
            format!("{EHLO_REPLY}{MAIL_OK}{NESTED_MAIL}{RCPT_OK}"),
            false,
        ),
        // A refused BDAT's chunk is read as content, not as commands.
        (
            "EHLO c\r\nBDAT 12\r\nQUIT\r\nNOOP\r\nNOOP\r\n",
            format!("{EHLO_REPLY}{NEED_MAIL}{OK}"),
            false,
        ),
        (
            "EHLO c\r\nBDAT 12 LAST\r\nQUIT\r\nNOOP\r\nNOOP\r\n",
            format!("{EHLO_REPLY}{NEED_MAIL}{OK}"),
            false,
        ),
        (
            "BDAT 6\r\nQUIT\r\nNOOP\r\n",
            format!("{NEED_MAIL}{OK}"),
            false,
        ),
        (
            "EHLO c\r\nMAIL FROM:<a@b.c>\r\nBDAT 12 LAST\r\nQUIT\r\nNOOP\r\nRCPT TO:<d@e.f>\r\n",
            format!("{EHLO_REPLY}{MAIL_OK}{NO_RCPT}{RCPT_OK}"),
            false,
        ),
        // RSET ends the transaction, keeps the greeting.
        (
            "EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRSET\r\nRCPT TO:<d@e.f>\r\nDATA\r\nMAIL FROM:<a@b.c>\r\n",
            format!("{EHLO_REPLY}{MAIL_OK}{RCPT_OK}{OK}{NEED_MAIL}{NEED_RCPT}{MAIL_OK}"),
            false,
        ),
        // EHLO does too (RFC 5321 §4.1.4).
        (
            "EHLO c\r\nMAIL FROM:<a@b.c>\r\nEHLO c\r\nRCPT TO:<d@e.f>\r\n",
            format!("{EHLO_REPLY}{MAIL_OK}{EHLO_REPLY}{NEED_MAIL}"),
            false,
        ),
        // RSET and NOOP before EHLO are fine.
        ("RSET\r\nNOOP\r\nQUIT\r\n", format!("{OK}{OK}{BYE}"), true),
        // After QUIT nothing is read.
        ("QUIT\r\nNOOP\r\n", BYE.to_string(), true),
        // RCPT after the content began.
        (
            "EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 4\r\nab\r\nRCPT TO:<g@e.f>\r\n",
            format!(
                "{EHLO_REPLY}{MAIL_OK}{RCPT_OK}250 2.0.0 4 octets received so far\r\n\
                 503 5.5.1 Error: RCPT after message content\r\n"
            ),
            false,
        ),
    ];
    for (script, want, closed) in cases {
        let r = same_at_every_split(&Setup::new(), script.as_bytes());
        assert_eq!(r.out, format!("{GREETING}{want}"), "{script:?}");
        assert_eq!(r.closed, *closed, "{script:?}");
        assert_eq!(r.offered, 0, "{script:?}");
    }
}

// 8. Relay.

#[test]
fn relay_policy() {
    for (peer, allowed) in [
        ("127.0.0.1", true),
        ("127.1.2.3", true),
        ("::ffff:127.0.0.1", true),
        ("192.0.2.1", false),
        ("::1", false),
        ("::ffff:192.0.2.1", false),
    ] {
        let script = format!("{TX}DATA\r\nx\r\n.\r\n");
        let r = Setup::new().peer(peer).run(script.as_bytes(), Split::Whole);
        let tail = if allowed {
            format!("{RCPT_OK}{GO_AHEAD}{QUEUED}")
        } else {
            // DATA is refused, so the content lines are (unknown) commands.
            format!("554 5.7.1 <b@example.net>: Relay access denied\r\n{NO_RCPT}{UNKNOWN}{UNKNOWN}")
        };
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO_REPLY}{MAIL_OK}{tail}"),
            "{peer}"
        );
        assert_eq!(r.offered, usize::from(allowed), "{peer}");
        if allowed {
            assert!(
                // A v4-mapped peer is shown as the v4 address it is.
                r.bodies()[0].starts_with(&format!(
                    "Received: from client.example ([{}])",
                    peer.trim_start_matches("::ffff:")
                )),
                "{}",
                r.bodies()[0]
            );
        }
    }
}

// 9. Limits.

#[test]
fn too_many_recipients() {
    let script = format!(
        "{TX}RCPT TO:<c@example.net>\r\nRCPT TO:<d@example.net>\r\nRCPT TO:<e@example.net>\r\nDATA\r\nx\r\n.\r\n"
    );
    let r = run(&script);
    assert_eq!(
        r.out,
        format!(
            "{}{RCPT_OK}{RCPT_OK}452 4.5.3 Error: too many recipients\r\n{GO_AHEAD}{QUEUED}",
            tx_replies()
        )
    );
    assert_eq!(
        r.messages[0].0.recipients,
        vec!["b@example.net", "c@example.net", "d@example.net"]
    );
    // 452 is no error: it does not count towards max_errors.
    let script = format!("{TX}{}NOOP\r\n", "RCPT TO:<c@example.net>\r\n".repeat(20));
    let r = run(&script);
    assert!(r.out.ends_with(OK) && !r.closed, "{}", r.out);
}

#[test]
fn too_many_errors_close_the_session() {
    // (set-up, an erroneous exchange, its replies): each error path counts.
    let cases: &[(&str, &str, String)] = &[
        ("", "FOO\r\n", UNKNOWN.to_string()),
        (
            "",
            "MAIL FROM:<a@b\r\n",
            "501 5.5.4 Syntax: MAIL FROM:<reverse-path> [parameters]\r\n".into(),
        ),
        ("", "STARTTLS\r\n", NOT_IMPLEMENTED.to_string()),
        ("", "DATA\r\n", NEED_RCPT.to_string()),
        ("", "RCPT TO:<d@e.f>\r\n", NEED_MAIL.to_string()),
        ("", "BDAT 4\r\nQUIT", NEED_MAIL.to_string()),
        ("", "BDAT 4 LAST\r\nQUIT", NEED_MAIL.to_string()),
        (
            "",
            &format!("{}\r\n", "x".repeat(600)),
            LINE_TOO_LONG.to_string(),
        ),
        (
            "MAIL FROM:<a@b.c>\r\n",
            "MAIL FROM:<a@b.c>\r\n",
            NESTED_MAIL.to_string(),
        ),
        (
            "",
            "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\ny\r\n.\r\n",
            format!("{MAIL_OK}{RCPT_OK}{GO_AHEAD}{BARE}"),
        ),
        (
            "",
            "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 1 LAST\r\nx",
            format!("{MAIL_OK}{RCPT_OK}{BARE}"),
        ),
    ];
    for (setup, bad, reply) in cases {
        let mut script = format!("EHLO c\r\n{setup}");
        for _ in 0..5 {
            script.push_str(bad);
        }
        script.push_str("NOOP\r\nQUIT\r\n");
        let r = same_at_every_split(&Setup::new(), script.as_bytes());
        let first = run(&format!("EHLO c\r\n{setup}")).out;
        let want = format!("{first}{}{reply}{TOO_MANY_ERRORS}", reply.repeat(4));
        assert_eq!(r.out, want, "{bad:?}");
        assert!(r.closed, "{bad:?}");
        assert_eq!(r.offered, 0, "{bad:?}");
    }
}

#[test]
fn queue_failure_resets_the_transaction() {
    let setup = Setup::new().queue(|n| {
        if n == 0 {
            Err(QueueError::Storage(ErrorKind::Other))
        } else {
            Ok(())
        }
    });
    let script = format!(
        "{TX}DATA\r\nfirst\r\n.\r\nRCPT TO:<b@example.net>\r\nDATA\r\n\
         MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 8 LAST\r\nsecond\r\nQUIT\r\n"
    );
    let r = same_at_every_split(&setup, script.as_bytes());
    assert_eq!(
        r.out,
        format!(
            "{}{GO_AHEAD}{QUEUE_FAILED}{NEED_MAIL}{NEED_RCPT}{MAIL_OK}{RCPT_OK}{QUEUED}{BYE}",
            tx_replies()
        )
    );
    assert_eq!(r.offered, 2);
    assert_eq!(
        r.bodies(),
        vec![format!(
            "{}second\r\n",
            received(
                "client.example",
                "127.0.0.1",
                // RFC 6531 §3.7.3: SMTPUTF8 transactions are "UTF8SMTP".
                if script.contains("SMTPUTF8") {
                    "UTF8SMTP"
                } else {
                    "ESMTP"
                },
                Some("b@example.net")
            )
        )]
    );
    // Every storage failure is a 451.
    let failing: [fn(usize) -> Result<(), QueueError>; 2] = [
        |_| Err(QueueError::Storage(ErrorKind::StorageFull)),
        |_| Err(QueueError::Storage(ErrorKind::PermissionDenied)),
    ];
    for queue in failing {
        let script = format!("{TX}DATA\r\nx\r\n.\r\nQUIT\r\n");
        let r = Setup::new()
            .queue(queue)
            .run(script.as_bytes(), Split::Whole);
        assert_eq!(
            r.out,
            format!("{}{GO_AHEAD}{QUEUE_FAILED}{BYE}", tx_replies())
        );
        assert_eq!((r.offered, r.messages.len()), (1, 0));
    }
}

#[test]
fn timeout() {
    let mut s = Session::new(Rc::new(config()), "127.0.0.1".parse().unwrap());
    s.output().clear();
    assert_eq!(
        s.feed(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n"),
        (27, Event::NeedMore)
    );
    s.output().clear();
    s.timeout();
    assert_eq!(
        String::from_utf8_lossy(s.output()),
        "421 4.4.2 mx.test Error: timeout exceeded\r\n"
    );
    assert_eq!(s.feed(b"NOOP\r\n"), (6, Event::Close));
}

// 10. Other commands.

#[test]
fn other_commands() {
    let cases = [
        ("VRFY a@b.c", "252 2.5.0 "),
        ("VRFY postmaster", "252 2.5.0 "),
        ("HELP", "214 2.0.0 "),
        ("HELP MAIL", "214 2.0.0 "),
        ("NOOP", "250 2.0.0 Ok"),
        ("NOOP hello", "250 2.0.0 Ok"),
        ("RSET", "250 2.0.0 Ok"),
        ("STARTTLS", NOT_IMPLEMENTED),
        ("AUTH PLAIN", NOT_IMPLEMENTED),
        ("AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=", NOT_IMPLEMENTED),
        ("EXPN staff", NOT_IMPLEMENTED),
        ("ETRN example.com", NOT_IMPLEMENTED),
        ("LHLO c", NOT_IMPLEMENTED),
    ];
    for (line, want) in cases {
        // Before and after EHLO alike.
        for hello in ["", "EHLO c\r\n"] {
            let prefix = run(hello).out;
            let r = run(&format!("{hello}{line}\r\nQUIT\r\n"));
            let reply = r
                .out
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(BYE))
                .unwrap_or_else(|| panic!("{line:?}: {:?}", r.out));
            assert!(
                reply.starts_with(want) && reply.matches("\r\n").count() == 1,
                "{line:?}: got {reply:?}"
            );
        }
    }
}

#[test]
fn helo_gives_smtp_in_received() {
    let script = "HELO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r\n.\r\n";
    let r = run(script);
    assert_eq!(
        r.out,
        format!("{GREETING}{HELO_REPLY}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{QUEUED}")
    );
    assert_eq!(
        r.bodies(),
        vec![format!(
            "{}x\r\n",
            received("client.example", "127.0.0.1", "SMTP", Some("b@example.net"))
        )]
    );
}

// 11. BDAT.

#[test]
fn bdat() {
    // (BDAT exchange after TX, replies after TX's, content stored or None)
    let cases: &[(&str, String, Option<&str>)] = &[
        // Chunks concatenate; a CRLF may straddle two chunks.
        (
            "BDAT 4\r\nab\r\nBDAT 3\r\ncd\rBDAT 1 LAST\r\n\n",
            format!(
                "250 2.0.0 4 octets received so far\r\n250 2.0.0 7 octets received so far\r\n{QUEUED}"
            ),
            Some("ab\r\ncd\r\n"),
        ),
        // An empty last chunk ends the message.
        (
            "BDAT 3\r\nx\r\nBDAT 0 LAST\r\n",
            format!("250 2.0.0 3 octets received so far\r\n{QUEUED}"),
            Some("x\r\n"),
        ),
        // No dot rules in BDAT.
        ("BDAT 9 LAST\r\n.\r\n..x\r\n.", BARE.to_string(), None),
        (
            "BDAT 8 LAST\r\n.\r\n..x\r\n",
            QUEUED.to_string(),
            Some(".\r\n..x\r\n"),
        ),
        // A last chunk must end in CRLF.
        ("BDAT 3 LAST\r\nabc", BARE.to_string(), None),
        ("BDAT 4 LAST\r\nabc\r", BARE.to_string(), None),
        (
            "BDAT 2\r\nabBDAT 0 LAST\r\n",
            format!("250 2.0.0 2 octets received so far\r\n{BARE}"),
            None,
        ),
        // Bare line ends.
        ("BDAT 5 LAST\r\na\nb\r\n", BARE.to_string(), None),
        ("BDAT 5 LAST\r\na\rb\r\n", BARE.to_string(), None),
        // DATA after BDAT.
        (
            "BDAT 4\r\nab\r\nDATA\r\nBDAT 0 LAST\r\n",
            format!(
                "250 2.0.0 4 octets received so far\r\n503 5.5.1 Error: DATA after BDAT\r\n{QUEUED}"
            ),
            Some("ab\r\n"),
        ),
        // The chunk size is octets, whatever they hold.
        (
            "BDAT 17 LAST\r\nQUIT\r\nRSET\r\n.\r\n\r\n",
            QUEUED.to_string(),
            Some("QUIT\r\nRSET\r\n.\r\n\r\n"),
        ),
        // Lower case, and a BDAT line ended by LF alone.
        ("bdat 3 last\nabc", BARE.to_string(), None),
        ("bdat 3 last\nx\r\n", QUEUED.to_string(), Some("x\r\n")),
    ];
    for (exchange, want, content) in cases {
        let script = format!("{TX}{exchange}NOOP\r\n");
        let r = same_at_every_split(&Setup::new(), script.as_bytes());
        assert_eq!(r.out, format!("{}{want}{OK}", tx_replies()), "{exchange:?}");
        let want_bodies: Vec<String> = content
            .iter()
            .map(|c| {
                format!(
                    "{}{c}",
                    received(
                        "client.example",
                        "127.0.0.1",
                        "ESMTP",
                        Some("b@example.net")
                    )
                )
            })
            .collect();
        assert_eq!(r.bodies(), want_bodies, "{exchange:?}");
    }
}

#[test]
fn in_content_tracks_the_phase() {
    let mut s = Session::new(Rc::new(config()), "127.0.0.1".parse().unwrap());
    assert!(!s.in_content());
    let head = format!("{TX}DATA\r\n");
    assert_eq!(s.feed(head.as_bytes()), (head.len(), Event::NeedMore));
    assert!(s.in_content());
    assert_eq!(s.feed(b"x\r\n.\r\n"), (6, Event::Message));
    s.message(ID);
    s.queued(ID, Ok(()));
    assert!(!s.in_content());
    let bdat = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 5\r\nab";
    assert_eq!(s.feed(bdat), (bdat.len(), Event::NeedMore));
    assert!(s.in_content());
    assert_eq!(s.feed(b"c\r\n"), (3, Event::NeedMore));
    assert!(!s.in_content());
}

/// Regression (review of issue 2): replies to a long pipelined burst are
/// flushed every FLUSH_AT bytes, not all held until the input is used up.
#[test]
fn a_burst_of_large_replies_is_flushed_in_steps() {
    let cfg = Rc::new(SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 10_000,
        max_recipients: 10,
        max_errors: 10,
        client_networks: vec!["127.0.0.0/8".parse().unwrap()],
    });
    let mut s = Session::new(cfg, "127.0.0.1".parse().unwrap());
    let burst = b"EHLO x\r\n".repeat(2000);
    let mut at = 0;
    let mut flushes = 0;
    loop {
        let (n, ev) = s.feed(&burst[at..]);
        at += n;
        let out = std::mem::take(s.output());
        assert!(
            out.len() < crate::session::FLUSH_AT + 512,
            "{} bytes held",
            out.len()
        );
        match ev {
            Event::Flush => flushes += 1,
            Event::NeedMore => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(at, burst.len());
    assert!(flushes > 10, "{flushes} flushes");
}
