//! End to end: the real binary receives mail over loopback, on both I/O
//! drivers, and answers bad input with the right codes without going down.

mod common;

use std::time::Duration;

use common::{Driver, Opts, Server, queue_list, queued_id};

fn start(driver: Driver, dir: &tempfile::TempDir, config: &str) -> Server {
    Server::start(Opts {
        config,
        ..Opts::new(driver, &dir.path().join("spool"))
    })
}

#[test]
fn accepted_messages_are_in_the_queue_with_their_envelope() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let server = start(driver, &dir, "");
        let mut c = server.client();
        let ehlo = c.cmd("EHLO client.test");
        for ext in [
            "PIPELINING",
            "SIZE",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ] {
            assert!(ehlo.contains(ext), "{driver:?}: {ext} missing from {ehlo}");
        }
        let mut ids = Vec::new();
        for i in 0..3 {
            let r = c.mail(
                "sender@example.com",
                &["a@example.net", "b@example.org"],
                &format!(
                    "Message-ID: <m{i}@test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n..stuffed\r\n"
                ),
            );
            ids.push(queued_id(&r).unwrap_or_else(|| panic!("{driver:?}: {r}")));
        }
        assert!(c.cmd("QUIT").starts_with("221 2.0.0"));

        let listed = queue_list(&server.spool);
        assert_eq!(listed.len(), 3, "{driver:?}: {listed:?}");
        for (i, m) in listed.iter().enumerate() {
            assert_eq!(m["id"], ids[i].as_str());
            assert_eq!(m["sender"], "sender@example.com");
            assert_eq!(
                m["recipients"],
                serde_json::json!(["a@example.net", "b@example.org"])
            );
            assert_eq!(m["message_id"], format!("<m{i}@test>").as_str());
            assert_eq!(m["state"], "queued");
        }
        let show = std::process::Command::new(common::BIN)
            .args(["queue", "show", &ids[1], "--spool"])
            .arg(&server.spool)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(
            text.contains(&format!("with ESMTP id {}", ids[1])),
            "{text}"
        );
        assert!(text.ends_with("body 1\r\n.stuffed\r\n"), "{text}");
    }
}

#[test]
fn a_pipelined_transaction_gets_all_its_replies() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let server = start(driver, &dir, "");
        let mut c = server.client();
        c.send(b"EHLO p.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n");
        assert!(c.reply().starts_with("250-"));
        assert!(c.reply().starts_with("250 2.1.0"));
        assert!(c.reply().starts_with("250 2.1.5"));
        assert!(c.reply().starts_with("250 2.1.5"));
        assert!(c.reply().starts_with("354"));
        // Content, end of data and the next transaction in one write.
        c.send(b"Subject: p\r\n\r\nx\r\n.\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<d@example.net>\r\nBDAT 4 LAST\r\nhi\r\nQUIT\r\n");
        assert!(queued_id(&c.reply()).is_some());
        assert!(c.reply().starts_with("250 2.1.0"));
        assert!(c.reply().starts_with("250 2.1.5"));
        assert!(queued_id(&c.reply()).is_some());
        assert!(c.reply().starts_with("221"));
        assert_eq!(queue_list(&server.spool).len(), 2, "{driver:?}");
    }
}

#[test]
fn bad_input_gets_the_right_codes_and_nothing_bad_is_queued() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let server = start(
            driver,
            &dir,
            "[smtp]\nmax_message_size = \"2KiB\"\nmax_recipients = 2\n",
        );
        let mut c = server.client();
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("503 5.5.1"));
        c.cmd("EHLO bad.test");
        assert!(c.cmd("RCPT TO:<x@example.net>").starts_with("503 5.5.1"));
        assert!(c.cmd("DATA").starts_with("503 5.5.1"));
        assert!(c.cmd("FOO bar").starts_with("500 5.5.2"));
        assert!(
            c.cmd(&format!("NOOP {}", "x".repeat(600)))
                .starts_with("500 5.5.2")
        );
        assert!(
            c.cmd("MAIL FROM:<a@example.com> SIZE=999999")
                .starts_with("552 5.3.4")
        );
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("503 5.5.1"));
        assert!(c.cmd("RCPT TO:<1@example.net>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<2@example.net>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<3@example.net>").starts_with("452 4.5.3"));
        assert!(c.cmd("DATA").starts_with("354"));
        // Oversize: rejected after the end of data, session goes on.
        let line = format!("{}\r\n", "y".repeat(98));
        c.send(format!("Subject: big\r\n\r\n{}.\r\n", line.repeat(30)).as_bytes());
        assert!(c.reply().starts_with("552 5.3.4"));
        // SMTP smuggling: the bare-LF "end" and the smuggled commands are
        // content; the whole message is refused.
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<1@example.net>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: s\r\n\r\nhi\n.\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<v@example.net>\r\nDATA\r\nsmuggled\r\n.\r\n");
        let r = c.reply();
        assert!(r.starts_with("554 5.6.0"), "{driver:?}: {r}");
        assert!(
            c.cmd("NOOP").starts_with("250 2.0.0"),
            "the smuggled DATA left the session in content"
        );
        assert!(queue_list(&server.spool).is_empty(), "{driver:?}");
        // The server is still fine for the next client.
        let mut c2 = server.client();
        c2.cmd("HELO ok.test");
        assert!(
            queued_id(&c2.mail(
                "a@example.com",
                &["b@example.net"],
                "Subject: ok\r\n\r\nok\r\n"
            ))
            .is_some()
        );
    }
}

