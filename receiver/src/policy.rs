//! What a session allows: its limits and the relay policy.

use std::net::IpAddr;

use ipnet::IpNet;

/// Settings every session of a worker shares.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our name in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// Largest message accepted (announced with SIZE, enforced while reading).
    pub max_message_size: usize,
    /// Recipients per message; more get 452 (RFC 5321 §4.5.3.1.10).
    pub max_recipients: usize,
    /// Errors in one session before it is closed with 421.
    pub max_errors: usize,
    /// Clients that may relay. Anyone else gets 554 5.7.1 at RCPT: Verdant
    /// is never an open relay.
    pub client_networks: Vec<IpNet>,
}

impl SessionConfig {
    /// Whether a client at `peer` may relay through us. An IPv4 client seen
    /// as an IPv4-mapped IPv6 address (dual-stack listener) counts as IPv4.
    pub fn may_relay(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.client_networks.iter().any(|n| n.contains(&peer))
    }
}

/// A hook that may refuse a recipient at `RCPT TO` with a reply of its
/// choosing. `verdant sink` uses it to inject recipient failures; the
/// server proper sets none (see [`crate::server::serve_connection`]).
///
/// The contract:
/// - It is asked only about a recipient the session would otherwise accept
///   (syntax, relay and recipient-count checks passed), once per `RCPT`
///   command, on the worker's thread, so it must be quick and not block.
/// - `None` accepts the recipient. `Some(reply)` refuses it: `reply` is the
///   whole reply line without CRLF, e.g. `550 5.1.1 <x@example.net>: no such
///   user`. It is sent verbatim when [`is_refusal`] holds, and
///   [`FALLBACK_RCPT_REFUSAL`] is sent instead otherwise (a hook's mistake
///   must neither inject protocol nor accept by accident).
/// - A refusal does not count towards `max_errors`: it is the server's
///   choice, not the client's mistake, so a client that meets many of them
///   is not disconnected. The session stays open whatever the code (even a
///   `421`).
///
/// Any `Fn(&str) -> Option<String>` is a hook.
pub trait RecipientHook {
    /// `None` to accept `recipient` (the address without angle brackets),
    /// `Some(reply)` to refuse it with that reply line.
    fn check(&self, recipient: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> RecipientHook for F {
    fn check(&self, recipient: &str) -> Option<String> {
        self(recipient)
    }
}

/// Sent instead of a [`RecipientHook`]'s reply that is not a valid refusal.
/// Temporary, so that a broken hook delays mail instead of bouncing it.
pub const FALLBACK_RCPT_REFUSAL: &str = "451 4.3.0 Error: recipient check failed, try again later";

/// Whether `reply` may be sent as a refusal chosen by a hook or a queue
/// (`RecipientHook`, `QueueError::Rejected`): a single reply line of at most
/// 510 octets (512 with CRLF, RFC 5321 §4.5.3.1.5) of printable ASCII and
/// spaces, starting with a 4xx or 5xx code (second digit 0–5, RFC 5321
/// §4.2.1) followed by a space or nothing.
pub fn is_refusal(reply: &str) -> bool {
    let b = reply.as_bytes();
    b.len() >= 3
        && b.len() <= 510
        && matches!(b[0], b'4' | b'5')
        && matches!(b[1], b'0'..=b'5')
        && b[2].is_ascii_digit()
        && (b.len() == 3 || b[3] == b' ')
        && b.iter().all(|&c| c == b' ' || c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use verdant_queue::{QueueError, QueueId};

    use super::*;
    use crate::session::{Event, Session};

    #[test]
    fn relay_policy() {
        let cfg = SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 1000,
            max_recipients: 10,
            max_errors: 5,
            client_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        };
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::2", false),
            ("::ffff:10.0.0.1", false),
        ] {
            assert_eq!(cfg.may_relay(ip.parse().unwrap()), ok, "{ip}");
        }
    }

    #[test]
    fn refusal_replies() {
        for (reply, ok) in [
            ("550 5.1.1 no such user", true),
            ("451 4.7.1 try later", true),
            ("554", true),
            ("421 4.3.2 closing", true),
            ("250 2.0.0 Ok", false),
            ("354 go ahead", false),
            ("559 5.0.0 last class", true),
            ("590 bad second digit", false),
            ("560 bad second digit", false),
            ("55 short", false),
            ("550-5.1.1 multi-line", false),
            ("5501 no space", false),
            ("550 a\r\n250 smuggled", false),
            ("550 tab\there", false),
            ("550 caf\u{e9}", false),
            ("", false),
        ] {
            assert_eq!(is_refusal(reply), ok, "{reply:?}");
        }
        assert!(is_refusal(&format!("550 {}", "x".repeat(506))));
        assert!(!is_refusal(&format!("550 {}", "x".repeat(507))));
        assert!(is_refusal(FALLBACK_RCPT_REFUSAL));
    }

    fn session_with_hook() -> Session {
        let cfg = SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 1000,
            max_recipients: 2,
            max_errors: 2,
            client_networks: vec!["127.0.0.0/8".parse().unwrap()],
        };
        let mut s = Session::new(Rc::new(cfg), "127.0.0.1".parse().unwrap());
        s.set_recipient_hook(Rc::new(|rcpt: &str| match rcpt {
            "bad@x.test" => Some("550 5.1.1 no such user".to_string()),
            "later@x.test" => Some("450 4.2.1 mailbox busy".to_string()),
            "broken@x.test" => Some("250 ok\r\n250 smuggled".to_string()),
            _ => None,
        }));
        s.output().clear();
        s
    }

