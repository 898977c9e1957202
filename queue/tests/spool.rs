//! The embedded spool against a real directory, on both monoio drivers.

use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use verdant_queue::spool::scan::{self, ScanOptions};
use verdant_queue::{Envelope, Outcome, Queue, QueueId, Spool, SpoolOptions};

/// Runs `body` once on io_uring and once on epoll, each on a fresh runtime
/// (dropping a runtime drops the spool's tasks and so releases its lock).
fn on_both_drivers<F, Fut>(body: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime (is io_uring disabled on this kernel?)")
        .block_on(body());
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("epoll runtime")
        .block_on(body());
}

fn block_on<Fut: Future>(f: Fut) -> Fut::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

fn opts(dir: &Path, worker: u16, workers: u16) -> SpoolOptions {
    SpoolOptions {
        dir: dir.to_path_buf(),
        worker,
        workers,
        commit_window: Duration::ZERO,
        segment_size: 64 << 20,
    }
}

fn envelope(n: usize) -> Envelope {
    Envelope {
        sender: format!("sender{n}@example.com"),
        recipients: vec![format!("r{n}@example.net"), "other@example.org".into()],
        received_at: 1_700_000_000_000_000 + n as u64,
        flags: 0,
    }
}

fn body(n: usize) -> Vec<u8> {
    format!(
        "Message-ID: <{n}@test>\r\nSubject: {n}\r\n\r\n{}\r\n",
        "x".repeat(n % 300)
    )
    .into_bytes()
}

/// Enqueues messages 0..n concurrently and returns their ids.
async fn enqueue_many(spool: &Spool, n: usize) -> Vec<QueueId> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = spool.clone();
        tasks.push(monoio::spawn(async move {
            let id = s.next_id();
            s.enqueue(id, &envelope(i), &body(i)).await.unwrap();
            id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await);
    }
    ids
}

#[test]
fn concurrent_appends_share_commits_and_survive_reopen() {
    on_both_drivers(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (spool, recovered) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        assert!(recovered.is_empty());
        let ids = enqueue_many(&spool, 200).await;
        // 200 appends issued in one turn must not take 200 fsyncs.
        assert!(
            spool.commits() < 50,
            "{} commits for 200 appends",
            spool.commits()
        );
        assert_eq!(spool.live(), 200);
        drop(spool);

        // Recovery by a read-only scan, as an inspecting operator sees it.
        let names = scan::list_segments(dir.path()).unwrap();
        let s = scan::scan(dir.path(), &names, ScanOptions { message_ids: true }).unwrap();
        assert_eq!(s.messages.len(), 200);
        for (i, id) in ids.iter().enumerate() {
            let m = &s.messages[id];
            assert_eq!(m.envelope, envelope(i));
            assert_eq!(scan::read_body(dir.path(), m).unwrap(), body(i));
            assert_eq!(
                m.message_id.as_deref(),
                Some(format!("<{i}@test>").as_str())
            );
        }
    });
}

#[test]
fn reopen_recovers_live_messages_and_continues_ids_above_them() {
    let dir = tempfile::tempdir().unwrap();
    let ids = block_on(async {
        let (spool, _) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        let ids = enqueue_many(&spool, 10).await;
        spool
            .record_outcome(ids[0], &Outcome::Delivered)
            .await
            .unwrap();
        spool
            .record_outcome(ids[1], &Outcome::Bounced)
            .await
            .unwrap();
        let deferred = Outcome::Deferred {
            until: 5,
            attempt: 1,
            pending: vec![1],
            error: "451 4.4.1 no answer".into(),
        };
        spool.record_outcome(ids[2], &deferred).await.unwrap();
        ids
    });
    block_on(async {
        let (spool, recovered) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        let got: Vec<QueueId> = recovered.iter().map(|m| m.id).collect();
        assert_eq!(got, ids[2..].to_vec());
        assert_eq!(
            recovered[0].outcome,
            Some(Outcome::Deferred {
                until: 5,
                attempt: 1,
                pending: vec![1],
                error: "451 4.4.1 no answer".into(),
            })
        );
        assert!(spool.next_id() > *ids.last().unwrap());
    });
}

