//! Profiling harness for reads by position: loads N events (default 1M over
//! 100k keys), then reads 1M random positions (`View::read`) twice. Use under
//! `perf record`.
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
    let snap = db.snapshot()?;
    let mut rng = Rng(3);
    let positions: Vec<u64> = (0..1_000_000).map(|_| rng.below(n)).collect();
    for pass in ["first", "second"] {
        let t = std::time::Instant::now();
        let mut bytes = 0usize;
        for &p in &positions {
            bytes += snap.view().read(p)?.value.len();
        }
        eprintln!(
            "read ({pass} pass): {:.2} µs a read ({bytes} value bytes)",
            t.elapsed().as_secs_f64() * 1e6 / positions.len() as f64
        );
    }
    Ok(())
}
