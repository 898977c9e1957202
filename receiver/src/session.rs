//! The SMTP server session: a sans-I/O state machine.
//!
//! The I/O loop feeds received bytes to [`Session::feed`] and writes out what
//! [`Session::output`] holds when the session needs more input. Replies to a
//! pipelined group therefore leave in one write (RFC 2920). When a message
//! is complete, `feed` returns [`Event::Message`]: the I/O loop enqueues it
//! and reports the result with [`Session::queued`], which writes the 250 (or
//! the 451): a session never answers 250 on its own.
//!
//! Commands are parsed by `smtp-proto` one line at a time; the line framing
//! is Verdant's, so that a command line longer than 512 octets (RFC 5321
//! §4.5.3.1.4) is refused without being buffered. Content goes through
//! [`crate::data::Scanner`].

use std::net::IpAddr;
use std::rc::Rc;

use smtp_proto::{Error as ParseError, Request};
use verdant_queue::{Envelope, QueueError, QueueId};

use crate::data::{ContentError, Scanned, Scanner};
use crate::policy::{self, FALLBACK_RCPT_REFUSAL, RecipientHook, SessionConfig};

/// Longest command line, with its CRLF (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Stands in the `Received:` header for the queue id until it is known.
const ID_PLACEHOLDER: &[u8; 20] = b"????????????????????";

/// What the I/O loop must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// All complete input was consumed: write the output, read more.
    NeedMore,
    /// A message is complete: enqueue [`Session::message`], then call
    /// [`Session::queued`] and feed the rest of the input.
    Message,
    /// Write the output, then close the connection.
    Close,
    /// Write the output, then feed the rest of the input (no read): the
    /// replies to a long pipelined burst have reached [`FLUSH_AT`].
    Flush,
}

/// Output size at which the session asks for a write before going on, so
/// that a client pipelining commands whose replies are larger than they are
/// (EHLO, HELP) cannot make us hold much more than this per connection.
pub const FLUSH_AT: usize = 8 * 1024;

#[derive(Debug)]
enum Phase {
    Command,
    /// Discarding the rest of an over-long command line.
    SkipLine,
    /// Reading DATA content.
    Data,
    /// Reading a BDAT chunk: bytes left, whether it is the last one, and
    /// the reply owed if the chunk is read only to be discarded.
    Bdat {
        remaining: usize,
        last: bool,
        refuse: Option<&'static str>,
    },
    /// After QUIT or a fatal error: ignore everything.
    Closed,
}

#[derive(Debug, Default)]
struct Transaction {
    sender: String,
    flags: u8,
    recipients: Vec<String>,
    /// Content scanner, once DATA or the first BDAT began.
    content: Option<Scanner>,
    /// Offset of the queue id placeholder in the body.
    id_at: usize,
    /// Set once BDAT was used: DATA is then out of order (RFC 3030).
    chunking: bool,
    /// BDAT octets received so far: the sum of the chunk sizes.
    octets: usize,
}

/// One SMTP server session.
pub struct Session {
    cfg: Rc<SessionConfig>,
    peer: IpAddr,
    relay: bool,
    phase: Phase,
    /// The client's EHLO/HELO name and whether it said EHLO.
    helo: Option<(String, bool)>,
    tx: Option<Transaction>,
    errors: usize,
    body: Vec<u8>,
    envelope: Envelope,
    out: Vec<u8>,
    /// Set by [`Session::set_recipient_hook`]; none by default.
    recipient_hook: Option<Rc<dyn RecipientHook>>,
}

impl Session {
    /// A session with a client at `peer`; the greeting is already in the output.
    pub fn new(cfg: Rc<SessionConfig>, peer: IpAddr) -> Self {
        let relay = cfg.may_relay(peer);
        let mut s = Session {
            cfg,
            peer,
            relay,
            phase: Phase::Command,
            helo: None,
            tx: None,
            errors: 0,
            body: Vec::new(),
            envelope: Envelope::default(),
            out: Vec::with_capacity(512),
            recipient_hook: None,
        };
        let greeting = format!("220 {} ESMTP Verdant\r\n", s.cfg.hostname);
        s.out.extend_from_slice(greeting.as_bytes());
        s
    }

