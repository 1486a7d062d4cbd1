//! The field column file: one numeric field of one stream, typed, per key in
//! `(event_time, position)` order, with running sums, so a window over a key
//! is two binary searches and a subtraction. Written atomically, checksummed
//! in 1 MiB chunks (so validating it runs on every core), and read in place
//! from its memory map.
//!
//! ```text
//! offset 0   magic        8 bytes "TLOGFCOL"
//! offset 8   version      u32     1
//! offset 12  flags        u32     0
//! offset 16  known_end    u64     K: the column holds the records at positions < K
//! offset 24  keys         u64     N
//! offset 32  events       u64     E
//! offset 40  key_bytes    u64     total bytes of the keys
//! offset 48  slots        u64     S, a power of two >= 2N (1 for no keys)
//! offset 56  stream_len   u16
//! offset 58  field_len    u16
//! offset 60  reserved     u32     0
//! offset 64  stream name, field name, zero-padded to a multiple of 8
//!            key_offs     (N + 1) u64   key i is key_bytes[key_offs[i]..key_offs[i + 1]]
//!            starts       (N + 1) u64   key i's events are [starts[i], starts[i + 1])
//!            slots        S u32   hash table: key index + 1 (0: empty), at
//!                                 `key_hash(key) & (S - 1)`, probed linearly;
//!                                 zero-padded to 8
//!            key bytes    key_bytes, keys in byte order, zero-padded to 8
//!            events       E × (i64 event time, f64 field; NaN where the field
//!                         is not a number), per key in (event_time, position) order
//!            sums         E f64   running sum of the key's numbers, inclusive
//!            numbers      E u32   running count of the key's numbers, inclusive;
//!                                 zero-padded to 8
//! B          chunk_crcs   ceil(B / 1 MiB) u32   CRC-32 of each 1 MiB of [0, B)
//!            body_end     u64     B
//!            crc          u32     CRC-32 of chunk_crcs and body_end
//! ```
//!
//! Every record of the stream is an event, whatever its kind (a delete's
//! value is empty, so its field is not a number): the events a window counts.
//! Integers are little-endian. The checksums vouch for every byte; opening
//! also checks the layout (each section where the counts put it, offsets
//! and starts non-decreasing and in bounds, every slot naming a key), so no
//! read of a damaged file can go out of bounds or answer from misplaced
//! bytes. [`key_hash`] is part of the format.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::storage::fsutil::{self, SeqWriter};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"TLOGFCOL";
/// Column format version written and read.
pub const COLUMN_VERSION: u32 = 1;
/// Bytes covered by one chunk checksum.
const CHUNK: usize = 1 << 20;
/// The fixed part of the header, before the names.
const FIXED: usize = 64;

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
    /// File size in bytes.
    pub bytes: u64,
}

/// Where each section starts, in bytes from the file's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    key_offs: usize,
    starts: usize,
    slots: usize,
    /// Slot count minus one.
    mask: usize,
    key_bytes: usize,
    events: usize,
    sums: usize,
    numbers: usize,
    body_end: usize,
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// The hash table size for `keys` keys: a power of two, at least twice as
/// many slots as keys, so probes stay short and always reach an empty slot.
fn slots_for(keys: usize) -> usize {
    keys.saturating_mul(2).next_power_of_two()
}

