//! Profiling harness for the append path alone: records are generated first,
//! then committed in batches of 1,000 (buffered; with `SYNC=1`, each batch
//! fsynced before the next, as `Durability::Sync`), `REPS` times (default 1),
//! each into a new database. `perf record` this.
use tablelog::workload::{Rng, Workload};
use tablelog::{Batch, Db, Durability};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let w = Workload {
        events: n,
        ..Workload::default()
    };
    let mut rng = Rng(1);
    let recs: Vec<(Vec<u8>, Vec<u8>, i64)> = (0..n)
        .map(|i| {
            let (k, t) = w.event(i, &mut rng);
            (w.key(k), w.value(i), t)
        })
        .collect();
    // REPS appends of the same records, each to a new database: so that under
    // `perf record` the appends, not generating the records, dominate.
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut lat: Vec<std::time::Duration> = Vec::with_capacity(recs.len() / 1000 + 1);
    for _ in 0..reps.max(1) {
        lat.clear();
        let dir = tempfile::tempdir()?;
        let mut b = Db::builder(dir.path()).checkpoint_every(0);
        if std::env::var("SYNC").is_ok_and(|v| v == "1") {
            b = b.durability(Durability::Sync);
        }
        let db = b.open()?;
        let writer = db.writer();
        let t = std::time::Instant::now();
        for chunk in recs.chunks(1000) {
            let mut b = Batch::new();
            for (k, v, t) in chunk {
                b.put_at("bench", k, v, *t)?;
            }
            let c = std::time::Instant::now();
            writer.commit(b)?;
            lat.push(c.elapsed());
        }
        eprintln!("append: {:.0} rec/s", n as f64 / t.elapsed().as_secs_f64());
    }
    // Where the time goes (the last run): commit latencies, and the slowest
    // commits' share.
    if lat.is_empty() {
        return Ok(());
    }
    let total: std::time::Duration = lat.iter().sum();
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f) as usize];
    let slow: std::time::Duration = sorted[sorted.len() - sorted.len() / 100..].iter().sum();
    eprintln!(
        "commit: p50 {:?} p90 {:?} p99 {:?} max {:?}; slowest 1% take {:.0}% of {:?}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0),
        slow.as_secs_f64() * 100.0 / total.as_secs_f64(),
        total
    );
    if std::env::var("SLOWEST").is_ok() {
        let mut by: Vec<(usize, std::time::Duration)> = lat.iter().copied().enumerate().collect();
        by.sort_unstable_by_key(|&(_, d)| std::cmp::Reverse(d));
        for (i, d) in by.iter().take(10) {
            eprintln!("  commit {i}: {d:?}");
        }
    }
    Ok(())
}
