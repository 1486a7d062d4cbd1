//! Query layer: reading a value's numeric field, table as of T (from scratch),
//! get as of T, as-of join and window over 100k requests. Default 1M events over 100k keys; set
//! `TABLELOG_BENCH_EVENTS=10000000 TABLELOG_BENCH_KEYS=1000000` for the large run.
//!
//! `cargo bench --bench query`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tablelog::workload::{Rng, Workload};
use tablelog::{Agg, Db, Request};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn queries(c: &mut Criterion) {
    let w = Workload {
        events: env("TABLELOG_BENCH_EVENTS", 1_000_000),
        keys: env("TABLELOG_BENCH_KEYS", 100_000),
        ..Workload::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    w.load(&db.writer(), "bench", |_| {}).unwrap();
    let snap = db.snapshot().unwrap();
    let mid = (w.events as i64 / 2) * w.step_us;
    let mut g = c.benchmark_group("query");
    g.sample_size(10);
    g.throughput(Throughput::Elements(w.keys));
    g.bench_function(
        format!("table_asof_mid_{}keys_{}events", w.keys, w.events),
        |b| {
            b.iter(|| {
                snap.table("bench", mid, None)
                    .unwrap()
                    .map(|r| r.unwrap().value.len())
                    .sum::<usize>()
            });
        },
    );
    g.throughput(Throughput::Elements(1));
    g.sample_size(50);
    let mut rng = Rng(5);
    g.bench_function("get_asof", |b| {
        b.iter(|| {
            snap.get("bench", &w.key(rng.below(w.keys)), mid, None)
                .unwrap()
        });
    });
    let mut rng = Rng(6);
    let requests: Vec<Request> = (0..100_000)
        .map(|_| Request {
            key: Bytes::from(w.key(rng.below(w.keys))),
            time: rng.below(w.events) as i64 * w.step_us,
        })
        .collect();
    g.sample_size(10);
    g.throughput(Throughput::Elements(requests.len() as u64));
    g.bench_function("asof_join_100k", |b| {
        b.iter(|| {
            snap.asof_join(&requests, &["bench"], None, None)
                .unwrap()
                .len()
        });
    });
    g.bench_function("window_avg_30m_100k", |b| {
        b.iter(|| {
            snap.window("bench", "price", Agg::Avg, 1_800_000_000, &requests, None)
                .unwrap()
                .len()
        });
    });
    g.finish();
}

/// The numeric field reader windows and views call for every record: on the
/// workload's values (a number, then an 80-byte string) and on short objects
/// like `benches/duckdb_compare.py`'s.
fn field(c: &mut Criterion) {
    use tablelog::query::field::numeric_field;
    let w = Workload::default();
    let values: Vec<Vec<u8>> = (0..1000).map(|i| w.value(i)).collect();
    let short: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| {
            format!(
                r#"{{"k": "{i:016}", "ts": {i}, "pos": {i}, "price": {}}}"#,
                i % 1000
            )
            .into_bytes()
        })
        .collect();
    let mut g = c.benchmark_group("field");
    for (name, docs) in [("workload_value", &values), ("short_object", &short)] {
        g.throughput(Throughput::Elements(docs.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                docs.iter()
                    .filter_map(|d| numeric_field(std::hint::black_box(d), "price"))
                    .sum::<f64>()
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(5)).warm_up_time(std::time::Duration::from_secs(1));
    targets = field, queries
}
criterion_main!(benches);
