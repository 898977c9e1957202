//! End to end: Verdant routes mail by MX records (issue 3 §6). The real
//! `verdant` binary asks a real DNS server running in this test process
//! (`--dns`), and the mail exchangers are receive-only Verdants listening on
//! distinct loopback addresses (127.0.0.2, 127.0.0.3, …) at one port, the
//! `[delivery] mx_port` of the Verdant under test. Each scenario runs on both
//! I/O drivers; every wait is bounded; nothing leaves the machine.
//!
//! The zones (see [`zones`]):
//!
//! | domain | records |
//! |---|---|
//! | pref.test | MX 10 mx1.pref.test (127.0.0.2), MX 20 mx2.pref.test (127.0.0.3) |
//! | failover.test | MX 10 mx1 (127.0.0.4, nothing listens), MX 20 mx2 (127.0.0.5) |
//! | afallback.test | no MX; A 127.0.0.6 |
//! | nullmx.test | MX 0 . (null MX) |
//! | sender.test | MX 10 mx.sender.test (127.0.0.7): where bounces go |

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Driver, Opts, Server, queue_list, queued_id, wait_until};
use verdant_testkit::dns::{DnsServer, SilentDns, Zones};

/// Upper bound of every wait in this file.
const LIMIT: Duration = Duration::from_secs(20);

/// The envelope sender of every test message: bounces go to sender.test.
const SENDER: &str = "s@sender.test";

/// The loopback addresses mail exchangers may use in these tests.
const MX_IPS: [Ipv4Addr; 6] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
    Ipv4Addr::new(127, 0, 0, 6),
    Ipv4Addr::new(127, 0, 0, 7),
];

fn zones() -> Zones {
    Zones::new()
        .mx("pref.test", 10, "mx1.pref.test")
        .mx("pref.test", 20, "mx2.pref.test")
        .a("mx1.pref.test", "127.0.0.2")
        .a("mx2.pref.test", "127.0.0.3")
        .mx("failover.test", 10, "mx1.failover.test")
        .mx("failover.test", 20, "mx2.failover.test")
        .a("mx1.failover.test", "127.0.0.4")
        .a("mx2.failover.test", "127.0.0.5")
        .a("afallback.test", "127.0.0.6")
        .null_mx("nullmx.test")
        .mx("sender.test", 10, "mx.sender.test")
        .a("mx.sender.test", "127.0.0.7")
}

