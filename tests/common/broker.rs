//! Scale-out tests against the real RabbitMQ broker: `verdant receiver` and
//! `verdant engine` processes on a queue prefix of their own, a sink as the
//! remote side, and the broker at `VERDANT_AMQP_URL` (default
//! amqp://guest:guest@127.0.0.1:5672). Skipped only with
//! `VERDANT_SKIP_BROKER_TESTS=1`, loudly; CI never sets it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use verdant_amqp::{Broker, QueueKind, Topology};

use super::{BIN, Driver, Server, free_addr};

// Each test file uses a different part.
#[allow(unused_imports)]
pub use verdant_testkit::broker::{rabbitmqctl, skip, url};

/// A test's own queues on the broker, deleted when dropped (also when the
/// test panics).
pub struct Queues {
    pub topology: Topology,
}

impl Queues {
    /// A unique prefix for `test`, with these delay tiers.
    pub fn new(test: &str, tiers: &[Duration]) -> Queues {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Queues {
            topology: Topology {
                prefix: format!("verdant-test.{test}.{}.{nanos}", std::process::id()),
                tiers: tiers.to_vec(),
                kind: QueueKind::Classic,
            },
        }
    }

    pub fn prefix(&self) -> &str {
        &self.topology.prefix
    }

    /// The `[amqp]` section for processes on these queues.
    pub fn config(&self, extra: &str) -> String {
        let tiers: Vec<String> = self
            .topology
            .tiers
            .iter()
            .map(|t| format!("\"{}ms\"", t.as_millis()))
            .collect();
        format!(
            "[metrics]\nlisten = \"\"\n[footprint]\nledger = \"\"\n[amqp]\nurl = \"{}\"\nprefix = \"{}\"\ntiers = [{}]\n{extra}\n",
            url(),
            self.prefix(),
            tiers.join(", ")
        )
    }

    /// Messages ready and messages delivered but not acknowledged, per
    /// queue of the topology, from `rabbitmqctl` (AMQP cannot see the
    /// unacknowledged ones).
    pub fn counts(&self) -> BTreeMap<String, (u64, u64)> {
        rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let ready = f.next()?.parse().ok()?;
            let unacked = f.next()?.parse().ok()?;
            name.starts_with(&format!("{}.", self.prefix()))
                .then(|| (name.to_string(), (ready, unacked)))
        })
        .collect()
    }

    /// Waits (at most `limit`) until every queue is empty and every
    /// delivery acknowledged; false, with what is left printed, if not.
    pub fn drain(&self, limit: Duration) -> bool {
        let done = |c: &BTreeMap<String, (u64, u64)>| c.values().all(|&(r, u)| r == 0 && u == 0);
        if super::wait_until(limit, || done(&self.counts())) {
            return true;
        }
        eprintln!("queues not drained: {:?}", self.counts());
        false
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let result = std::thread::spawn(move || {
            on_broker(move |broker| async move { topology.delete(&broker).await })
        })
        .join();
        if result.is_err() {
            eprintln!("cleanup of {} failed", self.topology.prefix);
        }
    }
}

/// Runs `f` with a fresh connection to the broker, on a runtime of its own.
fn on_broker<T, F, Fut>(f: F) -> T
where
    F: FnOnce(Broker) -> Fut,
    Fut: std::future::Future<Output = Result<T, verdant_amqp::Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let broker = Broker::connect(&url())
            .await
            .expect("connect to the broker");
        f(broker).await.expect("broker operation")
    })
}

/// A `verdant receiver` (SMTP in, publish to the broker) on a free port.
pub fn receiver(driver: Driver, dir: &Path, queues: &Queues, amqp: &str) -> Server {
    let addr = free_addr();
    let conf = dir.join("receiver.toml");
    std::fs::write(&conf, queues.config(amqp)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("receiver")
        .arg("--config")
        .arg(&conf)
        .arg("--listen")
        .arg(addr.to_string())
        .args(["--workers", "2"]);
    Server::spawn_until(prepare(cmd, driver), addr, dir, driver, "accepting mail")
}

/// A `verdant engine` (consume from the broker, deliver) routing all mail
/// to `to`, logging its attempts to `dir/NAME.log`.
pub fn engine(
    driver: Driver,
    dir: &Path,
    name: &str,
    queues: &Queues,
    to: SocketAddr,
    delivery: &str,
    amqp: &str,
) -> Server {
    let conf = dir.join(format!("{name}.toml"));
    let config = format!(
        "{}[delivery]\nlog = \"{}\"\nidle_timeout = \"1s\"\nconnect_timeout = \"1s\"\n{delivery}\n",
        queues.config(amqp),
        dir.join(format!("{name}.log")).display()
    );
    std::fs::write(&conf, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("engine")
        .arg("--config")
        .arg(&conf)
        .arg("--route")
        .arg(format!("*={to}"))
        .args(["--workers", "2"]);
    Server::spawn_until(
        prepare(cmd, driver),
        to,
        dir,
        driver,
        "delivering from the broker",
    )
}

/// A `verdant serve --queue amqp`: receiver and engine in one process,
/// meeting in the broker, routing all mail to `to`.
pub fn serve(driver: Driver, dir: &Path, queues: &Queues, to: SocketAddr) -> Server {
    serve_with(driver, dir, queues, to, &[])
}

/// [`serve`] with extra command-line arguments.
pub fn serve_with(
    driver: Driver,
    dir: &Path,
    queues: &Queues,
    to: SocketAddr,
    args: &[&str],
) -> Server {
    let addr = free_addr();
    let conf = dir.join("serve.toml");
    let config = format!(
        "{}[delivery]\nlog = \"{}\"\n",
        queues.config(""),
        dir.join("serve.log").display()
    );
    std::fs::write(&conf, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--queue", "amqp", "--config"])
        .arg(&conf)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--route")
        .arg(format!("*={to}"))
        .arg("--spool")
        .arg(dir.join("spool"))
        .args(["--workers", "2"])
        .args(args);
    Server::spawn_until(prepare(cmd, driver), addr, dir, driver, "accepting mail")
}

fn prepare(mut cmd: Command, driver: Driver) -> Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match driver {
        Driver::Epoll => cmd.env("MONOIO_FORCE_LEGACY_DRIVER", "1"),
        Driver::IoUring => cmd.env_remove("MONOIO_FORCE_LEGACY_DRIVER"),
    };
    cmd
}

/// The delivery log lines of an engine (`dir/NAME.log`).
pub fn attempts(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many copies of each Message-ID the sink kept in `keep` (complete
/// ones only).
pub fn arrived(keep: &Path) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(keep) else {
        return seen;
    };
    for e in entries.flatten() {
        let path = e.path();
        // The sink writes the `.json` after the `.eml`: only then is the
        // message complete.
        if path.extension().is_none_or(|x| x != "eml") || !path.with_extension("json").exists() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or("(none)")
            .to_string();
        *seen.entry(id).or_default() += 1;
    }
    seen
}
