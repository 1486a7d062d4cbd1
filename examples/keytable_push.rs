//! Micro-benchmark of the active segment's key index: N versions (default 2M)
//! over K keys (default 100k, 16 bytes, random order) pushed into a fresh
//! table, median of 5 runs; then copies every key with its versions and sorts
//! the copy by key, as sealing a segment and a table from scratch do. Fresh memory is part of the cost: a version's 36
//! bytes are page-faulted in as the arenas grow, as in the active segment.
//! `cargo run --release --example keytable_push -- 2000000 100000`
use std::time::Instant;

use tablelog::rng::Rng;
use tablelog::storage::index::VersionRef;
use tablelog::storage::keytable::KeyTable;
use tablelog::storage::record::Op;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(2_000_000);
    let keys = args.get(1).copied().unwrap_or(100_000);
    let mut rng = Rng(3);
    let recs: Vec<([u8; 16], VersionRef)> = (0..n)
        .map(|p| {
            let k = rng.below(keys).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&k.to_be_bytes());
            let v = VersionRef {
                event_time: p as i64,
                position: p,
                frame_off: p / 1000 * 150_000,
                rec_off: (p % 1000 * 150) as u32,
                op: Op::Put,
            };
            (key, v)
        })
        .collect();
    let mut runs = Vec::new();
    let mut copies = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut table = KeyTable::default();
        for (k, v) in &recs {
            table.push(k, *v);
        }
        runs.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        assert!(table.len() as u64 <= keys);
        // What sealing and a table from scratch do with it: a copy of every
        // key with its versions, put in key order.
        let t = Instant::now();
        let mut copy = table.copy_below(u64::MAX);
        let copied = t.elapsed();
        copy.sort();
        copies.push((
            copied.as_secs_f64() * 1e3,
            (t.elapsed() - copied).as_secs_f64() * 1e3,
        ));
    }
    runs.sort_by(f64::total_cmp);
    copies.sort_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
    println!(
        "{n} versions over {keys} keys: push {:.1} ns a version (median of 5; {:.1}-{:.1}); \
         copy {:.1} ms + sort {:.1} ms (median)",
        runs[2], runs[0], runs[4], copies[2].0, copies[2].1
    );
}
