//! End to end: Verdant delivers what it accepted to the next hop over real
//! SMTP on loopback (a second Verdant, receive-only, plays the remote
//! server), retries temporary failures, bounces permanent ones, and loses
//! nothing across a kill -9. Each scenario runs on both I/O drivers.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::sink::Sink;
use common::{Client, Driver, Opts, Server, queue_list, queued_id, wait_until};

/// A receive-only Verdant standing in for a remote mail server.
fn remote(
    driver: Driver,
    dir: &Path,
    name: &str,
    config: &str,
    addr: Option<SocketAddr>,
) -> Server {
    let spool = dir.join(name);
    Server::start(Opts {
        config,
        addr,
        ..Opts::new(driver, &spool)
    })
}

/// The Verdant under test, delivering with `delivery` (TOML lines of the
/// [delivery] section) and short retries.
fn local(driver: Driver, dir: &Path, delivery: &str) -> Server {
    local_at(driver, dir, delivery, None)
}

fn local_at(driver: Driver, dir: &Path, delivery: &str, addr: Option<SocketAddr>) -> Server {
    let retry = if delivery.contains("retry_initial") {
        ""
    } else {
        "retry_initial = \"1s\"\nretry_max = \"1s\"\n"
    };
    let config = format!(
        "[delivery]\nlog = \"{}\"\n{retry}idle_timeout = \"1s\"\nconnect_timeout = \"1s\"\n{delivery}\n",
        dir.join("delivery.log").display()
    );
    Server::start(Opts {
        config: &config,
        deliver: true,
        addr,
        ..Opts::new(driver, &dir.join("local"))
    })
}

fn send(server: &Server, from: &str, to: &[&str], n: usize) -> Vec<String> {
    let mut c = server.client();
    c.cmd("EHLO test.client");
    (0..n)
        .map(|i| {
            let r = c.mail(
                from,
                to,
                &format!("Message-ID: <{i}@deliver.test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n"),
            );
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

#[test]
fn mail_is_relayed_to_the_static_route_one_transaction_per_destination() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let far = remote(driver, dir.path(), "far", "", None);
        let near = local(
            driver,
            dir.path(),
            &format!("routes = {{ \"*\" = \"{}\" }}", far.addr),
        );
        send(
            &near,
            "s@example.com",
            &["a@example.net", "b@example.org"],
            20,
        );
        assert!(
            wait_until(Duration::from_secs(20), || queue_list(&near.spool)
                .is_empty()),
            "{driver:?}: not delivered: {:?}\n{}",
            queue_list(&near.spool),
            near.log()
        );
        let arrived = queue_list(&far.spool);
        assert_eq!(arrived.len(), 20, "{driver:?}");
        for m in &arrived {
            // Both domains share the route: one transaction, both recipients.
            assert_eq!(
                m["recipients"],
                serde_json::json!(["a@example.net", "b@example.org"])
            );
            assert_eq!(m["sender"], "s@example.com");
        }
        let log = log_lines(dir.path());
        assert_eq!(log.len(), 20);
        assert!(
            log.iter()
                .all(|l| l["outcome"] == "delivered" && l["code"] == 250),
            "{log:?}"
        );
    }
}

#[test]
fn a_temporary_failure_is_retried_until_it_succeeds() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        // Nobody listens there yet: connection refused, a temporary failure.
        let far_addr = common::free_addr();
        let near = local(
            driver,
            dir.path(),
            &format!("routes = {{ \"*\" = \"{far_addr}\" }}"),
        );
        send(&near, "s@example.com", &["r@example.net"], 3);
        assert!(wait_until(Duration::from_secs(10), || {
            let q = queue_list(&near.spool);
            q.len() == 3
                && q.iter()
                    .all(|m| m["state"].as_str().unwrap().starts_with("deferred"))
        }));
        assert!(
            log_lines(dir.path())
                .iter()
                .any(|l| l["outcome"] == "deferred")
        );
        let far = remote(driver, dir.path(), "far", "", Some(far_addr));
        assert!(
            wait_until(Duration::from_secs(20), || queue_list(&near.spool)
                .is_empty()),
            "{driver:?}: still queued: {:?}",
            queue_list(&near.spool)
        );
        assert_eq!(queue_list(&far.spool).len(), 3);
        let log = log_lines(dir.path());
        assert!(
            log.iter()
                .any(|l| l["outcome"] == "delivered" && l["attempt"].as_u64() > Some(1)),
            "{log:?}"
        );
    }
}

