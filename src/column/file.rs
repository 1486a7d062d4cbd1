//! The field column file: one numeric field of one stream, typed, per key in
//! `(event_time, position)` order, so a window over a key is a hash lookup,
//! two binary searches and a pass over the window's values. Written atomically, checksummed
//! in 4 KiB chunks, and read in place from its memory map: opening checks the
//! header's chunk, and each other chunk is checked when a lookup first reads
//! it, so a window over a few keys checks a few pages, not the whole file.
//!
//! ```text
//! offset 0   magic        8 bytes "TLOGFCOL"
//! offset 8   version      u32     1
//! offset 12  flags        u32     bit 0: built under a compaction horizon;
//!                                 bit 1: fields stored as f32 (every number
//!                                 of the column is one exactly); others 0
//! offset 16  known_end    u64     K: the column holds the records at positions < K
//! offset 24  keys         u64     N
//! offset 32  events       u64     E
//! offset 40  long_bytes   u64     total bytes of the keys longer than 16 bytes
//! offset 48  slots        u64     S, a power of two >= 2N (1 for no keys)
//! offset 56  horizon      i64     with flag bit 0, the compaction horizon it
//!                                 was built under (it lacks what that
//!                                 compaction dropped at or before it); else 0
//! offset 64  stream_len   u16
//! offset 66  field_len    u16
//! offset 68  reserved     u32     0
//! offset 72  stream name, field name, zero-padded to a multiple of 8
//!            slots        S × 32 bytes, a hash table of the keys: a key sits
//!                         at `key_hash(key) & (S - 1)` or the first empty
//!                         slot after it (wrapping). A slot is all zeros, or:
//!                           u64 start      its first event
//!                           u32 count      its events
//!                           u32 len + 1    its key's length plus one
//!                           16 bytes       a key of up to 16 bytes, zero-padded;
//!                                          a longer one: u64 offset into the
//!                                          long keys, then 8 zero bytes
//!            long keys    long_bytes, zero-padded to 8
//!            events       E × (i64 event time, field: f64, or f32 with flag
//!                         bit 1; NaN where the field is not a number), 16 or
//!                         12 bytes each, zero-padded to 8; each key's events
//!                         are contiguous, in (event_time, position) order;
//!                         keys in slot order
//! B          chunk_crcs   ceil(B / 4096) u32   CRC-32 of each 4 KiB of [0, B)
//!            body_end     u64     B
//!            crc          u32     CRC-32 of chunk_crcs and body_end
//! ```
//!
//! Every record of the stream is an event, whatever its kind (a delete's
//! value is empty, so its field is not a number): the events a window counts.
//! Integers are little-endian. The checksums vouch for every byte, each
//! checked before its bytes are first used; the header's counts must place
//! every section exactly, and a lookup checks the slot it reads names events
//! and key bytes within the file, so no read of a damaged file can go out of
//! bounds or loop. `verify` checks the whole file and its layout (N keys and
//! E events in all, an empty slot to end every probe). A lookup reads one
//! slot (a cache line holds two) and then the key's events. [`key_hash`] is
//! part of the format.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::storage::chunks::{self, ChunkChecks, Chunked, Sums, CHUNK};
use crate::storage::fsutil::{self, SeqWriter};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"TLOGFCOL";
/// Column format version written and read.
pub const COLUMN_VERSION: u32 = 1;
/// Runs of events a binary search checks whole first: four chunks.
const SEARCH_WHOLE: usize = 4 * CHUNK / 16;
/// Header flag: the column was built under a compaction horizon.
const FLAG_HORIZON: u32 = 1;
/// Header flag: fields are stored as f32.
const FLAG_NARROW: u32 = 2;
/// The fixed part of the header, before the names.
const FIXED: usize = 72;

/// What a column file holds, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The file.
    pub path: PathBuf,
    /// The stream.
    pub stream: String,
    /// The numeric field.
    pub field: String,
    /// The column holds exactly the stream's records at positions below this.
    pub known_end: u64,
    /// Keys.
    pub keys: u64,
    /// Events (records).
    pub events: u64,
    /// The compaction horizon in force when it was built, if any: versions
    /// at or before it that compaction dropped are missing, so only windows
    /// starting (exclusively) at or after it can read it.
    pub horizon: Option<i64>,
    /// File size in bytes.
    pub bytes: u64,
}

/// Where each section starts, in bytes from the file's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    slots: usize,
    /// Slot count minus one.
    mask: usize,
    long_keys: usize,
    events: usize,
    /// Bytes of an event: 16, or 12 with the fields narrowed to f32.
    stride: usize,
    body_end: usize,
}

/// Bytes of a slot.
const SLOT: usize = 32;
/// Longest key a slot holds itself.
const INLINE: usize = 16;

/// `n` rounded up to a multiple of 8, `None` on overflow (a damaged
/// header's counts can be anything).
fn pad8(n: usize) -> Option<usize> {
    n.checked_next_multiple_of(8)
}

