//! A model of the cheapest `get` as of a time that an index over this data
//! can do, run beside the engines as the floor the `get` figures stand on.
//!
//! No engine would ship it: it lives in memory, is built from the finished
//! log, is never checked, and knows nothing of segments, late events,
//! deletes or recovery. It keeps only what a lookup must read, each piece
//! once and as compactly as it goes:
//!
//! - a hash table of 8-byte slots (16 bits of the key's hash, the offset of
//!   the key's entry), at most half full;
//! - per key one contiguous entry: its length and version count, its bytes,
//!   then its versions as 16-byte rows (event time; where its value lies),
//!   sorted by `(event time, position)`;
//! - the value itself, read where tablelog's log holds it (the record in the
//!   mapped segment), as any index over this log must.
//!
//! A lookup reads a slot, the key's entry (a binary search over its rows) and
//! the value: three dependent reads, and a few dozen instructions. The slots
//! (2 MiB at 100,000 keys) and entries (32 MiB) sit on 2 MiB pages
//! (`MADV_HUGEPAGE`), so their reads walk no page tables. The one way under
//! it is an index small enough to stay in cache, which at 2 million versions
//! this machine's shared last-level cache does not hold.

use bytes::Bytes;
use memmap2::{Advice, MmapMut};

use super::Res;

/// Bytes of a row: event time (`i64`), then the value's address (low 48
/// bits) and length (high 16).
const ROW: usize = 16;

/// The model index. The values its rows point at are kept alive by `_keep`.
pub struct Model {
    slots: MmapMut,
    mask: usize,
    arena: MmapMut,
    /// One handle per value a row points into: keeps their memory mapped and
    /// unchanged while the model lives.
    _keep: Vec<Bytes>,
}

fn word(b: &[u8], at: usize) -> u64 {
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
    /// Builds the model of `stream` over `keys` from every version `snap`
    /// holds of them (`Snapshot::history`).
    pub fn build(snap: &tablelog::Snapshot, stream: &str, keys: &[Vec<u8>]) -> Res<Model> {
        let mut entries = Vec::with_capacity(keys.len());
        let mut keep = Vec::new();
        let mut size = 0usize;
        for key in keys {
            let mut rows: Vec<(i64, u64, Bytes)> = snap
                .history(stream, key, None)?
                .into_iter()
                .map(|e| (e.event_time, e.position, e.value))
                .collect();
            rows.sort_unstable_by_key(|r| (r.0, r.1));
            size += entry_len(key.len(), rows.len());
            entries.push(rows);
        }
        let cap = (keys.len() * 2).next_power_of_two().max(2);
        let (mut slots, mut arena) = (huge(cap * 8)?, huge(size)?);
        let mut at = 0;
        for (key, rows) in keys.iter().zip(entries) {
            if rows.is_empty() {
                continue;
            }
            let h = tablelog::storage::index::stable_hash(key);
            let mut i = h as usize & (cap - 1);
            while word(&slots, i * 8) != 0 {
                i = (i + 1) & (cap - 1);
            }
            assert!(at < 1 << 47, "model arena too large");
            let slot = (h >> 48 << 48) | at as u64 | 1 << 47;
            slots[i * 8..i * 8 + 8].copy_from_slice(&slot.to_le_bytes());
            let n = rows.len();
            arena[at..at + 2].copy_from_slice(&(key.len() as u16).to_le_bytes());
            arena[at + 2..at + 4].copy_from_slice(&(n as u16).to_le_bytes());
            arena[at + 8..at + 8 + key.len()].copy_from_slice(key);
            let mut r = at + 8 + key.len().next_multiple_of(8);
            for (et, _, value) in rows {
                let addr = value.as_ptr() as u64;
                assert!(
                    addr < 1 << 48 && value.len() < 1 << 16,
                    "value out of range"
                );
                arena[r..r + 8].copy_from_slice(&et.to_le_bytes());
                arena[r + 8..r + 16]
                    .copy_from_slice(&(addr | (value.len() as u64) << 48).to_le_bytes());
                r += ROW;
                keep.push(value);
            }
            at = r;
        }
        Ok(Model {
            slots,
            mask: cap - 1,
            arena,
            _keep: keep,
        })
    }

    /// Bytes of memory the model's slots and entries take.
    pub fn bytes(&self) -> usize {
        self.slots.len() + self.arena.len()
    }

    /// The row of `key` as of `t`, as its index among the key's versions in
    /// `(event time, position)` order, and its value.
    pub fn get(&self, key: &[u8], t: i64) -> Option<(usize, &[u8])> {
        let h = tablelog::storage::index::stable_hash(key);
        let mut i = h as usize & self.mask;
        loop {
            let s = word(&self.slots, i * 8);
            if s == 0 {
                return None;
            }
            if s >> 48 == h >> 48 {
                // Bit 47 marks a slot in use (an entry may start at offset 0).
                let at = (s & ((1 << 47) - 1)) as usize;
                let a = &self.arena[at..];
                let len = usize::from(u16::from_le_bytes([a[0], a[1]]));
                let n = usize::from(u16::from_le_bytes([a[2], a[3]]));
                if &a[8..8 + len] == key {
                    let rows = &a[8 + len.next_multiple_of(8)..][..n * ROW];
                    let (mut lo, mut hi) = (0, n);
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        if word(rows, mid * ROW) as i64 <= t {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    let r = lo.checked_sub(1)?;
                    let v = word(rows, r * ROW + 8);
                    let (addr, len) = ((v & ((1 << 48) - 1)) as usize, (v >> 48) as usize);
                    // SAFETY: `addr` and `len` are those of a `Bytes` in
                    // `self._keep`, which keeps that memory alive and unchanged
                    // (it is a read-only mapping of a sealed or active segment,
                    // or tablelog's own copy) for as long as `self`, which the
                    // returned slice borrows.
                    let value = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
                    return Some((r, value));
                }
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Bytes of one key's entry.
fn entry_len(key_len: usize, versions: usize) -> usize {
    8 + key_len.next_multiple_of(8) + versions * ROW
}
