//! Scale-out end to end, against the real broker: a `verdant receiver`
//! process publishes what it accepts, `verdant engine` processes consume
//! and deliver to a sink; temporary failures go round the delay queues and
//! bounce once too old; a killed engine's messages go to the other one.

mod common;

use std::time::Duration;

use common::broker::{Queues, arrived, attempts, engine, receiver, skip};
use common::sink::Sink;
use common::{Driver, Server, queued_id, wait_until};

/// Sends `n` messages (Message-ID `<{tag}{i}@amqp.test>`) to `to` over one
/// connection; returns the queue ids.
fn send(server: &Server, tag: &str, to: &[&str], n: usize) -> Vec<String> {
    let mut c = server.client();
    c.cmd("EHLO test.client");
    (0..n)
        .map(|i| {
            let r = c.mail(
                "sender@example.com",
                to,
                &format!("Message-ID: <{tag}{i}@amqp.test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n"),
            );
            queued_id(&r).unwrap_or_else(|| panic!("message {i}: {r}"))
        })
        .collect()
}

#[test]
fn receiver_to_broker_to_engine_to_sink() {
    if skip("receiver_to_broker_to_engine_to_sink") {
        return;
    }
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let queues = Queues::new("relay", &[Duration::from_secs(1)]);
        let sink = Sink::start(driver, &[]);
        let rx = receiver(driver, dir.path(), &queues, "");
        let eng = engine(driver, dir.path(), "engine", &queues, sink.addr, "", "");
        let ids = send(&rx, "relay", &["a@example.net", "b@example.org"], 40);
        assert_eq!(ids.len(), 40);
        let keep = sink.keep_dir();
        assert!(
            wait_until(Duration::from_secs(30), || arrived(&keep).len() == 40),
            "{driver:?}: {} of 40 arrived\nreceiver:\n{}\nengine:\n{}",
            arrived(&keep).len(),
            rx.log(),
            eng.log()
        );
        // Nothing failed, so nothing came twice; the recipients of both
        // domains went in one transaction (one route).
        let got = arrived(&keep);
        assert!(got.values().all(|&n| n == 1), "{driver:?}: {got:?}");
        // The sink answers before the engine logs the attempt.
        wait_until(Duration::from_secs(5), || {
            attempts(dir.path(), "engine").len() >= 40
        });
        let log = attempts(dir.path(), "engine");
        assert_eq!(log.len(), 40, "{driver:?}: {log:?}");
        assert!(log.iter().all(|l| l["outcome"] == "delivered"), "{log:?}");
        // Every queue is empty once everything is acknowledged.
        assert!(queues.drain(Duration::from_secs(5)));
    }
}

#[test]
fn serve_with_the_broker_queue_receives_and_delivers_in_one_process() {
    if skip("serve_with_the_broker_queue_receives_and_delivers_in_one_process") {
        return;
    }
    let driver = Driver::Epoll;
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new("serve", &[Duration::from_secs(1)]);
    let sink = Sink::start(driver, &[]);
    let server = common::broker::serve(driver, dir.path(), &queues, sink.addr);
    assert!(server.log().contains("on the broker, delivering from it"));
    send(&server, "serve", &["a@example.net"], 20);
    let keep = sink.keep_dir();
    assert!(
        wait_until(Duration::from_secs(20), || arrived(&keep).len() == 20),
        "{} of 20 arrived\n{}",
        arrived(&keep).len(),
        server.log()
    );
    assert!(arrived(&keep).values().all(|&n| n == 1));
    // Nothing went to the spool: the broker is the queue.
    assert!(!dir.path().join("spool").exists());
    assert!(queues.drain(Duration::from_secs(5)));
}