/// The hash table size for `keys` keys: a power of two, at least twice as
/// many slots as keys, so probes stay short and always reach an empty slot.
fn slots_for(keys: usize) -> usize {
    keys.saturating_mul(2).next_power_of_two()
}

impl Layout {
    /// The layout for these counts, `None` if it overflows or `slots` is not a
    /// power of two at least twice the keys.
    fn new(
        names: usize,
        keys: u64,
        events: u64,
        long_bytes: u64,
        slots: u64,
        narrow: bool,
    ) -> Option<Layout> {
        let keys = usize::try_from(keys).ok()?;
        let events = usize::try_from(events).ok()?;
        let long_bytes = usize::try_from(long_bytes).ok()?;
        let slots = usize::try_from(slots).ok()?;
        if !slots.is_power_of_two() || slots < keys.checked_mul(2)? {
            return None;
        }
        let slot_at = FIXED.checked_add(pad8(names)?)?;
        let long_keys = slot_at.checked_add(slots.checked_mul(SLOT)?)?;
        let ev = long_keys.checked_add(pad8(long_bytes)?)?;
        let stride = if narrow { 12 } else { 16 };
        let body_end = ev.checked_add(pad8(events.checked_mul(stride)?)?)?;
        Some(Layout {
            slots: slot_at,
            mask: slots - 1,
            long_keys,
            events: ev,
            stride,
            body_end,
        })
    }
}

/// The hash of a key that places it in a column's slot table: 64-bit words
/// (the last zero-padded) folded by multiply and shift, then mixed. Part of
/// the file format: it must never change for a format version.
#[must_use]
pub fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (key.len() as u64).wrapping_mul(K);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K);
        h ^= h >> 29;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K);
        h ^= h >> 29;
    }
    // murmur3's 64-bit finalizer.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One key's events, in `(event_time, position)` order, as [`write()`] takes them.
#[cfg(test)]
pub(crate) struct KeyEvents<'a> {
    /// The key.
    pub key: &'a [u8],
    /// `(event_time, field)`; the field `None` where it is not a number.
    pub events: &'a [(i64, Option<f64>)],
}

/// Writes a column of keys whose events are all in memory: [`Plan`] and
/// [`write_planned`] in one. `keys` must be distinct.
#[cfg(test)]
pub(crate) fn write(
    vfs: &dyn crate::storage::vfs::Vfs,
    path: &Path,
    stream: &str,
    field: &str,
    known_end: u64,
    horizon: Option<i64>,
    keys: &[KeyEvents<'_>],
) -> Result<ColumnInfo> {
    let plan = Plan::new(
        keys.iter()
            .map(|k| (k.key, k.events.len() as u64))
            .collect(),
    )?;
    let narrow = keys
        .iter()
        .flat_map(|k| k.events)
        .filter_map(|(_, x)| *x)
        .all(narrows);
    let head = Head {
        stream,
        field,
        known_end,
        horizon,
        narrow,
    };
    write_planned(vfs, path, &head, &plan, &mut |i, out| {
        out.extend(
            keys[i]
                .events
                .iter()
                .map(|&(t, x)| (t, x.unwrap_or(f64::NAN))),
        );
        Ok(())
    })
}

/// Whether a field survives being stored as f32: a column whose every
/// number does stores them so (12 bytes an event instead of 16, so a key's
/// events take fewer cache lines), and reads back the same f64.
#[must_use]
pub(crate) fn narrows(x: f64) -> bool {
    f64::from(x as f32) == x
}

/// What a column's header says beyond its counts.
pub(crate) struct Head<'a> {
    pub stream: &'a str,
    pub field: &'a str,
    /// The column holds the records at positions below this.
    pub known_end: u64,
    /// The compaction horizon it was built under.
    pub horizon: Option<i64>,
    /// Fields stored as f32: every number of the column [`narrows`].
    pub narrow: bool,
}

/// A column's keys placed in its slot table, before its events are written:
/// [`Plan::order`] says in which order [`write_planned`] asks for them.
pub(crate) struct Plan<'a> {
    /// Each key and its event count, as given.
    keys: Vec<(&'a [u8], u64)>,
    /// Per slot, the index of its key in `keys`; `u32::MAX` for none.
    owner: Vec<u32>,
    events: u64,
    long_bytes: u64,
}

