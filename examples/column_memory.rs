//! Memory of a column build: loads N events (default 10M over 1M keys, the
//! standard workload, whose values have a numeric `price`), then builds the
//! `price` column holding at most `MEMORY_MB` MiB of events (default 256),
//! and prints the build's time and the process's anonymous memory before
//! and at its peak during the build (sampled every millisecond).
//!
//!     cargo run --release --example column_memory -- 10000000
//!     MEMORY_MB=16 cargo run --release --example column_memory -- 10000000
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tablelog::workload::Workload;
use tablelog::Db;

/// The process's anonymous resident memory, in KiB.
fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let mb: usize = std::env::var("MEMORY_MB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(256);
    let w = Workload {
        events: n,
        keys: (n / 10).max(1),
        ..Workload::default()
    };
    let dir = tempfile::tempdir()?;
    {
        let db = Db::open(dir.path())?;
        w.load(&db.writer(), "bench", |_| {})?;
    }
    // Reopened, so the writer's indexes of the load are gone.
    let db = Db::builder(dir.path())
        .column_build_memory(mb << 20)
        .open()?;
    let before = rss_anon_kib();
    let peak = AtomicU64::new(before);
    let done = AtomicBool::new(false);
    let took = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let t = std::time::Instant::now();
        let built = db.build_column("bench", "price", &mut |_| {});
        done.store(true, Ordering::Relaxed);
        built.map(|info| (info, t.elapsed()))
    });
    let (info, took) = took?;
    println!(
        "{} events over {} keys, budget {mb} MiB: built in {:.2} s; anonymous memory {} MiB before, {} MiB at the peak",
        info.events,
        info.keys,
        took.as_secs_f64(),
        before >> 10,
        peak.load(Ordering::Relaxed) >> 10
    );
    Ok(())
}
