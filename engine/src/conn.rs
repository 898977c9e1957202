//! One SMTP client connection: connect, greeting, EHLO (HELO fallback),
//! then any number of transactions. Each transaction reports a result per
//! recipient; anything that breaks the connection is a [`ConnError`] and
//! the connection is discarded.

use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::TcpStream;
use smtp_proto::EhloResponse;
use smtp_proto::response::parser::ResponseReceiver;
use verdant_queue::Envelope;

use crate::smtp::{self, Capabilities, Reply};
use verdant_net as io;

/// Timeouts of the client (RFC 5321 §4.5.3.2 gives the classic values).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Greeting and each command's reply.
    pub command: Duration,
    /// Sending the content and waiting for the final reply.
    pub data: Duration,
}

/// A failure that ends the connection. The recipients of the transaction
/// in progress are deferred (or tried at the next address).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Could not connect.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// No answer in time.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// The connection broke.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The server said something that is not SMTP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused us at greeting or EHLO/HELO (try another host).
    #[error("refused: {0}")]
    Refused(Reply),
}

impl ConnError {
    /// The reply to report for the affected recipients.
    pub fn reply(&self) -> Reply {
        match self {
            ConnError::Refused(r) => r.clone(),
            other => Reply::local(451, [4, 4, 1], other.to_string()),
        }
    }
}

/// The result of one transaction, per recipient (in the order given).
#[derive(Debug)]
pub struct TxResult {
    /// For each recipient: `None` when delivered, else the reply that
    /// refused it (4xx: retry later, 5xx: bounce).
    pub recipients: Vec<Option<Reply>>,
    /// The final reply to the content (or the reply that ended the
    /// transaction early), for the log.
    pub reply: Reply,
}

/// An open, greeted connection.
pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    start: usize,
    wbuf: Vec<u8>,
    caps: Capabilities,
    timeouts: Timeouts,
    /// The address connected to.
    pub peer: SocketAddr,
    /// Transactions completed on this connection.
    pub transactions: usize,
    /// The last transaction did not complete: send RSET before the next.
    dirty: bool,
    /// The server answered 421: it is closing the connection.
    closing: bool,
}

const READ_CHUNK: usize = 8 * 1024;

