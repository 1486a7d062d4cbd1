//! Profiling harness for lookups: loads N events (default 1M over 100k keys),
//! then runs 1M `get` as-of lookups at random keys, as of the median time
//! (`UNIFORM=1`: at times uniform over the history, as `benches/compare.rs`
//! does; `AT=0.9`: at 90% of it, inside the active segment). Use under
//! `perf record`, or under callgrind with `LOOKUPS=N` (fewer than 1M
//! lookups). `SMAPS=1` then prints how much of each key index and segment
//! file is mapped, and how much of it 2 MiB at a time (`FilePmdMapped`): a
//! lookup's random reads miss the TLB far less there. `DIR=path` keeps the
//! database in `path` and reuses it when it already holds events. `WARM=1`
//! runs the lookups once before the measured pass, so that pass does not
//! check frames and index chunks on their first read; under callgrind,
//! `--toggle-collect=profile_get::lookups` counts the measured pass alone.
use tablelog::workload::{Rng, Workload};
use tablelog::{Db, Snapshot};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let w = Workload {
        events: n,
        ..Workload::default()
    };
    // `DIR=path`: keep the database there, and reuse it if it has data.
    let tmp = tempfile::tempdir()?;
    let path = std::env::var_os("DIR").map_or(tmp.path().to_path_buf(), Into::into);
    let db = Db::open(&path)?;
    if db.snapshot()?.end_position() == 0 {
        w.load(&db.writer(), "bench", |_| {})?;
    }
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
        let lookups = std::env::var("LOOKUPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        // `HOT_KEYS=n`: look up only the first n keys, whose index entries
        // and records then stay in cache (what a lookup costs without misses).
        let hot = std::env::var("HOT_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(w.keys);
        (0..lookups).map(|_| w.key(rng.below(hot))).collect()
    };
    let mid = std::env::var("AT")
        .ok()
        .and_then(|f| f.parse::<f64>().ok())
        .map_or((n as i64 / 2) * w.step_us, |f| {
            (n as f64 * f) as i64 * w.step_us
        });
    let uniform = std::env::var("UNIFORM").is_ok_and(|v| v == "1");
    let times: Vec<i64> = {
        let mut rng = Rng(10);
        (0..keys.len())
            .map(|_| {
                if uniform {
                    rng.below(n) as i64 * w.step_us
                } else {
                    mid
                }
            })
            .collect()
    };
    if std::env::var("WARM").is_ok_and(|v| v == "1") {
        // Every frame and index chunk the lookups read is checked now, once,
        // not in the measured pass.
        warm_up(&snap, &keys, &times)?;
    }
    let t = std::time::Instant::now();
    let found = lookups(&snap, &keys, &times)?;
    eprintln!(
        "get: {:.2} µs/lookup ({found} found)",
        t.elapsed().as_secs_f64() * 1e6 / keys.len() as f64
    );
    if std::env::var("SMAPS").is_ok() {
        // Each mapping starts with its address range and, for a file, its path.
        let sm = std::fs::read_to_string("/proc/self/smaps")?;
        let mut cur = String::new();
        for line in sm.lines() {
            let head = line.split(' ').next().unwrap_or("");
            if head.contains('-') && head.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                cur = if line.contains(" /") {
                    line.rsplit(' ').next().unwrap_or("").to_string()
                } else {
                    String::new()
                };
            }
            if (cur.ends_with(".kidx") || cur.ends_with(".seg"))
                && (line.starts_with("Rss") || line.starts_with("FilePmdMapped"))
            {
                eprintln!("{cur} {line}");
            }
        }
    }
    Ok(())
}

/// The measured lookups (callgrind: `--toggle-collect=profile_get::lookups`
/// counts them alone). Returns how many found a row.
#[inline(never)]
fn lookups(snap: &Snapshot, keys: &[Vec<u8>], times: &[i64]) -> tablelog::Result<usize> {
    let mut found = 0;
    for (k, &at) in keys.iter().zip(times) {
        found += usize::from(snap.get("bench", k, at, None)?.row().is_some());
    }
    Ok(found)
}

/// The same lookups, unmeasured (`WARM=1`).
#[inline(never)]
fn warm_up(snap: &Snapshot, keys: &[Vec<u8>], times: &[i64]) -> tablelog::Result<()> {
    for (k, &at) in keys.iter().zip(times) {
        std::hint::black_box(snap.get("bench", k, at, None)?);
    }
    Ok(())
}
