//! The sink: an SMTP server that accepts mail and throws it away, counting
//! it, measuring its end-to-end latency, optionally keeping it for tests,
//! and refusing set shares of recipients and messages.
//!
//! It is Verdant's receiver with a different [`verdant_queue::Queue`]:
//! the same sans-I/O sessions and I/O loop, one monoio runtime per worker
//! thread, one `SO_REUSEPORT` listener per worker. Workers count into
//! their own tallies and hand them to a reporter thread once a second, so
//! the sink costs little more per message than parsing it.
//!
//! ```no_run
//! use verdant_loadgen::sink::{Sink, SinkConfig};
//! let mut config = SinkConfig::new("127.0.0.1:0".parse().unwrap());
//! config.workers = 1;
//! config.faults.perm_fail_msg = 10.0; // 554 for one message in ten
//! let sink = Sink::start(config).unwrap();
//! println!("sink on {}", sink.local_addr());
//! // ... send mail ...
//! let report = sink.stop();
//! println!("{}", report.summary());
//! ```

mod faults;
mod keep;
mod queue;
mod reporter;
mod stats;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use verdant_receiver::{ConnLimiter, SessionConfig};

pub use faults::{Faults, FaultsError};
pub use keep::KeptEnvelope;
pub use stats::{Latency, Report};

/// How a sink is set up. [`SinkConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Where to listen. Port 0 picks a free port (see [`Sink::local_addr`]).
    pub listen: SocketAddr,
    /// Worker threads, one runtime and listener each (0: one per core).
    pub workers: usize,
    /// Our name in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// Write every accepted message and its envelope into this directory
    /// (created if missing); see [`KeptEnvelope`] for the layout.
    pub keep: Option<PathBuf>,
    /// Which recipients and messages to refuse.
    pub faults: Faults,
    /// Seed for the failure decisions (each worker derives its own from
    /// it); `None` seeds from the system.
    pub seed: Option<u64>,
    /// Write the [`Report`] as JSON to this file every second and at stop.
    pub stats_json: Option<PathBuf>,
    /// Largest message accepted (announced with SIZE).
    pub max_message_size: usize,
    /// Recipients per message; more get 452.
    pub max_recipients: usize,
    /// Longest wait for a command line.
    pub command_timeout: Duration,
    /// Longest wait for the next piece of message content.
    pub data_timeout: Duration,
}

