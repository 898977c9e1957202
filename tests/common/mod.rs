//! Shared helpers of the end-to-end tests: start the real `verdant` binary
//! on a loopback port with its own spool, on a chosen I/O driver, and talk
//! SMTP to it over a real socket.
#![allow(dead_code)] // each test file uses a different part

pub mod broker;
pub mod sink;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_verdant");

/// The two monoio drivers every I/O test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub const ALL: [Driver; 2] = [Driver::IoUring, Driver::Epoll];

    /// The name the server logs at start.
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running `verdant serve`. Killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub spool: PathBuf,
    pub log: Arc<Mutex<String>>,
}

/// Options for [`Server::start`].
pub struct Opts<'a> {
    pub driver: Driver,
    pub spool: &'a Path,
    /// Extra TOML appended to the config file.
    pub config: &'a str,
    pub workers: usize,
    pub addr: Option<SocketAddr>,
    /// Run the delivery engine. Off by default: receive tests keep their
    /// mail in the spool, and no test may ask a DNS server off this machine.
    pub deliver: bool,
    /// Extra command-line arguments (e.g. `--dns`).
    pub args: Vec<String>,
    /// Serve `/metrics` here; none by default, so that servers of tests
    /// running side by side never compete for a port.
    pub metrics: Option<SocketAddr>,
}

impl<'a> Opts<'a> {
    pub fn new(driver: Driver, spool: &'a Path) -> Self {
        Opts {
            driver,
            spool,
            config: "",
            workers: 2,
            addr: None,
            deliver: false,
            args: Vec::new(),
            metrics: None,
        }
    }
}

impl Server {
    /// Starts the server and waits until it accepts mail.
    pub fn start(o: Opts<'_>) -> Server {
        let addr = o.addr.unwrap_or_else(free_addr);
        let conf = o.spool.with_extension("toml");
        let mut text = o.config.to_string();
        if !o.deliver {
            text.push_str("\n[delivery]\nenabled = false\n");
        }
        text.push_str(&format!(
            "\n[metrics]\nlisten = \"{}\"\n",
            o.metrics.map(|a| a.to_string()).unwrap_or_default()
        ));
        // No ledger in the working directory, unless a test asks for one.
        if !text.contains("[footprint]") {
            text.push_str("\n[footprint]\nledger = \"\"\n");
        }
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&conf)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--spool")
            .arg(o.spool)
            .arg("--workers")
            .arg(o.workers.to_string())
            .args(&o.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match o.driver {
            Driver::Epoll => cmd.env("MONOIO_FORCE_LEGACY_DRIVER", "1"),
            Driver::IoUring => cmd.env_remove("MONOIO_FORCE_LEGACY_DRIVER"),
        };
        Self::spawn(cmd, addr, o.spool, o.driver)
    }

    /// Spawns a prepared command (for tests that adjust it, e.g. limits).
    pub fn spawn(cmd: Command, addr: SocketAddr, spool: &Path, driver: Driver) -> Server {
        Self::spawn_until(cmd, addr, spool, driver, "accepting mail")
    }

    /// Spawns a prepared command and waits for `ready` in its log.
    pub fn spawn_until(
        mut cmd: Command,
        addr: SocketAddr,
        spool: &Path,
        driver: Driver,
        ready: &'static str,
    ) -> Server {
        let mut child = cmd.spawn().expect("start verdant");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut waiting = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                if line.contains(ready)
                    && let Some(tx) = waiting.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        let started = rx.recv_timeout(Duration::from_secs(20)).is_ok();
        let server = Server {
            child,
            addr,
            spool: spool.to_path_buf(),
            log,
        };
        assert!(started, "server did not start; log:\n{}", server.log());
        let log = server.log();
        assert!(
            log.contains(&format!("driver {}", driver.name())),
            "expected the {} driver; log:\n{log}",
            driver.name()
        );
        server
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// SIGTERM: a graceful stop.
    pub fn terminate(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A raw SMTP client over a real socket.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // Content and the final dot go in two writes: without this, Nagle's
        // algorithm holds the dot until the server's delayed ACK (40 ms).
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut c = Client { reader, stream };
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        c
    }

    /// Reads one (possibly multi-line) reply; returns all its lines.
    pub fn reply(&mut self) -> String {
        self.try_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// [`Client::reply`], with an error instead of a panic when the
    /// connection is gone.
    pub fn try_reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed; got so far: {all:?}"),
                ));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends one command line and returns its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the server closed the connection (EOF within 5 s).
    pub fn closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }

    /// A whole transaction; returns the final reply (250 … queued as ID, or an error).
    pub fn mail(&mut self, from: &str, to: &[&str], content: &str) -> String {
        self.try_mail(from, to, content)
            .unwrap_or_else(|e| panic!("transaction: {e}"))
    }

    /// [`Client::mail`], with an error instead of a panic when the
    /// connection is gone (a server killed under load).
    pub fn try_mail(&mut self, from: &str, to: &[&str], content: &str) -> std::io::Result<String> {
        let step = |c: &mut Client, line: String, want: &str| -> std::io::Result<()> {
            c.stream.write_all(line.as_bytes())?;
            let r = c.try_reply()?;
            assert!(r.starts_with(want), "{}: {r}", line.trim_end());
            Ok(())
        };
        step(self, format!("MAIL FROM:<{from}>\r\n"), "250")?;
        for t in to {
            step(self, format!("RCPT TO:<{t}>\r\n"), "250")?;
        }
        step(self, "DATA\r\n".into(), "354")?;
        self.stream.write_all(content.as_bytes())?;
        self.stream.write_all(b".\r\n")?;
        self.try_reply()
    }
}

/// Runs `verdant ARGS` to its end, in a directory of its own (the
/// defaults' relative paths, ./var/..., must not land in the repository):
/// whether it succeeded, its standard output and its standard error.
pub fn verdant(args: &[&str]) -> (bool, String, String) {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The queue id in a `250 2.0.0 Ok: queued as ID` reply.
pub fn queued_id(reply: &str) -> Option<String> {
    reply
        .trim_end()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .map(str::to_string)
}

/// `verdant queue list --json` on a spool: one JSON value per message.
pub fn queue_list(spool: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["queue", "list", "--json", "--spool"])
        .arg(spool)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "queue list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
