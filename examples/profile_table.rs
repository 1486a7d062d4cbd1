//! Profiling harness for `table` from scratch: loads N events (default 2M over
//! 100k keys, the comparison workload), then rebuilds the table as of the median
//! event time REPS times (default 5) and prints each time (`KEYS` sets the key
//! count; `SETTLE=SECS` waits for background merges, `MERGE=1` merges every
//! key index first). Use under `perf record`.
//!
//!     cargo run --release --example profile_table -- [EVENTS]
use tablelog::workload::Workload;
use tablelog::Db;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let keys: u64 = std::env::var("KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(100_000);
    let w = Workload {
        events: n,
        keys,
        ..Workload::default()
    };
    let dir = tempfile::tempdir()?;
    let db = Db::builder(dir.path()).checkpoint_every(0).open()?;
    w.load(&db.writer(), "bench", |_| {})?;
    if let Some(secs) = std::env::var("SETTLE").ok().and_then(|s| s.parse().ok()) {
        // Lets background merges of the last segments finish.
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    if std::env::var("MERGE").is_ok_and(|v| v == "1") {
        let t = std::time::Instant::now();
        db.merge_key_indexes()?;
        eprintln!("merged every key index in {:?}", t.elapsed());
    }
    let snap = db.snapshot()?;
    let st = snap.view().state();
    let (tiers, rest) = st.key_sources();
    eprintln!(
        "{} sealed segments: {} merged tiers + {} unmerged segments + the active one",
        st.sealed.len(),
        tiers.len(),
        rest.len()
    );
    let mid = (n as i64 / 2) * w.step_us;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        let mut rows = 0usize;
        let mut bytes = 0usize;
        for row in snap.table_from_scratch("bench", mid, None)? {
            let row = row?;
            rows += 1;
            bytes += row.value.len();
        }
        eprintln!(
            "table: {:>7.1} ms ({rows} rows, {bytes} value bytes)",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
