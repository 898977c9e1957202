//! A running `verdant sink` for the end-to-end tests (the remote side of
//! delivery tests, and the subject of tests/sink.rs).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BIN, Client, Driver, wait_until};

/// A running `verdant sink` on a free port, with `--keep` and
/// `--stats-json` in its own directory. Killed (SIGKILL) when dropped.
pub struct Sink {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Sink {
    /// Starts `verdant sink --listen 127.0.0.1:0 ARGS` on `driver` and
    /// waits until it listens; checks from its log that every worker got
    /// `driver`.
    pub fn start(driver: Driver, args: &[&str]) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["sink", "--listen", "127.0.0.1:0", "--workers", "2"])
            .arg("--keep")
            .arg(dir.path().join("keep"))
            .arg("--stats-json")
            .arg(dir.path().join("stats.json"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match driver {
            Driver::Epoll => cmd.env("MONOIO_FORCE_LEGACY_DRIVER", "1"),
            Driver::IoUring => cmd.env_remove("MONOIO_FORCE_LEGACY_DRIVER"),
        };
        let mut child = cmd.spawn().expect("start verdant sink");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink_log = log.clone();
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink_log.lock().unwrap().push_str(&line);
                sink_log.lock().unwrap().push('\n');
                if let Some((_, rest)) = line.split_once("sink listening on ")
                    && let Some(tx) = ready.take()
                {
                    let addr = rest.split_whitespace().next().unwrap_or("");
                    let _ = tx.send(addr.parse::<SocketAddr>().ok());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
        let log_now = log.lock().unwrap().clone();
        let addr = addr.unwrap_or_else(|| panic!("sink did not start; log:\n{log_now}"));
        assert_eq!(
            log_now
                .matches(&format!("driver {}", driver.name()))
                .count(),
            2,
            "expected the {} driver on both workers; log:\n{log_now}",
            driver.name()
        );
        Sink {
            child,
            addr,
            log,
            dir,
        }
    }

    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.addr);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        c
    }

    pub fn keep_dir(&self) -> PathBuf {
        self.dir.path().join("keep")
    }

    pub fn stats_path(&self) -> PathBuf {
        self.dir.path().join("stats.json")
    }

    /// The stats file as it is now, if it was written yet.
    pub fn stats(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.stats_path()).ok()?;
        Some(serde_json::from_str(&text).expect("stats file is whole JSON"))
    }

    /// Sends `signal`, waits (at most 10 s) for the sink to exit, checks
    /// its status and summary line, and returns the final stats.
    pub fn stop_with(&mut self, signal: libc::c_int) -> Value {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for the sink to exit by itself; returns the final stats.
    pub fn wait_exit(&mut self, limit: Duration) -> Value {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < limit,
                "sink did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status}; log:\n{}", self.log());
        // The reader thread may lag behind the exit by a moment.
        assert!(
            wait_until(Duration::from_secs(5), || self.log().contains("stopped (")),
            "no summary line; log:\n{}",
            self.log()
        );
        let stats = self.stats().expect("final stats file");
        assert_eq!(stats["final"], true, "{stats}");
        stats
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