impl SinkConfig {
    /// A sink on `listen` with one worker per core, injecting nothing,
    /// keeping nothing, 64 MiB messages, 10,000 recipients per message and
    /// the receiver's default timeouts (5 and 10 minutes).
    pub fn new(listen: SocketAddr) -> SinkConfig {
        SinkConfig {
            listen,
            workers: 0,
            hostname: "sink.verdant.invalid".into(),
            keep: None,
            faults: Faults::default(),
            seed: None,
            stats_json: None,
            max_message_size: 64 << 20,
            max_recipients: 10_000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The failure settings are not usable.
    #[error(transparent)]
    Faults(#[from] FaultsError),
    /// The `keep` directory could not be created.
    #[error("cannot create {}: {source}", dir.display())]
    Keep {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A worker could not start (thread, runtime or listener).
    #[error("{0}")]
    Worker(String),
}

/// A running sink. Dropping it stops it (as [`Sink::stop`] does).
pub struct Sink {
    addr: SocketAddr,
    drivers: Vec<&'static str>,
    stop: Arc<AtomicBool>,
    shared: Arc<reporter::Shared>,
    reporter: Option<JoinHandle<Report>>,
}

impl Sink {
    /// Starts the workers; returns once every one of them accepts
    /// connections.
    pub fn start(config: SinkConfig) -> Result<Sink, SinkError> {
        config.faults.validate()?;
        if let Some(dir) = &config.keep {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Keep {
                dir: dir.clone(),
                source,
            })?;
        }
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // Queue ids carry the worker number in 16 bits.
        if workers > usize::from(u16::MAX) {
            return Err(SinkError::Worker(format!("{workers} workers: too many")));
        }
        let session = SessionConfig {
            hostname: config.hostname.clone(),
            max_message_size: config.max_message_size,
            max_recipients: config.max_recipients,
            max_errors: 20,
            // A test target relays for anyone, wherever the client is.
            client_networks: ["0.0.0.0/0", "::/0"]
                .iter()
                .map(|n| n.parse().expect("valid network"))
                .collect(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(reporter::Shared::default());
        let (reports, reports_rx) = mpsc::channel();
        let reporter = {
            let (stop, shared, path) = (stop.clone(), shared.clone(), config.stats_json.clone());
            let started = Instant::now();
            std::thread::Builder::new()
                .name("verdant-sink-report".into())
                .spawn(move || reporter::run(reports_rx, stop, shared, path, started))
                .map_err(|e| SinkError::Worker(format!("cannot start the reporter: {e}")))?
        };
        let mut sink = Sink {
            addr: config.listen,
            drivers: Vec::with_capacity(workers),
            stop,
            shared,
            reporter: Some(reporter),
        };
        // `reports` moves into the helper, so that once it returns only
        // the workers hold senders: the reporter ends when they all ended.
        sink.start_workers(workers, &config, session, reports)?;
        Ok(sink)
    }

    /// Starts the workers one at a time: the first one's listener fixes
    /// the port when port 0 was asked for, and the others bind that port.
    fn start_workers(
        &mut self,
        workers: usize,
        config: &SinkConfig,
        session: SessionConfig,
        reports: mpsc::Sender<reporter::Msg>,
    ) -> Result<(), SinkError> {
        // No connection limit: the clients are load generators, and the
        // descriptor limit is the honest ceiling.
        let limiter = ConnLimiter::new(usize::MAX, usize::MAX);
        let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
        for index in 0..workers {
            let setup = worker::Setup {
                index,
                addr: self.addr,
                session: session.clone(),
                command_timeout: config.command_timeout,
                data_timeout: config.data_timeout,
                limiter: limiter.clone(),
                keep: config.keep.clone(),
                faults: config.faults.clone(),
                // Distinct, well-spread streams per worker from one seed.
                seed: seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                stop: self.stop.clone(),
                reports: reports.clone(),
            };
            let (ready_tx, ready) = mpsc::channel();
            worker::spawn(setup, ready_tx)
                .map_err(|e| SinkError::Worker(format!("cannot start worker {index}: {e}")))?;
            match ready.recv() {
                Ok(Ok((addr, driver))) => {
                    self.addr = addr;
                    self.drivers.push(driver);
                }
                Ok(Err(why)) => return Err(SinkError::Worker(why)),
                Err(_) => {
                    return Err(SinkError::Worker(format!(
                        "worker {index} ended during start-up"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The address the workers listen on (with the port chosen, if port 0
    /// was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The I/O driver of each worker: `io_uring` or `epoll`.
    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    /// The latest report: counts up to the workers' last hand-over, at most
    /// about a second old. After a stop, the final report.
    pub fn report(&self) -> Report {
        self.shared.latest.lock().expect("report lock").clone()
    }

    /// A worker that ended while the sink was running (a bug): the sink
    /// then serves with fewer workers, and its counts may be short.
    pub fn failed_worker(&self) -> Option<usize> {
        *self.shared.dead_worker.lock().expect("worker lock")
    }

    /// Stops accepting, ends the open sessions, and returns the final
    /// report (also written to `stats_json`). Messages completing during
    /// the stop get 451 and are not counted, so every 250 the sink gave
    /// is in the report.
    pub fn stop(mut self) -> Report {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        match self.reporter.take() {
            Some(r) => r.join().unwrap_or_default(),
            None => self.report(),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.reporter.is_some() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// A minimal client: sends `lines` one at a time, returns each reply.
    fn talk(stream: &mut TcpStream, lines: &[&str]) -> Vec<String> {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut replies = Vec::new();
        let read_reply = |reader: &mut BufReader<TcpStream>| {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                all.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    return all;
                }
            }
        };
        replies.push(read_reply(&mut reader));
        for l in lines {
            stream.write_all(l.as_bytes()).unwrap();
            replies.push(read_reply(&mut reader));
        }
        replies
    }

    #[test]
    fn counts_refuses_and_stops_with_sessions_open() {
        let mut config = SinkConfig::new("127.0.0.1:0".parse().unwrap());
        config.workers = 2;
        config.faults.fail_rcpt = vec![("bad@x.test".into(), "550 5.1.1 no such user".into())];
        let sink = Sink::start(config).unwrap();
        assert_ne!(sink.local_addr().port(), 0);
        assert_eq!(sink.drivers().len(), 2);
        let mut c = TcpStream::connect(sink.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let stamp = crate::sent_header(verdant_queue::now_micros());
        let r = talk(
            &mut c,
            &[
                "EHLO t\r\n",
                "MAIL FROM:<a@x.test>\r\n",
                "RCPT TO:<bad@x.test>\r\n",
                "RCPT TO:<good@x.test>\r\n",
                "DATA\r\n",
                &format!("{stamp}Subject: t\r\n\r\nhi\r\n.\r\n"),
            ],
        );
        assert_eq!(r[3], "550 5.1.1 no such user\r\n");
        assert!(r[6].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
        // A second, idle session stays open until the stop ends it.
        let mut idle = TcpStream::connect(sink.local_addr()).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut greeting = [0u8; 4];
        idle.read_exact(&mut greeting).unwrap();
        let report_addr = sink.local_addr();
        let started = Instant::now();
        let report = sink.stop();
        assert!(started.elapsed() < Duration::from_secs(3), "stop was slow");
        assert!(report.finished);
        assert_eq!(report.connections, 2);
        assert_eq!(report.messages_accepted, 1);
        assert_eq!(report.recipients_accepted, 1);
        assert_eq!(report.recipients_refused_perm, 1);
        assert_eq!(report.latency_us.samples, 1);
        // Both sessions were ended (EOF or reset, not our read timeout),
        // and nothing listens any more.
        for mut s in [idle, c] {
            let r = s.read_to_end(&mut Vec::new());
            assert!(
                r.as_ref().map_or_else(
                    |e| !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    |_| true
                ),
                "{r:?}"
            );
        }
        assert!(TcpStream::connect(report_addr).is_err());
    }

    #[test]
    fn a_bad_reply_or_an_address_in_use_is_an_error() {
        let mut config = SinkConfig::new("127.0.0.1:0".parse().unwrap());
        config.faults.temp_fail_rcpt = 150.0;
        assert!(matches!(Sink::start(config), Err(SinkError::Faults(_))));
        // A plain listener without SO_REUSEPORT holds the port.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = SinkConfig::new(held.local_addr().unwrap());
        config.workers = 1;
        assert!(matches!(Sink::start(config), Err(SinkError::Worker(_))));
    }
}