#[test]
fn a_permanent_failure_bounces_to_the_sender_with_a_dsn() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        // Refuses to relay for loopback clients: 554 5.7.1 at RCPT.
        let refuser = remote(
            driver,
            dir.path(),
            "refuser",
            "[smtp]\nclient_networks = [\"192.0.2.0/24\"]\n",
            None,
        );
        // The sender's own server, where the bounce must arrive.
        let home = remote(driver, dir.path(), "home", "", None);
        let near = local(
            driver,
            dir.path(),
            &format!(
                "routes = {{ \"example.net\" = \"{}\", \"example.com\" = \"{}\" }}",
                refuser.addr, home.addr
            ),
        );
        let ids = send(&near, "sender@example.com", &["nobody@example.net"], 1);
        assert!(
            wait_until(Duration::from_secs(20), || queue_list(&near.spool)
                .is_empty()
                && queue_list(&home.spool).len() == 1),
            "{driver:?}: near {:?} home {:?}",
            queue_list(&near.spool),
            queue_list(&home.spool)
        );
        let bounce = &queue_list(&home.spool)[0];
        assert_eq!(bounce["sender"], "", "a bounce has the null sender");
        assert_eq!(
            bounce["recipients"],
            serde_json::json!(["sender@example.com"])
        );
        let shown = std::process::Command::new(common::BIN)
            .args(["queue", "show", bounce["id"].as_str().unwrap(), "--spool"])
            .arg(&home.spool)
            .output()
            .unwrap();
        let dsn = String::from_utf8_lossy(&shown.stdout);
        for field in [
            "Content-Type: multipart/report; report-type=delivery-status",
            "Content-Type: message/delivery-status",
            "Final-Recipient: rfc822; nobody@example.net",
            "Action: failed",
            "Status: 5.7.1",
            "Diagnostic-Code: smtp; 554 5.7.1",
            "Message-ID: <0@deliver.test>",
            &format!("X-Verdant-Queue-ID: {}", ids[0]),
        ] {
            assert!(
                dsn.contains(field),
                "{driver:?}: {field:?} missing from the DSN:\n{dsn}"
            );
        }
        assert!(!dsn.contains("body 0"), "the DSN returns headers only");
        // The failed message is final (not retried); the log says bounced.
        assert!(
            log_lines(dir.path())
                .iter()
                .any(|l| l["outcome"] == "bounced" && l["code"] == 554)
        );
    }
}

#[test]
fn a_null_sender_message_is_never_bounced() {
    let driver = Driver::IoUring;
    let dir = tempfile::tempdir().unwrap();
    let refuser = remote(
        driver,
        dir.path(),
        "refuser",
        "[smtp]\nclient_networks = [\"192.0.2.0/24\"]\n",
        None,
    );
    let near = local(
        driver,
        dir.path(),
        &format!("routes = {{ \"*\" = \"{}\" }}", refuser.addr),
    );
    send(&near, "", &["nobody@example.net"], 1);
    assert!(wait_until(Duration::from_secs(20), || queue_list(
        &near.spool
    )
    .is_empty()));
    // Nothing was queued in return (it would have been sent to the refuser
    // again and logged).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        log_lines(dir.path()).len(),
        1,
        "{:?}",
        log_lines(dir.path())
    );
    assert!(queue_list(&refuser.spool).is_empty());
}

#[test]
fn a_restart_in_the_middle_of_a_queue_delivers_everything() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let far_addr = common::free_addr();
        let route = format!("routes = {{ \"*\" = \"{far_addr}\" }}");
        let mut near = local(driver, dir.path(), &route);
        let near_addr = near.addr;
        let ids = send(&near, "s@example.com", &["r@example.net"], 30);
        assert!(wait_until(Duration::from_secs(10), || log_lines(
            dir.path()
        )
        .len()
            >= 30));
        near.kill();
        let far = remote(driver, dir.path(), "far", "", Some(far_addr));
        let near = local_at(driver, dir.path(), &route, Some(near_addr));
        assert!(near.log().contains("30 message(s) recovered") || near.log().contains("recovered"));
        assert!(
            wait_until(Duration::from_secs(30), || queue_list(&near.spool)
                .is_empty()),
            "{driver:?}: {:?}",
            queue_list(&near.spool)
        );
        let arrived = queue_list(&far.spool);
        // At least once each (duplicates only for messages in flight at the kill).
        for i in 0..ids.len() {
            let mid = format!("<{i}@deliver.test>");
            assert!(
                arrived.iter().any(|m| m["message_id"] == mid.as_str()),
                "{driver:?}: {mid} lost"
            );
        }
        let _ = Client::connect(near.addr);
    }
}

