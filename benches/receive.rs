//! Micro-benchmarks of the receive path: the DATA scanner (against
//! smtp-proto's byte-by-byte `DataReceiver`, which the design brief asks us
//! to measure ourselves against) and whole pipelined sessions.
//!
//! Run: `cargo bench --bench receive`

use std::hint::black_box;
use std::rc::Rc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use verdant_queue::QueueId;
use verdant_receiver::data::{Scanned, Scanner};
use verdant_receiver::{Event, Session, SessionConfig};

/// A dot-stuffed message of about `size` bytes in 78-octet lines, ending
/// with the end-of-data line.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"Subject: bench\r\nMessage-ID: <b@bench>\r\n\r\n".to_vec();
    let mut n = 0;
    while m.len() < size {
        let lead = if n % 10 == 0 { ".." } else { "" };
        m.extend_from_slice(format!("{lead}{}\r\n", "x".repeat(76 - lead.len())).as_bytes());
        n += 1;
    }
    m.extend_from_slice(b".\r\n");
    m
}

fn scanner(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_scanner");
    for size in [4 << 10, 64 << 10] {
        let input = message(size);
        g.throughput(Throughput::Bytes(input.len() as u64));
        let mut out = Vec::with_capacity(input.len());
        g.bench_with_input(
            BenchmarkId::new("verdant_memchr", size),
            &input,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    let mut s = Scanner::data(usize::MAX / 2);
                    assert_eq!(
                        s.scan(black_box(input), &mut out),
                        Scanned::End(input.len())
                    );
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("smtp_proto_bytewise", size),
            &input,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    let mut r = smtp_proto::request::receiver::DataReceiver::new();
                    assert!(r.ingest(&mut black_box(input).iter(), &mut out));
                })
            },
        );
    }
    g.finish();
}

fn session(c: &mut Criterion) {
    let cfg = Rc::new(SessionConfig {
        hostname: "bench.example".into(),
        max_message_size: 64 << 20,
        max_recipients: 1000,
        max_errors: 20,
        client_networks: vec!["127.0.0.0/8".parse().unwrap()],
    });
    let mut g = c.benchmark_group("session");
    for size in [4 << 10, 64 << 10] {
        // One pipelined transaction, as smtp-source -d sends it after EHLO.
        let mut tx = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n".to_vec();
        tx.extend_from_slice(&message(size));
        g.throughput(Throughput::Bytes(tx.len() as u64));
        let id = QueueId {
            micros: 1,
            worker: 0,
        };
        g.bench_with_input(BenchmarkId::new("transaction", size), &tx, |b, tx| {
            let mut s = Session::new(cfg.clone(), "127.0.0.1".parse().unwrap());
            s.feed(b"EHLO bench.example\r\n");
            b.iter(|| {
                let (n, ev) = s.feed(black_box(tx));
                assert_eq!((n, ev), (tx.len(), Event::Message));
                black_box(s.message(id));
                s.queued(id, Ok(()));
                s.output().clear();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, scanner, session);
criterion_main!(benches);
