//! Profiling harness for lookups: loads N events (default 1M over 100k keys),
//! then runs 1M `get` as-of lookups at random keys. Use under `perf record`.
use tablelog::workload::{Rng, Workload};
use tablelog::Db;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let w = Workload {
        events: n,
        ..Workload::default()
    };
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    w.load(&db.writer(), "bench", |_| {})?;
    if std::env::var("MERGE").is_ok() {
        let t = std::time::Instant::now();
        let end = db.merge_key_indexes()?;
        eprintln!(
            "merged key indexes below position {end} in {:?}",
            t.elapsed()
        );
    }
    let snap = db.snapshot()?;
    let keys: Vec<Vec<u8>> = {
        let mut rng = Rng(9);
        (0..1_000_000).map(|_| w.key(rng.below(w.keys))).collect()
    };
    let mid = (n as i64 / 2) * w.step_us;
    let t = std::time::Instant::now();
    let mut found = 0usize;
    for k in &keys {
        found += usize::from(snap.get("bench", k, mid, None)?.row().is_some());
    }
    eprintln!(
        "get: {:.2} µs/lookup ({found} found)",
        t.elapsed().as_secs_f64() * 1e6 / keys.len() as f64
    );
    Ok(())
}