impl Conn {
    /// Connects, reads the greeting and says EHLO (HELO if EHLO is refused).
    pub async fn open(
        addr: SocketAddr,
        helo_name: &str,
        timeouts: Timeouts,
    ) -> Result<Conn, ConnError> {
        let stream = io::connect(addr, timeouts.connect)
            .await
            .map_err(|e| ConnError::Connect(addr, e))?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            wbuf: Vec::with_capacity(READ_CHUNK),
            caps: Capabilities::default(),
            timeouts,
            peer: addr,
            transactions: 0,
            dirty: false,
            closing: false,
        };
        let greeting = c.reply(timeouts.command, "greeting").await?;
        if greeting.code != 220 {
            return Err(ConnError::Refused(greeting));
        }
        c.send(
            format!("EHLO {helo_name}\r\n").into_bytes(),
            timeouts.command,
        )
        .await?;
        match c.ehlo().await? {
            Ok(caps) => c.caps = caps,
            Err(refused) if refused.code >= 500 => {
                // RFC 5321 §3.2: an old server; fall back to HELO.
                c.send(
                    format!("HELO {helo_name}\r\n").into_bytes(),
                    timeouts.command,
                )
                .await?;
                let r = c.reply(timeouts.command, "HELO").await?;
                if r.code != 250 {
                    return Err(ConnError::Refused(r));
                }
            }
            Err(refused) => return Err(ConnError::Refused(refused)),
        }
        Ok(c)
    }

    /// What the server offered.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Sends one message to the recipients given.
    pub async fn transaction(
        &mut self,
        env: &Envelope,
        rcpts: &[&str],
        body: &[u8],
    ) -> Result<TxResult, ConnError> {
        let t = self.timeouts;
        let rset = std::mem::take(&mut self.dirty);
        if rset && !self.caps.pipelining {
            // One command at a time: a server without PIPELINING may
            // refuse (and drop) a client that sends ahead (RFC 2920 §3.1).
            self.send(b"RSET\r\n".to_vec(), t.command).await?;
            self.reply(t.command, "RSET").await?;
        }
        let mut out = std::mem::take(&mut self.wbuf);
        out.clear();
        if rset && self.caps.pipelining {
            out.extend_from_slice(b"RSET\r\n");
        }
        smtp::mail_from(&mut out, env, body.len(), &self.caps);
        let result = if self.caps.pipelining {
            for r in rcpts {
                smtp::rcpt_to(&mut out, r);
            }
            if self.caps.chunking {
                out.extend_from_slice(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            } else {
                out.extend_from_slice(b"DATA\r\n");
            }
            self.send(out, t.data).await?;
            if rset {
                self.reply(t.command, "RSET").await?;
            }
            self.pipelined_replies(rcpts.len(), body).await
        } else {
            self.send(out, t.command).await?;
            self.lockstep(rcpts, body).await
        };
        if let Ok(r) = &result {
            if r.reply.is_positive() {
                self.transactions += 1;
            } else {
                self.dirty = true;
            }
            // 421: the server is closing the connection (RFC 5321 §3.8).
            if r.reply.code == 421 || r.recipients.iter().flatten().any(|x| x.code == 421) {
                self.closing = true;
            }
        }
        if self.wbuf.capacity() > 1 << 20 {
            // Don't keep a large message's buffer for the connection's life.
            self.wbuf = Vec::with_capacity(READ_CHUNK);
        }
        result
    }

    /// Whether the server said it is closing this connection: it must not
    /// be used again.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Reads the replies to MAIL, each RCPT and DATA/BDAT of a pipelined group.
    async fn pipelined_replies(&mut self, n: usize, body: &[u8]) -> Result<TxResult, ConnError> {
        let t = self.timeouts;
        let mail = self.reply(t.command, "MAIL").await?;
        let mut rcpt_replies = Vec::with_capacity(n);
        for _ in 0..n {
            rcpt_replies.push(self.reply(t.command, "RCPT").await?);
        }
        let accepted = rcpt_replies.iter().filter(|r| r.is_positive()).count();
        let data = if self.caps.chunking {
            // The BDAT reply is the final verdict on the content.
            self.reply(t.data, "BDAT").await?
        } else {
            let go = self.reply(t.command, "DATA").await?;
            if go.is_positive() && go.code != 354 {
                // Content never sent: nothing may count as delivered.
                return Err(ConnError::Protocol(format!(
                    "unexpected reply to DATA: {go}"
                )));
            }
            if go.code == 354 {
                let mut out = std::mem::take(&mut self.wbuf);
                out.clear();
                if accepted == 0 || !mail.is_positive() {
                    // Some servers say 354 even with no valid recipient:
                    // end the content at once.
                    out.extend_from_slice(b".\r\n");
                } else {
                    smtp::dot_stuffed(&mut out, body);
                }
                self.send(out, t.data).await?;
                let r = self.reply(t.data, "end of data").await?;
                if accepted == 0 || !mail.is_positive() {
                    go
                } else {
                    r
                }
            } else {
                go
            }
        };
        Ok(Self::verdict(mail, rcpt_replies, data))
    }

    /// One command at a time, for servers without PIPELINING.
    async fn lockstep(&mut self, rcpts: &[&str], body: &[u8]) -> Result<TxResult, ConnError> {
        let t = self.timeouts;
        let mail = self.reply(t.command, "MAIL").await?;
        if !mail.is_positive() {
            return Ok(Self::verdict(mail.clone(), Vec::new(), mail).fill(rcpts.len()));
        }
        let mut rcpt_replies = Vec::with_capacity(rcpts.len());
        for r in rcpts {
            let mut out = std::mem::take(&mut self.wbuf);
            out.clear();
            smtp::rcpt_to(&mut out, r);
            self.send(out, t.command).await?;
            rcpt_replies.push(self.reply(t.command, "RCPT").await?);
        }
        if !rcpt_replies.iter().any(Reply::is_positive) {
            self.dirty = true;
            let last = rcpt_replies.last().cloned().unwrap_or_else(|| mail.clone());
            return Ok(Self::verdict(mail, rcpt_replies, last));
        }
        self.send(b"DATA\r\n".to_vec(), t.command).await?;
        let go = self.reply(t.command, "DATA").await?;
        if go.is_positive() && go.code != 354 {
            return Err(ConnError::Protocol(format!(
                "unexpected reply to DATA: {go}"
            )));
        }
        if go.code != 354 {
            return Ok(Self::verdict(mail, rcpt_replies, go));
        }
        let mut out = std::mem::take(&mut self.wbuf);
        out.clear();
        smtp::dot_stuffed(&mut out, body);
        self.send(out, t.data).await?;
        let end = self.reply(t.data, "end of data").await?;
        Ok(Self::verdict(mail, rcpt_replies, end))
    }

    /// Combines the replies into a result per recipient: a refused MAIL
    /// fails all; a refused RCPT fails that one; the content's reply
    /// decides the rest.
    fn verdict(mail: Reply, rcpts: Vec<Reply>, data: Reply) -> TxResult {
        let recipients = rcpts
            .into_iter()
            .map(|r| {
                if !mail.is_positive() {
                    Some(mail.clone())
                } else if !r.is_positive() {
                    Some(r)
                } else if !data.is_positive() {
                    Some(data.clone())
                } else {
                    None
                }
            })
            .collect();
        let reply = if mail.is_positive() { data } else { mail };
        TxResult { recipients, reply }
    }

    /// Says QUIT and closes, without waiting long for the answer.
    pub async fn quit(mut self) {
        if self
            .send(b"QUIT\r\n".to_vec(), Duration::from_secs(5))
            .await
            .is_ok()
        {
            let _ = self.reply(Duration::from_secs(5), "QUIT").await;
        }
    }

    async fn send(&mut self, out: Vec<u8>, timeout: Duration) -> Result<(), ConnError> {
        let (r, buf) = io::write_all(&mut self.stream, out, timeout).await;
        self.wbuf = buf;
        r.map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                ConnError::Timeout("a write")
            } else {
                ConnError::Io(e)
            }
        })
    }

    /// Reads one complete reply.
    async fn reply(&mut self, timeout: Duration, what: &'static str) -> Result<Reply, ConnError> {
        Ok(self.reply_at(timeout, what).await?.0)
    }

    /// Reads one complete reply; also returns where its bytes lie in the
    /// read buffer (valid until the next read). The timeout bounds the
    /// whole reply, so a server trickling continuation lines cannot hold
    /// the connection longer.
    async fn reply_at(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<(Reply, std::ops::Range<usize>), ConnError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let pending = &self.rbuf[self.start..];
            // Only parse once a whole last line is there: a line whose 4th
            // byte is a space (or that is just the code).
            if let Some(end) = reply_end(pending) {
                let mut rx = ResponseReceiver::default();
                let mut it = pending[..end].iter();
                let r = rx
                    .parse(&mut it)
                    .map_err(|e| ConnError::Protocol(format!("bad reply to {what}: {e:?}")))?;
                let range = self.start..self.start + end;
                self.start += end;
                return Ok((r.into(), range));
            }
            if pending.len() > smtp_proto::response::parser::MAX_RESPONSE_LENGTH * 4 {
                return Err(ConnError::Protocol(format!("reply to {what} too long")));
            }
            self.rbuf.drain(..self.start);
            self.start = 0;
            self.rbuf.reserve(READ_CHUNK);
            let buf = std::mem::take(&mut self.rbuf);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (r, buf) = io::read(&mut self.stream, buf, left).await;
            self.rbuf = buf;
            match r {
                Ok(Some(0)) => return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(Some(_)) => {}
                Ok(None) => return Err(ConnError::Timeout(what)),
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    async fn ehlo(&mut self) -> Result<Result<Capabilities, Reply>, ConnError> {
        // Read the whole multi-line reply first, then parse it twice: as a
        // generic reply (for its code) and as an EHLO capability list.
        let (generic, range) = self.reply_at(self.timeouts.command, "EHLO").await?;
        if generic.code != 250 {
            return Ok(Err(generic));
        }
        let raw = &self.rbuf[range];
        match EhloResponse::parse(&mut raw.iter()) {
            Ok(e) => Ok(Ok(Capabilities::from_ehlo(&e))),
            // A 250 we cannot read capabilities from: assume none.
            Err(_) => Ok(Ok(Capabilities::default())),
        }
    }
}

impl TxResult {
    /// Extends a result that stopped before the RCPTs to every recipient.
    fn fill(mut self, n: usize) -> TxResult {
        self.recipients = vec![Some(self.reply.clone()); n];
        self
    }
}

/// Where the first complete reply in `buf` ends, if there is one.
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(nl) = memchr::memchr(b'\n', &buf[at..]) {
        let line = &buf[at..at + nl + 1];
        at += nl + 1;
        // "250-..." continues; "250 ..." or "250\r\n" ends.
        if line.len() < 4 || line[3] != b'-' {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_boundaries() {
        assert_eq!(reply_end(b"250 ok\r\n"), Some(8));
        assert_eq!(reply_end(b"250-a\r\n250 b\r\n354 go\r\n"), Some(14));
        assert_eq!(reply_end(b"250-a\r\n250"), None);
        assert_eq!(reply_end(b"250\r\n"), Some(5));
        assert_eq!(reply_end(b""), None);
    }

    #[test]
    fn verdict_per_recipient() {
        let ok = Reply::local(250, [2, 0, 0], "ok");
        let temp = Reply::local(450, [4, 2, 0], "busy");
        let perm = Reply::local(550, [5, 1, 1], "no");
        let r = Conn::verdict(
            ok.clone(),
            vec![ok.clone(), perm.clone(), temp.clone()],
            ok.clone(),
        );
        assert_eq!(
            r.recipients,
            vec![None, Some(perm.clone()), Some(temp.clone())]
        );
        let r = Conn::verdict(ok.clone(), vec![ok.clone(), ok.clone()], temp.clone());
        assert_eq!(r.recipients, vec![Some(temp.clone()), Some(temp.clone())]);
        let r = Conn::verdict(perm.clone(), vec![ok.clone()], ok.clone());
        assert_eq!(r.recipients, vec![Some(perm.clone())]);
        assert_eq!(r.reply, perm);
    }
}
