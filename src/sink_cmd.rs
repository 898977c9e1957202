//! `verdant sink`: the command line of [`verdant_loadgen::sink`], an SMTP
//! server that accepts and discards mail, for tests and benchmarks.
//!
//! It runs until SIGINT or SIGTERM (or `--duration`), then prints a
//! one-line summary and writes the final `--stats-json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use verdant_loadgen::sink::{Faults, Sink, SinkConfig};

/// An SMTP server that accepts mail and throws it away, for tests and
/// benchmarks: it counts connections, messages, recipients and bytes,
/// measures end-to-end latency from the X-Verdant-Sent header, can keep
/// what it got, and refuses set shares of recipients and messages. It
/// relays for any client. Stops on SIGINT or SIGTERM (a second one exits
/// at once) or after --duration.
#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on (port 0: a free port, shown at start).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Worker threads, one runtime and listener each (0: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub workers: usize,
    /// Write each accepted message to DIR as ID.eml (ID: the queue id), its envelope
    /// (sender, recipients, received_at) to ID.json.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Percentage of recipients refused at RCPT with 450 4.2.1.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percentage)]
    pub temp_fail_rcpt: f64,
    /// Percentage of recipients refused at RCPT with 550 5.1.1.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percentage)]
    pub perm_fail_rcpt: f64,
    /// Percentage of messages refused at end of data with 451 4.3.0.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percentage)]
    pub temp_fail_msg: f64,
    /// Percentage of messages refused at end of data with 554 5.7.1.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percentage)]
    pub perm_fail_msg: f64,
    /// Always refuse this recipient with this reply, e.g.
    /// bad@x.test="550 5.1.1 no such user" (repeatable; before the
    /// percentages).
    #[arg(long, value_name = "ADDR=REPLY", value_parser = fail_rcpt)]
    pub fail_rcpt: Vec<(String, String)>,
    /// Write the counts and latency percentiles as JSON to FILE, every
    /// second and at exit (atomically: a reader never sees half a file).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Stop after SECS seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub duration: Option<Duration>,
    /// Our name in the greeting, EHLO reply and Received: headers.
    #[arg(long, value_name = "NAME", default_value = "sink.verdant.invalid")]
    pub hostname: String,
    /// Seed for the failure decisions, for reproducible runs (default:
    /// random).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// Runs the sink until a stop signal or the end of `--duration`.
pub fn run(args: SinkArgs) -> anyhow::Result<()> {
    let max = crate::config::defaults::MAX_WORKERS;
    if args.workers > max {
        bail!("--workers: at most {max}, got {}", args.workers);
    }
    // Before any thread exists, so that every thread inherits the mask.
    let signals = StopSignals::block()?;
    let mut config = SinkConfig::new(args.listen);
    config.workers = args.workers;
    config.hostname = args.hostname;
    config.keep = args.keep;
    config.seed = args.seed;
    config.stats_json = args.stats_json;
    config.faults = Faults {
        temp_fail_rcpt: args.temp_fail_rcpt,
        perm_fail_rcpt: args.perm_fail_rcpt,
        temp_fail_msg: args.temp_fail_msg,
        perm_fail_msg: args.perm_fail_msg,
        fail_rcpt: args.fail_rcpt,
        ..Faults::default()
    };
    let sink = Sink::start(config).context("starting the sink")?;
    for (w, driver) in sink.drivers().iter().enumerate() {
        eprintln!("verdant sink: worker {w}: driver {driver}");
    }
    // Tests and scripts wait for this line.
    eprintln!(
        "verdant sink: sink listening on {} with {} worker(s)",
        sink.local_addr(),
        sink.drivers().len()
    );

    let stop = signals.wait_in_thread()?;
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut failed = None;
    let why = loop {
        // Short waits: also watch for a worker that died.
        let mut wait = Duration::from_millis(200);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        if let Ok(signal) = stop.recv_timeout(wait) {
            break signal;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break "--duration elapsed";
        }
        if let Some(w) = sink.failed_worker() {
            failed = Some(w);
            break "a worker died";
        }
    };
    let report = sink.stop();
    eprintln!("verdant sink: stopped ({why}): {}", report.summary());
    if let Some(w) = failed {
        bail!("sink worker {w} stopped unexpectedly");
    }
    Ok(())
}

/// SIGINT and SIGTERM, blocked in every thread and taken by one waiting
/// thread with `sigwait`: the stop is then ordinary code on that thread,
/// not a signal handler.
struct StopSignals(libc::sigset_t);

impl StopSignals {
    fn block() -> anyhow::Result<StopSignals> {
        // SAFETY: plain libc calls on a sigset_t we own; pthread_sigmask
        // only changes this (so far only) thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                bail!(
                    "blocking SIGINT/SIGTERM: {}",
                    std::io::Error::from_raw_os_error(rc)
                );
            }
            Ok(StopSignals(set))
        }
    }

    /// A channel that receives the first signal's name; a second signal
    /// exits the process at once (status 130).
    fn wait_in_thread(self) -> anyhow::Result<mpsc::Receiver<&'static str>> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("verdant-sink-signals".into())
            .spawn(move || {
                let mut first = true;
                loop {
                    let mut sig = 0;
                    // SAFETY: the set was filled in `block`; sig is ours.
                    if unsafe { libc::sigwait(&self.0, &mut sig) } != 0 {
                        continue;
                    }
                    if !first {
                        eprintln!("verdant sink: second stop signal, exiting now");
                        std::process::exit(130);
                    }
                    first = false;
                    let _ = tx.send(if sig == libc::SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    });
                }
            })
            .context("starting the signal thread")?;
        Ok(rx)
    }
}

fn percentage(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s} is not a percentage from 0 to 100"));
    }
    Ok(v)
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

fn fail_rcpt(s: &str) -> Result<(String, String), String> {
    let (addr, reply) = s.split_once('=').ok_or("expected ADDR=REPLY")?;
    let addr = addr.trim_start_matches('<').trim_end_matches('>');
    if addr.is_empty() {
        return Err("empty address".into());
    }
    if !verdant_receiver::policy::is_refusal(reply) {
        return Err(format!(
            "{reply:?} is not a 4xx or 5xx reply line like \"550 5.1.1 no such user\""
        ));
    }
    Ok((addr.to_string(), reply.to_string()))
}