/// A port free on every address of [`MX_IPS`] (bound on 127.0.0.2 with port
/// 0, then checked on the others), so each exchanger can listen on its own
/// address at the same port.
fn mx_port() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind((MX_IPS[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if MX_IPS[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {MX_IPS:?}");
}

/// A receive-only Verdant acting as a mail exchanger at `ip:port`.
fn exchanger(driver: Driver, dir: &Path, name: &str, ip: &str, port: u16) -> Server {
    let spool = dir.join(name);
    Server::start(Opts {
        addr: Some(SocketAddr::new(ip.parse().unwrap(), port)),
        ..Opts::new(driver, &spool)
    })
}

/// The Verdant under test: delivery on, resolving through `dns` (each one a
/// `--dns` flag), reaching exchangers at `mx_port`, short retries and
/// timeouts, its delivery log in `dir/delivery.log`.
fn local(driver: Driver, dir: &Path, dns: &[SocketAddr], mx_port: u16) -> Server {
    let config = format!(
        "[delivery]\nmx_port = {mx_port}\nlog = \"{}\"\nretry_initial = \"1s\"\nretry_max = \"1s\"\nconnect_timeout = \"1s\"\nidle_timeout = \"1s\"\n",
        dir.join("delivery.log").display()
    );
    Server::start(Opts {
        config: &config,
        deliver: true,
        args: dns
            .iter()
            .flat_map(|s| ["--dns".to_string(), s.to_string()])
            .collect(),
        ..Opts::new(driver, &dir.join("local"))
    })
}

/// Sends `n` messages from [`SENDER`] to `to`; returns their queue ids.
fn send(server: &Server, to: &str, n: usize) -> Vec<String> {
    let mut c = server.client();
    c.cmd("EHLO test.client");
    (0..n)
        .map(|i| {
            let content = format!("Message-ID: <{i}@mx.test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n");
            let r = c.mail(SENDER, &[to], &content);
            queued_id(&r).unwrap_or_else(|| panic!("{r}"))
        })
        .collect()
}

fn log_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("delivery.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the queue of the Verdant under test is empty and `arrived`
/// holds `n` messages.
fn wait_delivered(driver: Driver, dir: &Path, local: &Server, arrived: &Server, n: usize) {
    assert!(
        wait_until(LIMIT, || queue_list(&local.spool).is_empty()
            && queue_list(&arrived.spool).len() == n),
        "{driver:?}: local queue {:?}, arrived {:?}\ndelivery log {:?}\nlocal log:\n{}",
        queue_list(&local.spool),
        queue_list(&arrived.spool),
        log_lines(dir),
        local.log()
    );
}

#[test]
fn mail_goes_to_the_most_preferred_exchanger() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsServer::start(zones());
        let port = mx_port();
        let mx1 = exchanger(driver, dir.path(), "mx1", "127.0.0.2", port);
        let mx2 = exchanger(driver, dir.path(), "mx2", "127.0.0.3", port);
        let near = local(driver, dir.path(), &[dns.addr], port);
        send(&near, "x@pref.test", 3);
        wait_delivered(driver, dir.path(), &near, &mx1, 3);
        for m in queue_list(&mx1.spool) {
            assert_eq!(m["sender"], SENDER, "{driver:?}");
            assert_eq!(
                m["recipients"],
                serde_json::json!(["x@pref.test"]),
                "{driver:?}"
            );
        }
        assert!(
            queue_list(&mx2.spool).is_empty(),
            "{driver:?}: mx2 got mail"
        );
        let log = log_lines(dir.path());
        assert_eq!(log.len(), 3, "{driver:?}: {log:?}");
        for l in &log {
            assert_eq!(l["outcome"], "delivered", "{driver:?}: {l}");
            assert_eq!(l["code"], 250, "{driver:?}: {l}");
            assert_eq!(l["mx"], "mx1.pref.test", "{driver:?}: {l}");
            assert_eq!(l["ip"], format!("127.0.0.2:{port}"), "{driver:?}: {l}");
            assert_eq!(l["attempt"], 1, "{driver:?}: {l}");
        }
        assert!(
            dns.queries("pref.test", "MX") >= 1,
            "{driver:?}: the test DNS server was not asked"
        );
    }
}

#[test]
fn an_unreachable_exchanger_fails_over_to_the_next() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsServer::start(zones());
        let port = mx_port();
        // Nothing listens on 127.0.0.4 (mx1): connection refused.
        let mx2 = exchanger(driver, dir.path(), "mx2", "127.0.0.5", port);
        let near = local(driver, dir.path(), &[dns.addr], port);
        send(&near, "x@failover.test", 1);
        wait_delivered(driver, dir.path(), &near, &mx2, 1);
        assert_eq!(
            queue_list(&mx2.spool)[0]["recipients"],
            serde_json::json!(["x@failover.test"])
        );
        // One attempt, on the first try: the refused host is skipped within it.
        let log = log_lines(dir.path());
        assert_eq!(log.len(), 1, "{driver:?}: {log:?}");
        let l = &log[0];
        assert_eq!(l["outcome"], "delivered", "{driver:?}: {l}");
        assert_eq!(l["code"], 250, "{driver:?}: {l}");
        assert_eq!(l["attempt"], 1, "{driver:?}: {l}");
        assert_eq!(l["mx"], "mx2.failover.test", "{driver:?}: {l}");
        assert_eq!(l["ip"], format!("127.0.0.5:{port}"), "{driver:?}: {l}");
    }
}

#[test]
fn a_domain_without_mx_is_reached_at_its_own_address() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsServer::start(zones());
        let port = mx_port();
        let host = exchanger(driver, dir.path(), "host", "127.0.0.6", port);
        let near = local(driver, dir.path(), &[dns.addr], port);
        send(&near, "x@afallback.test", 1);
        wait_delivered(driver, dir.path(), &near, &host, 1);
        assert_eq!(
            queue_list(&host.spool)[0]["recipients"],
            serde_json::json!(["x@afallback.test"])
        );
        let log = log_lines(dir.path());
        assert_eq!(log.len(), 1, "{driver:?}: {log:?}");
        let l = &log[0];
        assert_eq!(l["outcome"], "delivered", "{driver:?}: {l}");
        assert_eq!(l["code"], 250, "{driver:?}: {l}");
        // The implicit MX is the domain itself.
        assert_eq!(l["mx"], "afallback.test", "{driver:?}: {l}");
        assert_eq!(l["ip"], format!("127.0.0.6:{port}"), "{driver:?}: {l}");
        assert!(dns.queries("afallback.test", "MX") >= 1, "{driver:?}");
        assert!(dns.queries("afallback.test", "A") >= 1, "{driver:?}");
    }
}

/// What a null-MX bounce left behind: the DSN as `queue show` prints it at
/// the sender's exchanger, the delivery log, the original's queue id.
struct NullMxBounce {
    dsn: String,
    log: Vec<serde_json::Value>,
    id: String,
}

