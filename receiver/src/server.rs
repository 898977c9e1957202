//! The I/O loop: accepts connections on one worker and runs a [`Session`]
//! for each, on the worker's monoio runtime.
//!
//! Reads and writes carry timeouts through monoio's cancelable I/O: on
//! expiry the operation is cancelled and awaited, so no io_uring operation
//! is left in flight with a buffer it still owns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::AsyncWriteRent;
use monoio::net::{TcpListener, TcpStream};
use verdant_queue::Queue;

use crate::limiter::{ConnLimiter, Refused};
use crate::policy::{RecipientHook, SessionConfig};
use crate::session::{Event, Session};

/// Bytes requested per read.
const READ_CHUNK: usize = 16 * 1024;

/// Everything the sessions of one worker share.
pub struct Receiver<Q> {
    /// Session settings.
    pub config: Rc<SessionConfig>,
    /// Longest wait for a command line (RFC 5321 §4.5.3.2.7 suggests 5 min).
    pub command_timeout: Duration,
    /// Longest wait for the next piece of message content (§4.5.3.2.6).
    pub data_timeout: Duration,
    /// Where accepted messages go.
    pub queue: Q,
    /// Server-wide connection admission.
    pub limiter: Arc<ConnLimiter>,
}

use verdant_metrics::Stage;
pub use verdant_net::bind;

/// Accepts connections, one task per connection, until `stop` completes;
/// then the listener closes (new clients are refused by the kernel) and
/// the sessions already open go on to their end.
pub async fn serve<Q: Queue + 'static>(
    listener: TcpListener,
    rx: Rc<Receiver<Q>>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = &mut stop => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(verdant_metrics::staged(
                    Stage::Receive,
                    serve_connection(stream, peer, rx.clone(), None),
                ));
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                // Anything else (a client that reset before we accepted) is
                // that client's problem only.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
                ) {
                    eprintln!("verdant: accept failed: {e}; pausing 100 ms");
                    monoio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Runs one SMTP session on an accepted connection until it ends: what
/// [`serve`] spawns per connection (with no hook). Public so that a program
/// with its own accept loop (`verdant sink`, which counts connections and
/// stops accepting on shutdown) runs exactly the receiver's session loop;
/// `recipients` is then set on the session (see [`RecipientHook`]).
pub async fn serve_connection<Q: Queue>(
    mut stream: TcpStream,
    peer: SocketAddr,
    rx: Rc<Receiver<Q>>,
    recipients: Option<Rc<dyn RecipientHook>>,
) {
    let _permit = match rx.limiter.admit(peer.ip()) {
        Ok(p) => p,
        Err(why) => {
            let msg = match why {
                Refused::Total => format!(
                    "421 4.7.0 {} Error: too many connections\r\n",
                    rx.config.hostname
                ),
                Refused::PerIp => format!(
                    "421 4.7.0 {} Error: too many connections from your address\r\n",
                    rx.config.hostname
                ),
            };
            // Short: a refused client must not hold a descriptor for long.
            let _ =
                verdant_net::write_all(&mut stream, msg.into_bytes(), Duration::from_secs(1)).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    verdant_metrics::ops::session();
    let mut session = Session::new(rx.config.clone(), peer.ip());
    if let Some(hook) = recipients {
        session.set_recipient_hook(hook);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0;
    loop {
        let close = loop {
            let (n, event) = session.feed(&buf[start..]);
            start += n;
            match event {
                Event::NeedMore => break false,
                Event::Close => break true,
                Event::Flush => {
                    if flush(&mut stream, &mut session, rx.command_timeout)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Event::Message => {
                    let id = rx.queue.next_id();
                    let (envelope, message) = session.message(id);
                    let result = rx.queue.enqueue(id, envelope, message).await;
                    if result.is_ok() {
                        // Received, and made durable: one of each.
                        verdant_metrics::count(Stage::Receive, 1);
                        verdant_metrics::count(Stage::Queue, 1);
                        verdant_metrics::domains::received(&envelope.sender, message.len() as u64);
                        verdant_metrics::ops::received(message.len() as u64);
                    }
                    session.queued(id, result);
                }
            }
        };
        if flush(&mut stream, &mut session, rx.command_timeout)
            .await
            .is_err()
        {
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
        // Only an incomplete command line (< 512 octets) is left over.
        buf.drain(..start);
        start = 0;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let timeout = if session.in_content() {
            rx.data_timeout
        } else {
            rx.command_timeout
        };
        let (res, b) = verdant_net::read(&mut stream, buf, timeout).await;
        buf = b;
        match res {
            Ok(Some(0)) | Err(_) => return,
            Ok(Some(_)) => {}
            Ok(None) => {
                session.timeout();
                let out = std::mem::take(session.output());
                let _ = verdant_net::write_all(&mut stream, out, Duration::from_secs(5)).await;
                return;
            }
        }
    }
}

/// Writes the session's pending replies, if any.
async fn flush(stream: &mut TcpStream, session: &mut Session, timeout: Duration) -> io::Result<()> {
    if session.output().is_empty() {
        return Ok(());
    }
    let out = std::mem::take(session.output());
    let (res, mut out) = verdant_net::write_all(stream, out, timeout).await;
    out.clear();
    *session.output() = out;
    res
}
