//! The broker restarts in the middle of a run (`rabbitmqctl stop_app`, then
//! `start_app`): no message that got its 250 is lost, clients are told to
//! retry (451) while the broker is away instead of being held, and the
//! receiver and the engine reconnect by themselves.
//!
//! A file of its own: stopping the broker would disturb other broker tests
//! running beside it, and cargo runs test binaries one at a time. Skipped
//! only with `VERDANT_SKIP_BROKER_TESTS=1`, loudly, like every broker test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::broker::{Queues, arrived, engine, rabbitmqctl, receiver, skip};
use common::sink::Sink;
use common::{Client, Driver, queued_id, wait_until};

/// The broker's application, stopped: started again when dropped, so that
/// a failing test never leaves the machine without its broker.
struct Stopped;

impl Stopped {
    fn broker() -> Stopped {
        rabbitmqctl(&["stop_app"]);
        Stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

/// What the senders saw.
#[derive(Default)]
struct Tally {
    /// Message-IDs answered 250, with their queue ids.
    accepted: Mutex<BTreeMap<String, String>>,
    accepted_count: AtomicUsize,
    /// End-of-data replies of 4xx (the client keeps the message and retries).
    refused: AtomicUsize,
    /// The Message-IDs of those: the broker may have stored them anyway
    /// (a confirm that came too late), so they may arrive without a 250.
    refused_ids: Mutex<BTreeSet<String>>,
}

/// Sends messages `<restart{t}.{i}@amqp.test>` one after another until
/// `stop`, each again after a 4xx until it is accepted, as a real client
/// would.
fn sender(addr: std::net::SocketAddr, t: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut c = Client::connect(addr);
    c.cmd("EHLO test.client");
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("<restart{t}.{i}@amqp.test>");
        let r = c.mail(
            "sender@example.com",
            &["r@example.net"],
            &format!("Message-ID: {id}\r\nSubject: {i}\r\n\r\nbody\r\n"),
        );
        if let Some(queue_id) = queued_id(&r) {
            tally.accepted.lock().unwrap().insert(id, queue_id);
            tally.accepted_count.fetch_add(1, Ordering::Relaxed);
            i += 1;
        } else {
            assert!(r.starts_with("451 4.3.0"), "{id}: {r}");
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tally.refused_ids.lock().unwrap().insert(id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    c.cmd("QUIT");
}

#[test]
fn a_broker_restart_loses_nothing_and_both_services_reconnect() {
    if skip("a_broker_restart_loses_nothing_and_both_services_reconnect") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new("restart", &[Duration::from_secs(1)]);
    let sink = Sink::start(Driver::IoUring, &[]);
    // One service on each I/O driver.
    let rx = receiver(Driver::IoUring, dir.path(), &queues, "");
    let eng = engine(
        Driver::Epoll,
        dir.path(),
        "engine",
        &queues,
        sink.addr,
        "",
        "",
    );
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let (tally, stop, addr) = (tally.clone(), stop.clone(), rx.addr);
            std::thread::spawn(move || sender(addr, t, tally, stop))
        })
        .collect();
    let accepted = || tally.accepted_count.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(20), || accepted() >= 200),
        "only {} accepted before the restart\n{}",
        accepted(),
        rx.log()
    );
    {
        let _stopped = Stopped::broker();
        // Long enough for the senders to meet the outage.
        std::thread::sleep(Duration::from_secs(2));
    }
    let before = accepted();
    // Mail flows again by itself, through reconnected services.
    let resumed = wait_until(Duration::from_secs(30), || accepted() >= before + 200);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    assert!(
        resumed,
        "mail did not flow again after the restart\nreceiver:\n{}",
        rx.log()
    );
    assert!(
        tally.refused.load(Ordering::Relaxed) > 0,
        "no client was told to retry while the broker was away"
    );
    let expected = tally.accepted.lock().unwrap().clone();
    let keep = sink.keep_dir();
    let missing = || -> Vec<(String, String)> {
        let got = arrived(&keep);
        expected
            .iter()
            .filter(|(id, _)| !got.contains_key(*id))
            .map(|(id, q)| (id.clone(), q.clone()))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || missing().is_empty()),
        "{} of {} accepted messages never arrived (Message-ID, queue id): {:?}\nreceiver:\n{}\nengine:\n{}",
        missing().len(),
        expected.len(),
        missing(),
        rx.log(),
        eng.log()
    );
    // Nothing arrived that was neither accepted nor refused with a 451
    // (which says "not queued" but may come too late to undo a store).
    let got = arrived(&keep);
    let refused = tally.refused_ids.lock().unwrap();
    let extra: Vec<_> = got
        .keys()
        .filter(|id| !expected.contains_key(*id) && !refused.contains(*id))
        .collect();
    assert!(extra.is_empty(), "delivered but never sent: {extra:?}");
    for (name, log) in [("receiver", rx.log()), ("engine", eng.log())] {
        assert!(
            log.contains("lost the broker connection"),
            "{name} did not notice the restart:\n{log}"
        );
        assert!(
            log.matches("connected to the broker (connection").count() >= 2,
            "{name} did not reconnect:\n{log}"
        );
    }
    assert!(queues.drain(Duration::from_secs(10)));
}
