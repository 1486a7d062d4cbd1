//! Profiling harness: appends N events (default 2M) in batches of 1000 and then
//! rebuilds the table as of the median time. `cargo run --release --example
//! profile_append -- 2000000` under `perf record` (it prints when the timed
//! part starts, for `perf record -D`). `SEG=BYTES` sets the segment size
//! (default 64 MiB; a large one shows the append path without segment rolls).
use tablelog::workload::Workload;
use tablelog::Db;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let w = Workload {
        events: n,
        ..Workload::default()
    };
    let dir = tempfile::tempdir()?;
    let db = Db::builder(dir.path())
        .checkpoint_every(0)
        .segment_size(
            std::env::var("SEG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64 << 20),
        )
        .open()?;
    // Batches built before the clock starts: only the append path is timed.
    let mut rng = tablelog::rng::Rng(7);
    let batches: Vec<tablelog::Batch> = (0..n)
        .collect::<Vec<u64>>()
        .chunks(w.batch as usize)
        .map(|c| {
            let mut b = tablelog::Batch::new();
            for &j in c {
                let (k, t) = w.event(j, &mut rng);
                b.put_at("bench", w.key(k), w.value(j), t)
                    .expect("valid record");
            }
            b
        })
        .collect();
    let writer = db.writer();
    // (For `perf record -D`: when the timed part starts.)
    eprintln!("batches built at {:?}", start.elapsed());
    let t = std::time::Instant::now();
    for b in batches {
        writer.commit(b)?;
    }
    db.flush()?;
    eprintln!("append: {:.0} rec/s", n as f64 / t.elapsed().as_secs_f64());
    let snap = db.snapshot()?;
    let reps: usize = std::env::var("TABLE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for _ in 0..reps {
        let t = std::time::Instant::now();
        let rows = snap
            .table("bench", (n as i64 / 2) * w.step_us, None)?
            .count();
        eprintln!("table: {rows} rows in {:?}", t.elapsed());
    }
    drop(snap);
    drop(writer); // a writer holds the database open too
    drop(db);
    let t = std::time::Instant::now();
    let db = Db::open(dir.path())?;
    eprintln!("open: {:?}", t.elapsed());
    drop(db);
    Ok(())
}
