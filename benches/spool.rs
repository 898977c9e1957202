//! Group commit of the embedded spool: the cost of making a batch of N
//! 4 KiB messages durable (one O_DSYNC write per batch), on the
//! default driver. The per-message time falling as N grows is the point of
//! group commit.
//!
//! Run: `cargo bench --bench spool` (the spool lives in a temporary
//! directory under ./target, on the same disk as a real spool would be).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use verdant_queue::{Envelope, Queue, Spool, SpoolOptions};

fn group_commit(c: &mut Criterion) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    std::fs::create_dir_all("target").unwrap();
    let dir = tempfile::tempdir_in("target").unwrap();
    let spool = rt.block_on(async {
        let (spool, _) = Spool::open(SpoolOptions {
            dir: dir.path().to_path_buf(),
            worker: 0,
            workers: 1,
            commit_window: Duration::ZERO,
            segment_size: 64 << 20,
        })
        .unwrap();
        spool
    });
    let env = Envelope {
        sender: "a@example.com".into(),
        recipients: vec!["b@example.net".into()],
        received_at: 0,
        flags: 0,
    };
    let body = vec![b'x'; 4096];
    let mut g = c.benchmark_group("spool_group_commit");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for batch in [1usize, 8, 64, 256] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut tasks = Vec::with_capacity(batch);
                        for _ in 0..batch {
                            let (s, env, body) = (spool.clone(), env.clone(), body.clone());
                            tasks.push(monoio::spawn(async move {
                                let id = s.next_id();
                                s.enqueue(id, &env, &body).await.unwrap();
                            }));
                        }
                        for t in tasks {
                            t.await;
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