impl<'a> Plan<'a> {
    /// Places `keys` (distinct, each with its event count) by their hashes,
    /// in the order given (the order decides where colliding keys go).
    pub(crate) fn new(keys: Vec<(&'a [u8], u64)>) -> Result<Plan<'a>> {
        if let Some((k, _)) = keys.iter().find(|(_, n)| u32::try_from(*n).is_err()) {
            return Err(Error::InvalidInput(format!(
                "key {:?} has more than 2^32 events, more than a column holds",
                String::from_utf8_lossy(k)
            )));
        }
        if keys
            .iter()
            .any(|(k, _)| u32::try_from(k.len() + 1).is_err())
        {
            return Err(Error::InvalidInput(
                "a column's keys are shorter than 4 GiB".into(),
            ));
        }
        if u32::try_from(keys.len()).is_err() {
            return Err(Error::InvalidInput(
                "a column holds fewer than 2^32 keys".into(),
            ));
        }
        let slots = slots_for(keys.len());
        let mask = slots - 1;
        let mut owner = vec![u32::MAX; slots];
        for (i, (k, _)) in keys.iter().enumerate() {
            let mut at = key_hash(k) as usize & mask;
            while owner[at] != u32::MAX {
                at = (at + 1) & mask;
            }
            owner[at] = i as u32;
        }
        let events = keys.iter().map(|(_, n)| n).sum();
        let long_bytes = keys
            .iter()
            .map(|(k, _)| k.len() as u64)
            .filter(|&n| n > INLINE as u64)
            .sum();
        Ok(Plan {
            keys,
            owner,
            events,
            long_bytes,
        })
    }

    /// The indexes of the keys (as given to [`Plan::new`]) in the order
    /// their events are stored: slot order.
    pub(crate) fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.owner
            .iter()
            .filter(|&&i| i != u32::MAX)
            .map(|&i| i as usize)
    }

    /// Events of the key at index `i`.
    pub(crate) fn count(&self, i: usize) -> u64 {
        self.keys[i].1
    }
}

/// What [`write_planned`] asks for a key's events with.
pub(crate) type Fill<'a> = dyn FnMut(usize, &mut Vec<(i64, f64)>) -> Result<()> + 'a;

/// Writes a column atomically (temp file, fsync, rename, directory fsync),
/// asking `fill` for each key's events in [`Plan::order`]: `fill(i, out)`
/// appends the [`Plan::count`] events of key `i` to `out` (empty), as
/// `(event_time, field)` in `(event_time, position)` order, NaN where the
/// field is not a number.
pub(crate) fn write_planned(
    vfs: &dyn crate::storage::vfs::Vfs,
    path: &Path,
    head: &Head<'_>,
    plan: &Plan<'_>,
    fill: &mut Fill<'_>,
) -> Result<ColumnInfo> {
    let Head {
        stream,
        field,
        known_end,
        horizon,
        narrow,
    } = *head;
    let (stream_len, field_len) = match (u16::try_from(stream.len()), u16::try_from(field.len())) {
        (Ok(s), Ok(f)) => (s, f),
        _ => return Err(Error::InvalidInput("stream or field name too long".into())),
    };
    let (events, long_bytes, slots) = (plan.events, plan.long_bytes, plan.owner.len());
    let layout = Layout::new(
        stream.len() + field.len(),
        plan.keys.len() as u64,
        events,
        long_bytes,
        slots as u64,
        narrow,
    )
    .ok_or_else(|| Error::InvalidInput("column too large".into()))?;
    // Keys' events are stored in slot order, so that requests visited in
    // slot order read the events front to back. The slots are written a
    // piece at a time, not held: a table has at least two a key, 64 bytes.
    let write_slots = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut piece: Vec<u8> = Vec::with_capacity(64 << 10);
        let (mut start, mut long_at) = (0u64, 0u64);
        for &i in &plan.owner {
            let mut slot = [0u8; SLOT];
            if let Some(&(key, count)) = plan.keys.get(i as usize) {
                slot[0..8].copy_from_slice(&start.to_le_bytes());
                slot[8..12].copy_from_slice(&(count as u32).to_le_bytes());
                slot[12..16].copy_from_slice(&(key.len() as u32 + 1).to_le_bytes());
                if key.len() <= INLINE {
                    slot[16..16 + key.len()].copy_from_slice(key);
                } else {
                    slot[16..24].copy_from_slice(&long_at.to_le_bytes());
                    long_at += key.len() as u64;
                }
                start += count;
            }
            piece.extend_from_slice(&slot);
            if piece.len() == piece.capacity() {
                w.write_all(&piece)?;
                piece.clear();
            }
        }
        w.write_all(&piece)
    };
    let key_count = plan.keys.len();
    let mut total = 0u64;
    fsutil::atomic_write_with(vfs, path, |file, tmp| {
        let io = |e| Error::io(tmp, e);
        let mut w = Chunked::at(SeqWriter::new(file, 0), 0);
        let mut head = Vec::with_capacity(layout.slots);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&COLUMN_VERSION.to_le_bytes());
        let flags =
            if horizon.is_some() { FLAG_HORIZON } else { 0 } | if narrow { FLAG_NARROW } else { 0 };
        head.extend_from_slice(&flags.to_le_bytes());
        head.extend_from_slice(&known_end.to_le_bytes());
        head.extend_from_slice(&(key_count as u64).to_le_bytes());
        head.extend_from_slice(&events.to_le_bytes());
        head.extend_from_slice(&long_bytes.to_le_bytes());
        head.extend_from_slice(&(slots as u64).to_le_bytes());
        head.extend_from_slice(&horizon.unwrap_or(0).to_le_bytes());
        head.extend_from_slice(&stream_len.to_le_bytes());
        head.extend_from_slice(&field_len.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(stream.as_bytes());
        head.extend_from_slice(field.as_bytes());
        head.resize(layout.slots, 0);
        w.write_all(&head).map_err(io)?;
        write_slots(&mut w).map_err(io)?;
        for i in plan.order() {
            let key = plan.keys[i].0;
            if key.len() > INLINE {
                w.write_all(key).map_err(io)?;
            }
        }
        w.pad().map_err(io)?;
        // Each section a key at a time, through one buffer.
        let mut buf: Vec<u8> = Vec::new();
        let mut ev: Vec<(i64, f64)> = Vec::new();
        for i in plan.order() {
            ev.clear();
            fill(i, &mut ev)?;
            if ev.len() as u64 != plan.count(i) {
                return Err(Error::InvalidInput(format!(
                    "column build: key {:?} has {} events, {} were planned",
                    String::from_utf8_lossy(plan.keys[i].0),
                    ev.len(),
                    plan.count(i)
                )));
            }
            buf.clear();
            for &(t, x) in &ev {
                buf.extend_from_slice(&t.to_le_bytes());
                if narrow {
                    buf.extend_from_slice(&(x as f32).to_le_bytes());
                } else {
                    buf.extend_from_slice(&x.to_le_bytes());
                }
            }
            w.write_all(&buf).map_err(io)?;
        }
        w.pad().map_err(io)?;
        debug_assert_eq!(w.end(), layout.body_end as u64);
        let (sums, mut inner) = w.finish();
        let crcs = Sums::join(vec![sums], layout.body_end as u64)
            .ok_or_else(|| Error::corrupt(tmp, 0, "column body written out of order"))?;
        inner
            .write_all(&chunks::trailer(&crcs, layout.body_end as u64))
            .map_err(io)?;
        let (_, end) = inner.finish().map_err(io)?;
        total = end;
        Ok(())
    })?;
    Ok(ColumnInfo {
        path: path.to_path_buf(),
        stream: stream.to_string(),
        field: field.to_string(),
        known_end,
        keys: key_count as u64,
        events,
        horizon,
        bytes: total,
    })
}