fn verdant_queue(spool: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::BIN)
        .arg("queue")
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn operators_see_retry_and_remove_deferred_messages_on_a_running_server() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let far_addr = common::free_addr();
        let home = remote(driver, dir.path(), "home", "", None);
        let near = local(
            driver,
            dir.path(),
            &format!(
                "retry_initial = \"1h\"\nretry_max = \"2h\"\nroutes = {{ \"example.net\" = \"{far_addr}\", \"example.com\" = \"{}\" }}",
                home.addr
            ),
        );
        let ids = send(&near, "s@example.com", &["r@example.net"], 3);
        assert!(wait_until(Duration::from_secs(10), || {
            queue_list(&near.spool)
                .iter()
                .filter(|m| m["state"] == "deferred")
                .count()
                == 3
        }));
        let listed = queue_list(&near.spool);
        assert_eq!(listed[0]["attempts"], 1);
        assert!(
            listed[0]["last_error"]
                .as_str()
                .unwrap()
                .starts_with("451 4.4.1"),
            "{listed:?}"
        );
        assert!(listed[0]["next_attempt"].is_string());

        // Unknown ids and bad ids are errors.
        let (ok, text) = verdant_queue(&near.spool, &["retry", "00000000000000000000"]);
        assert!(!ok && text.contains("no deferred message"), "{text}");
        let (ok, _) = verdant_queue(&near.spool, &["remove", "bad-id"]);
        assert!(!ok);

        let far = remote(driver, dir.path(), "far", "", Some(far_addr));
        // Retry one: it goes now, the others keep waiting their hour.
        let (ok, text) = verdant_queue(&near.spool, &["retry", &ids[0]]);
        assert!(ok, "{text}");
        assert!(wait_until(Duration::from_secs(10), || queue_list(
            &far.spool
        )
        .len()
            == 1));
        // Remove one with a bounce to the sender.
        let (ok, text) = verdant_queue(&near.spool, &["remove", &ids[1], "--bounce"]);
        assert!(ok, "{text}");
        assert!(wait_until(Duration::from_secs(10), || queue_list(
            &home.spool
        )
        .len()
            == 1));
        assert_eq!(queue_list(&home.spool)[0]["sender"], "");
        // Retry all: the last one.
        let (ok, text) = verdant_queue(&near.spool, &["retry", "--all"]);
        assert!(ok, "{text}");
        assert!(wait_until(Duration::from_secs(10), || queue_list(
            &near.spool
        )
        .is_empty()));
        assert_eq!(queue_list(&far.spool).len(), 2, "{driver:?}");
    }
}

#[test]
fn many_messages_to_one_destination_share_few_connections() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::start(driver, &[]);
        // At most 2 connections to the destination, whole server.
        let near = local(
            driver,
            dir.path(),
            &format!(
                "max_connections_per_destination = 2\nroutes = {{ \"*\" = \"{}\" }}",
                sink.addr
            ),
        );
        send(&near, "s@example.com", &["r@example.net"], 60);
        assert!(wait_until(Duration::from_secs(20), || queue_list(
            &near.spool
        )
        .is_empty()));
        assert!(wait_until(Duration::from_secs(5), || {
            sink.stats().is_some_and(|s| s["messages_accepted"] == 60)
        }));
        let stats = sink.stats().unwrap();
        let conns = stats["connections"].as_u64().unwrap();
        assert!(
            (1..=2).contains(&conns),
            "{driver:?}: 60 messages over {conns} connections: {stats}"
        );
    }
}

