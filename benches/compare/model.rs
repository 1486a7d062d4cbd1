//! A model of a `get` as of a time that reads tablelog's key index layout
//! and nothing else, run beside the engines: the floor the format sets, so
//! that what tablelog's `get` takes beyond it is the engine's.
//!
//! No engine would ship it: it lives in memory, is built from the finished
//! log as one index over every version, is never checked, and knows nothing
//! of segments, the active segment, late events, patches or deletes (the
//! comparison's log holds puts only), damage or recovery. It lays the index
//! out as a key index file's stream does (`docs/format.md`, format 3):
//!
//! - hash buckets of 16 bytes (16 bits of the key's hash, the key's length,
//!   its offset in the key bytes, its first version and version count),
//!   the smallest power of two at least `keys + keys / 3 + 1` of them,
//!   probed linearly;
//! - the keys' bytes, in key order;
//! - the versions, 32 bytes each: the event time, the value's address and
//!   length in 8 bytes, and 16 bytes unused (a file's row holds the
//!   position, the frame's and the record's offsets and the op in those
//!   24), per key sorted by `(event time, position)`;
//! - the value itself, where tablelog's `get` reads it: the value `Bytes`
//!   that `Snapshot::get` returns for that version (a slice of the mapping
//!   of its segment that `get` reads records through), as any index over
//!   this log must.
//!
//! A lookup reads a bucket, then the key's bytes and its versions together
//! (a binary search), then the value: three dependent reads and about 260
//! instructions (callgrind, of a scratch copy of this code). All but
//! the values sit on 2 MiB pages (`MADV_HUGEPAGE`), as key index files do
//! when the page cache holds them in huge folios.

use bytes::Bytes;
use memmap2::{Advice, MmapMut};

use super::Res;

/// Bytes of a version row: event time (`i64`), the value's address (low 48
/// bits) and length (high 16), then 16 bytes the model does not use.
const ROW: usize = 32;
/// Bytes of a hash bucket.
const BUCKET: usize = 16;

