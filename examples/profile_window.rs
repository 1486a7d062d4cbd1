//! Profiling harness for joins and windows over many requests: opens a
//! database, reads a JSON-lines request file, and runs the as-of join and the
//! window query REPS times each in one process (the first run pays the page
//! faults of mapping the log; later runs are warm). Made for the data of
//! `benches/duckdb_compare.py`:
//!
//!     cargo run --release --example profile_window -- DB REQUESTS.jsonl [STREAM FIELD]
//!
//! `ACCESS=probe|sweep|column` forces an access path (default: the query's
//! choice; a field column, `tablelog column`, is validated by the first
//! window that reads it, so the first run pays for that);
//! `ONLY=join|window|floor` runs one part alone (for `perf record`).
//!
//! Last, it measures the floor under any window over the whole stream that
//! parses JSON values: one thread sweeping every record of the stream, bare
//! and with the numeric field read from each value.
use std::io::BufRead;

use tablelog::query::field::numeric_field;
use tablelog::storage::sweep::SweepRange;
use tablelog::{Agg, Db, Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (db, reqs) = (&args[1], &args[2]);
    let stream = args.get(3).map_or("ev", String::as_str);
    let field = args.get(4).map_or("price", String::as_str);
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut requests = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(reqs)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        requests.push(Request {
            key: bytes::Bytes::from(v["k"].as_str().ok_or("k")?.to_string()),
            time: v["ts"].as_i64().ok_or("ts")? * 1000,
        });
    }
    let db = Db::open(db)?;
    let snap = db
        .snapshot()?
        .with_access(match std::env::var("ACCESS").as_deref() {
            Ok("probe") => tablelog::AccessPath::Probe,
            Ok("sweep") => tablelog::AccessPath::Sweep,
            Ok("column") => tablelog::AccessPath::Column,
            _ => tablelog::AccessPath::Auto,
        });
    let only = std::env::var("ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    for _ in 0..if run("join") { reps } else { 0 } {
        let t = std::time::Instant::now();
        let rows = snap.asof_join(&requests, &[stream], None, None)?;
        let found = rows.iter().filter(|r| r[0].is_some()).count();
        eprintln!(
            "join:   {:>7.1} ms ({found} found)",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    for _ in 0..if run("window") { reps } else { 0 } {
        if std::env::var_os("EVICT").is_some() {
            // Push everything out of the caches (this machine's L3 is 300 MiB).
            let junk = vec![1u8; 640 << 20];
            eprintln!(
                "evicted {}",
                junk.iter().map(|&b| u64::from(b)).sum::<u64>()
            );
        }
        let t = std::time::Instant::now();
        let out = snap.window(stream, field, Agg::Avg, 1_800_000_000, &requests, None)?;
        let some = out.iter().filter(|x| x.is_some()).count();
        eprintln!(
            "window: {:>7.1} ms ({some} with a value)",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let range = SweepRange::positions(stream, 0, u64::MAX);
    for _ in 0..if run("floor") { reps } else { 0 } {
        let t = std::time::Instant::now();
        let mut n = 0u64;
        snap.view().sweep(range, |_, _| n += 1)?;
        let bare = t.elapsed();
        let t = std::time::Instant::now();
        let mut numbers = 0u64;
        snap.view().sweep(range, |r, _| {
            numbers += u64::from(numeric_field(r.value, field).is_some());
        })?;
        eprintln!(
            "floor, one thread: sweep {n} records {:>6.1} ms, with field parse {:>6.1} ms ({numbers} numbers)",
            bare.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
