//! The send-time stamp: a header the load generator writes into every
//! message and the sink reads back, so that the sink can measure end-to-end
//! latency (through Verdant's queue and delivery, or any other MTA) without
//! any channel between the two ends but the mail itself.
//!
//! Both ends must read the same clock; on one machine they do. Across
//! machines the clocks must be synchronised, and a stamp from the future
//! (a clock ahead of the sink's) counts as zero latency.

/// The header's name. Its value is the time the message was sent, in
/// microseconds since the Unix epoch, in decimal: `X-Verdant-Sent: 1712345678901234`.
pub const SENT_HEADER: &str = "X-Verdant-Sent";

/// The header line, with its CRLF, for a message sent at `micros`
/// (microseconds since the Unix epoch).
pub fn sent_header(micros: u64) -> String {
    format!("{SENT_HEADER}: {micros}\r\n")
}

/// The send time stamped in `message` (raw RFC 5322 content with CRLF line
/// ends), if any.
///
/// Only the header section is read: the search stops at the first empty
/// line, so the cost does not grow with the body. The name matches in any
/// case (RFC 5322 §1.2.2); the first such header wins; a value that is not
/// a plain decimal number (after trimming blanks) gives `None`.
pub fn find_sent(message: &[u8]) -> Option<u64> {
    let name = SENT_HEADER.as_bytes();
    let mut at = 0;
    while at < message.len() {
        let end = memchr::memchr(b'\n', &message[at..]).map_or(message.len(), |i| at + i + 1);
        let line = &message[at..end];
        if line == b"\r\n" || line == b"\n" {
            return None; // end of the header section
        }
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
        {
            return parse_micros(&line[name.len() + 1..]);
        }
        at = end;
    }
    None
}

fn parse_micros(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stamp_in_the_header_section_only() {
        let h = sent_header(1_712_345_678_901_234);
        assert_eq!(h, "X-Verdant-Sent: 1712345678901234\r\n");
        for (msg, want) in [
            (
                format!("{h}Subject: x\r\n\r\nbody\r\n"),
                Some(1_712_345_678_901_234),
            ),
            (
                format!("Received: from a\r\n\tby b; date\r\nSubject: x\r\n{h}\r\nbody\r\n"),
                Some(1_712_345_678_901_234),
            ),
            ("x-verdant-sent:42\r\n\r\n".into(), Some(42)),
            ("X-VERDANT-SENT: \t 7 \r\n".into(), Some(7)),
            // Only the first counts.
            (
                "X-Verdant-Sent: 1\r\nX-Verdant-Sent: 2\r\n\r\n".into(),
                Some(1),
            ),
            // In the body: not a header.
            (format!("Subject: x\r\n\r\n{h}"), None),
            // Not the same header, or a bad value.
            ("X-Verdant-Sent-Not: 5\r\n\r\n".into(), None),
            ("X-Verdant-Sent: 12ab\r\n\r\n".into(), None),
            ("X-Verdant-Sent: -3\r\n\r\n".into(), None),
            ("X-Verdant-Sent:\r\n\r\n".into(), None),
            (
                "X-Verdant-Sent: 99999999999999999999999\r\n\r\n".into(),
                None,
            ),
            // A folded continuation line is not a header of its own.
            ("Subject: a\r\n X-Verdant-Sent: 5\r\n\r\n".into(), None),
            // No body at all, and no final CRLF.
            ("Subject: x\r\nX-Verdant-Sent: 9".into(), Some(9)),
            (String::new(), None),
        ] {
            assert_eq!(find_sent(msg.as_bytes()), want, "{msg:?}");
        }
    }
}
