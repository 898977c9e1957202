//! kill -9 during a load, then restart: every message that got a 250 is in
//! the spool exactly once and intact (issue 2, "survives kill -9").

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Driver, Opts, Server, queue_list, queued_id};
use verdant_queue::QueueId;
use verdant_queue::spool::scan::{self, ScanOptions};

/// A message body unique to (client, n), with sizes that vary so that
/// frames straddle write boundaries differently.
fn content(client: usize, n: usize) -> String {
    format!(
        "Message-ID: <{client}.{n}@crash.test>\r\nSubject: crash {client} {n}\r\n\r\n{}\r\n",
        format!("line {n} of client {client}\r\n").repeat(1 + (n * 7 + client) % 200)
    )
}

#[test]
fn every_acknowledged_message_survives_kill_9_exactly_once() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let mut server = Server::start(Opts::new(driver, &spool));
        let addr = server.addr;
        let stop = Arc::new(AtomicBool::new(false));
        // queue id -> (client, n) for every 250 received.
        let acked: Arc<Mutex<HashMap<String, (usize, usize)>>> = Arc::default();
        let mut clients = Vec::new();
        for client in 0..8 {
            let stop = stop.clone();
            let acked = acked.clone();
            clients.push(std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.cmd("EHLO crash.test");
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // The server may die at any byte: stop quietly then.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.mail("s@example.com", &["r@example.net"], &content(client, n))
                    }));
                    match r.ok().as_deref().and_then(queued_id) {
                        Some(id) => {
                            acked.lock().unwrap().insert(id, (client, n));
                        }
                        None => return,
                    }
                }
            }));
        }
        // Let the load run, then kill the server in the middle of it.
        assert!(common::wait_until(Duration::from_secs(20), || acked
            .lock()
            .unwrap()
            .len()
            >= 300));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.join();
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= 300);

        // Restart on the same spool: recovery truncates any torn tail.
        let server = Server::start(Opts::new(driver, &spool));
        assert!(server.log().contains("recovered from the spool"));
        drop(server);

        let names = scan::list_segments(&spool).unwrap();
        let s = scan::scan(&spool, &names, ScanOptions::default()).unwrap();
        assert_eq!(s.undecodable, 0);
        let listed = queue_list(&spool);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for m in &listed {
            *seen
                .entry(m["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        for (id, (client, n)) in &acked {
            assert_eq!(
                seen.get(id),
                Some(&1),
                "{driver:?}: acknowledged {id} listed {:?} times",
                seen.get(id)
            );
            let qid: QueueId = id.parse().unwrap();
            let body = scan::read_body(&spool, &s.messages[&qid]).unwrap();
            let want = content(*client, *n);
            assert!(
                body.ends_with(want.as_bytes()),
                "{driver:?}: {id} is damaged: {:?}",
                String::from_utf8_lossy(&body)
            );
            let env = &s.messages[&qid].envelope;
            assert_eq!(
                (env.sender.as_str(), env.recipients.as_slice()),
                ("s@example.com", &["r@example.net".to_string()][..])
            );
        }
    }
}
