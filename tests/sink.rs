//! End to end: `verdant sink`, the real binary over loopback on both I/O
//! drivers, keeps what it accepts with the right envelope, refuses what it
//! is told to with the replies it is told to, and its stats JSON counts
//! exactly what the clients saw.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::sink::Sink;
use common::{BIN, Driver, queued_id, wait_until};
use serde_json::Value;

/// The kept envelope and content of the message queued as `id`.
fn kept(dir: &Path, id: &str) -> (Value, String) {
    let json = std::fs::read_to_string(dir.join(format!("{id}.json"))).unwrap();
    let eml = std::fs::read_to_string(dir.join(format!("{id}.eml"))).unwrap();
    (serde_json::from_str(&json).unwrap(), eml)
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn accepted_messages_are_kept_with_their_envelope() {
    for driver in Driver::ALL {
        let mut sink = Sink::start(driver, &[]);
        let mut c = sink.client();
        let before = now_micros();
        let mut ids = Vec::new();
        for (i, to) in [
            &["one@example.net"][..],
            &["a@example.net", "b@example.org"][..],
        ]
        .into_iter()
        .enumerate()
        {
            let r = c.mail(
                "sender@example.com",
                to,
                &format!("Subject: {i}\r\n\r\nbody {i}\r\n..stuffed\r\n"),
            );
            let id = queued_id(&r).unwrap_or_else(|| panic!("{driver:?}: {r}"));
            ids.push((id, to));
        }
        // BDAT and the null sender too.
        c.send(b"MAIL FROM:<>\r\nRCPT TO:<bdat@example.net>\r\nBDAT 10 LAST\r\nbounce\r\n\r\n");
        assert!(c.reply().starts_with("250 2.1.0"));
        assert!(c.reply().starts_with("250 2.1.5"));
        let r = c.reply();
        let bdat_id = queued_id(&r).unwrap_or_else(|| panic!("{driver:?}: {r}"));
        assert!(c.cmd("QUIT").starts_with("221"));

        for (i, (id, to)) in ids.iter().enumerate() {
            let (env, eml) = kept(&sink.keep_dir(), id);
            assert_eq!(env["sender"], "sender@example.com", "{driver:?}");
            assert_eq!(env["recipients"], serde_json::json!(to), "{driver:?}");
            let at = env["received_at"].as_u64().unwrap();
            assert!(at >= before && at <= now_micros(), "{driver:?}: {at}");
            assert!(eml.starts_with("Received: from client.test ([127.0.0.1])"));
            assert!(eml.contains(&format!("with ESMTP id {id}")), "{eml}");
            assert!(
                eml.ends_with(&format!("Subject: {i}\r\n\r\nbody {i}\r\n.stuffed\r\n")),
                "{driver:?}: {eml:?}"
            );
        }
        let (env, eml) = kept(&sink.keep_dir(), &bdat_id);
        assert_eq!(env["sender"], "");
        assert_eq!(env["recipients"], serde_json::json!(["bdat@example.net"]));
        assert!(eml.ends_with("\r\nbounce\r\n\r\n"), "{eml:?}");
        assert_eq!(std::fs::read_dir(sink.keep_dir()).unwrap().count(), 6);

        let stats = sink.stop_with(libc::SIGTERM);
        assert_eq!(stats["messages_accepted"], 3, "{driver:?}: {stats}");
        assert_eq!(stats["recipients_accepted"], 4, "{driver:?}: {stats}");
    }
}

#[test]
fn perm_fail_rcpt_100_refuses_every_recipient_with_5xx() {
    for driver in Driver::ALL {
        let mut sink = Sink::start(driver, &["--perm-fail-rcpt", "100"]);
        let mut c = sink.client();
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("250"));
        for i in 0..25 {
            let r = c.cmd(&format!("RCPT TO:<r{i}@example.net>"));
            assert!(r.starts_with("550 5.1.1 "), "{driver:?}: {r}");
        }
        // Refusals are not the client's errors: no 421 after 20 of them.
        assert!(c.cmd("DATA").starts_with("554 5.5.1"), "{driver:?}");
        assert!(c.cmd("NOOP").starts_with("250"), "{driver:?}");
        let stats = sink.stop_with(libc::SIGTERM);
        assert_eq!(stats["recipients_refused_perm"], 25, "{driver:?}: {stats}");
        assert_eq!(stats["recipients_refused_temp"], 0, "{driver:?}: {stats}");
        assert_eq!(stats["messages_accepted"], 0, "{driver:?}: {stats}");
    }
}

