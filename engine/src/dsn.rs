//! Delivery status notifications (bounces), built as raw message bytes.
//!
//! When a message we accepted cannot be delivered to some recipient (a 5xx
//! reply, or the retry period ran out), RFC 5321 §6.1 obliges us to tell the
//! originator: "the receiver-SMTP MUST formulate and mail a notification
//! message", sent to the envelope sender with a null reverse-path. The null
//! sender (RFC 5321 §4.5.5) is what stops bounce loops: nobody ever sends a
//! notification about a message whose sender was `<>`. Both rules are the
//! caller's side: [`build`] only produces the message, and the engine
//! enqueues it with `MAIL FROM:<>` and never calls it for a null sender.
//!
//! [`build`] is a pure function. It returns one complete RFC 5322 message
//! with CRLF line ends, in the standard machine-readable form:
//!
//! - top-level `Content-Type: multipart/report; report-type=delivery-status`
//!   (RFC 6522, which replaced RFC 3462), with `Auto-Submitted:
//!   auto-replied` (RFC 3834) so that vacation responders stay quiet;
//! - part 1, `text/plain`: an explanation for the person who sent the mail;
//! - part 2, `message/delivery-status` (RFC 3464): per-message fields
//!   (`Reporting-MTA`, `X-Verdant-Queue-ID`, `Arrival-Date`), then one block
//!   per recipient (`Final-Recipient`, `Action`, `Status`, `Remote-MTA`,
//!   `Diagnostic-Code`), with RFC 3463 enhanced status codes;
//! - part 3, `text/rfc822-headers`: the header section of the original
//!   message only. RFC 6522 lets the third part carry the whole message or
//!   its headers, and RFC 3461 §4.3 (the SMTP DSN extension, whose
//!   `RET=HDRS` is the same choice) lets the MTA choose when the sender did
//!   not say. Headers are enough to identify the message, the sender still
//!   has the body, and a bounce of a large message stays small.
//!
//! Much of the input is not ours: the diagnostic is whatever the remote
//! server replied, the original headers are whatever the client sent. So
//! every value is cleaned before it lands in a header (a run of control
//! characters, CR and LF included, becomes a space: a reply cannot inject
//! header fields), every line is folded or split to stay within RFC 5322's
//! 998 octets, and the original's line ends are rewritten to CRLF. The notification is kept
//! 7-bit where possible: machine-readable fields escape non-ASCII text as
//! `\x{HHHH}` (the notation of RFC 6533), the human part switches to
//! quoted-printable UTF-8 when it needs to. Only two things can make it
//! 8-bit: original headers that carry raw 8-bit bytes (that part and the
//! whole message are then labelled `Content-Transfer-Encoding: 8bit`) and an
//! internationalised sender address in `To:` (RFC 6532; delivering to such
//! an address needs SMTPUTF8 anyway).

use std::fmt::Write as _;

use memchr::memmem;
use verdant_queue::time::rfc5322;

/// RFC 5322 §2.1.1: a line MUST NOT exceed 998 octets, excluding the CRLF.
const MAX_LINE: usize = 998;
/// RFC 5322 §2.1.1: lines SHOULD stay within 78 octets; we fold our own
/// header fields there when there is whitespace to fold at.
const SOFT_LINE: usize = 78;
/// Width of the human-readable text.
const TEXT_WIDTH: usize = 76;
/// Longest word the human-readable text keeps in one piece before it is
/// split: far enough below [`MAX_LINE`] to leave room for the indent.
const MAX_WORD: usize = 900;

/// What happened to one recipient, for one block of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedRecipient<'a> {
    /// The recipient address as it was given in `RCPT TO` (without `<>`).
    pub address: &'a str,
    /// RFC 3463 enhanced status code, `class.subject.detail` (`"5.1.1"`).
    /// Anything that is not of that form is reported as `5.0.0` (failed) or
    /// `4.0.0` (delayed), so the report stays parseable.
    pub status: &'a str,
    /// The RFC 3464 action this block reports.
    pub action: Action,
    /// RFC 3464 `Diagnostic-Code` as `type; text`, usually the remote
    /// server's reply: `"smtp; 550 5.1.1 no such user"`. Text without a
    /// `type;` prefix is reported with the type `X-Verdant`.
    pub diagnostic: Option<&'a str>,
    /// Host name of the server that gave the answer (the MX we talked to),
    /// reported as `Remote-MTA: dns; <name>`.
    pub remote_mta: Option<&'a str>,
}

/// RFC 3464 §2.3.3 `Action` values this MTA reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed for good; the message will not be retried.
    Failed,
    /// Delivery has not succeeded yet and is still being retried (a
    /// "delay" warning, for later use).
    Delayed,
}

impl Action {
    /// The field value: `failed` or `delayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        }
    }
}

/// Everything a notification says, for [`build`].
#[derive(Clone, Debug)]
pub struct DsnInput<'a> {
    /// Our host name: `Reporting-MTA: dns; <name>` and the
    /// `MAILER-DAEMON@<name>` of `From:`.
    pub reporting_mta: &'a str,
    /// Queue id of the failed message, shown to the sender and carried as
    /// `X-Verdant-Queue-ID` (top-level header and per-message field) so a
    /// postmaster can find it in the logs.
    pub queue_id: &'a str,
    /// Envelope sender of the failed message, without `<>`: the
    /// notification's `To:` (and, for the caller, its envelope recipient).
    /// Must not be empty: a null sender gets no notification.
    pub original_sender: &'a str,
    /// When we accepted the failed message, microseconds since the epoch:
    /// `Arrival-Date`.
    pub arrival_date: u64,
    /// Now, microseconds since the epoch: the notification's `Date:`.
    pub now: u64,
    /// One entry per recipient being reported, in report order.
    pub recipients: &'a [FailedRecipient<'a>],
    /// The raw original message (header section and body); only its header
    /// section is returned.
    pub original: &'a [u8],
    /// `Message-ID:` of the notification, with its angle brackets
    /// (`<QUEUEID.dsn@reporting-mta>`), made by the caller.
    pub message_id: String,
}

