//! The DATA and BDAT content scanner: bytes in, message bytes out.
//!
//! It enforces what RFC 5321 and the SMTP-smuggling fixes require of
//! message content, while reading and without buffering what it rejects:
//!
//! - end of data only at `<CRLF>.<CRLF>` (§4.1.1.4), dot-unstuffing (§4.5.2);
//! - a bare LF or a bare CR anywhere is an error (CVE-2023-51764: a
//!   receiver that accepts `<LF>.<LF>` or `<CR>.<CR>` as the end lets a
//!   sender smuggle a second message past the next hop). Like Postfix's
//!   `smtpd_forbid_bare_newline`, the message is rejected, not repaired;
//! - text lines are capped at 1000 octets with the CRLF (§4.5.3.1.6);
//! - the message size is capped while reading (RFC 1870).
//!
//! After an error the scanner keeps looking for the end of data but stores
//! nothing more, so the session can answer once the client is listening.
//! Lines are found with `memchr`, not byte by byte.

/// Longest text line, with its CRLF (RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 1000;

/// Why content was rejected. The first error wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentError {
    /// A LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A line longer than [`MAX_LINE`] octets.
    LineTooLong,
    /// More than the size limit.
    TooBig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// A `.` at the start of a line (DATA only).
    Dot,
    /// `.` CR at the start of a line (DATA only).
    DotCr,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
}

/// Scans message content. One per transaction.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// Dot handling and end-of-data detection (DATA); off for BDAT, whose
    /// chunks are counted, not terminated.
    dot: bool,
    line_len: usize,
    max_size: usize,
    error: Option<ContentError>,
}

/// The result of [`Scanner::scan`].
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// All input consumed; the message continues.
    More,
    /// The end-of-data line ended after this many input bytes.
    End(usize),
}

impl Scanner {
    /// A scanner for DATA content (dot-stuffed, ends at `CRLF.CRLF`).
    pub fn data(max_size: usize) -> Self {
        Scanner {
            state: State::LineStart,
            dot: true,
            line_len: 0,
            max_size,
            error: None,
        }
    }

    /// A scanner for BDAT chunks: the same line rules, no dot handling.
    pub fn bdat(max_size: usize) -> Self {
        Scanner {
            dot: false,
            ..Scanner::data(max_size)
        }
    }

    /// The first error seen, if any.
    pub fn error(&self) -> Option<ContentError> {
        self.error
    }

    /// Whether the content so far ends at a line end (BDAT: a last chunk
    /// must not end in the middle of a line).
    pub fn at_line_start(&self) -> bool {
        self.state == State::LineStart
    }

