//! A spool write that fails makes the receiver answer 451 4.3.0, never 250,
//! and the server carries on (issue 2, §4).
//!
//! The failure is real: the server runs under a file-size limit
//! (RLIMIT_FSIZE), so appending past it fails with EFBIG.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{Driver, Server, queue_list, queued_id};

#[test]
fn a_failed_spool_write_is_answered_451_and_the_server_recovers() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let addr = common::free_addr();
        // Receive only: delivery would look the recipient's domain up.
        let conf = dir.path().join("verdant.toml");
        std::fs::write(
            &conf,
            "[delivery]\nenabled = false\n[metrics]\nlisten = \"\"\n[footprint]\nledger = \"\"\n",
        )
        .unwrap();
        let mut cmd = Command::new(common::BIN);
        cmd.args([
            "serve",
            "--config",
            conf.to_str().unwrap(),
            "--workers",
            "1",
            "--listen",
            &addr.to_string(),
            "--spool",
        ])
        .arg(&spool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if driver == Driver::Epoll {
            cmd.env("MONOIO_FORCE_LEGACY_DRIVER", "1");
        }
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64 * 1024,
                    rlim_max: 64 * 1024,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let server = Server::spawn(cmd, addr, &spool, driver);
        let mut c = server.client();
        c.cmd("EHLO disk.test");
        let small = "Subject: small\r\n\r\nsmall\r\n";
        assert!(queued_id(&c.mail("a@example.com", &["b@example.net"], small)).is_some());
        let big = format!(
            "Subject: big\r\n\r\n{}",
            format!("{}\r\n", "z".repeat(78)).repeat(1000)
        );
        let r = c.mail("a@example.com", &["b@example.net"], &big);
        assert!(r.starts_with("451 4.3.0"), "{driver:?}: {r}");
        // The spool continues in a fresh segment: small mail is accepted again.
        let r = c.mail("a@example.com", &["b@example.net"], small);
        assert!(queued_id(&r).is_some(), "{driver:?}: {r}\n{}", server.log());
        assert_eq!(queue_list(&spool).len(), 2, "{driver:?}");
    }
}