/// A column file, read in place: opening checks the trailer and the
/// header's chunks; every other chunk is checked the first time a lookup
/// reads it ([`Column::find`], [`Column::ready`]).
#[derive(Debug)]
pub struct Column {
    info: ColumnInfo,
    bytes: Bytes,
    layout: Layout,
    checks: ChunkChecks,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Column {
    /// Reads and validates the column file at `path`.
    pub fn open(vfs: &dyn crate::storage::vfs::Vfs, path: &Path) -> Result<Column> {
        let bytes = crate::storage::read_file(vfs, path)?;
        Column::parse(bytes, path)
    }

    /// Validates `bytes` as a column file: checksums first, then the layout.
    pub fn parse(bytes: Bytes, path: &Path) -> Result<Column> {
        let (info, layout, checks) = checked_header(&bytes, path)?;
        Ok(Column {
            info,
            bytes,
            layout,
            checks,
        })
    }

    /// Checks what opening leaves to first use: every chunk's checksum (on
    /// every core) and every slot's bounds. For `verify`.
    pub fn check_all(&self) -> Result<()> {
        self.checks.check_all(&self.bytes, &self.info.path)?;
        self.check_layout(&self.info.path)
    }

    /// Checks the chunks holding bytes `from..to`, those not checked yet.
    #[inline]
    fn ensure(&self, from: usize, to: usize) -> Result<()> {
        self.checks.ensure(&self.bytes, from..to, &self.info.path)
    }

    /// Makes `events` readable (their times and fields), checking their
    /// chunks on first use.
    #[inline]
    pub fn ready(&self, events: &std::ops::Range<usize>) -> Result<()> {
        self.in_bounds(events)?;
        self.ensure(
            self.layout.events + self.layout.stride * events.start,
            self.layout.events + self.layout.stride * events.end,
        )
    }

    #[inline]
    fn in_bounds(&self, events: &std::ops::Range<usize>) -> Result<()> {
        if events.start <= events.end && events.end as u64 <= self.info.events {
            return Ok(());
        }
        Err(Error::corrupt(
            &self.info.path,
            self.layout.slots as u64,
            format!("column events {events:?} out of bounds"),
        ))
    }

    /// Every slot is all zeros or names events and key bytes in bounds; `N`
    /// slots hold keys, and their events number `E`; one slot at least is
    /// empty. (Lookups check the slots they read themselves; this is for
    /// `verify`.)
    fn check_layout(&self, path: &Path) -> Result<()> {
        let (mut keys, mut events, mut empty) = (0u64, 0u64, false);
        let long_bytes = (self.layout.events - self.layout.long_keys) as u64;
        for i in 0..=self.layout.mask {
            let at = self.layout.slots + SLOT * i;
            let slot = &self.bytes[at..at + SLOT];
            let bad = |why: String| Err(Error::corrupt(path, at as u64, why));
            let len1 = u32::from_le_bytes(slot[12..16].try_into().expect("4 bytes"));
            if len1 == 0 {
                if slot.iter().any(|&b| b != 0) {
                    return bad(format!("column slot {i} is neither empty nor a key"));
                }
                empty = true;
                continue;
            }
            let (start, count) = (
                u64_at(slot, 0),
                u64::from(u32::from_le_bytes(slot[8..12].try_into().expect("4 bytes"))),
            );
            if start
                .checked_add(count)
                .is_none_or(|e| e > self.info.events)
            {
                return bad(format!(
                    "column slot {i} names events {start} + {count} of {}",
                    self.info.events
                ));
            }
            let len = u64::from(len1 - 1);
            if len > INLINE as u64 {
                let off = u64_at(slot, 16);
                if off.checked_add(len).is_none_or(|e| e > long_bytes) {
                    return bad(format!(
                        "column slot {i} names key bytes {off} + {len} of {long_bytes}"
                    ));
                }
            }
            // Each key's events in time order (lookups binary-search them).
            let (start, count) = (start as usize, count as usize);
            self.ready(&(start..start + count))?;
            if (start + 1..start + count).any(|e| self.time(e - 1) > self.time(e)) {
                return bad(format!("column slot {i}: its events are not in time order"));
            }
            keys += 1;
            events += count as u64;
        }
        if keys != self.info.keys || events != self.info.events || !empty {
            return Err(Error::corrupt(
                path,
                self.layout.slots as u64,
                format!(
                    "column slots hold {keys} keys and {events} events, the header says {} and {}{}",
                    self.info.keys,
                    self.info.events,
                    if empty { "" } else { ", and none is empty" }
                ),
            ));
        }
        Ok(())
    }

    /// The slot at `i`: its events, and its key (empty for an empty slot),
    /// both checked to lie in the file.
    #[inline]
    fn slot(&self, i: usize) -> Result<(std::ops::Range<usize>, &[u8])> {
        let at = self.layout.slots + SLOT * i;
        let slot = &self.bytes[at..at + SLOT];
        let len1 = u32::from_le_bytes(slot[12..16].try_into().expect("4 bytes")) as usize;
        let start = u64_at(slot, 0) as usize;
        let count = u32::from_le_bytes(slot[8..12].try_into().expect("4 bytes")) as usize;
        let len = len1.saturating_sub(1);
        let events = start..start.saturating_add(count);
        let key = if len <= INLINE {
            Some(&slot[16..16 + len])
        } else {
            let off = self
                .layout
                .long_keys
                .saturating_add(u64_at(slot, 16) as usize);
            off.checked_add(len)
                .filter(|&e| e <= self.layout.events)
                .map(|e| &self.bytes[off..e])
        };
        match key {
            Some(key) if events.end as u64 <= self.info.events => Ok((events, key)),
            _ => Err(Error::corrupt(
                &self.info.path,
                at as u64,
                format!("column slot {i} names events or key bytes out of bounds"),
            )),
        }
    }

    /// What the file holds.
    #[must_use]
    pub fn info(&self) -> &ColumnInfo {
        &self.info
    }

    /// Every key with its events, in slot order (each slot's chunk, and a
    /// long key's, checked first).
    pub fn entries(&self) -> impl Iterator<Item = Result<(&[u8], std::ops::Range<usize>)>> + '_ {
        (0..=self.layout.mask)
            .filter_map(|i| self.checked_slot(i).transpose())
            .map(|slot| slot.map(|(events, key)| (key, events)))
    }