/// The model index. The values its rows point at are kept alive by `_keep`.
pub struct Model {
    buckets: MmapMut,
    mask: usize,
    blob: MmapMut,
    rows: MmapMut,
    /// One handle per value a row points into: keeps their memory mapped and
    /// unchanged while the model lives.
    _keep: Vec<Bytes>,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Anonymous memory of `len` bytes, on 2 MiB pages where the kernel grants them.
fn huge(len: usize) -> Res<MmapMut> {
    let m = MmapMut::map_anon(len.max(1))?;
    // Only advice: without transparent huge pages the model is slower, not wrong.
    let _ = m.advise(Advice::HugePage);
    Ok(m)
}

impl Model {
    /// Builds the model of `stream` over `keys` (distinct) from every
    /// version `snap` holds of them (`Snapshot::history`), each value taken
    /// from `Snapshot::get` of that version (as of its event time, known at
    /// its position), so the model reads it where `get` does.
    pub fn build(snap: &tablelog::Snapshot, stream: &str, keys: &[Vec<u8>]) -> Res<Model> {
        let mut versions = Vec::with_capacity(keys.len());
        let (mut key_bytes, mut rows_len) = (0, 0);
        for key in keys {
            let mut rows = Vec::new();
            for e in snap.history(stream, key, None)? {
                let (et, pos) = (e.event_time, e.position);
                match snap.get(stream, key, et, pos)? {
                    tablelog::GetResult::Present(row) if row.position == pos => {
                        rows.push((et, pos, row.value));
                    }
                    other => {
                        let key = String::from_utf8_lossy(key);
                        let what = format!("get of {key:?} as of {et} at {pos}: {other:?}");
                        return Err(format!("model: not the put history gave, {what}").into());
                    }
                }
            }
            rows.sort_unstable_by_key(|r| (r.0, r.1));
            key_bytes += key.len();
            rows_len += rows.len();
            versions.push(rows);
        }
        let n = keys.len();
        let cap = (n + n / 3 + 1).next_power_of_two().max(2);
        let mut buckets = huge(cap * BUCKET)?;
        let mut blob = huge(key_bytes)?;
        let mut rows = huge(rows_len * ROW)?;
        let mut keep = Vec::with_capacity(rows_len);
        let (mut at, mut first) = (0, 0);
        for (key, vs) in keys.iter().zip(versions) {
            if vs.is_empty() {
                continue;
            }
            assert!(
                (1..1 << 16).contains(&key.len()) && at < 1 << 32 && first < 1 << 32,
                "model: key or index out of range"
            );
            blob[at..at + key.len()].copy_from_slice(key);
            let h = tablelog::storage::index::stable_hash(key);
            let mut i = h as usize & (cap - 1);
            while u16_at(&buckets, i * BUCKET + 2) != 0 {
                i = (i + 1) & (cap - 1);
            }
            let b = &mut buckets[i * BUCKET..(i + 1) * BUCKET];
            b[0..2].copy_from_slice(&((h >> 48) as u16).to_le_bytes());
            b[2..4].copy_from_slice(&(key.len() as u16).to_le_bytes());
            b[4..8].copy_from_slice(&(at as u32).to_le_bytes());
            b[8..12].copy_from_slice(&(first as u32).to_le_bytes());
            b[12..16].copy_from_slice(&(vs.len() as u32).to_le_bytes());
            for (et, _, value) in vs {
                let addr = value.as_ptr() as u64;
                assert!(
                    addr < 1 << 48 && value.len() < 1 << 16,
                    "value out of range"
                );
                let r = &mut rows[first * ROW..(first + 1) * ROW];
                r[0..8].copy_from_slice(&et.to_le_bytes());
                r[8..16].copy_from_slice(&(addr | (value.len() as u64) << 48).to_le_bytes());
                first += 1;
                keep.push(value);
            }
            at += key.len();
        }
        Ok(Model {
            buckets,
            mask: cap - 1,
            blob,
            rows,
            _keep: keep,
        })
    }

    /// Bytes of memory the model's buckets, keys and versions take.
    pub fn bytes(&self) -> usize {
        self.buckets.len() + self.blob.len() + self.rows.len()
    }

    /// The row of `key` as of `t`, as its index among the key's versions in
    /// `(event time, position)` order, and its value.
    pub fn get(&self, key: &[u8], t: i64) -> Option<(usize, &[u8])> {
        let h = tablelog::storage::index::stable_hash(key);
        let mut i = h as usize & self.mask;
        loop {
            let b = &self.buckets[i * BUCKET..(i + 1) * BUCKET];
            let len = u16_at(b, 2);
            if len == 0 {
                return None;
            }
            if u16_at(b, 0) == (h >> 48) as usize && len == key.len() {
                let at = u32_at(b, 4);
                if &self.blob[at..at + len] == key {
                    let (first, n) = (u32_at(b, 8), u32_at(b, 12));
                    let rows = &self.rows[first * ROW..(first + n) * ROW];
                    let (mut lo, mut hi) = (0, n);
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        if u64_at(rows, mid * ROW) as i64 <= t {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    let r = lo.checked_sub(1)?;
                    let v = u64_at(rows, r * ROW + 8);
                    let (addr, len) = ((v & ((1 << 48) - 1)) as usize, (v >> 48) as usize);
                    // SAFETY: `addr` and `len` are those of a `Bytes` in
                    // `self._keep`, which keeps that memory alive for as long
                    // as `self`, which the returned slice borrows: a read-only
                    // mapping of a segment, which tablelog never modifies or
                    // truncates while mapped (`storage::mmap::map`), or
                    // tablelog's own copy of a decompressed value. Nothing
                    // writes through them.
                    let value = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
                    return Some((r, value));
                }
            }
            i = (i + 1) & self.mask;
        }
    }
}