#[test]
fn temporary_failures_go_round_the_delay_queues_then_bounce() {
    if skip("temporary_failures_go_round_the_delay_queues_then_bounce") {
        return;
    }
    let driver = Driver::IoUring;
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new(
        "retry",
        &[Duration::from_millis(300), Duration::from_millis(600)],
    );
    // One recipient always refused for now; the other accepted.
    let sink = Sink::start(
        driver,
        &["--fail-rcpt", "later@example.net=450 4.2.1 mailbox busy"],
    );
    let rx = receiver(driver, dir.path(), &queues, "");
    let eng = engine(
        driver,
        dir.path(),
        "engine",
        &queues,
        sink.addr,
        // The delays are the broker's tiers; give up after a few rounds.
        "give_up = \"3s\"",
        "",
    );
    send(&rx, "retry", &["ok@example.net", "later@example.net"], 3);
    // The good recipient once per message; then, after the retries, one
    // bounce per message back to the sender (routed to the sink too).
    let keep = sink.keep_dir();
    assert!(
        wait_until(Duration::from_secs(30), || {
            attempts(dir.path(), "engine")
                .iter()
                .filter(|l| {
                    l["recipients"][0] == "sender@example.com" && l["outcome"] == "delivered"
                })
                .count()
                == 3
        }),
        "no bounces; log: {:?}\n{}",
        attempts(dir.path(), "engine"),
        eng.log()
    );
    let log = attempts(dir.path(), "engine");
    let tries = |rcpt: &str, outcome: &str| {
        log.iter()
            .filter(|l| l["recipients"][0] == rcpt && l["outcome"] == outcome)
            .count()
    };
    assert_eq!(tries("ok@example.net", "delivered"), 3, "{log:?}");
    // Several rounds through the delay queues (attempt numbers grow) before
    // the give-up time.
    assert!(tries("later@example.net", "deferred") >= 6, "{log:?}");
    let max_attempt = log
        .iter()
        .filter(|l| l["recipients"][0] == "later@example.net")
        .filter_map(|l| l["attempt"].as_u64())
        .max()
        .unwrap();
    assert!(max_attempt >= 3, "{log:?}");
    // The only recipient retried is the refused one: the good one was
    // delivered exactly once per message.
    assert_eq!(
        log.iter()
            .filter(|l| l["recipients"][0] == "ok@example.net")
            .count(),
        3
    );
    // The bounces (DSNs to the sender) reached the sink.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_dir(&keep)
                .map(|d| {
                    d.flatten()
                        .filter(|e| {
                            std::fs::read_to_string(e.path()).is_ok_and(|t| {
                                t.contains("multipart/report") && t.contains("later@example.net")
                            })
                        })
                        .count()
                })
                .unwrap_or(0)
                == 3
        }),
        "bounces not at the sink"
    );
    assert!(queues.drain(Duration::from_secs(5)));
}