#[test]
fn partial_failure_delivers_some_bounces_some_and_retries_only_the_rest() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::start(
            driver,
            &[
                "--fail-rcpt",
                "gone@example.net=550 5.1.1 no such user",
                "--fail-rcpt",
                "busy@example.net=450 4.2.1 try later",
            ],
        );
        let near = local(
            driver,
            dir.path(),
            &format!("routes = {{ \"*\" = \"{}\" }}", sink.addr),
        );
        let ids = send(
            &near,
            "s@example.com",
            &["ok@example.net", "gone@example.net", "busy@example.net"],
            1,
        );
        // First attempt: ok delivered, gone bounced (a DSN to s@example.com,
        // which the sink accepts), busy deferred. Later attempts: busy only.
        assert!(wait_until(Duration::from_secs(20), || {
            log_lines(dir.path())
                .iter()
                .filter(|l| l["id"] == ids[0].as_str() && l["attempt"] == 2)
                .count()
                == 1
        }));
        let log = log_lines(dir.path());
        let first: Vec<&serde_json::Value> = log
            .iter()
            .filter(|l| l["id"] == ids[0].as_str() && l["attempt"] == 1)
            .collect();
        // One transaction (same duration), logged one line per result.
        let outcome_of = |rcpt: &str| {
            first
                .iter()
                .find(|l| {
                    l["recipients"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r == rcpt)
                })
                .map(|l| {
                    (
                        l["outcome"].as_str().unwrap().to_string(),
                        l["code"].as_u64().unwrap(),
                    )
                })
        };
        assert_eq!(first.len(), 3, "{log:?}");
        assert!(
            first
                .iter()
                .all(|l| l["duration_ms"] == first[0]["duration_ms"]),
            "{log:?}"
        );
        assert_eq!(
            outcome_of("ok@example.net"),
            Some(("delivered".into(), 250))
        );
        assert_eq!(
            outcome_of("gone@example.net"),
            Some(("bounced".into(), 550))
        );
        assert_eq!(
            outcome_of("busy@example.net"),
            Some(("deferred".into(), 450))
        );
        let second = log
            .iter()
            .find(|l| l["id"] == ids[0].as_str() && l["attempt"] == 2)
            .unwrap();
        assert_eq!(
            second["recipients"],
            serde_json::json!(["busy@example.net"]),
            "{log:?}"
        );
        assert_eq!(second["outcome"], "deferred");
        let q = queue_list(&near.spool);
        let m = q
            .iter()
            .find(|m| m["id"] == ids[0].as_str())
            .expect("still queued for busy@");
        assert_eq!(m["recipients"], serde_json::json!(["busy@example.net"]));
        // The bounce for gone@ went to the sender through the sink.
        let keep = sink.keep_dir();
        assert!(wait_until(Duration::from_secs(10), || {
            std::fs::read_dir(&keep).map(|d| d.count()).unwrap_or(0) >= 4
        }));
        let dsn = std::fs::read_dir(&keep)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .find(|t| t.contains("message/delivery-status"))
            .expect("a DSN reached the sink");
        assert!(
            dsn.contains("Final-Recipient: rfc822; gone@example.net"),
            "{dsn}"
        );
        assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
        assert!(!dsn.contains("busy@example.net\r\nAction: failed"), "{dsn}");
    }
}

#[test]
fn a_mail_loop_is_bounced_not_circulated_forever() {
    let driver = Driver::IoUring;
    let dir = tempfile::tempdir().unwrap();
    // Routed to itself: every pass adds a Received: header.
    let me = common::free_addr();
    let near = local_at(
        driver,
        dir.path(),
        &format!("routes = {{ \"*\" = \"{me}\" }}"),
        Some(me),
    );
    send(&near, "s@example.com", &["r@example.net"], 1);
    assert!(
        wait_until(Duration::from_secs(30), || {
            log_lines(dir.path())
                .iter()
                .any(|l| l["code"] == 554 && l["reply"].as_str().unwrap_or("").contains("5.4.6"))
        }),
        "no loop detected: {} log lines",
        log_lines(dir.path()).len()
    );
    // The bounce loops too and ends the same way (a null sender gets no
    // bounce), so the queue drains.
    assert!(wait_until(Duration::from_secs(30), || queue_list(
        &near.spool
    )
    .is_empty()));
}