    /// Scans `input`, appending accepted message bytes to `out` (at most up
    /// to the size limit, nothing after an error). `out` holds the message
    /// so far; its length counts towards the limit.
    pub fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) -> Scanned {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::LineStart if self.dot && input[i] == b'.' => {
                    self.state = State::Dot;
                    self.line_len = 1;
                    i += 1;
                }
                State::Dot => {
                    if input[i] == b'\r' {
                        self.state = State::DotCr;
                        i += 1;
                    } else {
                        // Dot-stuffed line: drop the first dot, which does
                        // not count towards the line length either.
                        self.state = State::Mid;
                        self.line_len = 0;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::LineStart;
                        self.line_len = 0;
                        return Scanned::End(i + 1);
                    }
                    // ".<CR>x": a bare CR; the line goes on after it.
                    self.fail(ContentError::BareCr);
                    self.state = State::Mid;
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        self.line_len += 1;
                        self.check_line_len();
                        self.push(out, b"\r\n");
                        self.state = State::LineStart;
                        self.line_len = 0;
                        i += 1;
                    } else {
                        self.fail(ContentError::BareCr);
                        self.push(out, b"\r");
                        self.state = State::Mid;
                    }
                }
                State::LineStart | State::Mid => {
                    let rest = &input[i..];
                    let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    self.line_len += n;
                    self.check_line_len();
                    self.push(out, &rest[..n]);
                    i += n;
                    self.state = State::Mid;
                    if i < input.len() {
                        if input[i] == b'\n' {
                            // LF without CR. Not a line end: only CRLF
                            // starts a line, so `<LF>.<CRLF>` cannot end
                            // the data (the smuggling attack).
                            self.fail(ContentError::BareLf);
                            self.line_len = 0;
                        } else {
                            self.state = State::Cr;
                            self.line_len += 1;
                        }
                        i += 1;
                    }
                }
            }
        }
        Scanned::More
    }

    fn check_line_len(&mut self) {
        if self.line_len > MAX_LINE {
            self.fail(ContentError::LineTooLong);
        }
    }

    fn fail(&mut self, e: ContentError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn push(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if out.len() + bytes.len() > self.max_size {
            self.error = Some(ContentError::TooBig);
            return;
        }
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at `split`, returns (message, error, bytes consumed).
    fn run(
        input: &[u8],
        split: usize,
        max: usize,
    ) -> (Vec<u8>, Option<ContentError>, Option<usize>) {
        let mut s = Scanner::data(max);
        let mut out = Vec::new();
        let (a, b) = input.split_at(split);
        if let Scanned::End(n) = s.scan(a, &mut out) {
            return (out, s.error(), Some(n));
        }
        let end = match s.scan(b, &mut out) {
            Scanned::End(n) => Some(a.len() + n),
            Scanned::More => None,
        };
        (out, s.error(), end)
    }

    #[test]
    fn table() {
        use ContentError::*;
        let long = format!("{}\r\n.\r\n", "a".repeat(998));
        let too_long = format!("{}\r\n.\r\n", "a".repeat(999));
        let stuffed = format!(".{}\r\n.\r\n", "a".repeat(998));
        const ALL: Option<usize> = Some(usize::MAX);
        // (input, message stored, error, bytes consumed at the end)
        type Case<'a> = (&'a [u8], &'a [u8], Option<ContentError>, Option<usize>);
        let cases: Vec<Case> = vec![
            (b"a\r\n.\r\n", b"a\r\n", None, Some(6)),
            (b".\r\n", b"", None, Some(3)),
            (b"..x\r\n.\r\n", b".x\r\n", None, Some(8)),
            (b"...\r\n.\r\n", b"..\r\n", None, Some(8)),
            (b".x\r\n.\r\n", b"x\r\n", None, Some(7)),
            (b"a\r\n.\r\nNEXT", b"a\r\n", None, Some(6)),
            (b"a\r\n.\r", b"a\r\n", None, None),
            // Smuggling variants: none of them ends the data; only the
            // real CRLF.CRLF at the very end does (ALL = the whole input).
            (b"a\n.\nb\r\n.\r\n", b"a", Some(BareLf), ALL),
            (b"a\r.\rb\r\n.\r\n", b"a", Some(BareCr), ALL),
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n", Some(BareLf), ALL),
            (b"a\n.\r\nb\r\n.\r\n", b"a", Some(BareLf), ALL),
            (b"a\r\n.\rb\r\n.\r\n", b"a\r\n", Some(BareCr), ALL),
            (b"a\r\r\n.\r\n", b"a", Some(BareCr), ALL),
            (b"x\r\n\n.\r\n", b"x\r\n", Some(BareLf), None),
            (long.as_bytes(), &long.as_bytes()[..1000], None, Some(1003)),
            (too_long.as_bytes(), b"", Some(LineTooLong), Some(1004)),
            // The transparency dot does not count (RFC 5321 §4.5.3.1.6).
            (
                stuffed.as_bytes(),
                &stuffed.as_bytes()[1..1001],
                None,
                Some(1004),
            ),
        ];
        for (input, want, err, end) in cases {
            let end = end.map(|n| n.min(input.len()));
            for split in 0..=input.len() {
                let (out, e, n) = run(input, split, 1 << 20);
                let show = String::from_utf8_lossy(input);
                assert_eq!(e, err, "{show:?} split {split}");
                assert_eq!(n, end, "{show:?} split {split}");
                if err.is_none() || !want.is_empty() {
                    assert_eq!(out, want, "{show:?} split {split}");
                }
            }
        }
    }

    #[test]
    fn size_cap_stops_storing_but_finds_the_end() {
        let input = b"0123456789\r\n0123456789\r\n.\r\n";
        for split in 0..=input.len() {
            let (out, e, n) = run(input, split, 15);
            assert_eq!(e, Some(ContentError::TooBig));
            assert_eq!(n, Some(input.len()));
            assert!(out.len() <= 15);
        }
        let (out, e, _) = run(input, 5, input.len() - 3);
        assert_eq!((out.len(), e), (24, None));
    }

    #[test]
    fn an_endless_line_is_not_buffered() {
        let mut s = Scanner::data(1 << 20);
        let mut out = Vec::new();
        let chunk = vec![b'a'; 4096];
        for _ in 0..100 {
            assert_eq!(s.scan(&chunk, &mut out), Scanned::More);
        }
        assert_eq!(s.error(), Some(ContentError::LineTooLong));
        assert!(out.len() <= MAX_LINE, "{} bytes stored", out.len());
    }

    #[test]
    fn bdat_has_no_dot_rules() {
        let mut s = Scanner::bdat(1 << 20);
        let mut out = Vec::new();
        assert_eq!(s.scan(b".\r\n..x\r\n", &mut out), Scanned::More);
        assert_eq!(out, b".\r\n..x\r\n");
        assert!(s.at_line_start());
        assert_eq!(s.scan(b"y\nz", &mut out), Scanned::More);
        assert_eq!(s.error(), Some(ContentError::BareLf));
    }
}
