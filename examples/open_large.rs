//! Open time of a database with a large history of sealed segments.
//!
//! ```text
//! cargo build --release --example open_large
//! target/release/examples/open_large DIR GB [REPS]
//! ```
//!
//! Creates a database in `DIR` (segment size 64 MiB, default durability) and
//! appends about `GB` GiB of records to stream `s` (16-byte keys over 1M keys,
//! 100-byte values, event times increasing by 1 ms per record, batches of 1000
//! records), flushes and drops the handle. If `DIR` already holds a database the
//! load is skipped (`REUSE=1` is implied), so one history can be measured many times.
//!
//! Then it opens the database `REPS` times (default 7), timing `Db::open` and,
//! separately, the first `snapshot()` + one `get` on the new handle. Before the
//! first open it tries `sync; echo 3 > /proc/sys/vm/drop_caches` for one
//! cold-cache open (reported separately; needs root and a writable /proc/sys).
//!
//! With `TOPUP=1` it then appends to the active segment until it is just below
//! the segment size (the worst case for open: recovery scans the whole active
//! segment) and measures again.
//!
//! Environment:
//! - `REPS`: timed warm opens (default 7; the third argument wins).
//! - `CHECKPOINT_EVERY`: automatic checkpoint interval while loading (default 0 =
//!   off; the library default is 1,000,000 records, which rebuilds the table from
//!   scratch every 1M records and makes a 10 GB load quadratic).
//! - `TOPUP=1`: also measure with a full active segment.
//! - `NO_DROP=1`: skip the cold-cache open.
//! - `COLD_TABLE=1`: then, caches dropped again, time `table_from_scratch`
//!   as of the middle of the history on a cold open.
//! - `COLD_GETS`: after the cold open's first `get`, that many more of random
//!   keys as of random times of the history, each timed (default 200): lookups
//!   that find their pages on disk, as in a database larger than memory.
use std::path::Path;
use std::time::{Duration, Instant};

use tablelog::workload::{Rng, Workload};
use tablelog::{Batch, Db};

const STREAM: &str = "s";
const SEGMENT_SIZE: u64 = 64 << 20;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// (total bytes of segment files, bytes of the active (last) segment, segments,
/// total bytes of key index sidecars and merged indexes). Files that vanish
/// while listed (a background merge replacing its temporary files) are skipped.
fn sizes(dir: &Path) -> std::io::Result<(u64, u64, usize, u64)> {
    let mut segs = Vec::new();
    let mut kidx = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let len = match e.metadata() {
            Ok(m) => m.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if name.ends_with(".seg") {
            segs.push((name, len));
        } else if name.ends_with(".kidx") {
            kidx += len;
        }
    }
    segs.sort();
    let total = segs.iter().map(|s| s.1).sum();
    let active = segs.last().map_or(0, |s| s.1);
    Ok((total, active, segs.len(), kidx))
}

fn drop_caches() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

struct Loader {
    w: Workload,
    rng: Rng,
    i: u64,
}

impl Loader {
    fn new() -> Loader {
        Loader {
            w: Workload {
                keys: 1_000_000,
                ..Workload::default()
            },
            rng: Rng(7),
            i: 0,
        }
    }

    /// One batch of 1000 records, event times increasing.
    fn batch(&mut self) -> Result<Batch, tablelog::Error> {
        let mut b = Batch::new();
        for _ in 0..1000 {
            let (k, _) = self.w.event(self.i, &mut self.rng);
            let t = self.i as i64 * self.w.step_us;
            b.put_at(STREAM, self.w.key(k), self.w.value(self.i), t)?;
            self.i += 1;
        }
        Ok(b)
    }
}

fn stats(v: &mut [Duration]) -> String {
    if v.is_empty() {
        return "no runs".to_string();
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.2} ms (min {:.2}, max {:.2}, n={})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

/// `n` lookups of uniformly random keys (of the loader's 1M) as of uniformly
/// random times of the history, each timed, on `db` (cold pages, when the
/// caches were just dropped: a database larger than memory).
fn random_gets(db: &Db, n: usize) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let snap = db.snapshot()?;
    let w = Loader::new().w;
    let end = snap.end_position().max(1) as i64 * w.step_us;
    let mut rng = Rng(11);
    let mut found = 0;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let key = w.key(rng.below(w.keys));
        let t = rng.below(end as u64) as i64;
        let start = Instant::now();
        let row = snap.get(STREAM, &key, t, None)?;
        times.push(start.elapsed());
        found += usize::from(row.row().is_some());
    }
    if n > 0 && found == 0 {
        return Err("no random lookup found a row".into());
    }
    Ok(times)
}

/// One open: (open time, first snapshot + get time).
fn open_once(dir: &Path, key: &[u8]) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    open_then(dir, key, |_| Ok(()))
}

/// [`open_once`], running `then` on the handle before it drops.
fn open_then(
    dir: &Path,
    key: &[u8],
    then: impl FnOnce(&Db) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let db = Db::builder(dir).segment_size(SEGMENT_SIZE).open()?;
    let open = t.elapsed();
    let t = Instant::now();
    let snap = db.snapshot()?;
    let row = snap.get(STREAM, key, i64::MAX, None)?;
    let first = t.elapsed();
    if row.row().is_none() {
        return Err(format!("key {} not found", String::from_utf8_lossy(key)).into());
    }
    drop(snap);
    then(&db)?;
    let t = Instant::now();
    drop(db);
    let closed = t.elapsed();
    if closed > Duration::from_millis(50) {
        eprintln!("  (drop took {closed:?})");
    }
    Ok((open, first))
}