    /// Feeds `input` whole; returns the replies and the last event.
    fn feed(s: &mut Session, input: &str) -> (String, Event) {
        let (n, ev) = s.feed(input.as_bytes());
        assert_eq!(n, input.len());
        (String::from_utf8(std::mem::take(s.output())).unwrap(), ev)
    }

    #[test]
    fn a_recipient_hook_refuses_with_its_reply_without_counting_errors() {
        let mut s = session_with_hook();
        let (out, ev) = feed(
            &mut s,
            "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bad@x.test>\r\n\
             RCPT TO:<later@x.test>\r\nRCPT TO:<broken@x.test>\r\nRCPT TO:<bad@x.test>\r\n\
             RCPT TO:<ok@x.test>\r\nRCPT TO:<ok2@x.test>\r\nRCPT TO:<bad@x.test>\r\n",
        );
        assert_eq!(
            ev,
            Event::NeedMore,
            "refusals must not close (max_errors 2)"
        );
        let replies: Vec<&str> = out.split("\r\n").skip(7).collect();
        assert_eq!(
            replies,
            [
                "250 2.1.0 Ok",
                "550 5.1.1 no such user",
                "450 4.2.1 mailbox busy",
                FALLBACK_RCPT_REFUSAL,
                "550 5.1.1 no such user",
                "250 2.1.5 Ok",
                "250 2.1.5 Ok",
                // The recipient limit is checked before the hook is asked.
                "452 4.5.3 Error: too many recipients",
                "",
            ]
        );
    }

    #[test]
    fn a_queue_rejection_is_sent_verbatim_or_replaced_by_451() {
        let id = QueueId {
            micros: 1,
            worker: 0,
        };
        for (reply, want) in [
            ("554 5.7.1 go away", "554 5.7.1 go away\r\n"),
            ("451 4.7.1 try later", "451 4.7.1 try later\r\n"),
            (
                "250 2.0.0 fake",
                "451 4.3.0 Error: queue file write error, try again later\r\n",
            ),
        ] {
            let mut s = session_with_hook();
            let (_, ev) = feed(
                &mut s,
                "HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<ok@x.test>\r\nDATA\r\nx\r\n.\r\n",
            );
            assert_eq!(ev, Event::Message);
            s.queued(id, Err(QueueError::Rejected(reply.to_string())));
            assert_eq!(String::from_utf8(std::mem::take(s.output())).unwrap(), want);
            // The transaction is over; the session goes on.
            assert_eq!(feed(&mut s, "NOOP\r\n").0, "250 2.0.0 Ok\r\n");
        }
    }
}