    /// Lets `hook` refuse recipients at RCPT, with the contract of
    /// [`RecipientHook`] (for `verdant sink`; the server sets none).
    pub fn set_recipient_hook(&mut self, hook: Rc<dyn RecipientHook>) {
        self.recipient_hook = Some(hook);
    }

    /// Replies waiting to be written. The I/O loop writes and clears them.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether the session is reading message content (the I/O loop uses
    /// the data timeout then, the command timeout otherwise).
    pub fn in_content(&self) -> bool {
        matches!(self.phase, Phase::Data | Phase::Bdat { .. })
    }

    /// Consumes input; returns how many bytes were used and what to do
    /// next. Unused bytes (an incomplete command line) must be fed again
    /// with more input appended.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Event) {
        let mut i = 0;
        loop {
            match &mut self.phase {
                Phase::Closed => return (input.len(), Event::Close),
                Phase::Command => {
                    if self.out.len() >= FLUSH_AT {
                        return (i, Event::Flush);
                    }
                    let rest = &input[i..];
                    let Some(pos) = memchr::memchr(b'\n', rest) else {
                        if rest.len() >= MAX_COMMAND_LINE {
                            self.phase = Phase::SkipLine;
                            continue;
                        }
                        return (i, Event::NeedMore);
                    };
                    let line = &rest[..=pos];
                    i += pos + 1;
                    if line.len() > MAX_COMMAND_LINE {
                        if self.error("500 5.5.2 Error: line too long") {
                            return (input.len(), Event::Close);
                        }
                        continue;
                    }
                    if let Some(ev) = self.command(line) {
                        return (i, ev);
                    }
                }
                Phase::SkipLine => match memchr::memchr(b'\n', &input[i..]) {
                    None => return (input.len(), Event::NeedMore),
                    Some(pos) => {
                        i += pos + 1;
                        self.phase = Phase::Command;
                        if self.error("500 5.5.2 Error: line too long") {
                            return (input.len(), Event::Close);
                        }
                    }
                },
                Phase::Data => {
                    let tx = self.tx.as_mut().expect("DATA without a transaction");
                    let scanner = tx.content.as_mut().expect("DATA without a scanner");
                    match scanner.scan(&input[i..], &mut self.body) {
                        Scanned::More => return (input.len(), Event::NeedMore),
                        Scanned::End(n) => {
                            i += n;
                            self.phase = Phase::Command;
                            if let Some(ev) = self.content_complete() {
                                return (i, ev);
                            }
                        }
                    }
                }
                Phase::Bdat {
                    remaining,
                    last,
                    refuse,
                } => {
                    let take = (*remaining).min(input.len() - i);
                    let chunk = &input[i..i + take];
                    i += take;
                    *remaining -= take;
                    if refuse.is_none() {
                        let tx = self.tx.as_mut().expect("BDAT without a transaction");
                        tx.octets += take;
                        let scanner = tx.content.as_mut().expect("BDAT without a scanner");
                        scanner.scan(chunk, &mut self.body);
                    }
                    if *remaining > 0 {
                        return (i, Event::NeedMore);
                    }
                    let (last, refuse) = (*last, *refuse);
                    self.phase = Phase::Command;
                    if let Some(reply) = refuse {
                        if self.error(reply) {
                            return (input.len(), Event::Close);
                        }
                    } else if last {
                        if let Some(ev) = self.content_complete() {
                            return (i, ev);
                        }
                    } else {
                        let size = self.tx.as_ref().expect("transaction").octets;
                        self.reply(&format!("250 2.0.0 {size} octets received so far"));
                    }
                }
            }
        }
    }

    /// The complete message, after [`Event::Message`]: its envelope and its
    /// content, with `id` filled into the `Received:` header.
    pub fn message(&mut self, id: QueueId) -> (&Envelope, &[u8]) {
        let at = self.tx.as_ref().map_or(0, |tx| tx.id_at);
        let s = id.to_string();
        self.body[at..at + ID_PLACEHOLDER.len()].copy_from_slice(s.as_bytes());
        (&self.envelope, &self.body)
    }

    /// Reports what the queue did with the message of the last
    /// [`Event::Message`]; writes the reply and ends the transaction.
    pub fn queued(&mut self, id: QueueId, result: Result<(), QueueError>) {
        match result {
            Ok(()) => self.reply(&format!("250 2.0.0 Ok: queued as {id}")),
            // A refusal the queue chose (`verdant sink`), sent as it is if it
            // is a well-formed 4xx/5xx line; anything else falls to the 451.
            Err(QueueError::Rejected(reply)) if policy::is_refusal(&reply) => self.reply(&reply),
            // The message was not accepted: the client keeps it and retries.
            Err(_) => self.reply("451 4.3.0 Error: queue file write error, try again later"),
        }
        self.reset();
    }

    /// The reply to a timeout; the I/O loop writes it and closes.
    pub fn timeout(&mut self) {
        let r = format!("421 4.4.2 {} Error: timeout exceeded", self.cfg.hostname);
        self.reply(&r);
        self.phase = Phase::Closed;
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Replies with an error; returns true when the error budget is spent
    /// and the session must close (after a 421).
    fn error(&mut self, line: &str) -> bool {
        self.reply(line);
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            let r = format!("421 4.7.0 {} Error: too many errors", self.cfg.hostname);
            self.reply(&r);
            self.phase = Phase::Closed;
            return true;
        }
        false
    }

    fn reset(&mut self) {
        self.tx = None;
        self.body.clear();
        if self.body.capacity() > 4 << 20 {
            // Don't keep a huge buffer for a session that sends small mail.
            self.body = Vec::new();
        }
    }

    fn command(&mut self, line: &[u8]) -> Option<Event> {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                let reply = match e {
                    ParseError::UnknownCommand => {
                        "500 5.5.2 Error: command not recognized".to_string()
                    }
                    ParseError::InvalidSenderAddress => {
                        "501 5.1.7 Error: bad sender address syntax".into()
                    }
                    ParseError::InvalidRecipientAddress => {
                        "501 5.1.3 Error: bad recipient address syntax".into()
                    }
                    ParseError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
                    ParseError::InvalidParameter { param } => {
                        format!("501 5.5.4 Error: invalid parameter {param}")
                    }
                    ParseError::UnsupportedParameter { param } => {
                        format!("555 5.5.4 Error: unsupported parameter {param}")
                    }
                    _ => "500 5.5.2 Error: syntax error".into(),
                };
                return self.error(&reply).then_some(Event::Close);
            }
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => return self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Rset => {
                self.reset();
                self.reply("250 2.0.0 Ok");
            }
            Request::Noop { .. } => self.reply("250 2.0.0 Ok"),
            Request::Quit => {
                self.reply("221 2.0.0 Bye");
                self.phase = Phase::Closed;
                return Some(Event::Close);
            }
            // RFC 5321 §3.5.3: 252 when we will not verify but will try.
            Request::Vrfy { .. } => self
                .reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"),
            Request::Help { .. } => self.reply(
                "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
            ),
            // STARTTLS and AUTH come with TLS support; not advertised yet.
            Request::Expn { .. }
            | Request::StartTls
            | Request::Auth { .. }
            | Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                return self
                    .error("502 5.5.1 Error: command not implemented")
                    .then_some(Event::Close);
            }
        }
        None
    }

    fn hello(&mut self, host: String, esmtp: bool) {
        self.reset();
        let mut r = String::with_capacity(160);
        if esmtp {
            r.push_str("250-");
            r.push_str(&self.cfg.hostname);
            r.push_str("\r\n250-PIPELINING\r\n250-SIZE ");
            r.push_str(&self.cfg.max_message_size.to_string());
            r.push_str(
                "\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING",
            );
        } else {
            r.push_str("250 ");
            r.push_str(&self.cfg.hostname);
        }
        self.reply(&r);
        self.helo = Some((host, esmtp));
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) {
        if self.helo.is_none() {
            self.error("503 5.5.1 Error: send HELO/EHLO first");
            return;
        }
        if self.tx.is_some() {
            self.error("503 5.5.1 Error: nested MAIL command");
            return;
        }
        // Parameters we do not announce are refused (RFC 5321 §4.1.1.11).
        let supported =
            smtp_proto::MAIL_BODY_7BIT | smtp_proto::MAIL_BODY_8BITMIME | smtp_proto::MAIL_SMTPUTF8;
        if from.flags & !supported != 0
            || from.env_id.is_some()
            || from.mt_priority != 0
            || from.by != 0
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.auth.is_some()
            || from.hold_for != 0
            || from.hold_until != 0
        {
            self.error("555 5.5.4 Error: unsupported MAIL parameter");
            return;
        }
        if from.size > self.cfg.max_message_size {
            self.reply("552 5.3.4 Error: message size exceeds fixed maximum message size");
            return;
        }
        let mut flags = 0;
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            flags |= Envelope::BODY_8BITMIME;
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            flags |= Envelope::SMTPUTF8;
        }
        if !from.address.is_ascii() && flags & Envelope::SMTPUTF8 == 0 {
            self.reply("553 5.6.7 Error: non-ASCII sender address requires SMTPUTF8");
            return;
        }
        self.tx = Some(Transaction {
            sender: from.address,
            flags,
            ..Default::default()
        });
        self.reply("250 2.1.0 Ok");
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) {
        let Some(tx) = self.tx.as_mut() else {
            self.error("503 5.5.1 Error: need MAIL command");
            return;
        };
        if tx.content.is_some() {
            self.error("503 5.5.1 Error: RCPT after message content");
            return;
        }
        if to.flags != 0 || to.orcpt.is_some() {
            self.error("555 5.5.4 Error: unsupported RCPT parameter");
            return;
        }
        if to.address.is_empty() {
            self.error("501 5.1.3 Error: bad recipient address syntax");
            return;
        }
        if !to.address.is_ascii() && tx.flags & Envelope::SMTPUTF8 == 0 {
            self.reply("553 5.6.7 Error: non-ASCII recipient address requires SMTPUTF8");
            return;
        }
        if !self.relay {
            let r = format!("554 5.7.1 <{}>: Relay access denied", to.address);
            self.error(&r);
            return;
        }
        if tx.recipients.len() >= self.cfg.max_recipients {
            // RFC 5321 §4.5.3.1.10: 452, the client sends the rest later.
            self.reply("452 4.5.3 Error: too many recipients");
            return;
        }
        // Last, so that the hook only sees recipients we would accept.
        // Not `self.error`: the refusal is ours, not the client's fault.
        if let Some(hook) = &self.recipient_hook
            && let Some(reply) = hook.check(&to.address)
        {
            let ok = policy::is_refusal(&reply);
            self.reply(if ok { &reply } else { FALLBACK_RCPT_REFUSAL });
            return;
        }
        tx.recipients.push(to.address);
        self.reply("250 2.1.5 Ok");
    }

    fn data(&mut self) -> Option<Event> {
        let refusal = match &self.tx {
            None => Some("503 5.5.1 Error: need RCPT command"),
            Some(tx) if tx.recipients.is_empty() => Some("554 5.5.1 Error: no valid recipients"),
            Some(tx) if tx.chunking => Some("503 5.5.1 Error: DATA after BDAT"),
            Some(_) => None,
        };
        if let Some(r) = refusal {
            return self.error(r).then_some(Event::Close);
        }
        self.begin_content(Scanner::data);
        self.phase = Phase::Data;
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        None
    }

    fn bdat(&mut self, size: usize, last: bool) {
        let refuse = match &self.tx {
            None => Some("503 5.5.1 Error: need MAIL command"),
            Some(tx) if tx.recipients.is_empty() => Some("554 5.5.1 Error: no valid recipients"),
            Some(tx) if tx.content.is_some() && !tx.chunking => {
                Some("503 5.5.1 Error: BDAT after DATA")
            }
            Some(_) => None,
        };
        if refuse.is_none() && self.tx.as_ref().is_some_and(|tx| tx.content.is_none()) {
            self.begin_content(Scanner::bdat);
            self.tx.as_mut().expect("transaction").chunking = true;
        }
        // The chunk is read even when refused (RFC 3030 §2): its bytes are
        // not commands.
        self.phase = Phase::Bdat {
            remaining: size,
            last,
            refuse,
        };
    }

    /// Starts the content: the `Received:` header (RFC 5321 §4.4) goes first.
    fn begin_content(&mut self, scanner: fn(usize) -> Scanner) {
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        let tx = self.tx.as_mut().expect("transaction");
        self.body.clear();
        // RFC 3848 / RFC 6531 §3.7.3 protocol names.
        let with = match (esmtp, tx.flags & Envelope::SMTPUTF8 != 0) {
            (_, true) => "UTF8SMTP",
            (true, false) => "ESMTP",
            (false, false) => "SMTP",
        };
        // RFC 5321 §4.1.3 address literals; a v4 client on a dual-stack
        // socket is shown as the v4 address it is.
        let peer = match self.peer {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("IPv6:{v6}"),
            },
            v4 => v4.to_string(),
        };
        let head = format!(
            "Received: from {} ([{peer}])\r\n\tby {} (Verdant) with {with} id ",
            sanitize(&helo),
            self.cfg.hostname
        );
        self.body.extend_from_slice(head.as_bytes());
        tx.id_at = self.body.len();
        self.body.extend_from_slice(ID_PLACEHOLDER);
        // Name the recipient only when there is one, as Postfix does: a
        // header listing every recipient would disclose Bcc recipients.
        if let [only] = tx.recipients.as_slice() {
            self.body
                .extend_from_slice(format!("\r\n\tfor <{only}>").as_bytes());
        }
        let date = verdant_queue::time::rfc5322(verdant_queue::now_micros());
        self.body
            .extend_from_slice(format!("; {date}\r\n").as_bytes());
        tx.content = Some(scanner(self.cfg.max_message_size + self.body.len()));
    }

    /// The content ended (end of data, or the last BDAT chunk).
    fn content_complete(&mut self) -> Option<Event> {
        let tx = self.tx.as_ref().expect("transaction");
        let scanner = tx.content.as_ref().expect("scanner");
        let mut error = scanner.error();
        if error.is_none() && tx.chunking && !scanner.at_line_start() {
            // A message must end with CRLF; the next hop would otherwise
            // see our trailing dot line glued to its last line.
            error = Some(ContentError::BareCr);
        }
        if let Some(e) = error {
            let r = match e {
                ContentError::TooBig => {
                    "552 5.3.4 Error: message size exceeds fixed maximum message size"
                }
                ContentError::LineTooLong => {
                    "554 5.6.0 Error: message line longer than 1000 octets"
                }
                ContentError::BareLf | ContentError::BareCr => {
                    "554 5.6.0 Error: bare <CR> or <LF> in message; lines must end with <CR><LF>"
                }
            };
            self.reset();
            return self.error(r).then_some(Event::Close);
        }
        self.envelope = Envelope {
            sender: tx.sender.clone(),
            recipients: tx.recipients.clone(),
            received_at: verdant_queue::now_micros(),
            flags: tx.flags,
        };
        Some(Event::Message)
    }
}

/// Keeps a client-supplied name from breaking the header it is written into.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()) {
                c
            } else {
                '_'
            }
        })
        .take(255)
        .collect()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