#[test]
fn torn_tail_is_truncated_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ids = block_on(async {
        let (spool, _) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        enqueue_many(&spool, 5).await
    });
    let seg = dir.path().join(
        scan::list_segments(dir.path())
            .unwrap()
            .last()
            .unwrap()
            .file_name(),
    );
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // Half a frame: a plausible header and a few payload bytes, as a crash
    // in the middle of a write leaves it.
    let mut torn = std::fs::read(&seg).unwrap();
    torn.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 1, 9]);
    std::fs::write(&seg, &torn).unwrap();
    block_on(async {
        let (_spool, recovered) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        assert_eq!(recovered.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    });
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
}

#[test]
fn finished_segments_are_deleted_but_not_before_what_they_pin() {
    let dir = tempfile::tempdir().unwrap();
    let small = SpoolOptions {
        segment_size: 1,
        ..opts(dir.path(), 0, 1)
    };
    block_on(async {
        // segment_size 1: every commit rotates, so each message sits in a
        // segment of its own and each outcome lands in a later one.
        let (spool, _) = Spool::open(small.clone()).unwrap();
        let s = spool.clone();
        let a = s.next_id();
        s.enqueue(a, &envelope(1), &body(1)).await.unwrap();
        let b = s.next_id();
        s.enqueue(b, &envelope(2), &body(2)).await.unwrap();
        let before = spool.segments();
        spool.record_outcome(a, &Outcome::Delivered).await.unwrap();
        // a's outcome went into a new segment; a's segment was deleted, and
        // with it gone the outcome's segment too once rotated away. b stays.
        assert!(
            spool.segments() <= before,
            "nothing was collected: {before} -> {}",
            spool.segments()
        );
        assert_eq!(spool.live(), 1);
        spool.record_outcome(b, &Outcome::Delivered).await.unwrap();
        assert_eq!(spool.live(), 0);
    });
    block_on(async {
        let (spool, recovered) = Spool::open(small).unwrap();
        assert!(
            recovered.is_empty(),
            "a delivered message came back: {recovered:?}"
        );
        // Only the fresh current segment is left.
        assert_eq!(spool.segments(), 1);
        assert_eq!(scan::list_segments(dir.path()).unwrap().len(), 1);
    });
}

#[test]
fn a_final_outcome_outlives_its_message_segment_until_that_is_gone() {
    // Pin rule, checked on disk: remove the message segment's deletion by
    // hand (as a crash before unlink would leave it) and the outcome must
    // still be there to keep the message final.
    let dir = tempfile::tempdir().unwrap();
    let small = SpoolOptions {
        segment_size: 1,
        ..opts(dir.path(), 0, 1)
    };
    let (a, keep) = block_on(async {
        let (spool, _) = Spool::open(small.clone()).unwrap();
        let a = spool.next_id();
        spool.enqueue(a, &envelope(1), &body(1)).await.unwrap();
        let keep = spool.next_id();
        spool.enqueue(keep, &envelope(2), &body(2)).await.unwrap();
        spool.record_outcome(a, &Outcome::Delivered).await.unwrap();
        (a, keep)
    });
    let names = scan::list_segments(dir.path()).unwrap();
    let s = scan::scan(dir.path(), &names, ScanOptions::default()).unwrap();
    assert!(!s.messages.contains_key(&a) || s.messages[&a].outcome == Some(Outcome::Delivered));
    assert!(s.messages.contains_key(&keep));
    block_on(async {
        let (_spool, recovered) = Spool::open(small).unwrap();
        assert_eq!(
            recovered.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![keep]
        );
    });
}

#[test]
fn fewer_workers_adopt_the_segments_of_former_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ids = Rc::new(std::cell::RefCell::new(Vec::new()));
    for w in 0..3u16 {
        let ids = ids.clone();
        let d = dir.path().to_path_buf();
        block_on(async move {
            let (spool, _) = Spool::open(opts(&d, w, 3)).unwrap();
            let new = enqueue_many(&spool, 4).await;
            ids.borrow_mut().extend(new);
        });
    }
    block_on(async {
        let (_spool, recovered) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        let mut got: Vec<QueueId> = recovered.iter().map(|m| m.id).collect();
        let mut want = ids.borrow().clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    });
}

