//! Micro-benchmark of the active segment's key index: N versions (default 2M)
//! over K keys (default 100k, 16 bytes, random order) pushed into a fresh
//! table, median of 5 runs. Fresh memory is part of the cost: a version's 36
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
    for _ in 0..5 {
        let t = Instant::now();
        let mut table = KeyTable::default();
        for (k, v) in &recs {
            table.push(k, *v);
        }
        runs.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        assert!(table.len() as u64 <= keys);
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "{n} versions over {keys} keys: push {:.1} ns a version (median of 5; {:.1}-{:.1})",
        runs[2], runs[0], runs[4]
    );
}