#[test]
fn relay_is_refused_outside_the_client_networks() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let server = start(
            driver,
            &dir,
            "[smtp]\nclient_networks = [\"192.0.2.0/24\"]\n",
        );
        let mut c = server.client();
        c.cmd("EHLO outside.test");
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("250"));
        let r = c.cmd("RCPT TO:<b@example.net>");
        assert!(r.starts_with("554 5.7.1"), "{driver:?}: {r}");
        assert!(c.cmd("DATA").starts_with("554 5.5.1"));
    }
}

#[test]
fn idle_clients_are_timed_out_with_421() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let server = start(
            driver,
            &dir,
            "[smtp]\ncommand_timeout = \"1s\"\ndata_timeout = \"1s\"\n",
        );
        let mut c = server.client();
        c.cmd("EHLO idle.test");
        // Waiting for the server's 421 (the read timeout is 30 s).
        let r = c.reply();
        assert!(r.starts_with("421 4.4.2"), "{driver:?}: {r}");
        assert!(c.closed());
        // In the middle of DATA too.
        let mut c = server.client();
        c.cmd("EHLO idle.test");
        c.cmd("MAIL FROM:<a@example.com>");
        c.cmd("RCPT TO:<b@example.net>");
        c.cmd("DATA");
        c.send(b"Subject: half\r\n");
        assert!(c.reply().starts_with("421 4.4.2"));
        assert!(queue_list(&server.spool).is_empty());
    }
}

#[test]
fn connections_per_client_address_are_limited() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let server = start(driver, &dir, "[smtp]\nmax_connections_per_ip = 2\n");
        let a = server.client();
        let _b = server.client();
        let mut third = std::net::TcpStream::connect(server.addr).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut third, &mut text).unwrap();
        assert!(text.starts_with("421 4.7.0"), "{driver:?}: {text}");
        drop(a);
        assert!(
            common::wait_until(Duration::from_secs(5), || {
                let mut s = std::net::TcpStream::connect(server.addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 4];
                std::io::Read::read_exact(&mut s, &mut buf).is_ok() && &buf == b"220 "
            }),
            "a slot was not released"
        );
    }
}

#[test]
fn pythons_smtplib_sends_mail() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let server = start(driver, &dir, "");
        let script = format!(
            r#"
import smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "py@example.com"
m["To"] = "r@example.net"
m["Subject"] = "smtplib"
m["Message-ID"] = "<py@test>"
m.set_content("caf\u00e9\n.leading dot\n")
with smtplib.SMTP("127.0.0.1", {port}) as s:
    s.ehlo("py.test")
    assert s.has_extn("pipelining") and s.has_extn("smtputf8")
    s.send_message(m)
    s.send_message(m, to_addrs=["x@example.net", "y@example.net"])
"#,
            port = server.addr.port()
        );
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{driver:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = queue_list(&server.spool);
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[1]["recipients"],
            serde_json::json!(["x@example.net", "y@example.net"])
        );
        assert_eq!(listed[0]["message_id"], "<py@test>");
    }
}

#[test]
fn sigterm_stops_accepting_but_lets_an_open_transaction_finish() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(driver, &dir, "");
        let mut c = server.client();
        c.cmd("EHLO stop.test");
        assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        server.terminate();
        assert!(
            common::wait_until(Duration::from_secs(5), || server
                .log()
                .contains("stopping on signal")),
            "{}",
            server.log()
        );
        // New clients are refused now...
        assert!(
            common::wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(
                server.addr
            )
            .is_err()),
            "{driver:?}: still accepting after SIGTERM"
        );
        // ...but the open transaction completes, durably.
        c.send(b"Subject: last\r\n\r\nlast one\r\n.\r\n");
        let r = c.reply();
        assert!(queued_id(&r).is_some(), "{driver:?}: {r}");
        assert!(c.cmd("QUIT").starts_with("221"));
        drop(c);
        let exited = common::wait_until(Duration::from_secs(10), || {
            matches!(server.child.try_wait(), Ok(Some(_)))
        });
        assert!(exited, "{driver:?}: did not exit after its last session");
        let status = server.child.wait().unwrap();
        assert!(status.success(), "{driver:?}: {status:?}\n{}", server.log());
        assert_eq!(queue_list(&server.spool).len(), 1);
    }
}
