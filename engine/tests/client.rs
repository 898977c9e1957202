//! The SMTP client against scripted servers on loopback: what it sends,
//! when, and what it makes of the replies (regressions from the review of
//! issue 3 included).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use verdant_engine::conn::{Conn, ConnError, Timeouts};
use verdant_queue::Envelope;

/// A server that, for each step, reads until what it got so far contains
/// `expect`, records that chunk, and answers `reply`.
fn scripted(
    steps: Vec<(&'static str, &'static str)>,
    greeting: &'static str,
) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(greeting.as_bytes()).unwrap();
        let mut seen = Vec::new();
        for (expect, reply) in steps {
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            while !String::from_utf8_lossy(&got).contains(expect) {
                let n = s.read(&mut buf).unwrap();
                assert!(
                    n > 0,
                    "client closed before sending {expect:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                );
                got.extend_from_slice(&buf[..n]);
            }
            seen.push(String::from_utf8_lossy(&got).into_owned());
            s.write_all(reply.as_bytes()).unwrap();
        }
        seen
    });
    (addr, h)
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        command: Duration::from_secs(5),
        data: Duration::from_secs(5),
    }
}

fn env() -> Envelope {
    Envelope {
        sender: "a@example.com".into(),
        recipients: vec!["b@example.net".into()],
        ..Default::default()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

const EHLO_FULL: &str =
    "250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 1000\r\n";

/// Regression: a greeting longer than the EHLO reply used to make the
/// client read the capabilities from the wrong place (and panic, or see
/// none).
#[test]
fn a_long_greeting_does_not_hide_the_capabilities() {
    let greeting = "220-mx.test ESMTP a very long banner line that goes on and on\r\n220-and on\r\n220 ready\r\n";
    let (addr, server) = scripted(
        vec![("EHLO", "250-x\r\n250-PIPELINING\r\n250 CHUNKING\r\n")],
        greeting,
    );
    let caps = block_on(async move {
        *Conn::open(addr, "client.test", timeouts())
            .await
            .unwrap()
            .capabilities()
    });
    assert!(caps.pipelining && caps.chunking, "{caps:?}");
    server.join().unwrap();
}

#[test]
fn with_pipelining_and_chunking_a_message_is_one_write() {
    let (addr, server) = scripted(
        vec![
            ("EHLO", EHLO_FULL),
            (
                "hello\r\n",
                "250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 queued\r\n",
            ),
        ],
        "220 mx.test\r\n",
    );
    let r = block_on(async move {
        let mut c = Conn::open(addr, "client.test", timeouts()).await.unwrap();
        c.transaction(&env(), &["b@example.net"], b"hello\r\n")
            .await
            .unwrap()
    });
    assert_eq!(r.recipients, vec![None]);
    let seen = server.join().unwrap();
    assert_eq!(
        seen[1],
        "MAIL FROM:<a@example.com> SIZE=7\r\nRCPT TO:<b@example.net>\r\nBDAT 7 LAST\r\nhello\r\n"
    );
}

#[test]
fn a_message_over_the_remote_size_limit_is_refused_before_sending() {
    let (addr, server) = scripted(vec![("EHLO", EHLO_FULL)], "220 mx.test\r\n");
    let refusal = block_on(async move {
        let c = Conn::open(addr, "client.test", timeouts()).await.unwrap();
        c.capabilities().refusal(&env(), 5000)
    });
    assert_eq!(refusal.unwrap().status(), "5.3.4");
    server.join().unwrap();
}

#[test]
fn a_positive_reply_to_data_other_than_354_delivers_nothing() {
    let (addr, server) = scripted(
        vec![
            ("EHLO", "250-mx.test\r\n250 PIPELINING\r\n"),
            ("DATA\r\n", "250 ok\r\n250 ok\r\n250 what content?\r\n"),
        ],
        "220 mx.test\r\n",
    );
    let r = block_on(async move {
        let mut c = Conn::open(addr, "client.test", timeouts()).await.unwrap();
        c.transaction(&env(), &["b@example.net"], b"x\r\n").await
    });
    assert!(matches!(r, Err(ConnError::Protocol(_))), "{r:?}");
    server.join().unwrap();
}

#[test]
fn a_421_marks_the_connection_as_closing() {
    let (addr, server) = scripted(
        vec![
            ("EHLO", "250 mx.test\r\n"),
            ("MAIL", "421 4.3.2 shutting down\r\n"),
        ],
        "220 mx.test\r\n",
    );
    let (r, closing) = block_on(async move {
        let mut c = Conn::open(addr, "client.test", timeouts()).await.unwrap();
        let r = c
            .transaction(&env(), &["b@example.net"], b"x\r\n")
            .await
            .unwrap();
        (r, c.is_closing())
    });
    assert_eq!(r.recipients[0].as_ref().unwrap().code, 421);
    assert!(closing);
    server.join().unwrap();
}

/// Without PIPELINING, RSET after a refused transaction is sent on its
/// own: a strict server (Exim's smtp_enforce_sync) drops clients that talk
/// ahead.
#[test]
fn without_pipelining_rset_is_not_sent_ahead() {
    let (addr, server) = scripted(
        vec![
            ("EHLO", "250 mx.test\r\n"),
            ("MAIL", "550 5.7.1 not you\r\n"),
            ("RSET", "250 ok\r\n"),
            ("MAIL", "250 ok\r\n"),
            ("RCPT", "250 ok\r\n"),
            ("DATA", "354 go\r\n"),
            ("\r\n.\r\n", "250 queued\r\n"),
        ],
        "220 mx.test\r\n",
    );
    let second = block_on(async move {
        let mut c = Conn::open(addr, "client.test", timeouts()).await.unwrap();
        let first = c
            .transaction(&env(), &["b@example.net"], b"x\r\n")
            .await
            .unwrap();
        assert_eq!(first.recipients[0].as_ref().unwrap().code, 550);
        c.transaction(&env(), &["b@example.net"], b"x\r\n")
            .await
            .unwrap()
    });
    assert_eq!(second.recipients, vec![None]);
    let seen = server.join().unwrap();
    assert_eq!(
        seen[2], "RSET\r\n",
        "RSET was sent together with more: {seen:?}"
    );
}

#[test]
fn a_server_refusing_ehlo_gets_helo() {
    let (addr, server) = scripted(
        vec![("EHLO", "502 5.5.1 what?\r\n"), ("HELO", "250 mx.test\r\n")],
        "220 mx.test\r\n",
    );
    let caps = block_on(async move {
        *Conn::open(addr, "client.test", timeouts())
            .await
            .unwrap()
            .capabilities()
    });
    assert!(!caps.pipelining);
    server.join().unwrap();
}