/// Builds the notification: a complete RFC 5322 message, every line ending
/// in CRLF and none longer than 998 octets, to be enqueued with a null
/// envelope sender and `original_sender` as its one recipient.
pub fn build(input: &DsnInput<'_>) -> Vec<u8> {
    let any_failed = input.recipients.iter().any(|r| r.action == Action::Failed);
    // The whole report is only a delay warning if nobody failed; a mixed
    // report is a bounce first of all.
    let subject = if any_failed || input.recipients.is_empty() {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delayed Mail (still being retried)"
    };

    let (text_headers, text_body) = human_part(input, any_failed);
    let status_body = status_part(input);
    let (headers_8bit, returned) = returned_headers(input.original);

    let boundary = boundary(
        seed(input),
        &[&text_body, &status_body, &returned, input.original],
    );

    let mut out = Vec::with_capacity(2048 + text_body.len() + returned.len());
    field(
        &mut out,
        "From",
        &format!(
            "Mail Delivery System <MAILER-DAEMON@{}>",
            clean(input.reporting_mta)
        ),
    );
    field(
        &mut out,
        "To",
        &format!("<{}>", clean(input.original_sender)),
    );
    field(&mut out, "Subject", subject);
    field(&mut out, "Date", &rfc5322(input.now));
    field(&mut out, "Message-ID", &clean(&input.message_id));
    field(&mut out, "Auto-Submitted", "auto-replied");
    field(&mut out, "X-Verdant-Queue-ID", &clean(input.queue_id));
    field(&mut out, "MIME-Version", "1.0");
    field(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    if headers_8bit {
        // RFC 2045 §6.4 allows only 7bit, 8bit or binary on a multipart; one
        // that holds an 8bit part is 8bit data itself, so it says so.
        field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.extend_from_slice(b"\r\n");
    // The preamble is for readers that know no MIME (RFC 2046 §5.1.1).
    out.extend_from_slice(b"This is a MIME-encapsulated message.\r\n");

    // Each delimiter starts with the CRLF that ends the previous line
    // (RFC 2046 §5.1.1), so every part's content ends with its own CRLF.
    let delimiter = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
    };

    delimiter(&mut out);
    field(&mut out, "Content-Description", "Notification");
    for (name, value) in &text_headers {
        field(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&text_body);

    delimiter(&mut out);
    field(&mut out, "Content-Description", "Delivery report");
    field(&mut out, "Content-Type", "message/delivery-status");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&status_body);

    delimiter(&mut out);
    field(
        &mut out,
        "Content-Description",
        "Undelivered Message Headers",
    );
    field(&mut out, "Content-Type", "text/rfc822-headers");
    if headers_8bit {
        field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&returned);

    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

/// Part 1: the explanation for a person. Returns the part's content
/// headers and its encoded body.
fn human_part(input: &DsnInput<'_>, any_failed: bool) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let mut lines: Vec<String> = Vec::new();
    let mta = clean(input.reporting_mta);
    wrap(
        &mut lines,
        &format!("This is the mail delivery system at {mta}."),
        "",
    );
    lines.push(String::new());
    if any_failed {
        wrap(
            &mut lines,
            "Your message could not be delivered to one or more recipients. \
             Its headers are attached below; the reasons are listed here.",
            "",
        );
    } else {
        wrap(
            &mut lines,
            "Your message has not been delivered yet to the recipients listed \
             below. This is only a warning: the mail system keeps trying, and \
             you do not need to send the message again.",
            "",
        );
    }
    lines.push(String::new());
    wrap(
        &mut lines,
        &format!("Queue ID: {}", clean(input.queue_id)),
        "",
    );
    lines.push(format!("Arrived:  {}", rfc5322(input.arrival_date)));

    for (action, heading) in [
        (Action::Failed, "Delivery failed for good to:"),
        (
            Action::Delayed,
            "Delivery is delayed, still being retried, to:",
        ),
    ] {
        let mut first = true;
        for r in input.recipients.iter().filter(|r| r.action == action) {
            if first {
                lines.push(String::new());
                lines.push(heading.to_string());
                first = false;
            }
            lines.push(String::new());
            let outcome = match action {
                Action::Failed => "failed",
                Action::Delayed => "not completed yet",
            };
            let mut entry = format!("<{}>: ", clean(r.address));
            match (r.remote_mta, r.diagnostic) {
                (Some(host), Some(d)) => {
                    let _ = write!(
                        entry,
                        "host {} said: {}",
                        clean(host),
                        clean(diagnostic_text(d))
                    );
                }
                (None, Some(d)) => entry.push_str(&clean(diagnostic_text(d))),
                (Some(host), None) => {
                    let _ = write!(entry, "delivery to host {} {}", clean(host), outcome);
                }
                (None, None) => {
                    let _ = write!(entry, "delivery {outcome}");
                }
            }
            let _ = write!(entry, " (status {})", status(r));
            wrap(&mut lines, &entry, "    ");
        }
    }
    lines.push(String::new());
    wrap(
        &mut lines,
        "For further help, send mail to your postmaster and include this \
         report.",
        "",
    );

    let mut body = Vec::new();
    let mut headers = Vec::new();
    if lines.iter().all(|l| l.is_ascii()) {
        headers.push(("Content-Type", "text/plain; charset=us-ascii".to_string()));
        for l in &lines {
            body.extend_from_slice(l.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
    } else {
        // Addresses and server replies may be UTF-8. Quoted-printable keeps
        // the text readable and the part 7-bit.
        headers.push(("Content-Type", "text/plain; charset=utf-8".to_string()));
        headers.push(("Content-Transfer-Encoding", "quoted-printable".to_string()));
        for l in &lines {
            quoted_printable_line(&mut body, l.as_bytes());
        }
    }
    (headers, body)
}

/// Part 2: the RFC 3464 `message/delivery-status` content.
fn status_part(input: &DsnInput<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    field(
        &mut out,
        "Reporting-MTA",
        &format!("dns; {}", ascii(input.reporting_mta)),
    );
    if !input.queue_id.is_empty() {
        // An extension field (RFC 3464 §2.4 allows `X-` fields), as Postfix
        // does with X-Postfix-Queue-ID. Not Original-Envelope-Id: that is
        // reserved for the ENVID the sender gave (RFC 3461 §4.4).
        field(&mut out, "X-Verdant-Queue-ID", &ascii(input.queue_id));
    }
    field(&mut out, "Arrival-Date", &rfc5322(input.arrival_date));
    for r in input.recipients {
        // Blocks are separated by one blank line (RFC 3464 §2.1).
        out.extend_from_slice(b"\r\n");
        field(&mut out, "Final-Recipient", &address_field(r.address));
        field(&mut out, "Action", r.action.as_str());
        field(&mut out, "Status", status(r));
        if let Some(host) = r.remote_mta {
            field(&mut out, "Remote-MTA", &format!("dns; {}", ascii(host)));
        }
        if let Some(d) = r.diagnostic {
            field(&mut out, "Diagnostic-Code", &diagnostic_field(d));
        }
    }
    out
}

/// Part 3: the original's header section with CRLF line ends and no line
/// over 998 octets. Also says whether it carries 8-bit bytes.
fn returned_headers(original: &[u8]) -> (bool, Vec<u8>) {
    let section = header_section(original);
    let mut out = Vec::with_capacity(section.len() + 64);
    let mut lines: Vec<&[u8]> = section.split(|&b| b == b'\n').collect();
    // The section ends with a line end (or is empty): no line after it.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut line_buf = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A CR in the middle of a line or a NUL is not allowed in a message
        // (RFC 5322 §2.2, RFC 2045 §2.8 even for 8bit); a space keeps the
        // rest readable.
        line_buf.clear();
        line_buf.extend(
            line.iter()
                .map(|&b| if b == b'\r' || b == 0 { b' ' } else { b }),
        );
        // Lines that are already legal are copied as they are; only the
        // over-long ones get folded.
        fold(&mut out, &line_buf, MAX_LINE, MAX_LINE);
    }
    let eight_bit = out.iter().any(|&b| b >= 0x80);
    (eight_bit, out)
}

/// The header section of a message: everything up to and including the
/// line end before the first empty line (RFC 5322 §2.1), whether lines end
/// in CRLF or, in a message that did not come over SMTP, a bare LF. A
/// message without an empty line is all header section.
pub(crate) fn header_section(message: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < message.len() {
        let end = memchr::memchr(b'\n', &message[start..]).map_or(message.len(), |i| start + i + 1);
        let line = &message[start..end];
        if line == b"\r\n" || line == b"\n" {
            return &message[..start];
        }
        start = end;
    }
    message
}

/// Picks a multipart boundary that occurs in none of `contents`.
///
/// RFC 2046 §5.1.1: the boundary must not appear in any encapsulated part;
/// checking for the bare string anywhere is stricter than needed (only a
/// line start matters) and costs one scan. It starts with `=_`, which
/// quoted-printable text cannot contain, and varies a counter until it is
/// free. Deterministic for a given seed, so the output is reproducible.
fn boundary(seed: u64, contents: &[&[u8]]) -> String {
    let mut n = 0u32;
    loop {
        let candidate = format!("=_Verdant-DSN_{seed:016x}_{n}");
        if !contents
            .iter()
            .any(|c| memmem::find(c, candidate.as_bytes()).is_some())
        {
            return candidate;
        }
        n += 1;
    }
}

/// FNV-1a over the queue id and the time: a boundary seed that differs
/// between notifications without needing randomness.
fn seed(input: &DsnInput<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in input
        .queue_id
        .as_bytes()
        .iter()
        .chain(&input.now.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Writes `Name: value` as one header field, folded for RFC 5322.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    let line = format!("{name}: {value}");
    fold(out, line.as_bytes(), SOFT_LINE, MAX_LINE);
}

/// Writes one logical header line, folded so no physical line exceeds `hard`
/// octets, and ends it with CRLF.
///
/// Folding inserts CRLF before a space or tab (RFC 5322 §2.2.3), so
/// unfolding gives back the same text. It folds at the last whitespace
/// within `soft` octets, else at the first within `hard`. Only a run of more
/// than `hard` octets without whitespace is split by inserting CRLF + space,
/// which adds a space on unfolding; no real address, host name or reply is
/// that long. Never makes a line of whitespace only (obsolete syntax), but
/// keeps one that was given, up to `hard` octets.
fn fold(out: &mut Vec<u8>, line: &[u8], soft: usize, hard: usize) {
    let is_wsp = |b: u8| b == b' ' || b == b'\t';
    let mut rest = line;
    // Octets already on the current physical line (the space a split put).
    let mut lead = 0;
    loop {
        let (soft, hard) = (soft - lead, hard - lead);
        if rest.len() <= soft {
            break;
        }
        let (Some(first), Some(last)) = (
            rest.iter().position(|&b| !is_wsp(b)),
            rest.iter().rposition(|&b| !is_wsp(b)),
        ) else {
            // Nothing but whitespace: keep what fits, drop the rest.
            rest = &rest[..rest.len().min(hard)];
            break;
        };
        // A fold point has text before it and text after it, and is the start
        // of its whitespace run, so the line before ends in text.
        let can_fold = |i: usize| i > first && i < last && is_wsp(rest[i]) && !is_wsp(rest[i - 1]);
        let at = (1..=soft)
            .rev()
            .find(|&i| can_fold(i))
            .or_else(|| (soft + 1..=hard.min(rest.len() - 1)).find(|&i| can_fold(i)));
        if let Some(i) = at {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[i..];
            lead = 0;
        } else if rest.len() <= hard {
            break;
        } else if first >= hard {
            // Only whitespace up to the limit: drop it but one, which keeps
            // a continuation line a continuation.
            rest = &rest[first - 1..];
        } else {
            let mut cut = hard;
            // Do not split a UTF-8 sequence (continuation bytes 10xxxxxx).
            while cut > first + 1 && rest[cut] & 0xC0 == 0x80 {
                cut -= 1;
            }
            out.extend_from_slice(&rest[..cut]);
            out.extend_from_slice(b"\r\n ");
            rest = &rest[cut..];
            lead = 1;
        }
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b"\r\n");
}

/// Appends `text` to `lines`, wrapped at spaces to [`TEXT_WIDTH`], with
/// `indent` before every line but the first. A word longer than
/// [`MAX_WORD`] octets is split so no line can exceed 998 octets.
fn wrap(lines: &mut Vec<String>, text: &str, indent: &str) {
    let mut line = String::new();
    let mut has_text = false;
    let mut pushed = false;
    for mut word in text.split(' ').filter(|w| !w.is_empty()) {
        while !word.is_empty() {
            let take = if word.len() > MAX_WORD {
                floor_char(word, MAX_WORD)
            } else {
                word.len()
            };
            let (piece, tail) = word.split_at(take);
            if has_text && line.len() + 1 + piece.len() > TEXT_WIDTH {
                lines.push(std::mem::take(&mut line));
                has_text = false;
                pushed = true;
            }
            if !has_text {
                line.clear();
                if pushed {
                    line.push_str(indent);
                }
            } else {
                line.push(' ');
            }
            line.push_str(piece);
            has_text = true;
            word = tail;
        }
    }
    if has_text {
        lines.push(line);
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char(s: &str, mut at: usize) -> usize {
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Encodes one line of text as quoted-printable (RFC 2045 §6.7) with soft
/// line breaks so that no encoded line exceeds 76 characters.
fn quoted_printable_line(out: &mut Vec<u8>, line: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut col = 0;
    for (i, &b) in line.iter().enumerate() {
        // Whitespace at the end of a line must be encoded: transports may
        // strip it (rule 3).
        let literal = (b'!'..=b'~').contains(&b) && b != b'='
            || (b == b' ' || b == b'\t') && i + 1 < line.len();
        let width = if literal { 1 } else { 3 };
        // 75 plus the `=` of the soft break is the 76 of rule 5.
        if col + width > 75 {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        col += width;
    }
    out.extend_from_slice(b"\r\n");
}

/// For a header value that may carry UTF-8: each run of control characters
/// (CR, LF, TAB, NUL, DEL, C1) becomes one space, so the value stays on its
/// field.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut after_control = false;
    for c in s.chars() {
        if c.is_control() {
            // One space for a run (a CRLF between reply lines is one gap).
            if !after_control {
                out.push(' ');
            }
            after_control = true;
        } else {
            out.push(c);
            after_control = false;
        }
    }
    out
}

/// For the 7-bit `message/delivery-status` fields: [`clean`], and non-ASCII
/// characters escaped as `\x{HHHH}` (RFC 6533's notation).
fn ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(s).chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
        }
    }
    out
}

/// `Final-Recipient` value. An ASCII address is `rfc822; addr` (RFC 3464
/// §2.3.2). Anything else uses RFC 6533's `utf-8` address type in its 7-bit
/// form: characters outside `QCHAR` (non-ASCII, controls, space, `+`, `=`,
/// `\`) are written `\x{HH..}`, upper-case hex, at least two digits.
fn address_field(addr: &str) -> String {
    if addr.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return format!("rfc822; {addr}");
    }
    let mut out = String::from("utf-8; ");
    for c in addr.chars() {
        let qchar = c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\');
        if qchar {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:02X}}}", u32::from(c));
        }
    }
    out
}