    /// The slot at `i` as [`Column::slot`] reads it, `None` if it is empty,
    /// after checking the chunk it lies in and a long key's bytes.
    #[inline]
    fn checked_slot(&self, i: usize) -> Result<Option<(std::ops::Range<usize>, &[u8])>> {
        let at = self.layout.slots + SLOT * i;
        self.ensure(at, at + SLOT)?;
        if !self.slot_used(i) {
            return Ok(None);
        }
        let (events, key) = self.slot(i)?;
        if key.len() > INLINE {
            let from = key.as_ptr() as usize - self.bytes.as_ptr() as usize;
            self.ensure(from, from + key.len())?;
        }
        Ok(Some((events, key)))
    }

    #[inline]
    fn slot_used(&self, i: usize) -> bool {
        let at = self.layout.slots + SLOT * i + 12;
        self.bytes[at..at + 4] != [0; 4]
    }

    /// Slots in the hash table (a power of two).
    #[must_use]
    pub fn slots(&self) -> usize {
        self.layout.mask + 1
    }

    /// Where a lookup of `key` starts: pass it to [`Column::find`]. Loading the
    /// slot early ([`Column::prefetch_slot`]) lets lookups overlap.
    #[must_use]
    #[inline]
    pub fn home(&self, key: &[u8]) -> usize {
        key_hash(key) as usize & self.layout.mask
    }

