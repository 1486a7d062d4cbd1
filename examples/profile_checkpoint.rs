//! Profiling harness for `table` from a checkpoint: N events (default 1M) over
//! N/10 keys, a checkpoint as of the latest time, 1% more events (half late),
//! then the latest table from scratch and from the checkpoint, REPS times each.
//! `cargo run --release --example profile_checkpoint -- 1000000` under `perf record`;
//! `ONLY=checkpoint` skips the scratch runs (to profile the checkpoint path alone);
//! `OWNED=1` reads rows through `Iterator` (owned rows) instead of `next_ref`.
use tablelog::rng::Rng;
use tablelog::workload::Workload;
use tablelog::{Batch, Db, Table};

/// Counts a table's rows, borrowed (`next_ref`) or owned (`Iterator`).
fn count(mut table: Table, owned: bool) -> tablelog::Result<u64> {
    if owned {
        return table.try_fold(0, |n, r| r.map(|_| n + 1));
    }
    let mut n = 0;
    while let Some(r) = table.next_ref() {
        r?;
        n += 1;
    }
    Ok(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let w = Workload {
        events: n,
        keys: n / 10,
        ..Workload::default()
    };
    let dir = tempfile::tempdir()?;
    let db = Db::builder(dir.path()).checkpoint_every(u64::MAX).open()?;
    w.load(&db.writer(), "bench", |_| {})?;
    let max_t = (w.events as i64) * w.step_us;
    db.checkpoint("bench", Some(max_t))?;
    let mut rng = Rng(17);
    let mut b = Batch::new();
    let extra: u64 = std::env::var("TAIL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n / 100);
    for i in 0..extra {
        let (k, t) = w.event(i, &mut rng);
        b.put_at(
            "bench",
            w.key(k),
            w.value(i),
            max_t - 3_600_000_000 + t % 7_200_000_000,
        )?;
    }
    db.writer().commit(b)?;
    let snap = db.snapshot()?;
    let latest = max_t + 3_600_000_000;
    let only_checkpoint = std::env::var("ONLY").is_ok_and(|v| v == "checkpoint");
    let owned = std::env::var("OWNED").is_ok_and(|v| v == "1");
    for _ in 0..reps {
        let t = std::time::Instant::now();
        let a = if only_checkpoint {
            0
        } else {
            count(snap.table_from_scratch("bench", latest, None)?, owned)?
        };
        let scratch = t.elapsed();
        let t = std::time::Instant::now();
        let table = snap.table("bench", latest, None)?;
        let setup = t.elapsed();
        let b = count(table, owned)?;
        let ck = t.elapsed();
        eprintln!(
            "scratch {a} rows {scratch:?}, checkpoint {b} rows {ck:?} ({setup:?} reading the tail), ratio {:.1}",
            scratch.as_secs_f64() / ck.as_secs_f64()
        );
    }
    Ok(())
}
