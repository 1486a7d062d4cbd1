//! Profiling harness for sealing: indexes N events (default 500k over 100k
//! keys, about one 64 MiB segment of the standard workload) into one
//! in-memory index, then writes its key index file `REPS` times (default 9)
//! the way sealing does (streamed into a temporary file, synced, renamed) and
//! encodes it in memory as often, printing the median of each. On two cores
//! the sealing thread's time is taken from the writer's, so this is part of
//! what buffered appends cost.
//!
//!     cargo run --release --example profile_seal -- 500000
use std::time::Instant;

use tablelog::storage::frame::FrameKind;
use tablelog::storage::index::{FrameMeta, MemIndex};
use tablelog::storage::record::{Hlc, Op};
use tablelog::storage::vfs::OsVfs;
use tablelog::workload::{Rng, Workload};

/// This thread's CPU time in ms: the write's own work, without its fsync's wait.
fn cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(9);
    let w = Workload {
        events: n,
        ..Workload::default()
    };
    let mut rng = Rng(1);
    let mut idx = MemIndex::default();
    let keys: Vec<(Vec<u8>, i64)> = (0..n)
        .map(|i| {
            let (k, t) = w.event(i, &mut rng);
            (w.key(k), t)
        })
        .collect();
    for (f, chunk) in keys.chunks(1000).enumerate() {
        let first = (f * 1000) as u64;
        let meta = FrameMeta {
            offset: first * 130,
            first_pos: first,
            hlc: Hlc(first),
            min_et: 0,
            max_et: 0,
            total_len: 130_000,
            count: chunk.len() as u32,
            kind: FrameKind::Data,
        };
        idx.add_frame(
            meta,
            chunk
                .iter()
                .enumerate()
                .map(|(i, (k, t))| ("bench", &k[..], Op::Put, *t, i as u32 * 130)),
        );
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("seg.kidx");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut written, mut cpu, mut encoded) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = 0;
    for _ in 0..reps.max(1) {
        let (t, c) = (Instant::now(), cpu_ms());
        tablelog::storage::fsutil::atomic_write_with(&OsVfs, &path, |f, tmp| {
            tablelog::storage::kidx_encode::write(&idx, f, tmp)
        })?;
        written.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_ms() - c);
        let t = Instant::now();
        size = std::hint::black_box(idx.encode_kidx()).len();
        encoded.push(t.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!(
        "key index of {n} events, {} MB: written (synced) {:.1} ms ({:.1} ms of CPU), encoded in memory {:.1} ms (medians of {})",
        size / 1_000_000,
        median(written),
        median(cpu),
        median(encoded),
        reps.max(1)
    );
    Ok(())
}