#[test]
fn a_second_process_cannot_open_the_same_worker() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (_spool, _) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        let second = Spool::open(opts(dir.path(), 0, 1));
        let err = second.err().expect("second open must fail");
        assert!(err.to_string().contains("in use"), "{err}");
    });
}

/// Regression (review of issue 2): 4 workers → 2 → 4 must not revive a
/// message delivered while the worker count was 2.
#[test]
fn worker_count_down_then_up_revives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (m, n) = block_on(async {
        let (spool, _) = Spool::open(opts(dir.path(), 2, 4)).unwrap();
        let ids = enqueue_many(&spool, 2).await;
        (ids[0], ids[1])
    });
    block_on(async {
        let (spool, recovered) = Spool::open(opts(dir.path(), 0, 2)).unwrap();
        let got: Vec<QueueId> = recovered.iter().map(|r| r.id).collect();
        assert_eq!(got, vec![m, n]);
        spool.record_outcome(m, &Outcome::Delivered).await.unwrap();
    });
    // Worker 2's old segments were adopted and are gone.
    assert!(
        scan::list_segments(dir.path())
            .unwrap()
            .iter()
            .all(|s| s.worker == 0)
    );
    let mut all = Vec::new();
    for w in 0..4 {
        let d = dir.path().to_path_buf();
        all.extend(block_on(async move {
            let (_spool, recovered) = Spool::open(opts(&d, w, 4)).unwrap();
            recovered.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }));
    }
    assert_eq!(
        all,
        vec![n],
        "delivered message came back, or the live one was lost"
    );
}

#[test]
fn damage_in_an_older_segment_is_reported_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let small = SpoolOptions {
        segment_size: 1,
        ..opts(dir.path(), 0, 1)
    };
    let ids = block_on(async {
        let (spool, _) = Spool::open(small.clone()).unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            let id = spool.next_id();
            spool.enqueue(id, &envelope(i), &body(i)).await.unwrap();
            ids.push(id);
        }
        ids
    });
    // Segments now: one message each, then an empty current one.
    let names = scan::list_segments(dir.path()).unwrap();
    let victim = dir.path().join(names[1].file_name());
    let mut bytes = std::fs::read(&victim).unwrap();
    let len = bytes.len();
    bytes[len - 5] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    block_on(async {
        let (_spool, recovered) = Spool::open(small).unwrap();
        let got: Vec<QueueId> = recovered.iter().map(|r| r.id).collect();
        assert_eq!(got, vec![ids[0], ids[2]]);
    });
    assert_eq!(
        std::fs::read(&victim).unwrap().len(),
        len,
        "damaged file was modified"
    );
}

#[test]
fn damage_inside_the_newest_segment_is_saved_aside_then_cut() {
    let dir = tempfile::tempdir().unwrap();
    let ids = block_on(async {
        let (spool, _) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        enqueue_many(&spool, 3).await
    });
    let names = scan::list_segments(dir.path()).unwrap();
    let seg = dir.path().join(names.last().unwrap().file_name());
    let s = scan::scan(dir.path(), &names, ScanOptions::default()).unwrap();
    let second = s.messages[&ids[1]].body_offset;
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[second as usize + 3] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    block_on(async {
        let (_spool, recovered) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        assert_eq!(
            recovered.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![ids[0]]
        );
    });
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".damaged"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged tail was not saved");
    assert!(std::fs::metadata(&seg).unwrap().len() < bytes.len() as u64);
}

#[test]
fn an_attached_consumer_gets_each_durable_message_once_with_its_location() {
    on_both_drivers(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(opts(dir.path(), 0, 1)).unwrap();
        spool.attach_consumer();
        let ids = enqueue_many(&spool, 25).await;
        let mut got = Vec::new();
        while got.len() < ids.len() {
            got.extend(spool.next_ready().await);
        }
        assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
        for d in &got {
            let verdant_queue::Body::Memory(body) = &d.body else {
                panic!("fresh message not in memory")
            };
            let verdant_queue::Origin::Spool(location) = d.origin else {
                panic!("a spool delivery with a broker origin")
            };
            assert_eq!(spool.read_body(&location).unwrap(), body.to_vec());
        }
    });
}
