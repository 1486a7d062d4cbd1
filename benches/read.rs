//! Read paths on 1M events over 100k keys: full scan, read by position, key
//! versions through the key index.
//!
//! `cargo bench --bench read`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tablelog::workload::{Rng, Workload};
use tablelog::Db;

fn reads(c: &mut Criterion) {
    let w = Workload::default();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    w.load(&db.writer(), "bench", |_| {}).unwrap();
    let snap = db.snapshot().unwrap();
    let mut g = c.benchmark_group("read");
    g.sample_size(10);
    g.throughput(Throughput::Elements(w.events));
    g.bench_function("full_scan_1M", |b| {
        b.iter(|| {
            snap.view()
                .scan(0, None)
                .map(|r| r.unwrap().value.len())
                .sum::<usize>()
        });
    });
    g.throughput(Throughput::Elements(1));
    g.sample_size(50);
    let mut rng = Rng(3);
    g.bench_function("by_position", |b| {
        b.iter(|| snap.view().read(rng.below(w.events)).unwrap());
    });
    let mut rng = Rng(4);
    g.bench_function("key_versions", |b| {
        b.iter(|| {
            let vs = snap
                .view()
                .versions("bench", &w.key(rng.below(w.keys)))
                .unwrap();
            // A key may have no event at all in a random workload.
            vs.last().map(|v| snap.view().value(v).unwrap())
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = reads
}
criterion_main!(benches);