/// `Diagnostic-Code` value: `type; text` (RFC 3464 §2.3.6), in ASCII.
fn diagnostic_field(d: &str) -> String {
    let d = ascii(d);
    match split_type(&d) {
        Some((kind, text)) => format!("{kind}; {}", text.trim()),
        // Our own wording without a type: an extension type, as Postfix's
        // `X-Postfix;`.
        None => format!("X-Verdant; {}", d.trim()),
    }
}

/// The diagnostic without its `type;` prefix, for the human part.
fn diagnostic_text(d: &str) -> &str {
    split_type(d).map_or(d, |(_, text)| text.trim())
}

/// Splits `type; text` when the part before `;` is a diagnostic type (an
/// atom of letters, digits and `-`).
fn split_type(d: &str) -> Option<(&str, &str)> {
    let (kind, text) = d.split_once(';')?;
    let kind = kind.trim();
    let is_type = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    is_type.then_some((kind, text))
}

/// The recipient's status if it is a valid RFC 3463 code
/// (`class.subject.detail`, class 2, 4 or 5, then one to three digits
/// twice), else the generic code for its action.
fn status<'a>(r: &FailedRecipient<'a>) -> &'a str {
    let mut parts = r.status.split('.');
    let digits = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let valid = matches!(parts.next(), Some("2" | "4" | "5"))
        && digits(parts.next())
        && digits(parts.next())
        && parts.next().is_none();
    match (valid, r.action) {
        (true, _) => r.status,
        (false, Action::Failed) => "5.0.0",
        (false, Action::Delayed) => "4.0.0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &[u8] =
        b"Received: from client.example.org (client.example.org [192.0.2.1])\r\n\
        \tby mx.example.net; Thu, 3 Dec 2026 18:31:45 +0000\r\n\
        From: Alice <alice@example.org>\r\n\
        To: bob@example.com\r\n\
        Subject: Hello\r\n\
        Message-ID: <1@example.org>\r\n\
        \r\n\
        The secret body line.\r\n";

    const ARRIVAL: u64 = 1_796_322_705_000_000;
    const NOW: u64 = ARRIVAL + 3_600_000_000;

    fn failed(address: &'static str) -> FailedRecipient<'static> {
        FailedRecipient {
            address,
            status: "5.1.1",
            action: Action::Failed,
            diagnostic: Some("smtp; 550 5.1.1 no such user"),
            remote_mta: Some("mx1.example.com"),
        }
    }

    fn input<'a>(recipients: &'a [FailedRecipient<'a>], original: &'a [u8]) -> DsnInput<'a> {
        DsnInput {
            reporting_mta: "mail.example.net",
            queue_id: "0006472D3E8B2A400001",
            original_sender: "alice@example.org",
            arrival_date: ARRIVAL,
            now: NOW,
            recipients,
            original,
            message_id: "<0006472D3E8B2A400001.dsn@mail.example.net>".to_string(),
        }
    }

    /// Every line ends in CRLF, there is no other CR or LF, and no line is
    /// longer than 998 octets.
    fn assert_clean(msg: &[u8]) {
        assert!(msg.ends_with(b"\r\n"), "message does not end with CRLF");
        let lines: Vec<&[u8]> = msg.split(|&b| b == b'\n').collect();
        assert_eq!(lines.last(), Some(&&b""[..]));
        for (n, line) in lines[..lines.len() - 1].iter().enumerate() {
            let text = line
                .strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("line {n} ends in a bare LF"));
            assert!(!text.contains(&b'\r'), "line {n} has a bare CR");
            assert!(text.len() <= 998, "line {n} has {} octets", text.len());
        }
    }

    /// A MIME entity split into unfolded header fields and its body.
    struct Entity {
        fields: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Entity {
        fn parse(bytes: &[u8]) -> Entity {
            let end = memmem::find(bytes, b"\r\n\r\n").expect("no end of header section");
            Entity {
                fields: unfold(&bytes[..end + 2]),
                body: bytes[end + 4..].to_vec(),
            }
        }

        fn get(&self, name: &str) -> Option<&str> {
            get(&self.fields, name)
        }

        fn all(&self, name: &str) -> Vec<&str> {
            self.fields
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Header fields of a section of CRLF lines, unfolded (only the CRLF
    /// before a continuation line is removed, RFC 5322 §2.2.3).
    fn unfold(section: &[u8]) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(section);
        let mut logical: Vec<String> = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                logical
                    .last_mut()
                    .expect("continuation first")
                    .push_str(line);
            } else {
                logical.push(line.to_string());
            }
        }
        logical
            .iter()
            .map(|l| {
                let (name, value) = l.split_once(':').expect("field without colon");
                (name.to_string(), value.trim().to_string())
            })
            .collect()
    }

    /// The top-level entity and its parts, split at the boundary given in
    /// Content-Type. Checks the delimiter syntax on the way.
    fn split(msg: &[u8]) -> (Entity, Vec<Entity>, String) {
        assert_clean(msg);
        let top = Entity::parse(msg);
        let ct = top.get("Content-Type").expect("Content-Type").to_string();
        assert!(
            ct.starts_with("multipart/report; report-type=delivery-status;"),
            "{ct}"
        );
        let b = ct.split_once("boundary=\"").expect("boundary").1;
        let b = b[..b.find('"').expect("closing quote")].to_string();
        assert!(b.len() <= 70, "boundary too long");
        let delimiter = format!("\r\n--{b}");
        let body = &top.body;
        let starts: Vec<usize> = memmem::find_iter(body, delimiter.as_bytes()).collect();
        // Three parts, then the close delimiter.
        assert_eq!(starts.len(), 4, "delimiters: {starts:?}");
        let mut parts = Vec::new();
        for w in starts.windows(2) {
            let after = w[0] + delimiter.len();
            assert_eq!(&body[after..after + 2], b"\r\n");
            parts.push(Entity::parse(&body[after + 2..w[1]]));
        }
        let close = starts[3] + delimiter.len();
        assert_eq!(&body[close..], b"--\r\n");
        // No other line anywhere starts with the boundary.
        let dash = format!("\n--{b}");
        assert_eq!(memmem::find_iter(msg, dash.as_bytes()).count(), 4);
        (top, parts, b)
    }

    /// The delivery-status part's groups: per-message fields first, then one
    /// per recipient.
    fn status_groups(part: &Entity) -> Vec<Vec<(String, String)>> {
        assert_eq!(part.get("Content-Type"), Some("message/delivery-status"));
        assert!(part.body.is_ascii(), "delivery-status is not 7-bit");
        let text = String::from_utf8(part.body.clone()).unwrap();
        let text = text.strip_suffix("\r\n").expect("ends with CRLF");
        assert!(!text.ends_with("\r\n"), "stray blank line at the end");
        text.split("\r\n\r\n")
            .map(|group| unfold(format!("{group}\r\n").as_bytes()))
            .collect()
    }

    fn qp_decode(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'=' if body[i + 1..].starts_with(b"\r\n") => i += 3,
                b'=' => {
                    let hex = std::str::from_utf8(&body[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    /// The human-readable part, decoded.
    fn human_text(part: &Entity) -> String {
        let ct = part.get("Content-Type").unwrap();
        assert!(ct.starts_with("text/plain; charset="), "{ct}");
        let body = match part.get("Content-Transfer-Encoding") {
            Some("quoted-printable") => {
                assert_eq!(ct, "text/plain; charset=utf-8");
                for line in part.body.split(|&b| b == b'\n') {
                    assert!(line.len() <= 77, "QP line over 76 characters");
                }
                assert!(part.body.is_ascii());
                qp_decode(&part.body)
            }
            None => {
                assert_eq!(ct, "text/plain; charset=us-ascii");
                assert!(part.body.is_ascii());
                part.body.clone()
            }
            Some(other) => panic!("unexpected encoding {other}"),
        };
        String::from_utf8(body).expect("UTF-8 text")
    }

    #[test]
    fn one_failed_recipient_has_every_field() {
        let rcpts = [failed("bob@example.com")];
        let msg = build(&input(&rcpts, ORIGINAL));
        let (top, parts, _) = split(&msg);

        assert_eq!(
            top.get("From"),
            Some("Mail Delivery System <MAILER-DAEMON@mail.example.net>")
        );
        assert_eq!(top.get("To"), Some("<alice@example.org>"));
        assert_eq!(
            top.get("Subject"),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(top.get("Date"), Some(rfc5322(NOW).as_str()));
        assert_eq!(
            top.get("Message-ID"),
            Some("<0006472D3E8B2A400001.dsn@mail.example.net>")
        );
        assert_eq!(top.get("Auto-Submitted"), Some("auto-replied"));
        assert_eq!(top.get("MIME-Version"), Some("1.0"));
        assert_eq!(top.get("X-Verdant-Queue-ID"), Some("0006472D3E8B2A400001"));
        assert_eq!(top.get("Content-Transfer-Encoding"), None);
        assert!(msg.is_ascii(), "an all-ASCII bounce must be 7-bit");

        assert_eq!(parts.len(), 3);
        let text = human_text(&parts[0]);
        assert!(
            text.contains("<bob@example.com>: host mx1.example.com said: 550 5.1.1 no such user")
        );
        assert!(text.contains("0006472D3E8B2A400001"));

        let groups = status_groups(&parts[1]);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0],
            [
                ("Reporting-MTA", "dns; mail.example.net"),
                ("X-Verdant-Queue-ID", "0006472D3E8B2A400001"),
                ("Arrival-Date", rfc5322(ARRIVAL).as_str()),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(
            groups[1],
            [
                ("Final-Recipient", "rfc822; bob@example.com"),
                ("Action", "failed"),
                ("Status", "5.1.1"),
                ("Remote-MTA", "dns; mx1.example.com"),
                ("Diagnostic-Code", "smtp; 550 5.1.1 no such user"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(parts[2].get("Content-Type"), Some("text/rfc822-headers"));
        assert_eq!(parts[2].get("Content-Transfer-Encoding"), None);
    }

    #[test]
    fn returns_the_original_headers_and_not_the_body() {
        let rcpts = [failed("bob@example.com")];
        let msg = build(&input(&rcpts, ORIGINAL));
        let (_, parts, _) = split(&msg);
        let header_end = memmem::find(ORIGINAL, b"\r\n\r\n").unwrap() + 2;
        // The header section comes back byte for byte.
        assert_eq!(parts[2].body, &ORIGINAL[..header_end]);
        assert_eq!(
            get(&unfold(&parts[2].body), "Message-ID"),
            Some("<1@example.org>")
        );
        assert!(memmem::find(&msg, b"secret body").is_none());
    }

    #[test]
    fn boundary_avoids_the_original() {
        let rcpts = [failed("bob@example.com")];
        let plain = input(&rcpts, ORIGINAL);
        let first = boundary(seed(&plain), &[]);
        let (_, _, used) = split(&build(&plain));
        assert_eq!(used, first);

        // The original carries that very boundary, in a header and in the
        // body: the notification must pick another one.
        let hostile = format!(
            "Subject: --{first}\r\nX-Next: {}\r\n\r\n--{first}\r\n",
            boundary(seed(&plain), &[first.as_bytes()])
        );
        let msg = build(&input(&rcpts, hostile.as_bytes()));
        let (_, parts, used) = split(&msg);
        assert_ne!(used, first);
        assert!(memmem::find(hostile.as_bytes(), used.as_bytes()).is_none());
        assert_eq!(
            get(&unfold(&parts[2].body), "Subject"),
            Some(&*format!("--{first}"))
        );

        // Another queue id or time gives another boundary.
        let mut other = input(&rcpts, ORIGINAL);
        other.now += 1;
        assert_ne!(boundary(seed(&other), &[]), first);
    }

    #[test]
    fn long_lines_and_bare_line_ends_come_out_clean() {
        let long_token = "a".repeat(5000);
        let words: Vec<String> = (0..700).map(|i| format!("w{i}")).collect();
        let words = words.join(" ");
        assert!(words.len() > 3000);
        let long_utf8 = "é".repeat(2500);
        let original = format!(
            "X-Long: {long_token}\nX-Words: {words}\nX-CR: one\rtwo\r\nX-Utf8: {long_utf8}\n\
             X-Nul: a\0b\n\nbody line\nsecret\r\n"
        );
        let rcpts = [failed("bob@example.com")];
        let msg = build(&input(&rcpts, original.as_bytes()));
        assert_clean(&msg);
        let (top, parts, _) = split(&msg);
        let returned = unfold(&parts[2].body);
        let names: Vec<&str> = returned.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["X-Long", "X-Words", "X-CR", "X-Utf8", "X-Nul"]);
        // Folded at whitespace: unfolding gives the same text back.
        assert_eq!(get(&returned, "X-Words"), Some(words.as_str()));
        // Split inside a run without whitespace: only spaces were added.
        assert_eq!(
            get(&returned, "X-Long").unwrap().replace(' ', ""),
            long_token
        );
        assert_eq!(
            get(&returned, "X-Utf8").unwrap().replace(' ', ""),
            long_utf8
        );
        assert_eq!(get(&returned, "X-CR"), Some("one two"));
        assert_eq!(get(&returned, "X-Nul"), Some("a b"));
        assert!(memmem::find(&msg, b"secret").is_none());
        // The é makes part 3 8-bit, and says so.
        assert_eq!(parts[2].get("Content-Transfer-Encoding"), Some("8bit"));
        assert_eq!(top.get("Content-Transfer-Encoding"), Some("8bit"));
    }

    #[test]
    fn several_recipients_in_order() {
        let rcpts = [
            failed("bob@example.com"),
            FailedRecipient {
                address: "carol@example.com",
                status: "5.2.2",
                action: Action::Failed,
                diagnostic: Some("smtp; 552 5.2.2 mailbox full"),
                remote_mta: Some("mx2.example.com"),
            },
            FailedRecipient {
                address: "dave@example.net",
                status: "5.4.4",
                action: Action::Failed,
                diagnostic: None,
                remote_mta: None,
            },
        ];
        let msg = build(&input(&rcpts, ORIGINAL));
        let (_, parts, _) = split(&msg);
        let groups = status_groups(&parts[1]);
        assert_eq!(groups.len(), 4);
        let finals: Vec<_> = groups[1..]
            .iter()
            .map(|g| get(g, "Final-Recipient").unwrap())
            .collect();
        assert_eq!(
            finals,
            [
                "rfc822; bob@example.com",
                "rfc822; carol@example.com",
                "rfc822; dave@example.net"
            ]
        );
        assert_eq!(get(&groups[2], "Status"), Some("5.2.2"));
        assert_eq!(get(&groups[2], "Remote-MTA"), Some("dns; mx2.example.com"));
        assert_eq!(
            get(&groups[2], "Diagnostic-Code"),
            Some("smtp; 552 5.2.2 mailbox full")
        );
        // Unknown fields are left out, not left empty.
        assert_eq!(
            groups[3]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["Final-Recipient", "Action", "Status"]
        );
        for g in &groups[1..] {
            assert_eq!(get(g, "Action"), Some("failed"));
        }
        let text = human_text(&parts[0]);
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} missing"))
        };
        assert!(at("<bob@example.com>") < at("<carol@example.com>"));
        assert!(at("<carol@example.com>") < at("<dave@example.net>"));
        assert!(text.contains("mailbox full"));
        assert!(text.contains("<dave@example.net>: delivery failed (status 5.4.4)"));
    }

    #[test]
    fn hostile_diagnostic_stays_in_its_field() {
        let diag = "smtp; 550 5.1.1 n\u{f6} such user\r\nInjected: yes\0\x1b[31m \u{2713}\u{85}";
        let rcpts = [FailedRecipient {
            diagnostic: Some(diag),
            remote_mta: Some("mx\r\nX-Evil: 1"),
            ..failed("bob@example.com")
        }];
        let msg = build(&input(&rcpts, ORIGINAL));
        let (top, parts, _) = split(&msg);
        assert!(top.all("Injected").is_empty() && top.all("X-Evil").is_empty());

        let groups = status_groups(&parts[1]);
        let names: Vec<&str> = groups[1].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Final-Recipient",
                "Action",
                "Status",
                "Remote-MTA",
                "Diagnostic-Code"
            ]
        );
        assert_eq!(get(&groups[1], "Remote-MTA"), Some("dns; mx X-Evil: 1"));
        assert_eq!(
            get(&groups[1], "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 n\\x{F6} such user Injected: yes [31m \\x{2713}")
        );

        // The person gets the real characters, quoted-printable.
        assert_eq!(
            parts[0].get("Content-Transfer-Encoding"),
            Some("quoted-printable")
        );
        let text = human_text(&parts[0]);
        assert!(text.contains("n\u{f6} such user"), "{text}");
        assert!(text.contains('\u{2713}'));
        assert!(!text.contains("smtp;"));
        assert!(
            text.chars()
                .all(|c| !c.is_control() || c == '\r' || c == '\n'),
            "control character in {text:?}"
        );
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
        // Nothing 8-bit anywhere: the original headers are ASCII.
        assert!(msg.is_ascii());
    }

    #[test]
    fn delayed_only_is_a_warning_and_mixed_is_a_bounce() {
        let delayed = FailedRecipient {
            address: "erin@example.com",
            status: "4.4.1",
            action: Action::Delayed,
            diagnostic: Some("smtp; 451 4.4.1 try later"),
            remote_mta: None,
        };
        let only = [delayed];
        let (top, parts, _) = split(&build(&input(&only, ORIGINAL)));
        assert_eq!(
            top.get("Subject"),
            Some("Delayed Mail (still being retried)")
        );
        let groups = status_groups(&parts[1]);
        assert_eq!(get(&groups[1], "Action"), Some("delayed"));
        assert_eq!(get(&groups[1], "Status"), Some("4.4.1"));
        let text = human_text(&parts[0]);
        assert!(text.contains("still being retried"));
        assert!(!text.contains("failed"), "{text}");

        let mixed = [delayed, failed("bob@example.com")];
        let (top, parts, _) = split(&build(&input(&mixed, ORIGINAL)));
        assert_eq!(
            top.get("Subject"),
            Some("Undelivered Mail Returned to Sender")
        );
        let groups = status_groups(&parts[1]);
        assert_eq!(get(&groups[1], "Action"), Some("delayed"));
        assert_eq!(get(&groups[2], "Action"), Some("failed"));
        let text = human_text(&parts[0]);
        assert!(text.find("failed for good").unwrap() < text.find("still being retried").unwrap());
    }

    #[test]
    fn bad_status_and_untyped_diagnostic_are_made_valid() {
        for (status, action, want) in [
            ("5.1.1", Action::Failed, "5.1.1"),
            ("4.4.7", Action::Failed, "4.4.7"),
            ("2.0.0", Action::Failed, "2.0.0"),
            ("5.123.456", Action::Failed, "5.123.456"),
            ("550", Action::Failed, "5.0.0"),
            ("5.1", Action::Failed, "5.0.0"),
            ("5.1.1.1", Action::Failed, "5.0.0"),
            ("3.1.1", Action::Failed, "5.0.0"),
            ("5.1234.1", Action::Failed, "5.0.0"),
            ("5..1", Action::Failed, "5.0.0"),
            ("5.1.x", Action::Delayed, "4.0.0"),
            ("", Action::Delayed, "4.0.0"),
        ] {
            let r = FailedRecipient {
                status,
                action,
                ..failed("bob@example.com")
            };
            assert_eq!(super::status(&r), want, "{status}");
        }
        for (diag, want) in [
            ("smtp; 550 no", "smtp; 550 no"),
            ("  X-Local ;  gone  ", "X-Local; gone"),
            ("no route to host", "X-Verdant; no route to host"),
            ("550 5.1.1 a;b", "X-Verdant; 550 5.1.1 a;b"),
            ("", "X-Verdant; "),
        ] {
            assert_eq!(diagnostic_field(diag), want, "{diag}");
        }
        let rcpts = [FailedRecipient {
            status: "bogus",
            diagnostic: Some("connection refused"),
            ..failed("bob@example.com")
        }];
        let (_, parts, _) = split(&build(&input(&rcpts, ORIGINAL)));
        let groups = status_groups(&parts[1]);
        assert_eq!(get(&groups[1], "Status"), Some("5.0.0"));
        assert_eq!(
            get(&groups[1], "Diagnostic-Code"),
            Some("X-Verdant; connection refused")
        );
    }

    #[test]
    fn international_recipient_uses_the_utf8_address_type() {
        assert_eq!(
            address_field("j\u{f6}rg+x=y\\z@\u{4f8b}\u{3048}.jp"),
            "utf-8; j\\x{F6}rg\\x{2B}x\\x{3D}y\\x{5C}z@\\x{4F8B}\\x{3048}.jp"
        );
        assert_eq!(address_field("a+b@example.com"), "rfc822; a+b@example.com");
        let rcpts = [failed("j\u{f6}rg@example.com")];
        let mut dsn = input(&rcpts, ORIGINAL);
        dsn.original_sender = "\u{e9}lise@example.org";
        let msg = build(&dsn);
        let (top, parts, _) = split(&msg);
        let groups = status_groups(&parts[1]);
        assert_eq!(
            get(&groups[1], "Final-Recipient"),
            Some("utf-8; j\\x{F6}rg@example.com")
        );
        assert_eq!(top.get("To"), Some("<\u{e9}lise@example.org>"));
        assert!(human_text(&parts[0]).contains("<j\u{f6}rg@example.com>"));
    }

    #[test]
    fn long_diagnostics_are_folded_not_cut() {
        let words: Vec<String> = (0..400).map(|i| format!("word{i}")).collect();
        let long = format!("smtp; 550 {}", words.join(" "));
        let token = format!("smtp; 550 {}", "x".repeat(3000));
        let rcpts = [
            FailedRecipient {
                diagnostic: Some(&long),
                ..failed("bob@example.com")
            },
            FailedRecipient {
                diagnostic: Some(&token),
                ..failed("carol@example.com")
            },
        ];
        let msg = build(&input(&rcpts, ORIGINAL));
        let (_, parts, _) = split(&msg);
        let groups = status_groups(&parts[1]);
        assert_eq!(get(&groups[1], "Diagnostic-Code"), Some(long.as_str()));
        assert_eq!(
            get(&groups[2], "Diagnostic-Code").unwrap().replace(' ', ""),
            token.replace(' ', "")
        );
        // Where there is whitespace, lines stay within 78 octets.
        let first_block_end =
            memmem::find(&parts[1].body, b"Final-Recipient: rfc822; carol").unwrap();
        for line in parts[1].body[..first_block_end].split(|&b| b == b'\n') {
            assert!(line.len() <= 79, "{}", String::from_utf8_lossy(line));
        }
        let text = human_text(&parts[0]);
        assert!(
            text.replace("\r\n    ", " ")
                .contains(&long["smtp; ".len()..])
        );
        for line in text.lines() {
            assert!(line.len() <= 998);
        }
    }

    #[test]
    fn fold_table() {
        let fold_str = |s: &str, soft, hard| {
            let mut out = Vec::new();
            fold(&mut out, s.as_bytes(), soft, hard);
            String::from_utf8(out).unwrap()
        };
        let cases: &[(&str, usize, usize, &str)] = &[
            ("short", 10, 20, "short\r\n"),
            ("", 10, 20, "\r\n"),
            ("aaaa bbbb cccc", 10, 20, "aaaa bbbb\r\n cccc\r\n"),
            ("aaaa bbbb cccc", 9, 20, "aaaa bbbb\r\n cccc\r\n"),
            ("aaaa bbbb cccc", 8, 20, "aaaa\r\n bbbb\r\n cccc\r\n"),
            // No whitespace within soft: the first within hard.
            ("aaaaaaaaaaaa bb", 5, 20, "aaaaaaaaaaaa\r\n bb\r\n"),
            // Longer than soft, no whitespace, within hard: left alone.
            ("aaaaaaaaaaaa", 5, 20, "aaaaaaaaaaaa\r\n"),
            // Over hard: split, the continuation gets a space.
            ("aaaaaaaaaa", 4, 4, "aaaa\r\n aaa\r\n aaa\r\n"),
            // Never fold before trailing whitespace or leading whitespace.
            ("ab      ", 4, 20, "ab      \r\n"),
            ("    ab", 2, 20, "    ab\r\n"),
            ("  ab cd", 4, 20, "  ab\r\n cd\r\n"),
            // Whitespace only, over the limit: kept up to it.
            ("        ", 4, 4, "    \r\n"),
            // Leading whitespace beyond hard: one space kept.
            ("        ab", 4, 4, " ab\r\n"),
            // A run of whitespace is folded at its start.
            ("aa  bb", 3, 20, "aa\r\n  bb\r\n"),
            // Tabs are whitespace too.
            ("aa\tbb", 3, 20, "aa\r\n\tbb\r\n"),
        ];
        for &(line, soft, hard, want) in cases {
            assert_eq!(fold_str(line, soft, hard), want, "{line:?} {soft} {hard}");
        }
        // A UTF-8 sequence is not split.
        let got = fold_str("aa\u{e9}\u{e9}", 3, 3);
        assert_eq!(got, "aa\r\n \u{e9}\r\n \u{e9}\r\n");
    }

    #[test]
    fn header_section_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n"),
            (b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2\n"),
            (b"A: 1\r\n\nbody", b"A: 1\r\n"),
            (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n"),
            (b"A: 1", b"A: 1"),
            (b"\r\nbody only\r\n", b""),
            (b"", b""),
            // A line of spaces is not the empty line.
            (b"A: 1\r\n \r\nB: 2\r\n\r\nx", b"A: 1\r\n \r\nB: 2\r\n"),
        ];
        for &(message, want) in cases {
            assert_eq!(
                header_section(message),
                want,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
        // A header section without an end still comes back as lines.
        let (eight_bit, out) = returned_headers(b"A: 1");
        assert!(!eight_bit);
        assert_eq!(out, b"A: 1\r\n");
        assert_eq!(returned_headers(b"").1, b"");
    }

    #[test]
    fn quoted_printable_round_trips() {
        for line in [
            "plain ascii",
            "trailing space ",
            "trailing tab\t",
            "equals = sign and =_ boundary",
            &"\u{e9}t\u{e9} ".repeat(40),
            &"x".repeat(200),
            "",
        ] {
            let mut out = Vec::new();
            quoted_printable_line(&mut out, line.as_bytes());
            assert!(out.is_ascii());
            assert!(out.ends_with(b"\r\n"));
            for encoded in out.split(|&b| b == b'\n') {
                let encoded = encoded.strip_suffix(b"\r").unwrap_or(encoded);
                assert!(encoded.len() <= 76, "{}", String::from_utf8_lossy(encoded));
                assert!(!encoded.ends_with(b" ") && !encoded.ends_with(b"\t"));
            }
            assert!(memmem::find(&out, b"=_").is_none());
            assert_eq!(qp_decode(&out), format!("{line}\r\n").as_bytes());
        }
    }
}