impl Layout {
    /// The layout for these counts, `None` if it overflows or `slots` is not a
    /// power of two over twice the keys.
    fn new(names: usize, keys: u64, events: u64, key_bytes: u64, slots: u64) -> Option<Layout> {
        let keys = usize::try_from(keys).ok()?;
        let events = usize::try_from(events).ok()?;
        let key_bytes = usize::try_from(key_bytes).ok()?;
        let slots = usize::try_from(slots).ok()?;
        if !slots.is_power_of_two() || slots < keys.checked_mul(2)? {
            return None;
        }
        let key_offs = FIXED + pad8(names);
        let dir = keys.checked_add(1)?.checked_mul(8)?;
        let starts = key_offs.checked_add(dir)?;
        let slot_at = starts.checked_add(dir)?;
        let kb = slot_at.checked_add(pad8(slots.checked_mul(4)?))?;
        let ev = kb.checked_add(pad8(key_bytes))?;
        let sums = ev.checked_add(events.checked_mul(16)?)?;
        let numbers = sums.checked_add(events.checked_mul(8)?)?;
        let body_end = numbers.checked_add(pad8(events.checked_mul(4)?))?;
        Some(Layout {
            key_offs,
            starts,
            slots: slot_at,
            mask: slots - 1,
            key_bytes: kb,
            events: ev,
            sums,
            numbers,
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

/// One key's events, in `(event_time, position)` order, as [`write`] takes them.
pub(crate) struct KeyEvents<'a> {
    /// The key.
    pub key: &'a [u8],
    /// `(event_time, field)`; the field `None` where it is not a number.
    pub events: &'a [(i64, Option<f64>)],
}

/// Writes a column atomically: temp file, fsync, rename, directory fsync.
/// `keys` must be in strictly increasing byte order; `events` and
/// `key_bytes` are their totals.
pub(crate) fn write(
    vfs: &dyn crate::storage::vfs::Vfs,
    path: &Path,
    stream: &str,
    field: &str,
    known_end: u64,
    keys: &[KeyEvents<'_>],
) -> Result<ColumnInfo> {
    let events: usize = keys.iter().map(|k| k.events.len()).sum();
    let key_bytes: usize = keys.iter().map(|k| k.key.len()).sum();
    let (stream_len, field_len) = match (u16::try_from(stream.len()), u16::try_from(field.len())) {
        (Ok(s), Ok(f)) => (s, f),
        _ => return Err(Error::InvalidInput("stream or field name too long".into())),
    };
    let slots = slots_for(keys.len());
    let layout = Layout::new(
        stream.len() + field.len(),
        keys.len() as u64,
        events as u64,
        key_bytes as u64,
        slots as u64,
    )
    .ok_or_else(|| Error::InvalidInput("column too large".into()))?;
    let mut table = vec![0u32; slots];
    for (i, k) in keys.iter().enumerate() {
        let mut at = key_hash(k.key) as usize & layout.mask;
        while table[at] != 0 {
            at = (at + 1) & layout.mask;
        }
        table[at] = u32::try_from(i + 1)
            .map_err(|_| Error::InvalidInput("a column holds at most 2^32 - 1 keys".into()))?;
    }
    if let Some(k) = keys.iter().find(|k| u32::try_from(k.events.len()).is_err()) {
        return Err(Error::InvalidInput(format!(
            "key {:?} has more than 2^32 events, more than a column holds",
            String::from_utf8_lossy(k.key)
        )));
    }
    let mut total = 0u64;
    fsutil::atomic_write_with(vfs, path, |file, tmp| {
        let io = |e| Error::io(tmp, e);
        let mut w = Chunked::new(SeqWriter::new(file, 0));
        let mut head = Vec::with_capacity(layout.key_offs);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&COLUMN_VERSION.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&known_end.to_le_bytes());
        head.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        head.extend_from_slice(&(events as u64).to_le_bytes());
        head.extend_from_slice(&(key_bytes as u64).to_le_bytes());
        head.extend_from_slice(&(slots as u64).to_le_bytes());
        head.extend_from_slice(&stream_len.to_le_bytes());
        head.extend_from_slice(&field_len.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(stream.as_bytes());
        head.extend_from_slice(field.as_bytes());
        head.resize(layout.key_offs, 0);
        w.write_all(&head).map_err(io)?;
        let mut at = 0u64;
        w.write_all(&at.to_le_bytes()).map_err(io)?;
        for k in keys {
            at += k.key.len() as u64;
            w.write_all(&at.to_le_bytes()).map_err(io)?;
        }
        at = 0;
        w.write_all(&at.to_le_bytes()).map_err(io)?;
        for k in keys {
            at += k.events.len() as u64;
            w.write_all(&at.to_le_bytes()).map_err(io)?;
        }
        for s in &table {
            w.write_all(&s.to_le_bytes()).map_err(io)?;
        }
        w.pad().map_err(io)?;
        for k in keys {
            w.write_all(k.key).map_err(io)?;
        }
        w.pad().map_err(io)?;
        for k in keys {
            for (t, x) in k.events {
                w.write_all(&t.to_le_bytes()).map_err(io)?;
                w.write_all(&x.unwrap_or(f64::NAN).to_le_bytes())
                    .map_err(io)?;
            }
        }
        for k in keys {
            let mut sum = 0.0f64;
            for (_, x) in k.events {
                sum += x.unwrap_or(0.0);
                w.write_all(&sum.to_le_bytes()).map_err(io)?;
            }
        }
        for k in keys {
            let mut n = 0u32;
            for (_, x) in k.events {
                n += u32::from(x.is_some());
                w.write_all(&n.to_le_bytes()).map_err(io)?;
            }
        }
        w.pad().map_err(io)?;
        debug_assert_eq!(w.written, layout.body_end as u64);
        let (crcs, inner) = w.finish();
        let mut trailer = Vec::with_capacity(crcs.len() * 4 + 12);
        for c in &crcs {
            trailer.extend_from_slice(&c.to_le_bytes());
        }
        trailer.extend_from_slice(&(layout.body_end as u64).to_le_bytes());
        let crc = crc32fast::hash(&trailer);
        trailer.extend_from_slice(&crc.to_le_bytes());
        let mut inner = inner;
        inner.write_all(&trailer).map_err(io)?;
        let (_, end) = inner.finish().map_err(io)?;
        total = end;
        Ok(())
    })?;
    Ok(ColumnInfo {
        path: path.to_path_buf(),
        stream: stream.to_string(),
        field: field.to_string(),
        known_end,
        keys: keys.len() as u64,
        events: events as u64,
        bytes: total,
    })
}

/// A writer that checksums what passes through it in [`CHUNK`]-byte chunks.
struct Chunked<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    crcs: Vec<u32>,
    written: u64,
}

impl<W: Write> Chunked<W> {
    fn new(inner: W) -> Self {
        Chunked {
            inner,
            crc: crc32fast::Hasher::new(),
            crcs: Vec::new(),
            written: 0,
        }
    }

    /// Zeros up to the next multiple of 8 bytes.
    fn pad(&mut self) -> std::io::Result<()> {
        let n = (8 - (self.written % 8) as usize) % 8;
        self.write_all(&[0u8; 8][..n])
    }

    /// The chunk checksums (the last chunk may be short) and the writer.
    fn finish(mut self) -> (Vec<u32>, W) {
        if !self.written.is_multiple_of(CHUNK as u64) {
            self.crcs.push(self.crc.finalize());
        }
        (self.crcs, self.inner)
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - (self.written % CHUNK as u64) as usize;
        let n = self.inner.write(&b[..b.len().min(room)])?;
        self.crc.update(&b[..n]);
        self.written += n as u64;
        if self.written.is_multiple_of(CHUNK as u64) && n > 0 {
            let done = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
            self.crcs.push(done.finalize());
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A validated column file, read in place.
#[derive(Debug, Clone)]
pub struct Column {
    info: ColumnInfo,
    bytes: Bytes,
    layout: Layout,
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
        let b = &bytes[..];
        let (body_end, chunks) = frame(b, path)?;
        let len = b.len();
        let stored = u32::from_le_bytes(b[len - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[body_end..len - 4]) != stored {
            return Err(Error::corrupt(
                path,
                body_end as u64,
                "column trailer checksum mismatch",
            ));
        }
        if let Some(c) = first_bad_chunk(b, body_end, chunks) {
            return Err(Error::corrupt(
                path,
                (c * CHUNK) as u64,
                format!(
                    "column checksum mismatch in the 1 MiB chunk at {}",
                    c * CHUNK
                ),
            ));
        }
        let (info, layout) = header(b, body_end, path)?;
        let col = Column {
            info,
            bytes,
            layout,
        };
        col.check_layout(path)?;
        Ok(col)
    }

    /// Offsets and starts start at 0, never decrease and end at their totals;
    /// every slot is empty or names a key, and one at least is empty (so a
    /// probe ends).
    fn check_layout(&self, path: &Path) -> Result<()> {
        let b = &self.bytes[..];
        let n = self.keys();
        let monotone = |at: usize, total: u64, what: &str| -> Result<()> {
            let mut prev = 0u64;
            for i in 0..=n {
                let x = u64_at(b, at + 8 * i);
                if (i == 0 && x != 0) || x < prev || x > total || (i == n && x != total) {
                    return Err(Error::corrupt(
                        path,
                        (at + 8 * i) as u64,
                        format!("column {what} {i} is {x}, out of order or bounds"),
                    ));
                }
                prev = x;
            }
            Ok(())
        };
        monotone(self.layout.key_offs, u64_at(b, 40), "key offset")?;
        monotone(self.layout.starts, self.info.events, "event start")?;
        let mut empty = false;
        for i in 0..=self.layout.mask {
            let s = self.slot(i);
            empty |= s == 0;
            if s as usize > n {
                return Err(Error::corrupt(
                    path,
                    (self.layout.slots + 4 * i) as u64,
                    format!("column slot {i} names key {s} of {n}"),
                ));
            }
        }
        if !empty {
            return Err(Error::corrupt(
                path,
                self.layout.slots as u64,
                "column hash table has no empty slot",
            ));
        }
        Ok(())
    }

    fn slot(&self, i: usize) -> u32 {
        let at = self.layout.slots + 4 * i;
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    /// What the file holds.
    #[must_use]
    pub fn info(&self) -> &ColumnInfo {
        &self.info
    }

    /// Number of keys.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.info.keys as usize
    }

    /// Key `i`, in byte order.
    #[must_use]
    pub fn key(&self, i: usize) -> &[u8] {
        let o = self.layout.key_offs + 8 * i;
        let (from, to) = (
            u64_at(&self.bytes, o) as usize,
            u64_at(&self.bytes, o + 8) as usize,
        );
        &self.bytes[self.layout.key_bytes + from..self.layout.key_bytes + to]
    }

    /// Where a lookup of `key` starts: pass it to [`Column::find`]. Loading the
    /// slot early ([`Column::prefetch_slot`]) lets lookups overlap.
    #[must_use]
    pub fn home(&self, key: &[u8]) -> usize {
        key_hash(key) as usize & self.layout.mask
    }

    /// Starts loading the slot a lookup from `home` reads first.
    pub fn prefetch_slot(&self, home: usize) {
        crate::hint::prefetch(&self.bytes[self.layout.slots + 4 * home]);
    }

    /// Starts loading key `i`'s entries (its bytes' offsets, its events'
    /// starts) and its first events.
    pub fn prefetch_key(&self, i: usize) {
        crate::hint::prefetch(&self.bytes[self.layout.key_offs + 8 * i]);
        crate::hint::prefetch(&self.bytes[self.layout.starts + 8 * i]);
    }

    /// The key in the slot at `home`, the first a lookup from there compares.
    #[must_use]
    pub fn candidate(&self, home: usize) -> Option<usize> {
        (self.slot(home) as usize).checked_sub(1)
    }

    /// Starts loading key `i`'s bytes.
    pub fn prefetch_key_bytes(&self, i: usize) {
        let from = u64_at(&self.bytes, self.layout.key_offs + 8 * i) as usize;
        if let Some(b) = self.bytes.get(self.layout.key_bytes + from) {
            crate::hint::prefetch(b);
        }
    }

    /// Starts loading `events` (their first 512 bytes: a binary search over
    /// more reads a few lines of them anyway).
    pub fn prefetch_events(&self, events: &std::ops::Range<usize>) {
        let from = self.layout.events + 16 * events.start;
        let to = self.layout.events + 16 * events.end.min(events.start + 32);
        for at in (from..to).step_by(64) {
            crate::hint::prefetch(&self.bytes[at]);
        }
    }

    /// The index of `key`, looked up from its [`Column::home`] slot.
    #[must_use]
    pub fn find(&self, key: &[u8], home: usize) -> Option<usize> {
        let mut at = home;
        // Bounded: a validated table has an empty slot.
        for _ in 0..=self.layout.mask {
            let s = self.slot(at) as usize;
            if s == 0 {
                return None;
            }
            if same(self.key(s - 1), key) {
                return Some(s - 1);
            }
            at = (at + 1) & self.layout.mask;
        }
        None
    }

    /// Key `i`'s events: indices into [`Column::time`] and the others.
    #[must_use]
    pub fn events(&self, i: usize) -> std::ops::Range<usize> {
        let o = self.layout.starts + 8 * i;
        u64_at(&self.bytes, o) as usize..u64_at(&self.bytes, o + 8) as usize
    }

    /// Event `e`'s time.
    #[must_use]
    pub fn time(&self, e: usize) -> i64 {
        i64::from_le_bytes(self.at8(self.layout.events, 2 * e))
    }

    /// Event `e`'s field, `None` where it is not a number.
    #[must_use]
    pub fn value(&self, e: usize) -> Option<f64> {
        Some(f64::from_le_bytes(self.at8(self.layout.events, 2 * e + 1))).filter(|x| !x.is_nan())
    }

    /// The sum of the numbers of event `e`'s key up to and including `e`.
    #[must_use]
    pub fn running_sum(&self, e: usize) -> f64 {
        f64::from_le_bytes(self.at8(self.layout.sums, e))
    }

    /// How many of event `e`'s key's events up to and including `e` are numbers.
    #[must_use]
    pub fn running_numbers(&self, e: usize) -> u64 {
        let at = self.layout.numbers + 4 * e;
        u64::from(u32::from_le_bytes(
            self.bytes[at..at + 4].try_into().expect("4 bytes"),
        ))
    }

    fn at8(&self, section: usize, e: usize) -> [u8; 8] {
        let at = section + 8 * e;
        self.bytes[at..at + 8].try_into().expect("8 bytes")
    }
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

/// The first chunk whose checksum does not match, checked on every core.
fn first_bad_chunk(b: &[u8], body_end: usize, chunks: usize) -> Option<usize> {
    let crc_at = |c: usize| {
        u32::from_le_bytes(
            b[body_end + 4 * c..body_end + 4 * c + 4]
                .try_into()
                .expect("4 bytes"),
        )
    };
    let check =
        |c: usize| crc32fast::hash(&b[c * CHUNK..((c + 1) * CHUNK).min(body_end)]) != crc_at(c);
    let threads = crate::storage::cores().min(chunks.div_ceil(4)).max(1);
    if threads == 1 {
        return (0..chunks).find(|&c| check(c));
    }
    let per = chunks.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|t| s.spawn(move || (t * per..((t + 1) * per).min(chunks)).find(|&c| check(c))))
            .collect();
        let mut bad = (0..per.min(chunks)).find(|&c| check(c));
        for h in handles {
            let found = h.join().expect("checksum thread panicked");
            bad = bad.or(found);
        }
        bad
    })
}

/// The trailer's body end and chunk count, checked against the file's length.
fn frame(b: &[u8], path: &Path) -> Result<(usize, usize)> {
    let len = b.len();
    if len < FIXED + 12 {
        return Err(Error::corrupt(
            path,
            0,
            format!("column file too short ({len} bytes)"),
        ));
    }
    let body_end = u64_at(b, len - 12);
    usize::try_from(body_end)
        .ok()
        .filter(|&e| e >= FIXED && e <= len)
        .and_then(|e| {
            let chunks = e.div_ceil(CHUNK);
            (e.checked_add(chunks.checked_mul(4)?.checked_add(12)?)? == len).then_some((e, chunks))
        })
        .ok_or_else(|| {
            Error::corrupt(
                path,
                (len - 12) as u64,
                format!("column body end {body_end} does not fit a {len}-byte file"),
            )
        })
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
    let (known_end, keys, events, key_bytes, slots) = (
        u64_at(b, 16),
        u64_at(b, 24),
        u64_at(b, 32),
        u64_at(b, 40),
        u64_at(b, 48),
    );
    let stream_len = usize::from(u16::from_le_bytes([b[56], b[57]]));
    let field_len = usize::from(u16::from_le_bytes([b[58], b[59]]));
    let layout = Layout::new(stream_len + field_len, keys, events, key_bytes, slots)
        .filter(|l| l.body_end == body_end)
        .ok_or_else(|| {
            bad(
                24,
                format!(
                    "column of {keys} keys, {events} events, {key_bytes} key bytes and \
                     {slots} slots does not fill its {body_end}-byte body"
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
        bytes: b.len() as u64,
    };
    Ok((info, layout))
}

/// Reads only the header of a column for the catalog (no checksums: the whole
/// file is validated when it is used).
pub fn peek(vfs: &dyn crate::storage::vfs::Vfs, path: &Path) -> Result<ColumnInfo> {
    let b = crate::storage::read_file(vfs, path)?;
    let (body_end, _) = frame(&b, path)?;
    Ok(header(&b, body_end, path)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memvfs::MemVfs;
    use crate::storage::vfs::Vfs;

    /// Three keys, one of them with events whose field is not a number.
    fn sample(vfs: &MemVfs, path: &Path) -> ColumnInfo {
        let a = [(1, Some(1.5)), (2, None), (2, Some(-3.0))];
        let b: Vec<(i64, Option<f64>)> = (0..40).map(|i| (i * 10, Some(i as f64))).collect();
        let c = [(i64::MIN, None)];
        let keys = [
            KeyEvents {
                key: b"a",
                events: &a,
            },
            KeyEvents {
                key: b"bb",
                events: &b,
            },
            KeyEvents {
                key: b"c",
                events: &c,
            },
        ];
        write(vfs, path, "s", "price", 99, &keys).unwrap()
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
        assert_eq!((info.keys, info.events, info.known_end), (3, 44, 99));
        assert_eq!(col.key(1), b"bb");
        let find = |k: &[u8]| col.find(k, col.home(k));
        assert_eq!(find(b"b"), None);
        assert_eq!(find(b"bb"), Some(1));
        assert_eq!(find(b"c"), Some(2));
        assert_eq!(find(b"a"), Some(0));
        assert_eq!(find(b""), None);
        assert_eq!(col.events(0), 0..3);
        assert_eq!(col.events(2), 43..44);
        assert_eq!(
            (col.time(1), col.value(1), col.value(2)),
            (2, None, Some(-3.0))
        );
        assert_eq!((col.running_sum(2), col.running_numbers(2)), (-1.5, 2));
        assert_eq!((col.running_sum(42), col.running_numbers(42)), (780.0, 40));
        assert_eq!((col.time(43), col.running_numbers(43)), (i64::MIN, 0));
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
            match Column::parse(Bytes::from(bad), path) {
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
        let info = write(&vfs, path, "s", "x", 1, &keys).unwrap();
        let good = vfs.read(path).unwrap().to_vec();
        assert!(info.bytes > 5 * CHUNK as u64);
        assert!(Column::parse(Bytes::from(good.clone()), path).is_ok());
        for at in [0, CHUNK, 3 * CHUNK + 17, good.len() - 100] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            assert!(Column::parse(Bytes::from(bad), path).is_err(), "byte {at}");
        }
    }
}