/// Sends one message to x@nullmx.test and waits until the original is gone
/// from the queue and its DSN arrived at sender.test's exchanger; checks
/// the envelope of the DSN, the log of its delivery and that the root
/// exchange was never looked up.
fn null_mx_bounce(driver: Driver) -> NullMxBounce {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start(zones());
    let port = mx_port();
    let home = exchanger(driver, dir.path(), "home", "127.0.0.7", port);
    let near = local(driver, dir.path(), &[dns.addr], port);
    let id = send(&near, "x@nullmx.test", 1).remove(0);
    wait_delivered(driver, dir.path(), &near, &home, 1);
    let bounce = &queue_list(&home.spool)[0];
    assert_eq!(
        bounce["sender"], "",
        "{driver:?}: a bounce has the null sender"
    );
    assert_eq!(
        bounce["recipients"],
        serde_json::json!([SENDER]),
        "{driver:?}"
    );
    let shown = Command::new(BIN)
        .args(["queue", "show", bounce["id"].as_str().unwrap(), "--spool"])
        .arg(&home.spool)
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let log = log_lines(dir.path());
    assert_eq!(log.len(), 2, "{driver:?}: {log:?}");
    let dsn_line = log.iter().find(|l| l["id"] != id.as_str()).unwrap();
    assert_eq!(dsn_line["outcome"], "delivered", "{driver:?}: {dsn_line}");
    assert_eq!(dsn_line["code"], 250, "{driver:?}: {dsn_line}");
    assert_eq!(dsn_line["mx"], "mx.sender.test", "{driver:?}: {dsn_line}");
    assert_eq!(
        dsn_line["ip"],
        format!("127.0.0.7:{port}"),
        "{driver:?}: {dsn_line}"
    );
    // The root exchange of a null MX is never looked up.
    assert_eq!(
        dns.queries("", "A") + dns.queries("", "AAAA"),
        0,
        "{driver:?}"
    );
    NullMxBounce {
        dsn: String::from_utf8_lossy(&shown.stdout).into_owned(),
        log,
        id,
    }
}

#[test]
fn a_null_mx_domain_is_bounced_to_the_sender() {
    for driver in Driver::ALL {
        let NullMxBounce { dsn, log, id } = null_mx_bounce(driver);
        for field in [
            "Content-Type: multipart/report; report-type=delivery-status",
            "Final-Recipient: rfc822; x@nullmx.test",
            "Action: failed",
            "Status: 5.",
            "Message-ID: <0@mx.test>",
            &format!("X-Verdant-Queue-ID: {id}"),
        ] {
            assert!(
                dsn.contains(field),
                "{driver:?}: {field:?} missing from the DSN:\n{dsn}"
            );
        }
        let original = log
            .iter()
            .find(|l| l["id"] == id.as_str())
            .expect("original logged");
        assert_eq!(original["outcome"], "bounced", "{driver:?}: {original}");
        assert!(
            (500..600).contains(&original["code"].as_u64().unwrap()),
            "{driver:?}: {original}"
        );
        assert_eq!(original["attempt"], 1, "{driver:?}: {original}");
        // Nothing was connected to: there is no exchanger to try.
        assert!(original["mx"].is_null(), "{driver:?}: {original}");
        assert!(original["ip"].is_null(), "{driver:?}: {original}");
    }
}

/// RFC 7505 registers the enhanced status X.1.10 "Recipient address has
/// null MX" with basic code 556 for exactly this failure; the engine reports
/// 550 5.1.2 ("bad destination system address") instead.
#[test]
fn a_null_mx_bounce_carries_the_rfc7505_status() {
    let NullMxBounce { dsn, log, id } = null_mx_bounce(Driver::IoUring);
    assert!(dsn.contains("Status: 5.1.10"), "{dsn}");
    let original = log
        .iter()
        .find(|l| l["id"] == id.as_str())
        .expect("original logged");
    assert_eq!(original["code"], 556, "{original}");
}

#[test]
fn mail_is_deferred_not_bounced_while_dns_does_not_answer() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let silent = SilentDns::start();
        let port = mx_port();
        let near = local(driver, dir.path(), &[silent.addr], port);
        send(&near, "x@pref.test", 1);
        assert!(
            wait_until(LIMIT, || {
                let q = queue_list(&near.spool);
                q.len() == 1 && q[0]["state"].as_str().unwrap().starts_with("deferred")
            }),
            "{driver:?}: not deferred: {:?}\ndelivery log {:?}\nlocal log:\n{}",
            queue_list(&near.spool),
            log_lines(dir.path()),
            near.log()
        );
        assert!(
            silent.queries() >= 1,
            "{driver:?}: the silent DNS server was not asked"
        );
        // Still one message (a bounce would be a second one, queued here),
        // still for the original recipient.
        let q = queue_list(&near.spool);
        assert_eq!(q.len(), 1, "{driver:?}: {q:?}");
        assert_eq!(q[0]["sender"], SENDER, "{driver:?}: {q:?}");
        let log = log_lines(dir.path());
        assert!(!log.is_empty(), "{driver:?}");
        for l in &log {
            assert_eq!(l["outcome"], "deferred", "{driver:?}: {l}");
            assert!(
                (400..500).contains(&l["code"].as_u64().unwrap()),
                "{driver:?}: {l}"
            );
            assert!(l["ip"].is_null(), "{driver:?}: {l}");
        }
    }
}