    /// Starts loading the slot a lookup from `home` reads first.
    #[inline]
    pub fn prefetch_slot(&self, home: usize) {
        crate::hint::prefetch(&self.bytes[self.layout.slots + SLOT * home]);
    }

    /// Starts loading the events of the key in the slot at `home`, the first
    /// a lookup from there compares (their first 512 bytes: a binary search
    /// over more reads a few lines of them anyway).
    #[inline]
    pub fn prefetch_candidate(&self, home: usize) {
        if let Ok((events, _)) = self.slot(home) {
            let stride = self.layout.stride;
            let from = self.layout.events + stride * events.start;
            let to = self.layout.events + stride * events.end.min(events.start + 512 / stride);
            // Every line the events touch, the last one included.
            for at in (from & !63..to).step_by(64) {
                if let Some(b) = self.bytes.get(at.max(from)) {
                    crate::hint::prefetch(b);
                }
            }
        }
    }

    /// The events of `key`, looked up from its [`Column::home`] slot; `None`
    /// if the column does not hold the key.
    #[inline]
    pub fn find(&self, key: &[u8], home: usize) -> Result<Option<std::ops::Range<usize>>> {
        let mut at = home;
        // Bounded, whatever the table holds.
        for _ in 0..=self.layout.mask {
            let Some((events, k)) = self.checked_slot(at)? else {
                return Ok(None);
            };
            if same(k, key) {
                return Ok(Some(events));
            }
            at = (at + 1) & self.layout.mask;
        }
        Ok(None)
    }

    /// The events of `events` with times in `(after, upto]`, their times and
    /// fields checked: a key's events of a few pages are checked whole
    /// (usually one or two chunks, already checked: an atomic load each)
    /// and searched; a longer run is checked only where its binary searches
    /// read, and then between the bounds they find.
    pub fn between(
        &self,
        events: std::ops::Range<usize>,
        after: i128,
        upto: i128,
    ) -> Result<std::ops::Range<usize>> {
        self.in_bounds(&events)?;
        if events.len() <= SEARCH_WHOLE {
            self.ready(&events)?;
            let a = first_after(events.clone(), after, |e| Ok(self.time(e)))?;
            let b = first_after(a..events.end, upto, |e| Ok(self.time(e)))?;
            return Ok(a..b);
        }
        let a = first_after(events.clone(), after, |e| self.checked_time(e))?;
        let b = first_after(a..events.end, upto, |e| self.checked_time(e))?;
        self.ready(&(a..b))?;
        Ok(a..b)
    }

    /// Event `e`'s time, its chunk checked first.
    #[inline]
    fn checked_time(&self, e: usize) -> Result<i64> {
        let at = self.layout.events + self.layout.stride * e;
        self.ensure(at, at + 8)?;
        Ok(self.time(e))
    }

