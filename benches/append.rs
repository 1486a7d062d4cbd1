//! Append throughput: buffered single-thread batches, and group commit with sync
//! durability from 1, 4 and 16 threads. 16-byte keys, 100-byte values.
//!
//! `cargo bench --bench append`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tablelog::workload::{Rng, Workload};
use tablelog::{Batch, Db, Durability};

fn records(w: &Workload, n: u64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let mut rng = Rng(1);
    (0..n)
        .map(|i| {
            let (k, t) = w.event(i, &mut rng);
            (w.key(k), w.value(i), t)
        })
        .collect()
}

fn buffered(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_buffered");
    for value_size in [100usize, 1024] {
        let w = Workload {
            value_size,
            ..Workload::default()
        };
        let batch = records(&w, 1000);
        let dir = tempfile::tempdir().unwrap();
        let db = Db::builder(dir.path()).open().unwrap();
        let writer = db.writer();
        g.throughput(Throughput::Elements(batch.len() as u64));
        g.bench_function(
            BenchmarkId::new("batch1000", format!("value{value_size}")),
            |b| {
                b.iter(|| {
                    let mut bt = Batch::new();
                    for (k, v, t) in &batch {
                        bt.put_at("bench", k, v, *t).unwrap();
                    }
                    writer.commit(bt).unwrap()
                });
            },
        );
    }
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_sync_group_commit");
    g.sample_size(10);
    let w = Workload::default();
    let recs = records(&w, 10);
    let commits_per_iter = 64u64;
    for threads in [1u64, 4, 16] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::builder(dir.path())
            .durability(Durability::Sync)
            .open()
            .unwrap();
        g.throughput(Throughput::Elements(commits_per_iter * recs.len() as u64));
        g.bench_function(
            BenchmarkId::new("batch10", format!("{threads}threads")),
            |b| {
                b.iter(|| {
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let writer = db.writer();
                            let recs = &recs;
                            s.spawn(move || {
                                for _ in 0..commits_per_iter / threads {
                                    let mut bt = Batch::new();
                                    for (k, v, t) in recs {
                                        bt.put_at("bench", k, v, *t).unwrap();
                                    }
                                    writer.commit(bt).unwrap();
                                }
                            });
                        }
                    });
                });
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = buffered, group_commit
}
criterion_main!(benches);
