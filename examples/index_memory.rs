//! Memory of the active segment's in-memory key index (`KeyTable`) per key.
//!
//! ```text
//! cargo build --release --example index_memory
//! target/release/examples/index_memory                 # every case below, one process each
//! target/release/examples/index_memory table|db KEYS VERSIONS
//! ```
//!
//! Inserts `KEYS` distinct 16-byte keys (default 1M) with `VERSIONS` versions each
//! (round-robin passes over the keys, so every key gets its versions in turn),
//! and reports the resident-memory delta from `/proc/self/status` per key and per
//! version:
//!
//! - `table`: a bare [`KeyTable`], pushed directly (only the index itself).
//! - `db`: a database with one big active segment (segment size 4 GiB, no
//!   automatic checkpoints), records of 16-byte keys and 100-byte values
//!   committed in batches of 1000. The records go to the segment file through
//!   `pwrite`, so they sit in the page cache and are not part of RSS (the file is
//!   only mapped, and then counted in `RssFile`, when a reader takes a snapshot);
//!   `RssAnon` is the key table plus the frame index and allocator slack.
//!
//! Without arguments it runs `table` and `db` for 1 and 10 versions in fresh
//! processes and prints the expected size from the data structures next to them.
use std::time::Instant;

use tablelog::storage::index::VersionRef;
use tablelog::storage::keytable::KeyTable;
use tablelog::{Batch, Db, Op};

const KEY_LEN: usize = 16;
/// `Slot` in keytable.rs: min_et 8 + best_et 8 + prefix 16 (the whole key, up
/// to 16 bytes) + key_off, key_len, tail, best 4 x 4; one per key, densely.
const SLOT: usize = 48;
/// `Entry` in keytable.rs: slot index and 32 bits of hash, one per bucket.
const ENTRY: usize = 8;

#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss: u64,
    anon: u64,
    file: u64,
    hwm: u64,
}

fn mem() -> Mem {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Mem {
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        hwm: field("VmHWM:"),
    }
}

fn key(k: u64) -> [u8; KEY_LEN] {
    // Spread the keys over the key space, as hashes would.
    let mut out = [0u8; KEY_LEN];
    let s = format!(
        "{:016}",
        k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10_000_000_000_000_000
    );
    out.copy_from_slice(s.as_bytes());
    out
}

/// The key table's bucket count for `n` keys: at least 16, doubled until no
/// more than three quarters are in use.
fn buckets(n: u64) -> u64 {
    let mut b = 16;
    while n * 4 > b * 3 {
        b *= 2;
    }
    b
}

fn expected(keys: u64, versions: u64) -> (f64, f64) {
    let b = buckets(keys) as f64;
    // An entry per bucket, and a dense slot per key, whose prefix holds a key
    // of up to 16 bytes.
    let table = b * ENTRY as f64 + keys as f64 * SLOT as f64;
    let per_version = (std::mem::size_of::<VersionRef>() + 4) as f64; // + back-link
    let total = table + (keys * versions) as f64 * per_version;
    (total, table / keys as f64)
}

fn run(mode: &str, keys: u64, versions: u64) -> Result<(), Box<dyn std::error::Error>> {
    let value = [b'v'; 100];
    let dir = tempfile::tempdir()?;
    let db = if mode == "db" {
        Some(
            Db::builder(dir.path())
                .segment_size(4 << 30)
                .checkpoint_every(0)
                .auto_merge(false)
                .open()?,
        )
    } else {
        None
    };
    let writer = db.as_ref().map(Db::writer);
    let mut table = KeyTable::default();
    let before = mem();
    let t = Instant::now();
    let mut pos = 0u64;
    let mut batch = Batch::new();
    for pass in 0..versions {
        for k in 0..keys {
            let et = (pass * keys + k) as i64;
            match &writer {
                Some(w) => {
                    batch.put_at("s", key(k), value, et)?;
                    if batch.len() == 1000 {
                        w.commit(std::mem::take(&mut batch))?;
                    }
                }
                None => table.push(
                    &key(k),
                    VersionRef {
                        event_time: et,
                        position: pos,
                        frame_off: pos / 1000 * 150_000,
                        rec_off: (pos % 1000 * 150) as u32,
                        op: Op::Put,
                    },
                ),
            }
            pos += 1;
        }
    }
    if let Some(w) = &writer {
        if !batch.is_empty() {
            w.commit(std::mem::take(&mut batch))?;
        }
    }
    let after = mem();
    let n = keys * versions;
    let per = |d: u64, by: u64| d as f64 / by as f64;
    let d_anon = after.anon.saturating_sub(before.anon);
    let (exp, table_per_key) = expected(keys, versions);
    println!(
        "{mode:5} keys={keys} versions/key={versions}: {:.1}s, RSS +{:.1} MiB (anon +{:.1}, file +{:.1}), \
         peak RSS +{:.1} MiB; anon per key {:.1} B = {:.1} B beyond the key's {KEY_LEN} bytes; \
         per version {:.1} B; expected from the structures {:.1} B/key ({:.1} table/key, key included, + {} x {} B/version); \
         key index {:.1} B per key beyond the key's bytes (anon per key less the key and the versions)",
        t.elapsed().as_secs_f64(),
        per(after.rss.saturating_sub(before.rss), 1 << 20),
        per(d_anon, 1 << 20),
        per(after.file.saturating_sub(before.file), 1 << 20),
        per(after.hwm.saturating_sub(before.rss), 1 << 20),
        per(d_anon, keys),
        per(d_anon, keys) - KEY_LEN as f64,
        per(d_anon, n),
        exp / keys as f64,
        table_per_key,
        versions,
        std::mem::size_of::<VersionRef>() + 4,
        per(d_anon, keys)
            - KEY_LEN as f64
            - versions as f64 * (std::mem::size_of::<VersionRef>() + 4) as f64,
    );
    if mode == "table" {
        assert_eq!(table.len() as u64, keys);
    }
    drop(writer);
    drop(db);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, keys, versions] = &args[..] {
        return run(mode, keys.parse()?, versions.parse()?);
    }
    let keys: u64 = args
        .first()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "size_of::<VersionRef>() = {} B, Slot = {SLOT} B, Entry = {ENTRY} B, buckets for {keys} keys = {} (load {:.3})",
        std::mem::size_of::<VersionRef>(),
        buckets(keys),
        keys as f64 / buckets(keys) as f64
    );
    let exe = std::env::current_exe()?;
    for mode in ["table", "db"] {
        for versions in [1u64, 10] {
            let status = std::process::Command::new(&exe)
                .args([mode, &keys.to_string(), &versions.to_string()])
                .status()?;
            if !status.success() {
                return Err(format!("{mode} {versions} failed: {status}").into());
            }
        }
    }
    Ok(())
}
