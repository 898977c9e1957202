//! Verdant's socket helpers, shared by the receiver, the engine and the
//! sink: listeners with SO_REUSEPORT, and connects, reads and writes with
//! timeouts on monoio's cancelable I/O. On expiry an operation is cancelled
//! and its completion awaited, so no io_uring operation is left in flight
//! owning a buffer (a `select!` against a timer alone would leave it).
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

/// A worker's runtime: monoio on io_uring, or epoll where io_uring is
/// unavailable (or `MONOIO_FORCE_LEGACY_DRIVER=1`), with timers.
pub type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Builds a worker's runtime. Only the worker's own thread submits to its
/// ring, and it needs no interrupt to run completions (it reaps them every
/// loop turn): COOP_TASKRUN and SINGLE_ISSUER cut kernel work per
/// operation (Linux 5.19+ and 6.0+). Kernels that refuse them get a plain
/// ring, or epoll.
pub fn runtime() -> io::Result<Runtime> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun().setup_single_issuer();
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .uring_builder(urb)
        .enable_timer()
        .build()
        .or_else(|_| {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
        })
}

/// The name of the driver a runtime got, for the log.
pub fn driver_name(rt: &Runtime) -> &'static str {
    match rt {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    }
}

/// Binds a listener with `SO_REUSEPORT`, so each worker can have its own
/// and the kernel spreads connections over them.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind_with_config(
        addr,
        &ListenerOpts::new()
            .reuse_port(true)
            .reuse_addr(true)
            .backlog(4096),
    )
}

/// Connects within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    // monoio's connect has no cancelable form; a timer that wins leaves the
    // connect to fail or be dropped with the stream, which only costs a
    // descriptor until the kernel gives up.
    monoio::select! {
        r = TcpStream::connect_addr(addr) => r,
        _ = monoio::time::sleep(timeout) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Reads into the spare capacity of `buf`; `Ok(None)` on timeout.
pub async fn read(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
) -> (io::Result<Option<usize>>, Vec<u8>) {
    let canceller = Canceller::new();
    let mut op = std::pin::pin!(stream.cancelable_read(buf, canceller.handle()));
    monoio::select! {
        (r, buf) = &mut op => (r.map(Some), buf),
        _ = monoio::time::sleep(timeout) => {
            canceller.cancel();
            let (r, buf) = op.await;
            match r {
                Ok(n) => (Ok(Some(n)), buf),
                Err(_) => (Ok(None), buf),
            }
        }
    }
}

/// Writes all of `data` within `timeout`.
pub async fn write_all(
    stream: &mut TcpStream,
    data: Vec<u8>,
    timeout: Duration,
) -> (io::Result<()>, Vec<u8>) {
    let canceller = Canceller::new();
    let handle = canceller.handle();
    let mut op = std::pin::pin!(async move {
        let mut data = data;
        let mut done = 0;
        while done < data.len() {
            let slice = monoio::buf::IoBuf::slice(data, done..);
            let (r, slice) = stream.cancelable_write(slice, handle.clone()).await;
            data = slice.into_inner();
            match r {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), data),
                Ok(n) => done += n,
                Err(e) => return (Err(e), data),
            }
        }
        (Ok(()), data)
    });
    monoio::select! {
        r = &mut op => r,
        _ = monoio::time::sleep(timeout) => {
            canceller.cancel();
            let (_, data) = op.await;
            (Err(io::ErrorKind::TimedOut.into()), data)
        }
    }
}