#[test]
fn temp_fail_msg_100_refuses_at_end_of_data_with_4xx() {
    for driver in Driver::ALL {
        let mut sink = Sink::start(driver, &["--temp-fail-msg", "100"]);
        let mut c = sink.client();
        for _ in 0..3 {
            let r = c.mail(
                "a@example.com",
                &["b@example.net"],
                "Subject: t\r\n\r\nx\r\n",
            );
            assert!(r.starts_with("451 4.3.0 "), "{driver:?}: {r}");
        }
        assert!(c.cmd("NOOP").starts_with("250"), "{driver:?}");
        let stats = sink.stop_with(libc::SIGINT);
        assert_eq!(stats["messages_refused_temp"], 3, "{driver:?}: {stats}");
        assert_eq!(stats["messages_accepted"], 0, "{driver:?}: {stats}");
        assert_eq!(std::fs::read_dir(sink.keep_dir()).unwrap().count(), 0);
    }
}

#[test]
fn a_listed_recipient_gets_exactly_its_reply() {
    for driver in Driver::ALL {
        let mut sink = Sink::start(
            driver,
            &[
                "--fail-rcpt",
                "bad@x.test=550 5.1.1 no such user",
                "--fail-rcpt",
                "<busy@x.test>=452 4.2.2 mailbox full",
            ],
        );
        let mut c = sink.client();
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("250"));
        assert_eq!(c.cmd("RCPT TO:<bad@x.test>"), "550 5.1.1 no such user\r\n");
        assert_eq!(c.cmd("RCPT TO:<BAD@X.test>"), "550 5.1.1 no such user\r\n");
        assert_eq!(c.cmd("RCPT TO:<busy@x.test>"), "452 4.2.2 mailbox full\r\n");
        assert!(c.cmd("RCPT TO:<good@x.test>").starts_with("250 2.1.5"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: t\r\n\r\nx\r\n.\r\n");
        let id = queued_id(&c.reply()).expect("queued");
        let (env, _) = kept(&sink.keep_dir(), &id);
        assert_eq!(env["recipients"], serde_json::json!(["good@x.test"]));
        let stats = sink.stop_with(libc::SIGTERM);
        assert_eq!(stats["recipients_refused_perm"], 2, "{driver:?}: {stats}");
        assert_eq!(stats["recipients_refused_temp"], 1, "{driver:?}: {stats}");
        assert_eq!(stats["recipients_accepted"], 1, "{driver:?}: {stats}");
    }
}

#[test]
fn stats_json_counts_what_the_clients_saw() {
    for driver in Driver::ALL {
        let mut sink = Sink::start(
            driver,
            &[
                "--temp-fail-msg",
                "20",
                "--perm-fail-msg",
                "10",
                "--temp-fail-rcpt",
                "10",
                "--seed",
                "7",
                "--fail-rcpt",
                "bad@x.test=550 5.1.1 no such user",
            ],
        );
        // What the clients saw, to compare with what the sink counted.
        let (mut acc, mut m_temp, mut m_perm) = (0, 0, 0);
        let (mut r_acc, mut r_temp, mut r_perm) = (0, 0, 0);
        let connections = 4;
        for conn in 0..connections {
            let mut c = sink.client();
            for m in 0..25 {
                assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("250"));
                let mut ok = 0;
                for to in ["x@y.test", "z@y.test", "bad@x.test"] {
                    let r = c.cmd(&format!("RCPT TO:<{to}>"));
                    match &r[..1] {
                        "2" => ok += 1,
                        "4" => r_temp += 1,
                        "5" => r_perm += 1,
                        _ => panic!("{r}"),
                    }
                }
                if ok == 0 {
                    assert!(c.cmd("RSET").starts_with("250"));
                    continue;
                }
                assert!(c.cmd("DATA").starts_with("354"));
                c.send(format!("Subject: {conn}/{m}\r\n\r\nhello\r\n.\r\n").as_bytes());
                let r = c.reply();
                match &r[..1] {
                    "2" => {
                        acc += 1;
                        r_acc += ok;
                    }
                    "4" => m_temp += 1,
                    "5" => m_perm += 1,
                    _ => panic!("{r}"),
                }
            }
        }
        // Some of everything happened (all but certain with 100 messages).
        assert!(
            acc > 0 && m_temp > 0 && m_perm > 0 && r_temp > 0,
            "{driver:?}"
        );
        assert_eq!(r_perm, 4 * 25, "{driver:?}");
        let bytes: u64 = std::fs::read_dir(sink.keep_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let want = serde_json::json!({
            "connections": connections,
            "messages_accepted": acc,
            "messages_refused_temp": m_temp,
            "messages_refused_perm": m_perm,
            "recipients_accepted": r_acc,
            "recipients_refused_temp": r_temp,
            "recipients_refused_perm": r_perm,
            "bytes": bytes,
        });
        let counts = |s: &Value| {
            let mut o = serde_json::Map::new();
            for k in want.as_object().unwrap().keys() {
                o.insert(k.clone(), s[k].clone());
            }
            Value::Object(o)
        };
        // Written every second while running...
        assert!(
            wait_until(Duration::from_secs(5), || sink
                .stats()
                .is_some_and(|s| s["final"] == false && counts(&s) == want)),
            "{driver:?}: running stats {:?}, want {want}",
            sink.stats()
        );
        // ... and at exit.
        let stats = sink.stop_with(libc::SIGTERM);
        assert_eq!(counts(&stats), want, "{driver:?}");
        assert!(stats["elapsed_secs"].as_f64().unwrap() > 0.0);
        assert!(
            sink.log()
                .contains(&format!("messages: {acc} accepted, {m_temp} temp-refused")),
            "{}",
            sink.log()
        );
    }
}

#[test]
fn the_sent_header_gives_a_latency_sample() {
    for driver in Driver::ALL {
        let mut sink = Sink::start(driver, &[]);
        let mut c = sink.client();
        // Sent 50 ms ago, as far as the header says.
        let sent = now_micros() - 50_000;
        let r = c.mail(
            "a@example.com",
            &["b@example.net"],
            &format!("Subject: t\r\nX-Verdant-Sent: {sent}\r\n\r\nx\r\n"),
        );
        assert!(queued_id(&r).is_some(), "{r}");
        // No header, or the header only in the body: no sample.
        for body in [
            "Subject: u\r\n\r\nx\r\n".to_string(),
            format!("Subject: v\r\n\r\nX-Verdant-Sent: {sent}\r\n"),
        ] {
            let r = c.mail("a@example.com", &["b@example.net"], &body);
            assert!(queued_id(&r).is_some(), "{r}");
        }
        let stats = sink.stop_with(libc::SIGTERM);
        let l = &stats["latency_us"];
        assert_eq!(l["samples"], 1, "{driver:?}: {stats}");
        let p50 = l["p50"].as_u64().unwrap();
        assert!((50_000..30_000_000).contains(&p50), "{driver:?}: {stats}");
        assert_eq!(l["max"], l["p50"], "{driver:?}: {stats}");
    }
}

#[test]
fn duration_stops_the_sink_and_open_sessions_end() {
    for driver in Driver::ALL {
        let mut sink = Sink::start(driver, &["--duration", "1.5"]);
        let mut c = sink.client();
        let stats = sink.wait_exit(Duration::from_secs(10));
        assert_eq!(stats["connections"], 1, "{driver:?}: {stats}");
        assert!(sink.log().contains("stopped (--duration elapsed)"));
        // The idle session was ended with the sink.
        assert!(c.closed(), "{driver:?}");
    }
}

#[test]
fn bad_settings_are_refused_at_start() {
    for args in [
        &["--perm-fail-rcpt", "101"][..],
        &["--temp-fail-msg", "60", "--perm-fail-msg", "50"][..],
        &["--fail-rcpt", "x@y.test=250 2.0.0 ok"][..],
        &["--fail-rcpt", "no-reply"][..],
        &["--duration", "-1"][..],
    ] {
        let out = Command::new(BIN)
            .args(["sink", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("sink listening"), "{args:?}: {err}");
    }
}
