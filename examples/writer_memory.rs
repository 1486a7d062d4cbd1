//! Memory of a long-running writer: appends N events (default 8M, over N/10
//! keys or `KEYS`) in one process, flushes, and prints the segment count and
//! the process's resident heap (`RssAnon`) and mapped files (`RssFile`).
//!
//!     cargo run --release --example writer_memory -- 8000000
//!
//! Under glibc, compare with `MALLOC_MMAP_THRESHOLD_=131072 MALLOC_ARENA_MAX=1`
//! set: the difference is memory malloc keeps after it was freed, not data
//! tablelog holds (see the README's performance section).
use tablelog::workload::Workload;
use tablelog::Db;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8_000_000);
    let keys = std::env::var("KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(n / 10);
    let w = Workload {
        events: n,
        keys,
        ..Workload::default()
    };
    let dir = tempfile::tempdir()?;
    let db = Db::builder(dir.path()).checkpoint_every(u64::MAX).open()?;
    w.load(&db.writer(), "bench", |_| {})?;
    db.flush()?;
    // One lookup, so every sealed segment's key index is loaded.
    let _ = db.snapshot()?.get("bench", &w.key(1), i64::MAX, None)?;
    let segments = std::fs::read_dir(dir.path())?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    println!(
        "{n} events, {keys} keys, {segments} segments: RssAnon {}, RssFile {}",
        field("RssAnon:"),
        field("RssFile:")
    );
    Ok(())
}
