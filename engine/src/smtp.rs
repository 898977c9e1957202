//! The sans-I/O half of the SMTP client: what to send, and what the
//! replies mean. The I/O half is [`crate::conn`].
//!
//! A transaction is built as one buffer when the server offers PIPELINING
//! (RFC 2920): `MAIL`, every `RCPT`, and either `DATA` or, with CHUNKING
//! (RFC 3030), `BDAT <n> LAST` followed by the message itself, so a
//! message costs one round trip and needs no dot-stuffing.

use smtp_proto::{
    EXT_8BIT_MIME, EXT_CHUNKING, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EhloResponse,
};
use verdant_queue::Envelope;

/// A server reply: its code, enhanced status code (RFC 3463) if any, and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code, `[0, 0, 0]` when the server gave none.
    pub esc: [u8; 3],
    /// The text, lines joined by a space.
    pub text: String,
}

impl Reply {
    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 5xx: retrying will not help.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code as text; derived from the reply class when
    /// the server sent none (RFC 3463 §3: X.0.0).
    pub fn status(&self) -> String {
        if self.esc[0] != 0 {
            format!("{}.{}.{}", self.esc[0], self.esc[1], self.esc[2])
        } else {
            format!("{}.0.0", self.code / 100)
        }
    }

    /// A reply made up locally (for a timeout, a refused connection, …).
    pub fn local(code: u16, esc: [u8; 3], text: impl Into<String>) -> Reply {
        Reply {
            code,
            esc,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.esc[0] != 0 {
            write!(f, "{} {} {}", self.code, self.status(), self.text)
        } else {
            write!(f, "{} {}", self.code, self.text)
        }
    }
}

impl From<smtp_proto::Response<String>> for Reply {
    fn from(r: smtp_proto::Response<String>) -> Self {
        Reply {
            code: r.code,
            esc: r.esc,
            text: r.message.replace(['\r', '\n'], " ").trim().to_string(),
        }
    }
}

/// What the server offered in its EHLO reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// 8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// SIZE limit (RFC 1870); 0 when none was announced.
    pub size: usize,
}

impl Capabilities {
    /// From a parsed EHLO reply. A HELO server offers nothing.
    pub fn from_ehlo(e: &EhloResponse<String>) -> Capabilities {
        Capabilities {
            pipelining: e.capabilities & EXT_PIPELINING != 0,
            chunking: e.capabilities & EXT_CHUNKING != 0,
            eight_bit: e.capabilities & EXT_8BIT_MIME != 0,
            smtputf8: e.capabilities & EXT_SMTP_UTF8 != 0,
            size: if e.capabilities & EXT_SIZE != 0 {
                e.size
            } else {
                0
            },
        }
    }

    /// Why this server cannot take the message at all, as the reply a
    /// bounce reports; `None` when it can.
    pub fn refusal(&self, env: &Envelope, size: usize) -> Option<Reply> {
        if self.size > 0 && size > self.size {
            return Some(Reply::local(
                552,
                [5, 3, 4],
                format!(
                    "message size {size} exceeds the remote limit of {}",
                    self.size
                ),
            ));
        }
        if env.flags & Envelope::SMTPUTF8 != 0 && !self.smtputf8 {
            // RFC 6531 §3.4: no downgrade; the message cannot be relayed.
            return Some(Reply::local(
                553,
                [5, 6, 7],
                "the remote server does not support SMTPUTF8",
            ));
        }
        if env.flags & Envelope::BODY_8BITMIME != 0 && !self.eight_bit {
            // RFC 6152 §3: we do not convert 8-bit content to 7-bit.
            return Some(Reply::local(
                554,
                [5, 6, 3],
                "the remote server does not support 8BITMIME and conversion is not done",
            ));
        }
        None
    }
}

/// Appends `MAIL FROM` with the parameters this server understands.
pub fn mail_from(out: &mut Vec<u8>, env: &Envelope, size: usize, caps: &Capabilities) {
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(env.sender.as_bytes());
    out.push(b'>');
    if caps.size > 0 {
        out.extend_from_slice(format!(" SIZE={size}").as_bytes());
    }
    if env.flags & Envelope::BODY_8BITMIME != 0 && caps.eight_bit {
        out.extend_from_slice(b" BODY=8BITMIME");
    }
    if env.flags & Envelope::SMTPUTF8 != 0 && caps.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `RCPT TO`.
pub fn rcpt_to(out: &mut Vec<u8>, rcpt: &str) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(rcpt.as_bytes());
    out.extend_from_slice(b">\r\n");
}

/// Appends the message dot-stuffed (RFC 5321 §4.5.2) and the end-of-data
/// line. The message is expected to end with CRLF (everything Verdant
/// accepts does); one is added if not.
pub fn dot_stuffed(out: &mut Vec<u8>, body: &[u8]) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut rest = body;
    if rest.first() == Some(&b'.') {
        out.push(b'.');
    }
    while let Some(i) = memchr::memmem::find(rest, b"\n.") {
        out.extend_from_slice(&rest[..=i]);
        out.push(b'.');
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".a\r\n", b"..a\r\n.\r\n"),
            (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r\n..b\r\n.\r\n", b"a\r\n...b\r\n..\r\n.\r\n"),
            (b"no end", b"no end\r\n.\r\n"),
            (b"", b".\r\n"),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            dot_stuffed(&mut out, input);
            assert_eq!(out, *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn mail_from_parameters_follow_the_server() {
        let env = Envelope {
            sender: "a@example.com".into(),
            flags: Envelope::BODY_8BITMIME | Envelope::SMTPUTF8,
            ..Default::default()
        };
        let mut out = Vec::new();
        mail_from(&mut out, &env, 100, &Capabilities::default());
        assert_eq!(out, b"MAIL FROM:<a@example.com>\r\n");
        let all = Capabilities {
            pipelining: true,
            chunking: true,
            eight_bit: true,
            smtputf8: true,
            size: 1000,
        };
        out.clear();
        mail_from(&mut out, &env, 100, &all);
        assert_eq!(
            out,
            b"MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n"
        );
    }

    #[test]
    fn refusals() {
        let plain = Envelope::default();
        let caps = Capabilities {
            size: 10,
            ..Default::default()
        };
        assert_eq!(caps.refusal(&plain, 11).unwrap().status(), "5.3.4");
        assert!(caps.refusal(&plain, 10).is_none());
        let utf8 = Envelope {
            flags: Envelope::SMTPUTF8,
            ..Default::default()
        };
        assert_eq!(
            Capabilities::default().refusal(&utf8, 1).unwrap().status(),
            "5.6.7"
        );
        let eight = Envelope {
            flags: Envelope::BODY_8BITMIME,
            ..Default::default()
        };
        assert_eq!(
            Capabilities::default().refusal(&eight, 1).unwrap().status(),
            "5.6.3"
        );
    }

    #[test]
    fn reply_status_and_display() {
        let r = Reply::local(550, [5, 1, 1], "no such user");
        assert_eq!(r.to_string(), "550 5.1.1 no such user");
        let r = Reply::local(451, [0, 0, 0], "later");
        assert_eq!(
            (r.status().as_str(), r.to_string().as_str()),
            ("4.0.0", "451 later")
        );
    }
}
