//! The control socket: how `verdant queue retry|remove` reach a running
//! server. A Unix socket `control.sock` in the spool directory (so the
//! same `--spool`/`--config` finds it); one JSON request line, one JSON
//! answer line. The server side runs on its own small thread and hands each
//! command to every worker's engine, because a message lives on one worker.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use verdant_engine::engine::{Control, ControlResult};

/// A command on its way to one worker, with where to send the answer.
pub struct Request {
    /// The command.
    pub cmd: Control,
    /// The worker's answer.
    pub reply: flume::Sender<ControlResult>,
}

/// The answer on the socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    /// Totals over the workers.
    pub result: Option<ControlResult>,
    /// Why the command could not be carried out.
    pub error: Option<String>,
}

/// Where the socket lives.
pub fn socket_path(spool: &Path) -> PathBuf {
    spool.join("control.sock")
}

/// Starts the control thread; `workers` are the workers' command channels.
pub fn serve(spool: &Path, workers: Vec<flume::Sender<Request>>) -> anyhow::Result<()> {
    let path = socket_path(spool);
    // A socket left by a previous run (the spool locks guarantee that no
    // other server uses this spool now).
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::thread::Builder::new()
        .name("verdant-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = handle(stream, &workers) {
                            eprintln!("verdant: control request failed: {e:#}");
                        }
                    }
                    // Out of descriptors: don't spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
    Ok(())
}

fn handle(stream: UnixStream, workers: &[flume::Sender<Request>]) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    // A request is a short JSON line; don't read more than that.
    BufReader::new(std::io::Read::take(&stream, 4096)).read_line(&mut line)?;
    let answer = match serde_json::from_str::<Control>(&line) {
        Ok(cmd) => {
            let mut total = ControlResult::default();
            let mut error = None;
            for w in workers {
                let (tx, rx) = flume::bounded(1);
                let sent = w.send(Request {
                    cmd: cmd.clone(),
                    reply: tx,
                });
                match sent
                    .ok()
                    .and_then(|()| rx.recv_timeout(Duration::from_secs(30)).ok())
                {
                    Some(r) => {
                        total.affected += r.affected;
                        total.busy += r.busy;
                    }
                    None => error = Some("a worker did not answer".to_string()),
                }
            }
            Answer {
                result: Some(total),
                error,
            }
        }
        Err(e) => Answer {
            result: None,
            error: Some(format!("bad request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&answer)?;
    out.push(b'\n');
    (&stream).write_all(&out)?;
    Ok(())
}

/// Sends a command to the server running on `spool` (client side).
pub fn send(spool: &Path, cmd: &Control) -> anyhow::Result<ControlResult> {
    let path = socket_path(spool);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        anyhow!(
            "no running server on {} ({}: {e})",
            spool.display(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = serde_json::to_vec(cmd)?;
    req.push(b'\n');
    stream.write_all(&req)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let answer: Answer = serde_json::from_str(&line).context("reading the server's answer")?;
    if let Some(e) = answer.error {
        return Err(anyhow!(e));
    }
    answer.result.ok_or_else(|| anyhow!("empty answer"))
}