    /// Event `e`'s time (after [`Column::ready`] for a range holding `e`).
    #[must_use]
    #[inline]
    pub fn time(&self, e: usize) -> i64 {
        let at = self.layout.events + self.layout.stride * e;
        i64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Event `e`'s field, `None` where it is not a number (after
    /// [`Column::ready`] for a range holding `e`).
    #[must_use]
    #[inline]
    pub fn value(&self, e: usize) -> Option<f64> {
        let at = self.layout.events + self.layout.stride * e + 8;
        let x = if self.layout.stride == 12 {
            f64::from(f32::from_le_bytes(
                self.bytes[at..at + 4].try_into().expect("4 bytes"),
            ))
        } else {
            f64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
        };
        Some(x).filter(|x| !x.is_nan())
    }
}

/// The first of `events` whose `time` is after `bound` (`events.end` if
/// none); times must not decrease along `events`. Branch-free: the halving
/// does not depend on the comparisons, whose outcomes select with a
/// conditional move instead of a jump.
#[inline]
fn first_after(
    events: std::ops::Range<usize>,
    bound: i128,
    time: impl Fn(usize) -> Result<i64>,
) -> Result<usize> {
    let (mut base, mut size) = (events.start, events.len());
    if size == 0 {
        return Ok(base);
    }
    while size > 1 {
        let half = size / 2;
        let mid = base + half;
        base = if i128::from(time(mid)?) > bound {
            base
        } else {
            mid
        };
        size -= half;
    }
    Ok(base + usize::from(i128::from(time(base)?) <= bound))
}

/// `a == b`, without a call for keys of 8 to 16 bytes (two overlapping
/// words).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word =
            |k: &[u8], at: usize| u64::from_le_bytes(k[at..at + 8].try_into().expect("8 bytes"));
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// The header's fields, and the layout its counts give, which must end at
/// `body_end`.
fn header(b: &[u8], body_end: usize, path: &Path) -> Result<(ColumnInfo, Layout)> {
    let bad = |at: usize, why: String| Error::corrupt(path, at as u64, why);
    if &b[..8] != MAGIC {
        return Err(bad(0, "bad column magic".into()));
    }
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != COLUMN_VERSION {
        return Err(bad(8, format!("unsupported column version {version}")));
    }
    let (known_end, keys, events, long_bytes, slots) = (
        u64_at(b, 16),
        u64_at(b, 24),
        u64_at(b, 32),
        u64_at(b, 40),
        u64_at(b, 48),
    );
    let flags = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
    if flags & !(FLAG_HORIZON | FLAG_NARROW) != 0 {
        return Err(bad(12, format!("unknown column flags {flags:#x}")));
    }
    let horizon = (flags & FLAG_HORIZON != 0)
        .then(|| i64::from_le_bytes(b[56..64].try_into().expect("8 bytes")));
    let stream_len = usize::from(u16::from_le_bytes([b[64], b[65]]));
    let field_len = usize::from(u16::from_le_bytes([b[66], b[67]]));
    let narrow = flags & FLAG_NARROW != 0;
    let layout = Layout::new(
        stream_len + field_len,
        keys,
        events,
        long_bytes,
        slots,
        narrow,
    )
    .filter(|l| l.body_end == body_end)
    .ok_or_else(|| {
        bad(
            24,
            format!(
                "column of {keys} keys, {events} events, {long_bytes} long key bytes \
                     and {slots} slots does not fill its {body_end}-byte body"
            ),
        )
    })?;
    let name = |from: usize, n: usize| {
        std::str::from_utf8(&b[from..from + n])
            .map(str::to_string)
            .map_err(|_| bad(from, "column name is not UTF-8".into()))
    };
    let info = ColumnInfo {
        path: path.to_path_buf(),
        stream: name(FIXED, stream_len)?,
        field: name(FIXED + stream_len, field_len)?,
        known_end,
        keys,
        events,
        horizon,
        bytes: b.len() as u64,
    };
    Ok((info, layout))
}

/// Reads only the header of a column for the catalog, checked against its
/// chunks' checksums (the rest is checked when it is used).
pub fn peek(vfs: &dyn crate::storage::vfs::Vfs, path: &Path) -> Result<ColumnInfo> {
    let b = crate::storage::read_file(vfs, path)?;
    Ok(checked_header(&b, path)?.0)
}

/// The trailer (its checksum), then the header: bounds-checked as it is
/// parsed, and trusted only once its chunks match their checksums.
fn checked_header(b: &[u8], path: &Path) -> Result<(ColumnInfo, Layout, ChunkChecks)> {
    let checks = ChunkChecks::open(b, FIXED, path, "column")?;
    let (info, layout) = header(b, checks.body_end(), path)?;
    checks.ensure(b, 0..layout.slots.min(checks.body_end()), path)?;
    Ok((info, layout, checks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memvfs::MemVfs;
    use crate::storage::vfs::Vfs;

    /// Keys and their events: one longer than a slot holds, one of exactly
    /// 16 bytes, one with events whose field is not a number.
    type Sample = Vec<(&'static [u8], Vec<(i64, Option<f64>)>)>;

    fn sample_keys() -> Sample {
        vec![
            (b"a", vec![(1, Some(1.5)), (2, None), (2, Some(-3.0))]),
            (b"bb", (0..40).map(|i| (i * 10, Some(i as f64))).collect()),
            (b"c", vec![(i64::MIN, None)]),
            (
                b"a key longer than sixteen bytes",
                vec![(7, Some(7.0)), (8, Some(8.0))],
            ),
            (b"sixteen bytes!!!", vec![(i64::MIN, None)]),
        ]
    }

    fn sample(vfs: &MemVfs, path: &Path) -> ColumnInfo {
        let keys = sample_keys();
        let keys: Vec<KeyEvents<'_>> = keys
            .iter()
            .map(|(k, e)| KeyEvents { key: k, events: e })
            .collect();
        write(vfs, path, "s", "price", 99, Some(-5), &keys).unwrap()
    }

    #[test]
    fn a_column_reads_back_what_was_written() {
        let vfs = MemVfs::new();
        let path = Path::new("/db/columns/s@7072696365.col");
        vfs.create_dir_all(path.parent().unwrap()).unwrap();
        let info = sample(&vfs, path);
        let col = Column::open(&vfs, path).unwrap();
        assert_eq!(col.info(), &info);
        assert_eq!(peek(&vfs, path).unwrap(), info);
        assert_eq!(
            (info.keys, info.events, info.known_end, info.horizon),
            (5, 47, 99, Some(-5))
        );
        col.ready(&(0..47)).unwrap();
        col.check_all().unwrap();
        assert!(col.ready(&(0..48)).is_err());
        let find = |k: &[u8]| col.find(k, col.home(k)).unwrap();
        for (key, events) in sample_keys() {
            let got = find(key).unwrap();
            assert_eq!(got.len(), events.len());
            for (e, &(t, x)) in got.zip(&events) {
                assert_eq!((col.time(e), col.value(e)), (t, x));
            }
        }
        for absent in [
            &b"b"[..],
            b"",
            b"a key longer than sixteen byteS",
            b"sixteen bytes!!?",
            b"cc",
        ] {
            assert_eq!(find(absent), None, "{absent:?}");
        }
        // Events are stored in slot order, back to back.
        let mut entries: Vec<(Vec<u8>, std::ops::Range<usize>)> = col
            .entries()
            .map(|r| r.map(|(k, e)| (k.to_vec(), e)).unwrap())
            .collect();
        assert_eq!(entries.len(), 5);
        assert!(entries.windows(2).all(|w| w[0].1.end == w[1].1.start));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(entries[1].0, b"a key longer than sixteen bytes");
    }

    /// Fields are narrowed to f32 only when every number survives it exactly;
    /// one that would not keeps the whole column in f64.
    #[test]
    fn fields_are_narrowed_only_when_exact() {
        let vfs = MemVfs::new();
        vfs.create_dir_all(Path::new("/db")).unwrap();
        type Events<'a> = &'a [(i64, Option<f64>)];
        let cases: [(Events<'_>, usize); 4] = [
            (
                &[
                    (1, Some(1.5)),
                    (2, None),
                    (3, Some(-0.0)),
                    (4, Some(16_777_216.0)),
                ],
                12,
            ),
            (&[(1, Some(1.5)), (2, Some(0.1))], 16),
            (&[(1, Some(16_777_217.0))], 16),
            (&[(1, Some(1e300)), (2, Some(f64::MIN_POSITIVE))], 16),
        ];
        for (i, (events, stride)) in cases.into_iter().enumerate() {
            let path = PathBuf::from(format!("/db/n{i}.col"));
            let keys = [KeyEvents { key: b"k", events }];
            write(&vfs, &path, "s", "x", 1, None, &keys).unwrap();
            let col = Column::open(&vfs, &path).unwrap();
            assert_eq!(col.layout.stride, stride, "case {i}");
            let found = col.find(b"k", col.home(b"k")).unwrap().unwrap();
            col.ready(&found).unwrap();
            for (e, &(t, x)) in found.zip(events) {
                assert_eq!(col.time(e), t);
                assert_eq!(
                    col.value(e).map(f64::to_bits),
                    x.map(f64::to_bits),
                    "case {i}"
                );
            }
            col.check_all().unwrap();
        }
    }

    /// Every single-byte change anywhere in the file is refused on opening,
    /// with the file's path.
    #[test]
    fn a_damaged_column_is_never_trusted() {
        let vfs = MemVfs::new();
        let path = Path::new("/db/c.col");
        vfs.create_dir_all(Path::new("/db")).unwrap();
        sample(&vfs, path);
        let good = vfs.read(path).unwrap().to_vec();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x41;
            match Column::parse(Bytes::from(bad), path).and_then(|c| c.check_all()) {
                Err(Error::Corruption { path: p, .. }) => assert_eq!(p, path),
                other => panic!("flipping byte {at} gave {other:?}"),
            }
        }
        for len in 0..good.len() {
            assert!(Column::parse(Bytes::copy_from_slice(&good[..len]), path).is_err());
        }
    }

    /// A column over 1 MiB has several chunk checksums; a change in any chunk
    /// is caught, whichever thread checks it.
    #[test]
    fn every_chunk_of_a_large_column_is_checked() {
        let vfs = MemVfs::new();
        let path = Path::new("/db/big.col");
        vfs.create_dir_all(Path::new("/db")).unwrap();
        let ev: Vec<(i64, Option<f64>)> = (0..200_000).map(|i| (i, Some(i as f64))).collect();
        let keys = [KeyEvents {
            key: b"k",
            events: &ev,
        }];
        let info = write(&vfs, path, "s", "x", 1, None, &keys).unwrap();
        let good = vfs.read(path).unwrap().to_vec();
        assert!(info.bytes > 5 * CHUNK as u64);
        let col = Column::parse(Bytes::from(good.clone()), path).unwrap();
        col.check_all().unwrap();
        for at in [0, CHUNK, 3 * CHUNK + 17, good.len() - 100] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            let checked = Column::parse(Bytes::from(bad), path).and_then(|c| c.check_all());
            assert!(checked.is_err(), "byte {at}");
        }
        // A damaged chunk is found when first needed, not before.
        let damaged = col.layout.events + col.layout.stride * 150_000;
        let mut bad = good.clone();
        bad[damaged] ^= 1;
        let col = Column::parse(Bytes::from(bad), path).unwrap();
        assert!(col.ready(&(0..1000)).is_ok());
        // A long run is searched checking only what the search reads.
        assert_eq!(col.between(0..200_000, 99, 199).unwrap(), 100..200);
        assert!(col.between(0..200_000, 149_990, 150_010).is_err());
        assert!(col.ready(&(149_000..151_000)).is_err());
        assert!(col.ready(&(150_000..150_001)).is_err(), "stays refused");
        assert!(col.ready(&(0..10)).is_ok(), "others still read");
    }
}