fn measure(dir: &Path, reps: usize, key: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    let (total, active, nsegs, kidx) = sizes(dir)?;
    println!(
        "history: {nsegs} segments, {:.2} GiB of segments, active segment {:.1} MiB, key indexes {:.1} MiB",
        total as f64 / (1u64 << 30) as f64,
        active as f64 / (1u64 << 20) as f64,
        kidx as f64 / (1u64 << 20) as f64
    );
    if std::env::var_os("NO_DROP").is_none() {
        if drop_caches() {
            let n = env_u64("COLD_GETS").unwrap_or(200) as usize;
            let mut gets = Vec::new();
            let (open, first) = open_then(dir, key, |db| {
                gets = random_gets(db, n)?;
                Ok(())
            })?;
            println!(
                "cold open: {:.2} ms, first snapshot+get: {:.2} ms",
                open.as_secs_f64() * 1e3,
                first.as_secs_f64() * 1e3
            );
            if n > 0 {
                let total: Duration = gets.iter().sum();
                let p90 = {
                    let mut g = gets.clone();
                    g.sort();
                    g[g.len() * 9 / 10]
                };
                println!(
                    "then {n} random gets, cold: {} (p90 {:.2} ms, total {:.0} ms)",
                    stats(&mut gets),
                    p90.as_secs_f64() * 1e3,
                    total.as_secs_f64() * 1e3
                );
            }
        } else {
            println!("cold open: skipped (could not write /proc/sys/vm/drop_caches)");
        }
        if std::env::var_os("COLD_TABLE").is_some() && drop_caches() {
            let db = Db::builder(dir).segment_size(SEGMENT_SIZE).open()?;
            let snap = db.snapshot()?;
            let mid = snap.end_position() as i64 / 2 * Loader::new().w.step_us;
            let t = Instant::now();
            let mut table = snap.table_from_scratch(STREAM, mid, None)?;
            let mut rows = 0u64;
            while let Some(row) = table.next_ref() {
                row?;
                rows += 1;
            }
            println!(
                "cold table from scratch as of the middle: {:.0} ms ({rows} rows)",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let mut opens = Vec::new();
    let mut firsts = Vec::new();
    for _ in 0..reps {
        let (open, first) = open_once(dir, key)?;
        opens.push(open);
        firsts.push(first);
    }
    println!("warm open: {}", stats(&mut opens));
    println!("warm first snapshot+get: {}", stats(&mut firsts));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .or_else(|| std::env::var("DIR").ok())
        .ok_or("usage: open_large DIR GB [REPS]")?;
    let dir = Path::new(&dir);
    let gb: f64 = args
        .next()
        .or_else(|| std::env::var("GB").ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let reps = args
        .next()
        .and_then(|v| v.parse().ok())
        .or_else(|| env_u64("REPS"))
        .unwrap_or(7) as usize;
    let target = (gb * (1u64 << 30) as f64) as u64;
    let checkpoint_every = env_u64("CHECKPOINT_EVERY").unwrap_or(0);
    let mut loader = Loader::new();
    let probe = loader.w.key(12_345);

    if sizes(dir).is_ok_and(|s| s.2 > 0) {
        println!("{}: database exists, skipping the load", dir.display());
    } else {
        let db = Db::builder(dir)
            .segment_size(SEGMENT_SIZE)
            .checkpoint_every(checkpoint_every)
            .open()?;
        let w = db.writer();
        let t = Instant::now();
        let mut last_report = Instant::now();
        loop {
            for _ in 0..100 {
                w.commit(loader.batch()?)?;
            }
            let (total, ..) = sizes(dir)?;
            if last_report.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "  {:.2} GiB, {} records, {:.0} rec/s",
                    total as f64 / (1u64 << 30) as f64,
                    loader.i,
                    loader.i as f64 / t.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            if total >= target {
                break;
            }
        }
        db.flush()?;
        let t_drop = Instant::now();
        drop(w); // a writer holds a handle too
        drop(db);
        println!(
            "loaded {} records in {:.1} s ({:.0} rec/s); drop {:?}",
            loader.i,
            t.elapsed().as_secs_f64(),
            loader.i as f64 / t.elapsed().as_secs_f64(),
            t_drop.elapsed()
        );
    }
    measure(dir, reps, &probe)?;

    if std::env::var_os("TOPUP").is_some() {
        // Fill the active segment up to one batch below the roll threshold.
        let db = Db::builder(dir)
            .segment_size(SEGMENT_SIZE)
            .checkpoint_every(0)
            .open()?;
        let w = db.writer();
        // Continue the event times after the existing history.
        loader.i = db.snapshot()?.end_position();
        loop {
            let (_, active, ..) = sizes(dir)?;
            // A batch of 1000 records is ~140 KB on disk.
            if active + (1 << 20) >= SEGMENT_SIZE {
                break;
            }
            w.commit(loader.batch()?)?;
        }
        db.flush()?;
        drop(w); // a writer holds a handle too
        drop(db);
        println!("-- active segment topped up to just below the segment size --");
        measure(dir, reps, &probe)?;
    }
    Ok(())
}
