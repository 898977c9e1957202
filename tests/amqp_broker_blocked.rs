//! The broker raises a memory alarm and blocks publishing connections
//! (`connection.blocked`): the receiver answers 451 instead of holding its
//! clients, the engine goes on delivering what was queued (it consumes and
//! acknowledges on a connection of its own), and once the alarm is over
//! mail is accepted again on the same connection. Nothing answered 250 is
//! lost.
//!
//! A file of its own: the alarm blocks every publisher on the broker, so it
//! must not run beside other broker tests (cargo runs test binaries one at
//! a time). Skipped only with `VERDANT_SKIP_BROKER_TESTS=1`, loudly.

mod common;

use std::time::{Duration, Instant};

use common::broker::{Queues, arrived, engine, rabbitmqctl, receiver, skip};
use common::sink::Sink;
use common::{Client, Driver, queued_id, wait_until};

fn memory_alarm() -> bool {
    rabbitmqctl(&["eval", "rabbit_alarm:get_alarms()."]).contains("memory")
}

/// A memory alarm on the broker (its high watermark set next to nothing),
/// lifted when dropped, also when the test fails.
struct Alarm {
    watermark: String,
}

impl Alarm {
    fn raise() -> Alarm {
        let watermark = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
            .trim()
            .to_string();
        assert!(
            watermark.parse::<f64>().is_ok(),
            "a relative watermark, got {watermark:?}"
        );
        let alarm = Alarm { watermark };
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.0001"]);
        assert!(
            wait_until(Duration::from_secs(20), memory_alarm),
            "the broker raised no memory alarm"
        );
        alarm
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", &self.watermark]);
        let cleared = wait_until(Duration::from_secs(20), || !memory_alarm());
        if !cleared && !std::thread::panicking() {
            panic!("the broker's memory alarm did not clear");
        }
    }
}

fn message(i: usize) -> (String, String) {
    let id = format!("<blocked{i}@amqp.test>");
    let text = format!("Message-ID: {id}\r\nSubject: {i}\r\n\r\nbody\r\n");
    (id, text)
}

#[test]
fn a_blocked_broker_gets_451_and_mail_flows_again_after() {
    if skip("a_blocked_broker_gets_451_and_mail_flows_again_after") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new("blocked", &[Duration::from_secs(1)]);
    let sink = Sink::start(Driver::IoUring, &[]);
    let rx = receiver(
        Driver::IoUring,
        dir.path(),
        &queues,
        "confirm_timeout = \"2s\"",
    );
    let mut accepted = Vec::new();
    let mut c = Client::connect(rx.addr);
    c.cmd("EHLO test.client");
    let send = |c: &mut Client, i: usize| {
        let (id, text) = message(i);
        let r = c.mail("sender@example.com", &["r@example.net"], &text);
        (id, r)
    };
    for i in 0..20 {
        let (id, r) = send(&mut c, i);
        assert!(queued_id(&r).is_some(), "{r}");
        accepted.push(id);
    }
    let keep = sink.keep_dir();
    let eng;
    {
        let _alarm = Alarm::raise();
        // The engine starts during the alarm and still delivers: it only
        // consumes and acknowledges, on a connection that never publishes.
        eng = engine(
            Driver::Epoll,
            dir.path(),
            "engine",
            &queues,
            sink.addr,
            "",
            "",
        );
        assert!(
            wait_until(Duration::from_secs(20), || arrived(&keep).len() == 20),
            "{} of 20 delivered during the alarm",
            arrived(&keep).len()
        );
        // New mail is refused with a temporary error, not held: the first
        // within the confirm timeout, the next ones at once.
        for i in 20..23 {
            let started = Instant::now();
            let (_, r) = send(&mut c, i);
            assert!(r.starts_with("451 4.3.0"), "during the alarm: {r}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the client was held {:?}",
                started.elapsed()
            );
        }
    }
    // The alarm is over: mail is accepted again (the client retries).
    let mut i = 23;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let (id, r) = send(&mut c, i);
            i += 1;
            let ok = queued_id(&r).is_some();
            if ok {
                accepted.push(id);
            }
            ok
        }),
        "no mail accepted after the alarm\n{}",
        rx.log()
    );
    for _ in 0..10 {
        let (id, r) = send(&mut c, i);
        i += 1;
        assert!(queued_id(&r).is_some(), "after the alarm: {r}");
        accepted.push(id);
    }
    c.cmd("QUIT");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let got = arrived(&keep);
            accepted.iter().all(|id| got.contains_key(id))
        }),
        "accepted mail missing at the sink; receiver:\n{}\nengine:\n{}",
        rx.log(),
        eng.log()
    );
    let log = rx.log();
    assert!(log.contains("the broker blocked publishing"), "{log}");
    assert!(log.contains("the broker unblocked publishing"), "{log}");
    // It waited on the same connection: a new one would be blocked too.
    assert_eq!(
        log.matches("connected to the broker (connection").count(),
        1,
        "{log}"
    );
    assert!(queues.drain(Duration::from_secs(10)));
}