/// Queues `n` messages (Message-ID `<{tag}{t}.{i}@amqp.test>`) through
/// `rx` from three client threads at once.
fn fill(rx: &Server, tag: &'static str, n: usize) {
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let addr = rx.addr;
            std::thread::spawn(move || {
                let mut c = common::Client::connect(addr);
                c.cmd("EHLO test.client");
                for i in 0..n / 3 {
                    let r = c.mail(
                        "sender@example.com",
                        &["r@example.net"],
                        &format!("Message-ID: <{tag}{t}.{i}@amqp.test>\r\n\r\nbody\r\n"),
                    );
                    assert!(r.starts_with("250"), "{r}");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
}

#[test]
fn a_stopped_engine_finishes_what_it_started_and_nothing_comes_twice() {
    if skip("a_stopped_engine_finishes_what_it_started_and_nothing_comes_twice") {
        return;
    }
    let driver = Driver::IoUring;
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new("stop", &[Duration::from_secs(1)]);
    let sink = Sink::start(driver, &[]);
    let rx = receiver(driver, dir.path(), &queues, "");
    const N: usize = 3000;
    fill(&rx, "stop", N);
    let mut a = engine(
        driver,
        dir.path(),
        "a",
        &queues,
        sink.addr,
        "",
        "prefetch = 32",
    );
    assert!(
        wait_until(Duration::from_secs(20), || !attempts(dir.path(), "a")
            .is_empty()),
        "engine a delivered nothing:\n{}",
        a.log()
    );
    // A graceful stop in the middle of the run.
    a.terminate();
    let keep = sink.keep_dir();
    assert!(
        wait_until(Duration::from_secs(20), || matches!(
            a.child.try_wait(),
            Ok(Some(_))
        )),
        "engine a did not stop:\n{}",
        a.log()
    );
    assert!(a.child.wait().unwrap().success(), "{}", a.log());
    assert!(
        a.log().contains("0 worker(s) with deliveries cut"),
        "{}",
        a.log()
    );
    let by_a = arrived(&keep).len();
    assert!(by_a < N, "the run was over before the stop");
    // Everything it did not finish went back to the queue, unattempted.
    let b = engine(driver, dir.path(), "b", &queues, sink.addr, "", "");
    assert!(
        wait_until(Duration::from_secs(60), || arrived(&keep).len() == N),
        "{} of {N} arrived\nb:\n{}",
        arrived(&keep).len(),
        b.log()
    );
    let twice: Vec<_> = arrived(&keep).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert!(queues.drain(Duration::from_secs(5)));
}

#[test]
fn a_killed_receiver_loses_nothing_it_accepted() {
    if skip("a_killed_receiver_loses_nothing_it_accepted") {
        return;
    }
    let driver = Driver::Epoll;
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new("rxkill", &[Duration::from_secs(1)]);
    let sink = Sink::start(driver, &[]);
    let mut rx = receiver(driver, dir.path(), &queues, "");
    let _eng = engine(driver, dir.path(), "engine", &queues, sink.addr, "", "");
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Clients sending without pause until the receiver dies under them.
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let (addr, accepted) = (rx.addr, accepted.clone());
            std::thread::spawn(move || {
                let mut c = common::Client::connect(addr);
                c.cmd("EHLO test.client");
                for i in 0.. {
                    let id = format!("<rxkill{t}.{i}@amqp.test>");
                    let content = format!("Message-ID: {id}\r\n\r\nbody\r\n");
                    match c.try_mail("sender@example.com", &["r@example.net"], &content) {
                        Ok(r) if r.starts_with("250") => accepted.lock().unwrap().push(id),
                        Ok(r) => panic!("{id}: {r}"),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || accepted.lock().unwrap().len()
            >= 300),
        "too few accepted:\n{}",
        rx.log()
    );
    rx.kill();
    for s in senders {
        s.join().unwrap();
    }
    // Every 250 was a confirmed, persistent message on the broker.
    let accepted = accepted.lock().unwrap().clone();
    let keep = sink.keep_dir();
    let missing = || {
        let got = arrived(&keep);
        accepted.iter().filter(|id| !got.contains_key(*id)).count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || missing() == 0),
        "{} of {} accepted messages lost",
        missing(),
        accepted.len()
    );
    assert!(queues.drain(Duration::from_secs(10)));
}

#[test]
fn a_killed_engine_leaves_its_messages_to_the_other() {
    if skip("a_killed_engine_leaves_its_messages_to_the_other") {
        return;
    }
    let driver = Driver::Epoll;
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new("kill", &[Duration::from_secs(1)]);
    let sink = Sink::start(driver, &[]);
    let rx = receiver(driver, dir.path(), &queues, "");
    // Fill the queue first, so that both engines start with work.
    const N: usize = 3000;
    fill(&rx, "kill", N);
    let prefetch = 32;
    let amqp = format!("prefetch = {prefetch}");
    let mut a = engine(driver, dir.path(), "a", &queues, sink.addr, "", &amqp);
    let b = engine(driver, dir.path(), "b", &queues, sink.addr, "", &amqp);
    // Kill -9 engine A as soon as it has delivered something.
    assert!(
        wait_until(Duration::from_secs(20), || !attempts(dir.path(), "a")
            .is_empty()),
        "engine a delivered nothing:\n{}",
        a.log()
    );
    a.kill();
    let keep = sink.keep_dir();
    let at_kill = arrived(&keep).len();
    assert!(at_kill < N, "the run was over before the kill");
    assert!(
        wait_until(Duration::from_secs(60), || arrived(&keep).len() == N),
        "{} of {N} arrived\nb:\n{}",
        arrived(&keep).len(),
        b.log()
    );
    // Duplicates only from the killed engine's window: what it had taken
    // (at most its prefetch per worker) and not acknowledged.
    let dups: usize = arrived(&keep).values().map(|n| n - 1).sum();
    assert!(dups <= 2 * prefetch, "{dups} duplicates");
    assert!(
        !attempts(dir.path(), "b").is_empty(),
        "engine b did nothing"
    );
    assert!(queues.drain(Duration::from_secs(5)));
}
