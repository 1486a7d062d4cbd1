//! Per-segment indexes: the frame index (position and event-time blocks) and the
//! key index (a stream's keys and where each version lives), in memory and as
//! checksummed sidecar files.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use foldhash::fast::RandomState;

use super::chunks::{self, ChunkChecks};
use super::frame::{Frame, FrameBuilder, FrameKind};
use super::keytable::{KeyTable, Located};
use super::record::{Hlc, Op};
use crate::{Error, Result};

mod cursor;
pub use cursor::KeyFileCursor;

/// Frame index sidecar format version (and the key index's first).
pub const INDEX_VERSION: u32 = 1;
/// Key index format version written: 3. Its hash buckets hold each key's
/// entry (where its bytes and version rows are) and 16 bits of its hash, so
/// a lookup reads a bucket, then the key's bytes and rows together: one
/// cache miss fewer than following a key number to the keys section, as
/// format 2 does. Files of version 2 (checksummed per 4 KiB chunk, as 3 is)
/// and 1 (one checksum for the whole file) are still read.
pub const KIDX_VERSION: u32 = 3;
const FIDX_MAGIC: &[u8; 8] = b"TLOGFIDX";
pub(crate) const KIDX_MAGIC: &[u8; 8] = b"TLOGKIDX";
const FRAME_ENTRY: usize = 56;
/// Up to this many streams, [`MemIndex::stream`] compares names instead of
/// hashing.
const LINEAR_STREAMS: usize = 8;
/// How many records ahead of its push [`MemIndex::add_frame`] locates a key.
const LOCATE_AHEAD: usize = 8;
pub(crate) const KEY_ENTRY: usize = 16;
pub(crate) const VERSION_ENTRY: usize = 32;
/// Bytes of a format 3 hash bucket: see [`HashSection`].
pub(crate) const BUCKET: usize = 16;

/// One frame of a segment: the sparse position index and the event-time index in one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
    /// Position of its first record.
    pub first_pos: u64,
    /// Recorded-at stamp of its first record.
    pub hlc: Hlc,
    /// Smallest event time in the frame.
    pub min_et: i64,
    /// Largest event time in the frame.
    pub max_et: i64,
    /// Bytes on disk, header included.
    pub total_len: u32,
    /// Records in the frame.
    pub count: u32,
    /// Data or commit.
    pub kind: FrameKind,
}

#[cfg(test)]
impl FrameMeta {
    /// A data frame of `count` records from `first_pos`, at `offset`: for
    /// tests that index records without writing them.
    pub(crate) fn for_test(offset: u64, first_pos: u64, count: u32) -> FrameMeta {
        FrameMeta {
            offset,
            first_pos,
            hlc: Hlc(first_pos),
            min_et: 0,
            max_et: 0,
            total_len: 64,
            count,
            kind: FrameKind::Data,
        }
    }
}

impl FrameMeta {
    /// One past the frame's last position.
    #[must_use]
    pub fn end_pos(&self) -> u64 {
        self.first_pos + u64::from(self.count)
    }
}

/// Where one version of a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRef {
    /// Event time (µs).
    pub event_time: i64,
    /// Position.
    pub position: u64,
    /// Offset of the frame in its segment.
    pub frame_off: u64,
    /// Offset of the record inside the frame's raw payload.
    pub rec_off: u32,
    /// The record's op.
    pub op: Op,
}

impl VersionRef {
    /// Its 32-byte row in a key index file's versions section.
    #[must_use]
    pub fn encode(&self) -> [u8; VERSION_ENTRY] {
        let mut e = [0u8; VERSION_ENTRY];
        e[..8].copy_from_slice(&self.position.to_le_bytes());
        e[8..16].copy_from_slice(&self.event_time.to_le_bytes());
        e[16..24].copy_from_slice(&self.frame_off.to_le_bytes());
        e[24..28].copy_from_slice(&self.rec_off.to_le_bytes());
        e[28] = self.op as u8;
        e
    }

    /// The order in which versions apply: `(event_time, position)`.
    #[must_use]
    pub fn order(&self) -> (i64, u64) {
        (self.event_time, self.position)
    }
}

/// In-memory indexes of a segment: built while writing the active segment, or by
/// scanning a segment whose sidecars are missing or damaged.
#[derive(Debug, Default)]
pub struct MemIndex {
    /// Frames in position order.
    pub frames: Vec<FrameMeta>,
    streams: Vec<(String, KeyTable)>,
    by_name: HashMap<String, usize, RandomState>,
    /// The smallest and largest event times of the records indexed.
    et_range: Option<(i64, i64)>,
    /// The emptied tables of a retired index, by stream: each stream that
    /// comes takes its own back (see [`MemIndex::recycle`]).
    spare: Vec<(String, KeyTable)>,
}

impl Clone for MemIndex {
    /// A copy of what is indexed; spare tables, empty, are not copied.
    fn clone(&self) -> MemIndex {
        MemIndex {
            frames: self.frames.clone(),
            streams: self.streams.clone(),
            by_name: self.by_name.clone(),
            et_range: self.et_range,
            spare: Vec::new(),
        }
    }
}

impl MemIndex {
    /// The key table of `stream`.
    #[must_use]
    pub fn stream(&self, name: &str) -> Option<&KeyTable> {
        // Most logs have a few streams: comparing their names costs a
        // lookup less than hashing the one asked for.
        if self.streams.len() <= LINEAR_STREAMS {
            let name = name.as_bytes();
            return self
                .streams
                .iter()
                .find(|(n, _)| key_eq(n.as_bytes(), name))
                .map(|(_, t)| t);
        }
        self.by_name.get(name).map(|&i| &self.streams[i].1)
    }

    /// The smallest event time of any record indexed (`None` if there is none).
    #[must_use]
    pub fn min_event_time(&self) -> Option<i64> {
        self.et_range.map(|(lo, _)| lo)
    }

    /// The smallest and largest event times of the records indexed (`None`
    /// if there is none).
    #[must_use]
    pub fn event_time_range(&self) -> Option<(i64, i64)> {
        self.et_range
    }

    /// Every stream with its key table.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &KeyTable)> {
        self.streams.iter().map(|(n, t)| (n.as_str(), t))
    }

    fn stream_index(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let table = match self.spare.iter().position(|(n, _)| n == name) {
            Some(i) => self.spare.swap_remove(i).1,
            None => KeyTable::default(),
        };
        self.streams.push((name.to_string(), table));
        self.by_name
            .insert(name.to_string(), self.streams.len() - 1);
        self.streams.len() - 1
    }

    /// This index emptied, keeping its memory: its key tables' arrays stay
    /// allocated, their pages mapped, and each stream of the next segment
    /// takes its own table back (a stream new to it starts a new table).
    /// Indexing a 64 MiB segment grows about 30 MB of arrays; from fresh
    /// memory every page of it faulted in again, on the core the writer
    /// shares. Tables this index did not use are dropped, so what is kept
    /// is at most what this index held.
    #[must_use]
    pub fn recycle(mut self) -> MemIndex {
        self.frames.clear();
        let spare = self
            .streams
            .into_iter()
            .map(|(n, mut t)| {
                t.clear();
                (n, t)
            })
            .collect();
        MemIndex {
            frames: self.frames,
            spare,
            ..MemIndex::default()
        }
    }

    /// Adds the records of a frame. `records` yields `(stream, key, op, event_time,
    /// rec_off)` in position order starting at `meta.first_pos`.
    pub fn add_frame<'a>(
        &mut self,
        mut meta: FrameMeta,
        records: impl Iterator<Item = (&'a str, &'a [u8], Op, i64, u32)>,
    ) {
        let mut min_et = i64::MAX;
        let mut max_et = i64::MIN;
        let mut last: Option<(&str, usize)> = None;
        // Each record's stream, key, version and key hash.
        let mut items: Vec<(usize, &[u8], VersionRef, u32)> =
            Vec::with_capacity(meta.count as usize);
        for (pos, (stream, key, op, et, rec_off)) in (meta.first_pos..).zip(records) {
            min_et = min_et.min(et);
            max_et = max_et.max(et);
            let i = match last {
                Some((s, i)) if s == stream => i,
                _ => {
                    let i = self.stream_index(stream);
                    last = Some((stream, i));
                    i
                }
            };
            let v = VersionRef {
                event_time: et,
                position: pos,
                frame_off: meta.offset,
                rec_off,
                op,
            };
            items.push((i, key, v, self.streams[i].1.hash32(key)));
        }
        // A record's key bucket is loaded `2 * LOCATE_AHEAD` records before
        // its version is pushed, and its slot found and loaded
        // `LOCATE_AHEAD` before: each is a cache miss whose answer the next
        // step needs, which would otherwise stall every push in turn.
        let bucket = |streams: &[(String, KeyTable)], n: usize| {
            streams[items[n].0].1.bucket_hint(items[n].3);
        };
        let locate = |streams: &[(String, KeyTable)], n: usize| {
            streams[items[n].0].1.locate_hashed(items[n].3)
        };
        for n in 0..items.len().min(2 * LOCATE_AHEAD) {
            bucket(&self.streams, n);
        }
        let mut ahead: std::collections::VecDeque<Located> = (0..items.len().min(LOCATE_AHEAD))
            .map(|n| locate(&self.streams, n))
            .collect();
        for (n, &(i, key, v, _)) in items.iter().enumerate() {
            if n + 2 * LOCATE_AHEAD < items.len() {
                bucket(&self.streams, n + 2 * LOCATE_AHEAD);
            }
            if n + LOCATE_AHEAD < items.len() {
                ahead.push_back(locate(&self.streams, n + LOCATE_AHEAD));
            }
            let at = ahead
                .pop_front()
                .unwrap_or_else(|| locate(&self.streams, n));
            self.streams[i].1.push_located(key, v, at);
        }
        if meta.count > 0 {
            meta.min_et = min_et;
            meta.max_et = max_et;
            self.et_range = Some(self.et_range.map_or((min_et, max_et), |(lo, hi)| {
                (lo.min(min_et), hi.max(max_et))
            }));
        }
        self.frames.push(meta);
    }

    /// Scans every frame of `seg[start..end]`, which must all be valid.
    pub fn from_frames(seg: &Bytes, start: usize, end: usize, path: &Path) -> Result<MemIndex> {
        let mut idx = MemIndex::default();
        let mut off = start;
        while off < end {
            let frame = Frame::decode(seg, off, path)?;
            idx.add_decoded(&frame, off as u64);
            off += frame.header.total_len() as usize;
        }
        Ok(idx)
    }

    /// Adds a frame this process built and wrote, described by `meta`.
    pub fn add_built(&mut self, meta: FrameMeta, frame: &FrameBuilder) {
        self.add_frame(
            meta,
            frame
                .records()
                .map(|(s, r)| (s, r.key, r.op, r.event_time, r.offset as u32)),
        );
    }

    /// Adds a decoded frame found at `offset`.
    pub fn add_decoded(&mut self, frame: &Frame, offset: u64) {
        let meta = FrameMeta {
            offset,
            first_pos: frame.header.first_pos,
            hlc: frame.header.hlc,
            min_et: 0,
            max_et: 0,
            total_len: frame.header.total_len() as u32,
            count: frame.header.count,
            kind: frame.header.kind,
        };
        let streams = &frame.streams;
        self.add_frame(
            meta,
            frame.records().map(|r| {
                (
                    streams[usize::from(r.stream_idx)].as_str(),
                    r.key,
                    r.op,
                    r.event_time,
                    r.offset as u32,
                )
            }),
        );
    }

    /// Encodes the frame index sidecar.
    #[must_use]
    pub fn encode_fidx(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.frames.len() * FRAME_ENTRY);
        out.extend_from_slice(FIDX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.offset.to_le_bytes());
            out.extend_from_slice(&f.first_pos.to_le_bytes());
            out.extend_from_slice(&f.hlc.0.to_le_bytes());
            out.extend_from_slice(&f.min_et.to_le_bytes());
            out.extend_from_slice(&f.max_et.to_le_bytes());
            out.extend_from_slice(&f.total_len.to_le_bytes());
            out.extend_from_slice(&f.count.to_le_bytes());
            out.push(f.kind as u8);
            out.extend_from_slice(&[0u8; 7]);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Encodes the key index sidecar: streams sorted by name, keys sorted by bytes,
    /// each key's versions sorted by `(event_time, position)`. Sealing
    /// streams it into the file instead ([`super::kidx_encode::write`]).
    #[must_use]
    pub fn encode_kidx(&self) -> Vec<u8> {
        super::kidx_encode::encode(self)
    }
}

/// One stream's keys (sorted by bytes) with their versions (sorted by
/// `(event_time, position)`), as [`encode_key_index`] takes them.
pub type StreamKeys<'a, K> = (&'a str, Vec<(K, &'a [VersionRef])>);

/// Encodes a key index file from streams sorted by name, each with its keys sorted
/// by bytes and each key's versions sorted by `(event_time, position)`.
#[must_use]
pub fn encode_key_index<K: AsRef<[u8]>>(streams: &[StreamKeys<'_, K>]) -> Vec<u8> {
    // Sized exactly up front: a large index is never copied by a growing Vec.
    let size = 8
        + 4
        + 4
        + streams
            .iter()
            .map(|(n, keys)| {
                1 + n.len()
                    + 4
                    + 32
                    + keys
                        .iter()
                        .map(|(k, vs)| 16 + k.as_ref().len() + 32 * vs.len())
                        .sum::<usize>()
                    + hash_len(keys.len())
            })
            .sum::<usize>();
    let mut out = Vec::with_capacity(size + size.div_ceil(chunks::CHUNK) * 4 + 12);
    out.extend_from_slice(KIDX_MAGIC);
    out.extend_from_slice(&KIDX_VERSION.to_le_bytes());
    out.extend_from_slice(&(streams.len() as u32).to_le_bytes());
    // Directory: name, key count, then four absolute offsets patched below.
    let mut patch_at = Vec::new();
    for (n, keys) in streams {
        out.push(n.len() as u8);
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        patch_at.push(out.len());
        out.extend_from_slice(&[0u8; 32]);
    }
    for ((_, keys), at) in streams.iter().zip(patch_at) {
        let keys_off = out.len() as u64;
        let mut hash = HashSection::new(keys.len());
        let mut blob_len = 0u32;
        let mut ver_start = 0u32;
        for (k, vs) in keys {
            let (key, count) = (k.as_ref(), vs.len() as u32);
            out.extend_from_slice(&key_entry(blob_len, key.len() as u32, ver_start, count));
            hash.insert(key, blob_len, ver_start, count);
            blob_len += key.len() as u32;
            ver_start += count;
        }
        let blob_off = out.len() as u64;
        for (k, _) in keys {
            out.extend_from_slice(k.as_ref());
        }
        let vers_off = out.len() as u64;
        for (_, vs) in keys {
            for v in vs.iter() {
                out.extend_from_slice(&v.encode());
            }
        }
        let hash_off = out.len() as u64;
        out.extend_from_slice(hash.bytes());
        out[at..at + 8].copy_from_slice(&keys_off.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&blob_off.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&vers_off.to_le_bytes());
        out[at + 24..at + 32].copy_from_slice(&hash_off.to_le_bytes());
    }
    debug_assert_eq!(out.len(), size, "key index size computed up front");
    append_trailer(&mut out);
    out
}

/// Appends the chunk checksums' trailer to a key index body held in memory.
pub(crate) fn append_trailer(out: &mut Vec<u8>) {
    let crcs: Vec<u32> = out.chunks(chunks::CHUNK).map(crc32fast::hash).collect();
    let trailer = chunks::trailer(&crcs, out.len() as u64);
    out.extend_from_slice(&trailer);
}

/// A key table row: key offset in the blob, key length, first version, versions.
pub(crate) fn key_entry(blob_off: u32, len: u32, first: u32, count: u32) -> [u8; KEY_ENTRY] {
    let mut e = [0u8; KEY_ENTRY];
    e[..4].copy_from_slice(&blob_off.to_le_bytes());
    e[4..8].copy_from_slice(&len.to_le_bytes());
    e[8..12].copy_from_slice(&first.to_le_bytes());
    e[12..].copy_from_slice(&count.to_le_bytes());
    e
}

/// A stream's hash section of format 3, built in memory as its keys are
/// encoded: [`bucket_count`] buckets of [`BUCKET`] bytes, open addressing
/// with linear probing from `stable_hash(key) mod buckets`. A bucket is all
/// zeros when empty; else it holds the key's
///
/// ```text
/// u16 tag (stable_hash >> 48), u16 key length, u32 key offset in the blob,
/// u32 first version, u32 version count (>= 1)
/// ```
///
/// A lookup compares the tag and length before it reads a key's bytes, so a
/// collision costs no read outside the bucket's line.
pub(crate) struct HashSection {
    bytes: Vec<u8>,
    /// Buckets in use.
    used: usize,
}

impl HashSection {
    /// Empty buckets for `keys` keys.
    pub(crate) fn new(keys: usize) -> HashSection {
        HashSection {
            bytes: vec![0; hash_len(keys)],
            used: 0,
        }
    }

    /// Puts a key (at most [`u16::MAX`] bytes, as every key is) with its
    /// place in the blob and its version rows into the first empty bucket
    /// from its hash's. Panics rather than fill the last empty bucket, which
    /// a lookup of an absent key needs to end (callers insert the keys they
    /// sized it for, no more: the table then keeps a quarter empty).
    pub(crate) fn insert(&mut self, key: &[u8], blob_off: u32, first: u32, count: u32) {
        debug_assert!(count > 0 && key.len() <= usize::from(u16::MAX));
        let buckets = self.bytes.len() / BUCKET;
        self.used += 1;
        assert!(
            self.used < buckets,
            "a hash section of {buckets} buckets given a key too many"
        );
        let hash = stable_hash(key);
        let b = probe_order((hash as usize) & (buckets - 1), buckets)
            .find(|&b| self.bytes[b * BUCKET + 12..b * BUCKET + 16] == [0; 4])
            .expect("a free bucket: fewer keys than buckets");
        let at = &mut self.bytes[b * BUCKET..(b + 1) * BUCKET];
        at[..2].copy_from_slice(&bucket_tag(hash).to_le_bytes());
        at[2..4].copy_from_slice(&(key.len() as u16).to_le_bytes());
        at[4..8].copy_from_slice(&blob_off.to_le_bytes());
        at[8..12].copy_from_slice(&first.to_le_bytes());
        at[12..].copy_from_slice(&count.to_le_bytes());
    }

    /// The section's bytes, as the file holds them.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The 16 bits of a key's hash its format 3 bucket keeps: the high ones,
/// which do not choose the bucket.
fn bucket_tag(hash: u64) -> u16 {
    (hash >> 48) as u16
}

/// A format 3 bucket's fields: tag, key length, key offset in the blob, first
/// version, version count (0: empty).
fn bucket_fields(b: &[u8]) -> (u16, usize, usize, usize, usize) {
    let tag = b.get(..2).map_or(0, |t| u16::from_le_bytes([t[0], t[1]]));
    let len = b.get(2..4).map_or(0, |t| u16::from_le_bytes([t[0], t[1]]));
    let f = |at| le_u32(b, at).unwrap_or(0) as usize;
    (tag, usize::from(len), f(4), f(8), f(12))
}

/// The key hash stored in key index files: stable across builds and platforms
/// (64-bit multiply-rotate over 8-byte little-endian words, then the murmur3
/// finaliser). Part of the on-disk format.
#[must_use]
pub fn stable_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(31);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Buckets of a stream's hash section in format 3: the smallest power of two
/// at least 4/3 of the keys and above them (at most three quarters full, and
/// never full). A bucket's tag spares a collision a read, so the table can
/// be fuller than format 2's.
pub(crate) fn bucket_count(keys: usize) -> usize {
    (keys + keys / 3 + 1).next_power_of_two().max(2)
}

/// Bytes of a stream's hash section in format 3.
pub(crate) fn hash_len(keys: usize) -> usize {
    BUCKET * bucket_count(keys)
}

/// Buckets of a stream's hash section in formats 1 and 2 (`u32` key numbers):
/// a power of two at least twice the keys.
fn bucket_count_v2(keys: usize) -> usize {
    (keys * 2).next_power_of_two().max(2)
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// CRC-32 of `b`, giving each chunk's mapped pages back to the page cache once
/// hashed: checking a large index file does not leave it all resident. A
/// file of at least two [`PARALLEL_CRC_PART`]s is hashed in parts, one thread
/// per core, and the parts' CRCs combined: a merged key index of format 1
/// (one checksum for the whole file) is checked whole on first use, and
/// hashing is most of that. (A query already running a thread per core may
/// then run more threads than cores for as long.)
fn crc_releasing(b: &[u8]) -> u32 {
    crc_in_parts(b, super::cores().min(b.len() / PARALLEL_CRC_PART))
}

/// Smallest part [`crc_releasing`] hands a thread.
const PARALLEL_CRC_PART: usize = 64 << 20;

/// CRC-32 of `b`, in up to `parts` consecutive parts on as many threads.
fn crc_in_parts(b: &[u8], parts: usize) -> u32 {
    const CHUNK: usize = 4 << 20;
    let part_crc = |part: &[u8]| {
        let mut crc = crc32fast::Hasher::new();
        for chunk in part.chunks(CHUNK) {
            crc.update(chunk);
            super::mmap::release(chunk);
        }
        crc
    };
    if parts <= 1 || b.is_empty() {
        return part_crc(b).finalize();
    }
    let per = b.len().div_ceil(parts);
    let mut pieces = b.chunks(per);
    let first = pieces.next().unwrap_or_default();
    let crc = std::thread::scope(|s| {
        // A part no thread could be started for is hashed here, in order.
        let rest: Vec<_> = pieces
            .map(|p| {
                std::thread::Builder::new()
                    .name("tablelog-crc".into())
                    .spawn_scoped(s, move || part_crc(p))
                    .map_err(|_| p)
            })
            .collect();
        let mut crc = part_crc(first);
        for h in rest {
            let part = match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(p) => part_crc(p),
            };
            crc.combine(&part);
        }
        crc
    });
    crc.finalize()
}

/// Checks magic, version and trailing checksum of a sidecar; returns the body length.
fn check_sidecar(b: &[u8], magic: &[u8; 8], path: &Path) -> Result<usize> {
    if b.len() < 16 + 4 {
        return Err(Error::corrupt(
            path,
            0,
            format!("index file too short ({} bytes)", b.len()),
        ));
    }
    if &b[..8] != magic {
        return Err(Error::corrupt(path, 0, "bad index magic"));
    }
    let body = b.len() - 4;
    let stored = le_u32(b, body).unwrap_or(0);
    let crc = crc_releasing(&b[..body]);
    if stored != crc {
        return Err(Error::corrupt(
            path,
            body as u64,
            format!("index checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"),
        ));
    }
    let version = le_u32(b, 8).unwrap_or(0);
    if version != INDEX_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: INDEX_VERSION,
        });
    }
    Ok(body)
}

/// Decodes a frame index sidecar.
pub fn decode_fidx(b: &[u8], path: &Path) -> Result<Vec<FrameMeta>> {
    let body = check_sidecar(b, FIDX_MAGIC, path)?;
    let n = le_u32(b, 12).unwrap_or(0) as usize;
    if 16 + n * FRAME_ENTRY != body {
        return Err(Error::corrupt(
            path,
            12,
            format!("frame count {n} does not match file size"),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let at = 16 + i * FRAME_ENTRY;
        let e = &b[at..at + FRAME_ENTRY];
        let kind = match e[48] {
            1 => FrameKind::Data,
            2 => FrameKind::Commit,
            k => {
                return Err(Error::corrupt(
                    path,
                    at as u64 + 48,
                    format!("unknown frame kind {k}"),
                ))
            }
        };
        out.push(FrameMeta {
            offset: le_u64(e, 0).unwrap_or(0),
            first_pos: le_u64(e, 8).unwrap_or(0),
            hlc: Hlc(le_u64(e, 16).unwrap_or(0)),
            min_et: le_u64(e, 24).unwrap_or(0) as i64,
            max_et: le_u64(e, 32).unwrap_or(0) as i64,
            total_len: le_u32(e, 40).unwrap_or(0),
            count: le_u32(e, 44).unwrap_or(0),
            kind,
        });
    }
    Ok(out)
}

/// A stream's section of a key index file.
#[derive(Debug, Clone)]
struct StreamSection {
    key_count: usize,
    keys_off: usize,
    blob_off: usize,
    vers_off: usize,
    hash_off: usize,
    /// Version rows: `(hash_off - vers_off) / VERSION_ENTRY`.
    versions: usize,
    /// Hash buckets, a power of two: [`bucket_count`] of `key_count`
    /// (format 3), or [`bucket_count_v2`] (formats 1 and 2).
    buckets: usize,
    /// Format 3: buckets of [`BUCKET`] bytes holding the key's entry
    /// ([`HashSection`]); else `u32` key numbers (key number + 1, 0 empty).
    wide: bool,
}

impl StreamSection {
    /// Bytes of one hash bucket.
    fn bucket_len(&self) -> usize {
        if self.wide {
            BUCKET
        } else {
            4
        }
    }

    /// The file range of hash bucket `j`.
    fn bucket(&self, j: usize) -> Range<usize> {
        let at = self.hash_off + j * self.bucket_len();
        at..at + self.bucket_len()
    }

    /// The file ranges of a key's bytes and version rows from its entry's
    /// fields: key offset in the blob, key length, first version, versions.
    fn ranges(&self, [ko, kl, vs, vc]: [usize; 4]) -> (Range<usize>, Range<usize>) {
        let key = self.blob_off + ko..self.blob_off + ko + kl;
        let rows = self.vers_off + vs * VERSION_ENTRY..self.vers_off + (vs + vc) * VERSION_ENTRY;
        (key, rows)
    }

    /// [`StreamSection::ranges`], if they lie in their sections and the key
    /// has a version.
    fn checked_ranges(&self, fields: [usize; 4]) -> Option<(Range<usize>, Range<usize>)> {
        let [ko, kl, vs, vc] = fields;
        (ko + kl <= self.vers_off - self.blob_off && vc > 0 && vs + vc <= self.versions)
            .then(|| self.ranges(fields))
    }

    /// The file ranges of the key bytes and version rows a format 3 bucket
    /// names, if they lie in their sections.
    fn bucket_ranges(&self, b: &[u8]) -> Option<(Range<usize>, Range<usize>)> {
        let (_, kl, ko, vs, vc) = bucket_fields(b);
        self.checked_ranges([ko, kl, vs, vc])
    }
}

/// A memory-mapped key index sidecar, searched in place. Opening checks its
/// header and directory; lookups check each chunk they read and each entry
/// and bucket they follow ([`KeyIndexFile::open_lazy`]), walks check the
/// whole file first ([`KeyIndexFile::check_all`]).
#[derive(Debug, Clone)]
pub struct KeyIndexFile {
    bytes: Bytes,
    streams: Vec<(String, StreamSection)>,
    state: Arc<FileState>,
}

/// What is known of a key index file's bytes, shared by its clones (cursors).
#[derive(Debug)]
struct FileState {
    path: PathBuf,
    checks: ChunkChecks,
    /// Every chunk and every entry and bucket has been checked.
    whole: AtomicBool,
}

impl KeyIndexFile {
    /// Validates the file whole: every checksum, then every entry and bucket.
    pub fn open(bytes: Bytes, path: &Path) -> Result<KeyIndexFile> {
        let f = KeyIndexFile::open_lazy(bytes, path)?;
        f.check_all()?;
        Ok(f)
    }

    /// Validates the header and directory of a key index file: its
    /// trailer's checksum, the chunks holding them, and that its sections
    /// lie in order in the body, after the directory, without overlapping.
    /// The rest is checked as it is read: a lookup checks the
    /// chunks it reads and that the bucket and entry it follows lie in
    /// bounds, and fails (leaving the file [`damaged`](Self::damaged)) if
    /// not, so opening a large merged index costs about nothing. A version 1
    /// file has one checksum for the whole file: it is checked whole.
    pub fn open_lazy(bytes: Bytes, path: &Path) -> Result<KeyIndexFile> {
        let bad = |at: usize, why: &str| Error::corrupt(path, at as u64, why.to_string());
        if bytes.len() < 16 {
            return Err(bad(
                0,
                &format!("index file too short ({} bytes)", bytes.len()),
            ));
        }
        // Lookups read a few lines of it: a cold fault reads its page, not
        // the disk's read-ahead (walks read ahead explicitly: `check_all`).
        super::mmap::advise_random(&bytes);
        if &bytes[..8] != KIDX_MAGIC {
            return Err(bad(0, "bad index magic"));
        }
        let version = le_u32(&bytes, 8).unwrap_or(0);
        let mut checks = match version {
            1 => {
                super::mmap::will_need(&bytes);
                ChunkChecks::vouched(check_sidecar(&bytes, KIDX_MAGIC, path)?)
            }
            2 | KIDX_VERSION => ChunkChecks::open(&bytes, 16, path, "key index")?,
            // A version from the future, if the trailer and header vouch
            // for it; otherwise a damaged version field.
            found => {
                let vouched = ChunkChecks::open(&bytes, 16, path, "key index")
                    .and_then(|c| c.ensure(&bytes, 0..16, path));
                return Err(match vouched {
                    Ok(()) => Error::UnsupportedVersion {
                        path: path.to_path_buf(),
                        found,
                        supported: KIDX_VERSION,
                    },
                    Err(_) => bad(8, &format!("bad index version {found} (checksums fail)")),
                });
            }
        };
        let wide = version >= 3;
        let body = checks.body_end();
        let b = &bytes[..body];
        // The directory's bytes, checked before they are read.
        let read = |r: Range<usize>| -> Result<&[u8]> {
            let got = b
                .get(r.clone())
                .ok_or_else(|| bad(r.start, "directory truncated"))?;
            checks.ensure(&bytes, r, path)?;
            Ok(got)
        };
        let n = le_u32(read(12..16)?, 0).unwrap_or(0) as usize;
        let mut at = 16;
        // A directory entry takes 37 bytes at least.
        let mut streams = Vec::with_capacity(n.min(b.len() / 37));
        let mut end = 0usize;
        for _ in 0..n {
            let len = usize::from(read(at..at + 1)?[0]);
            let name = std::str::from_utf8(read(at + 1..at + 1 + len)?)
                .map_err(|_| bad(at, "stream name not UTF-8"))?
                .to_string();
            at += 1 + len;
            let d = read(at..at + 36)?;
            let off = |i: usize| le_u64(d, 4 + 8 * i).unwrap_or(u64::MAX) as usize;
            let key_count = le_u32(d, 0).unwrap_or(0) as usize;
            let (keys_off, blob_off, vers_off, hash_off) = (off(0), off(1), off(2), off(3));
            let (buckets, bucket_len) = if wide {
                (bucket_count(key_count), BUCKET)
            } else {
                (bucket_count_v2(key_count), 4)
            };
            let hash_end = buckets
                .checked_mul(bucket_len)
                .and_then(|n| hash_off.checked_add(n));
            let sections_fit = keys_off
                .checked_add(key_count.saturating_mul(KEY_ENTRY))
                .is_some_and(|e| e == blob_off)
                && blob_off <= vers_off
                && vers_off <= hash_off
                && (hash_off - vers_off) % VERSION_ENTRY == 0
                && hash_end.is_some_and(|e| e <= body);
            // Sections follow the directory and one another, and never overlap.
            if !sections_fit || keys_off < end {
                return Err(bad(at, "stream section offsets out of bounds"));
            }
            end = hash_end.unwrap_or(usize::MAX);
            streams.push((
                name,
                StreamSection {
                    key_count,
                    keys_off,
                    blob_off,
                    vers_off,
                    hash_off,
                    versions: (hash_off - vers_off) / VERSION_ENTRY,
                    buckets,
                    wide,
                },
            ));
            at += 36;
        }
        if let Some((_, s)) = streams.first() {
            if s.keys_off < at {
                return Err(bad(at, "stream sections overlap the directory"));
            }
        }
        if wide {
            // Lookups read a key's entry in its bucket, never in the keys
            // section: the sections they read are checked without it. Only
            // the header and directory have been checked so far, and every
            // section lies after them, as `set_cold` requires.
            checks.set_cold(streams.iter().map(|(_, s)| s.keys_off..s.blob_off));
        }
        Ok(KeyIndexFile {
            bytes,
            streams,
            state: Arc::new(FileState {
                path: path.to_path_buf(),
                checks,
                whole: AtomicBool::new(false),
            }),
        })
    }

    /// Checks what [`KeyIndexFile::open_lazy`] left to first use, once:
    /// every chunk's checksum (on every core), then every key entry (in
    /// bounds, its versions following the previous key's, at least one) and
    /// every hash bucket (empty or naming a key; in format 3, all zeros or
    /// an entry in bounds, as many of those as keys), then that every key is
    /// found from its hash's bucket in a bucket of its own, so lookups and
    /// walks agree. Cursors need it: they read entries in order without
    /// checking each. It costs a pass over the file and a hash and a bucket
    /// read per key (about 11 ms for a segment index of 100k keys), paid by
    /// the first walk of each file in a process.
    pub fn check_all(&self) -> Result<()> {
        if self.state.whole.load(Ordering::Acquire) {
            return Ok(());
        }
        self.state.checks.check_all(&self.bytes, &self.state.path)?;
        let b = &self.bytes[..self.state.checks.body_end()];
        let bad = |at: usize, why: &str| Err(self.inconsistent(at, why));
        // The passes below read every entry and bucket: read ahead, since the
        // file is advised random and the chunk pass may have been skipped
        // (every chunk matched already), or its pages evicted since.
        for (_, s) in &self.streams {
            let keys = s.keys_off..s.keys_off + s.key_count * KEY_ENTRY;
            let hash = s.hash_off..s.hash_off + s.buckets * s.bucket_len();
            for r in [keys, hash] {
                if let Some(r) = b.get(r) {
                    super::mmap::will_need(r);
                }
            }
        }
        for (_, s) in &self.streams {
            let blob_len = s.vers_off - s.blob_off;
            let mut versions = 0usize;
            for i in 0..s.key_count {
                let e = s.keys_off + i * KEY_ENTRY;
                let [ko, kl, vs, vc] = entry_fields(b.get(e..e + KEY_ENTRY).unwrap_or_default());
                if ko + kl > blob_len || vs != versions || vc == 0 {
                    return bad(e, "key entry out of bounds");
                }
                versions += vc;
            }
            if versions != s.versions {
                return bad(
                    s.vers_off,
                    "versions do not end where the hash section starts",
                );
            }
            if s.wide {
                let mut used = 0usize;
                for j in 0..s.buckets {
                    let r = s.bucket(j);
                    let at = r.start;
                    let bucket = b.get(r).unwrap_or_default();
                    if bucket_fields(bucket).4 == 0 {
                        if bucket.iter().any(|&x| x != 0) {
                            return bad(at, "empty hash bucket not zero");
                        }
                    } else if s.bucket_ranges(bucket).is_none() {
                        return bad(at, "hash bucket out of bounds");
                    } else {
                        used += 1;
                    }
                }
                if used != s.key_count {
                    return bad(s.hash_off, "hash section holds another number of keys");
                }
            } else {
                for j in 0..s.buckets {
                    if le_u32(b, s.hash_off + 4 * j).unwrap_or(u32::MAX) as usize > s.key_count {
                        return bad(s.hash_off + 4 * j, "hash bucket names no key");
                    }
                }
            }
            // Each key is found from its hash's bucket, in a bucket that is
            // its own: in format 3 one holding exactly its entry and tag
            // (with as many buckets in use as keys, and each key's first
            // version its own, every bucket in use is then some key's), in
            // formats 1 and 2 one naming it. A lookup of a key then reads
            // that key's versions, and a key a walk sees is never missed.
            let entry = |i: usize| {
                let e = s.keys_off + i * KEY_ENTRY;
                entry_fields(b.get(e..e + KEY_ENTRY).unwrap_or_default())
            };
            let hash_of = |fields| stable_hash(b.get(s.ranges(fields).0).unwrap_or_default());
            // Buckets are read at random: each key's is hinted this many
            // keys ahead, so the misses overlap (keys and entries are read
            // in order, and cached).
            const AHEAD: usize = 8;
            for i in 0..s.key_count {
                if i + AHEAD < s.key_count {
                    let ahead = s.bucket(first_bucket(s, hash_of(entry(i + AHEAD))));
                    if let Some(x) = b.get(ahead.start) {
                        crate::hint::prefetch(x);
                    }
                }
                let e = s.keys_off + i * KEY_ENTRY;
                let fields = entry(i);
                let [ko, kl, vs, vc] = fields;
                let hash = hash_of(fields);
                // Whether bucket `at` is key `i`'s (`None`: empty).
                let own = |at: usize| {
                    let bucket = b.get(s.bucket(at)).unwrap_or_default();
                    if s.wide {
                        let got = bucket_fields(bucket);
                        (got.4 != 0).then(|| got == (bucket_tag(hash), kl, ko, vs, vc))
                    } else {
                        let slot = le_u32(bucket, 0).unwrap_or(0) as usize;
                        (slot != 0).then_some(slot == i + 1)
                    }
                };
                // Probed up to the first empty bucket.
                let found = probe_order(first_bucket(s, hash), s.buckets)
                    .map_while(own)
                    .any(|mine| mine);
                if !found {
                    return bad(e, "key not found from its hash bucket");
                }
            }
        }
        // The checks above read the key entries and hash buckets again;
        // lookups will touch a few of their pages.
        super::mmap::release(&self.bytes);
        self.state.whole.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a read found the file damaged (a chunk not matching its
    /// checksum, or an entry or bucket out of bounds): a merged index so
    /// found is no longer used.
    #[must_use]
    pub fn damaged(&self) -> bool {
        self.state.checks.damaged()
    }

    /// Checks the chunks holding `r` before they are read.
    #[inline]
    fn ensure(&self, r: Range<usize>) -> Result<()> {
        self.state.checks.ensure(&self.bytes, r, &self.state.path)
    }

    /// An error for bytes that match their checksums but not the format
    /// (only a bug writes such a file), which marks the file damaged.
    #[cold]
    fn inconsistent(&self, at: usize, why: &str) -> Error {
        self.state.checks.mark_damaged();
        Error::corrupt(&self.state.path, at as u64, why.to_string())
    }

    /// Reads (maps) the key index file at `path` and validates it whole.
    pub fn load(vfs: &dyn super::vfs::Vfs, path: &Path) -> Result<KeyIndexFile> {
        KeyIndexFile::open(super::read_file(vfs, path)?, path)
    }

    /// Reads (maps) the key index file at `path`, validating its header
    /// ([`KeyIndexFile::open_lazy`]).
    pub fn load_lazy(vfs: &dyn super::vfs::Vfs, path: &Path) -> Result<KeyIndexFile> {
        KeyIndexFile::open_lazy(super::read_file(vfs, path)?, path)
    }

    /// Drops the process's mapping of the file's pages, which stay in the page
    /// cache (`MADV_DONTNEED`, only on tablelog's own file mappings); bulk scans call
    /// this now and then. Returns the length advised: 0 for an index held in
    /// memory.
    pub fn release_pages(&self) -> usize {
        super::mmap::release(&self.bytes)
    }

    fn section(&self, stream: &str) -> Option<&StreamSection> {
        self.streams
            .iter()
            .find(|(n, _)| key_eq(n.as_bytes(), stream.as_bytes()))
            .map(|(_, s)| s)
    }

    /// Stream names in this segment.
    pub fn stream_names(&self) -> impl Iterator<Item = &str> {
        self.streams.iter().map(|(n, _)| n.as_str())
    }

    /// Number of keys of `stream`.
    #[must_use]
    pub fn key_count(&self, stream: &str) -> usize {
        self.section(stream).map_or(0, |s| s.key_count)
    }

    /// Key number `i` of section `s`: its bytes and its versions' rows, both
    /// file ranges (in bounds in a file [`KeyIndexFile::check_all`] passed).
    fn key_ranges(&self, s: &StreamSection, i: usize) -> (Range<usize>, Range<usize>) {
        key_ranges(s, &self.bytes[..], i)
    }

    /// Like [`KeyIndexFile::key_ranges`], for a lookup: the entry's chunk
    /// checked first (unless `trusted`: every chunk has matched), and its
    /// ranges checked to lie in their sections.
    fn checked_ranges(
        &self,
        s: &StreamSection,
        i: usize,
        trusted: bool,
    ) -> Result<(Range<usize>, Range<usize>)> {
        let e = s.keys_off + i * KEY_ENTRY;
        if !trusted {
            self.ensure(e..e + KEY_ENTRY)?;
        }
        s.checked_ranges(entry_fields(self.at(e..e + KEY_ENTRY)))
            .ok_or_else(|| self.inconsistent(e, "key entry out of bounds"))
    }

    /// The bytes of a range from [`KeyIndexFile::key_ranges`] (empty if out of
    /// bounds, which a validated file never is).
    fn at(&self, r: Range<usize>) -> &[u8] {
        self.bytes.get(r).unwrap_or_default()
    }

    /// The bytes of `r`, their chunks checked first.
    fn checked_at(&self, r: Range<usize>) -> Result<&[u8]> {
        self.ensure(r.clone())?;
        Ok(self.at(r))
    }

    /// Appends the versions of `key` in `stream` (sorted by `(event_time, position)`)
    /// to `out`: one probe of the stream's hash section, usually. An error
    /// if what it reads is damaged.
    pub fn versions(&self, stream: &str, key: &[u8], out: &mut Vec<VersionRef>) -> Result<()> {
        let Some(s) = self.section(stream) else {
            return Ok(());
        };
        let hash = stable_hash(key);
        if let Some(rows) = self.find_key(s, key, first_bucket(s, hash), bucket_tag(hash))? {
            // All of them: one read ahead, not a fault a page (the file is
            // advised random; a hot key's rows span megabytes).
            if rows.len() > 4096 {
                super::mmap::will_need(rows);
            }
            decode_versions(rows, out);
        }
        Ok(())
    }

    /// A lookup of the key whose [`stable_hash`] is `hash` in `stream`, its
    /// section found once (`None`: no such stream here), for a reader that
    /// hints each stage of it ([`KeyProbe::prefetch`]) before it reads.
    pub(crate) fn probe(&self, stream: &str, hash: u64) -> Option<KeyProbe<'_>> {
        let s = self.section(stream)?;
        Some(KeyProbe {
            file: self,
            s,
            first: first_bucket(s, hash),
            tag: bucket_tag(hash),
        })
    }

    /// The newest version of `key` visible as of `as_of` below position `end`, by
    /// `(event_time, position)`. An error if what it reads is damaged.
    pub fn newest_visible(
        &self,
        stream: &str,
        key: &[u8],
        as_of: i64,
        end: u64,
    ) -> Result<Option<VersionRef>> {
        self.newest_visible_hashed(stream, key, stable_hash(key), as_of, end)
    }

    /// [`KeyIndexFile::newest_visible`] with the key's [`stable_hash`]
    /// already computed, for a reader that probes several files.
    pub(crate) fn newest_visible_hashed(
        &self,
        stream: &str,
        key: &[u8],
        hash: u64,
        as_of: i64,
        end: u64,
    ) -> Result<Option<VersionRef>> {
        match self.probe(stream, hash) {
            Some(p) => p.newest_visible(key, as_of, end),
            None => Ok(None),
        }
    }

    /// The rows of `key`'s versions, if section `s` has it, looking from
    /// bucket `first` (see [`first_bucket`]) for buckets of tag `tag` (see
    /// [`bucket_tag`]; format 3): each bucket, entry, key and the rows
    /// checked as they are read. Once every chunk of the file has matched,
    /// only the entries' bounds are left to check.
    fn find_key(
        &self,
        s: &StreamSection,
        key: &[u8],
        first: usize,
        tag: u16,
    ) -> Result<Option<&[u8]>> {
        // One atomic load for the whole lookup instead of one per read.
        // In format 3 the keys sections, which lookups do not read, need
        // not have been checked.
        let trusted = self.state.checks.hot_matched();
        let read = |r: Range<usize>| {
            if trusted {
                // In bounds: open checked that the sections lie in the body,
                // and `checked_ranges` that each entry lies in its sections.
                debug_assert!(r.end <= self.state.checks.body_end());
                Ok(self.at(r))
            } else {
                self.checked_at(r)
            }
        };
        if s.wide {
            for at in probe_order(first, s.buckets) {
                let r = s.bucket(at);
                let start = r.start;
                let b = read(r)?;
                let (t, len, _, _, count) = bucket_fields(b);
                if count == 0 {
                    return Ok(None);
                }
                if t == tag && len == key.len() {
                    let (k, rows) = s
                        .bucket_ranges(b)
                        .ok_or_else(|| self.inconsistent(start, "hash bucket out of bounds"))?;
                    if key_eq(read(k)?, key) {
                        return read(rows).map(Some);
                    }
                }
            }
            return Ok(None);
        }
        for at in probe_order(first, s.buckets) {
            let bucket = s.hash_off + 4 * at;
            let slot = le_u32(read(bucket..bucket + 4)?, 0).unwrap_or(0) as usize;
            if slot == 0 {
                return Ok(None);
            }
            if slot > s.key_count {
                return Err(self.inconsistent(bucket, "hash bucket names no key"));
            }
            let (k, rows) = self.checked_ranges(s, slot - 1, trusted)?;
            if key_eq(read(k)?, key) {
                return read(rows).map(Some);
            }
        }
        Ok(None)
    }

    /// A cursor over the keys of `stream` in byte order, reading the file in
    /// place (`None`: no such stream). The file is checked whole first
    /// ([`KeyIndexFile::check_all`]).
    pub fn cursor(&self, stream: &str) -> Result<Option<KeyFileCursor>> {
        self.new_cursor(stream, false)
    }

    /// Like [`KeyIndexFile::cursor`], for walking the whole index once
    /// (checkpoints, merges, compaction): the cursor copies what it reads in
    /// windows and unmaps the pages under them as it goes, so walking many
    /// large indexes at once keeps a window per index resident, not the
    /// pieces of every index the kernel mapped.
    pub fn bulk_cursor(&self, stream: &str) -> Result<Option<KeyFileCursor>> {
        self.new_cursor(stream, true)
    }

    fn new_cursor(&self, stream: &str, bulk: bool) -> Result<Option<KeyFileCursor>> {
        self.check_all()?;
        Ok(self
            .section(stream)
            .map(|s| KeyFileCursor::new(self.clone(), s.clone(), bulk)))
    }
}

/// One file's lookup of one key: [`KeyIndexFile::probe`].
#[derive(Clone, Copy)]
pub(crate) struct KeyProbe<'a> {
    file: &'a KeyIndexFile,
    s: &'a StreamSection,
    /// The bucket the lookup starts at.
    first: usize,
    /// The key's tag, which its format 3 bucket holds.
    tag: u16,
}

impl KeyProbe<'_> {
    /// Starts loading step `stage` of the lookup: 0 its hash bucket; then
    /// the key's bytes and the lines of its version rows, up to 8 of them
    /// (spread over the rows when they span more), which the binary search
    /// would otherwise miss one after another. In format 3 the bucket holds
    /// where those are: stage 1 reads it (and the next few buckets, on a
    /// collision) and starts them, and stage 2 does nothing. In formats 1
    /// and 2, stage 1 starts the key entry the bucket names and stage 2 reads
    /// it. A reader probing several files runs each stage over all of them
    /// before the next, so their cache misses overlap instead of following
    /// one another. Only a hint: what it reads it does not check, and an
    /// absent key just makes it load the wrong lines, or none.
    pub(crate) fn prefetch(&self, stage: u8) {
        let (s, b) = (self.s, &self.file.bytes);
        let bucket = s.bucket(self.first).start;
        let hint = |at: usize| {
            if let Some(x) = b.get(at) {
                crate::hint::prefetch(x);
            }
        };
        if stage == 0 {
            return hint(bucket);
        }
        if s.wide {
            if stage == 1 {
                // The bucket's line holds the next few: a collision's key
                // is usually among them.
                for at in probe_order(self.first, s.buckets).take(4) {
                    let r = s.bucket(at);
                    let bucket = b.get(r).unwrap_or_default();
                    let (tag, _, _, _, count) = bucket_fields(bucket);
                    if count == 0 {
                        return;
                    }
                    if tag == self.tag {
                        if let Some((key, rows)) = s.bucket_ranges(bucket) {
                            hint(key.start);
                            crate::hint::prefetch_lines(b.get(rows).unwrap_or_default(), 8);
                        }
                        return;
                    }
                }
            }
            return;
        }
        let slot = le_u32(b, bucket).unwrap_or(0) as usize;
        if slot == 0 || slot > s.key_count {
            return;
        }
        let e = s.keys_off + (slot - 1) * KEY_ENTRY;
        if stage == 1 {
            return hint(e);
        }
        let (key_at, versions) = entry_ranges(s, b.get(e..e + KEY_ENTRY).unwrap_or_default());
        hint(key_at.start);
        crate::hint::prefetch_lines(b.get(versions).unwrap_or_default(), 8);
    }

    /// [`KeyIndexFile::newest_visible`] of `key`, whose hash this probe was
    /// made with.
    pub(crate) fn newest_visible(
        &self,
        key: &[u8],
        as_of: i64,
        end: u64,
    ) -> Result<Option<VersionRef>> {
        Ok(
            match self.file.find_key(self.s, key, self.first, self.tag)? {
                Some(rows) => best_version(rows, as_of, end),
                None => None,
            },
        )
    }
}

/// The hash bucket of section `s` where a lookup of a key whose
/// [`stable_hash`] is `hash` starts.
fn first_bucket(s: &StreamSection, hash: u64) -> usize {
    (hash as usize) & (s.buckets - 1)
}

/// The buckets, in order, that a probe starting at bucket `first` of a
/// hash section of `buckets` (a power of two) visits: linear probing,
/// wrapping around, each bucket once. Inserts, lookups, their hints and
/// the whole check all probe in this order, so a key is looked for where
/// it was put.
fn probe_order(first: usize, buckets: usize) -> impl Iterator<Item = usize> {
    debug_assert!(buckets.is_power_of_two());
    (0..buckets).map(move |i| (first + i) & (buckets - 1))
}

/// `a == b`. Keys and stream names of 4 to 16 bytes, the usual ones, are
/// compared as two overlapping words each: the call to `memcmp` that slice
/// equality makes cost more than the compare (about 35 instructions).
#[inline]
pub(crate) fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => {
            let w = |x: &[u8], at: usize| le_u64(x, at).unwrap_or(0);
            w(a, 0) == w(b, 0) && w(a, n - 8) == w(b, n - 8)
        }
        4..=7 => {
            let w = |x: &[u8], at: usize| le_u32(x, at).unwrap_or(0);
            w(a, 0) == w(b, 0) && w(a, n - 4) == w(b, n - 4)
        }
        _ => a == b,
    }
}

/// Key number `i` of section `s` of the key index file `b`: the file ranges of
/// its bytes and of its versions' rows (see [`entry_ranges`]).
fn key_ranges(s: &StreamSection, b: &[u8], i: usize) -> (Range<usize>, Range<usize>) {
    let e = s.keys_off + i * KEY_ENTRY;
    entry_ranges(s, b.get(e..e + KEY_ENTRY).unwrap_or_default())
}

/// The file ranges of the bytes and of the versions' rows of the key whose
/// entry (of section `s`) is `entry`. A damaged entry, which
/// [`KeyIndexFile::open`] refuses, gives ranges that read as empty.
fn entry_ranges(s: &StreamSection, entry: &[u8]) -> (Range<usize>, Range<usize>) {
    s.ranges(entry_fields(entry))
}

/// A key entry's fields: key offset in the blob, key length, first version,
/// versions (all 0 for a short entry, which has no versions and so is
/// refused by every check).
fn entry_fields(entry: &[u8]) -> [usize; 4] {
    [0, 4, 8, 12].map(|at| le_u32(entry, at).unwrap_or(0) as usize)
}

/// A version from its row in a versions section.
fn decode_version(e: &[u8]) -> VersionRef {
    VersionRef {
        position: le_u64(e, 0).unwrap_or(0),
        event_time: le_u64(e, 8).unwrap_or(0) as i64,
        frame_off: le_u64(e, 16).unwrap_or(0),
        rec_off: le_u32(e, 24).unwrap_or(0),
        op: Op::from_u8(e.get(28).copied().unwrap_or(0)).unwrap_or(Op::Put),
    }
}

/// Appends the versions whose rows are `rows` to `out`.
fn decode_versions(rows: &[u8], out: &mut Vec<VersionRef>) {
    out.extend(rows.chunks_exact(VERSION_ENTRY).map(decode_version));
}

/// The newest of one key's versions (`rows`, sorted by `(event_time,
/// position)`) with `event_time <= as_of` and `position < end`: a binary
/// search on event time, then back to the first position below `end`.
fn best_version(rows: &[u8], as_of: i64, end: u64) -> Option<VersionRef> {
    let row = |j: usize| &rows[j * VERSION_ENTRY..(j + 1) * VERSION_ENTRY];
    let (mut lo, mut hi) = (0usize, rows.len() / VERSION_ENTRY);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if le_u64(row(mid), 8).unwrap_or(0) as i64 <= as_of {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (0..lo)
        .rev()
        .find(|&j| le_u64(row(j), 0).unwrap_or(u64::MAX) < end)
        .map(|j| decode_version(row(j)))
}

#[cfg(test)]
mod tests {
    /// `key_eq` agrees with `==` at every length up to 40 bytes, for equal
    /// keys, keys differing in any one byte, and keys of other lengths.
    #[test]
    fn key_eq_agrees_with_slice_equality() {
        use super::key_eq;
        let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
        for n in 0..=base.len() {
            let a = &base[..n];
            let copy = a.to_vec(); // equal bytes elsewhere in memory
            assert!(key_eq(a, &copy), "length {n}");
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 0x80;
                assert!(!key_eq(a, &b), "length {n}, byte {i}");
            }
            for m in 0..=base.len() {
                assert_eq!(key_eq(a, &base[..m]), n == m, "lengths {n} and {m}");
            }
        }
    }

    /// Lookup hints never panic: every stage, for present and absent keys
    /// (the empty key too) and an unknown stream.
    #[test]
    fn lookup_hints_stay_in_bounds() {
        use super::{FrameMeta, KeyIndexFile, MemIndex};
        use crate::storage::record::Op;
        let mut idx = MemIndex::default();
        let keys: Vec<Vec<u8>> = (0..50).map(|k| format!("key-{k}").into_bytes()).collect();
        let meta = FrameMeta::for_test(0, 0, keys.len() as u32);
        idx.add_frame(meta, keys.iter().map(|k| ("s", &k[..], Op::Put, 1, 0)));
        let file = KeyIndexFile::open(
            bytes::Bytes::from(idx.encode_kidx()),
            std::path::Path::new("k"),
        )
        .unwrap();
        for stage in 0..3 {
            for key in keys.iter().map(|k| &k[..]).chain([&b"absent"[..], b""]) {
                for stream in ["s", "other"] {
                    if let Some(p) = file.probe(stream, super::stable_hash(key)) {
                        p.prefetch(stage);
                    }
                }
            }
        }
    }

    type KeyVersions = (Vec<u8>, Vec<super::VersionRef>);

    /// An index of `keys` keys in stream "s" (and 3 in "t"), each with up to
    /// 4 versions: its bytes, and each key with its versions.
    fn lazy_sample(keys: usize) -> (Vec<u8>, Vec<KeyVersions>) {
        use super::{encode_key_index, StreamKeys, VersionRef};
        use crate::storage::record::Op;
        let mut rng = crate::rng::Rng(3);
        let mut ks: Vec<(Vec<u8>, Vec<VersionRef>)> = (0..keys)
            .map(|k| {
                let n = 1 + rng.below(4) as usize;
                let vs = (0..n as u64)
                    .map(|v| VersionRef {
                        position: k as u64 * 10 + v,
                        event_time: (k as i64 % 5) * 10 + v as i64,
                        frame_off: k as u64,
                        rec_off: v as u32,
                        op: Op::Put,
                    })
                    .collect();
                (format!("key-{k:05}").into_bytes(), vs)
            })
            .collect();
        ks.sort_by(|a, b| a.0.cmp(&b.0));
        let t: Vec<(Vec<u8>, Vec<VersionRef>)> = ks[..3].to_vec();
        let streams: Vec<StreamKeys<'_, &Vec<u8>>> = vec![
            ("s", ks.iter().map(|(k, v)| (k, &v[..])).collect()),
            ("t", t.iter().map(|(k, v)| (k, &v[..])).collect()),
        ];
        (encode_key_index(&streams), ks)
    }

    /// Opened lazily, an index checks what each lookup reads: a damaged
    /// chunk fails the lookups that read it (and marks the file damaged),
    /// not the others, and a walk checks the whole file first.
    #[test]
    fn a_lazy_index_checks_what_each_lookup_reads() {
        use super::KeyIndexFile;
        use crate::storage::chunks::CHUNK;
        let (good, keys) = lazy_sample(3000);
        assert!(good.len() > 20 * CHUNK, "{} bytes", good.len());
        let p = std::path::Path::new("k");
        // A middle key's last version row: in the middle of the versions
        // section, far from every key's entry, key bytes and bucket and
        // from the first keys' rows.
        let file = KeyIndexFile::open(bytes::Bytes::from(good.clone()), p).unwrap();
        let s = file.section("s").unwrap().clone();
        let middle = keys.len() / 2;
        let (_, rows) = file.key_ranges(&s, middle);
        let mut bad = good.clone();
        bad[rows.end - 1] ^= 1;
        let lazy = KeyIndexFile::open_lazy(bytes::Bytes::from(bad), p).unwrap();
        let mut out = Vec::new();
        for (k, vs) in &keys[..10] {
            out.clear();
            lazy.versions("s", k, &mut out).unwrap();
            assert_eq!(&out, vs);
        }
        assert!(!lazy.damaged());
        let (k, _) = &keys[middle];
        match lazy.newest_visible("s", k, i64::MAX, u64::MAX) {
            Err(crate::Error::Corruption { offset, .. }) => {
                assert_eq!(offset as usize, (rows.end - 1) / CHUNK * CHUNK);
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
        assert!(lazy.damaged());
        assert!(lazy.cursor("s").is_err());
        assert!(KeyIndexFile::open(lazy.bytes.clone(), p).is_err());
    }

    /// A version field the checksums vouch for is a file from a newer
    /// format; one they do not is damage.
    #[test]
    fn an_unknown_version_is_unsupported_only_if_checksums_vouch_for_it() {
        use super::KeyIndexFile;
        let (good, _) = lazy_sample(10);
        let p = std::path::Path::new("k");
        let mut newer = body_of(&good);
        newer[8] = 4;
        let vouched = resealed(newer);
        assert!(matches!(
            KeyIndexFile::open_lazy(bytes::Bytes::from(vouched), p),
            Err(crate::Error::UnsupportedVersion { found: 4, .. })
        ));
        let mut flipped = good.clone();
        flipped[8] = 4;
        assert!(matches!(
            KeyIndexFile::open_lazy(bytes::Bytes::from(flipped), p),
            Err(crate::Error::Corruption { offset: 8, .. })
        ));
    }

    /// A key index file's body: the file without its trailer.
    fn body_of(file: &[u8]) -> Vec<u8> {
        let end = file.len() - 12;
        let body_end = u64::from_le_bytes(file[end..end + 8].try_into().unwrap());
        file[..body_end as usize].to_vec()
    }

    /// `body` (a key index without its trailer) with a trailer that vouches
    /// for it.
    fn resealed(mut body: Vec<u8>) -> Vec<u8> {
        let crcs: Vec<u32> = body
            .chunks(crate::storage::chunks::CHUNK)
            .map(crc32fast::hash)
            .collect();
        let trailer = crate::storage::chunks::trailer(&crcs, body.len() as u64);
        body.extend_from_slice(&trailer);
        body
    }

    /// At the fullest a format 3 hash section gets (three quarters), every
    /// key is found with its versions, through a plain lookup and through a
    /// hinted probe, and no absent key is.
    #[test]
    fn format_3_lookups_find_every_key_at_the_fullest_table() {
        use super::{bucket_count, stable_hash, KeyIndexFile};
        let n = 3071; // 3071 keys in 4096 buckets
        assert_eq!(bucket_count(n), 4096);
        let (good, keys) = lazy_sample(n);
        let file =
            KeyIndexFile::open_lazy(bytes::Bytes::from(good), std::path::Path::new("k")).unwrap();
        let mut out = Vec::new();
        for (k, vs) in &keys {
            out.clear();
            file.versions("s", k, &mut out).unwrap();
            assert_eq!(&out, vs);
            let p = file.probe("s", stable_hash(k)).unwrap();
            for stage in 0..3 {
                p.prefetch(stage);
            }
            let newest = p.newest_visible(k, i64::MAX, u64::MAX).unwrap();
            assert_eq!(newest.as_ref(), vs.last());
        }
        for a in 0..2000 {
            let k = format!("absent-{a}");
            out.clear();
            file.versions("s", k.as_bytes(), &mut out).unwrap();
            assert!(out.is_empty(), "{k}");
        }
        assert!(!file.damaged());
        file.check_all().unwrap();
    }

    /// A format 3 sample of `keys` keys ([`lazy_sample`]): its bytes, its
    /// keys, its stream's section and the buckets in use, in order.
    fn sample_buckets(
        keys: usize,
    ) -> (Vec<u8>, Vec<KeyVersions>, super::StreamSection, Vec<usize>) {
        use super::{bucket_fields, KeyIndexFile};
        let (good, keys) = lazy_sample(keys);
        let file = KeyIndexFile::open(bytes::Bytes::from(good.clone()), std::path::Path::new("k"))
            .unwrap();
        let s = file.section("s").unwrap().clone();
        let used = (0..s.buckets)
            .filter(|&j| bucket_fields(&good[s.bucket(j)]).4 > 0)
            .collect();
        (good, keys, s, used)
    }

    /// A bucket whose checksums match but whose entry reaches past its
    /// sections (only a bug writes one) fails the lookups that follow it and
    /// the whole check, and marks the file damaged: it never answers.
    #[test]
    fn a_bucket_out_of_bounds_is_corruption_not_an_answer() {
        use super::{KeyIndexFile, BUCKET};
        let (good, keys, s, used) = sample_buckets(200);
        let p = std::path::Path::new("k");
        // The first bucket in use, and its key.
        let j = used[0];
        let at = s.bucket(j).start;
        let (key, _) = s.bucket_ranges(&good[s.bucket(j)]).unwrap();
        let key = good[key].to_vec();
        assert!(keys.iter().any(|(k, _)| *k == key));
        let mut body = body_of(&good);
        let blob_len = (s.vers_off - s.blob_off) as u32;
        body[at + 4..at + 8].copy_from_slice(&blob_len.to_le_bytes());
        assert_eq!(BUCKET, 16);
        let bad = resealed(body);
        let lazy = KeyIndexFile::open_lazy(bytes::Bytes::from(bad.clone()), p).unwrap();
        assert!(matches!(
            lazy.newest_visible("s", &key, i64::MAX, u64::MAX),
            Err(crate::Error::Corruption { offset, .. }) if offset as usize == at
        ));
        assert!(lazy.damaged());
        let lazy = KeyIndexFile::open_lazy(bytes::Bytes::from(bad), p).unwrap();
        assert!(lazy.check_all().is_err());
    }

    /// A whole check ties every bucket to its key's entry: a bucket whose
    /// key bytes are its key's but whose versions are another key's (checksums
    /// matching, in bounds, as many buckets in use as keys) fails it, where
    /// a lookup would read the other key's versions.
    #[test]
    fn a_bucket_holding_another_keys_versions_fails_the_whole_check() {
        use super::{bucket_fields, KeyIndexFile};
        let (good, _, s, used) = sample_buckets(200);
        let p = std::path::Path::new("k");
        // Two buckets whose keys have equally many versions.
        let (a, b) = used
            .iter()
            .flat_map(|&a| used.iter().map(move |&b| (a, b)))
            .find(|&(a, b)| {
                a != b && bucket_fields(&good[s.bucket(a)]).4 == bucket_fields(&good[s.bucket(b)]).4
            })
            .unwrap();
        let mut body = body_of(&good);
        let from = s.bucket(b).start;
        let to = s.bucket(a).start;
        let first = body[from + 8..from + 12].to_vec();
        body[to + 8..to + 12].copy_from_slice(&first);
        let bad = resealed(body);
        let lazy = KeyIndexFile::open_lazy(bytes::Bytes::from(bad), p).unwrap();
        assert!(matches!(
            lazy.check_all(),
            Err(crate::Error::Corruption { reason, .. }) if reason.contains("not found from its hash bucket")
        ));
        assert!(lazy.damaged());
    }

    /// Format 2 too: a file whose checksums match but whose buckets leave a
    /// key out (a lookup would call it absent while a walk sees it) fails
    /// the whole check. The file is a segment's key index from the format 2
    /// fixture.
    #[test]
    fn a_format_2_key_missing_from_its_buckets_fails_the_whole_check() {
        use super::KeyIndexFile;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kidx_v2/00000000000000000000.kidx");
        let good = std::fs::read(&path).unwrap();
        assert_eq!(good[8..12], 2u32.to_le_bytes());
        let file = KeyIndexFile::open(bytes::Bytes::from(good.clone()), &path).unwrap();
        let s = file.section("inventory").unwrap().clone();
        assert!(!s.wide);
        let at = (0..s.buckets)
            .map(|j| s.bucket(j).start)
            .find(|&at| good[at..at + 4] != [0; 4])
            .unwrap();
        let mut body = body_of(&good);
        body[at..at + 4].fill(0);
        let lazy = KeyIndexFile::open_lazy(bytes::Bytes::from(resealed(body)), &path).unwrap();
        assert!(matches!(
            lazy.check_all(),
            Err(crate::Error::Corruption { reason, .. }) if reason.contains("not found from its hash bucket")
        ));
    }

    /// Whatever byte is flipped, a lazily opened index either refuses to
    /// open or answers every lookup right or with an error: never wrong.
    #[test]
    fn a_flipped_byte_never_gives_a_lazy_lookup_a_wrong_answer() {
        use super::KeyIndexFile;
        let (good, keys) = lazy_sample(120);
        let p = std::path::Path::new("k");
        let mut out = Vec::new();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 1 << (at % 8);
            let Ok(lazy) = KeyIndexFile::open_lazy(bytes::Bytes::from(bad), p) else {
                continue;
            };
            for (k, vs) in keys.iter().step_by(7).chain(&keys[keys.len() - 1..]) {
                out.clear();
                if lazy.versions("s", k, &mut out).is_ok() {
                    assert_eq!(&out, vs, "flip at {at}");
                }
                if let Ok(v) = lazy.newest_visible("s", k, i64::MAX, u64::MAX) {
                    assert_eq!(v.as_ref(), vs.last(), "flip at {at}");
                }
            }
            out.clear();
            if lazy.versions("s", b"absent", &mut out).is_ok() {
                assert!(out.is_empty(), "flip at {at}");
            }
            assert!(
                lazy.check_all().is_err(),
                "flip at {at} passed a whole check"
            );
        }
    }

    /// `add_frame` locates keys records ahead of their pushes: through
    /// streams interleaved in one frame, keys new to the frame repeated
    /// within a few records, and frames shorter than the lookahead, it must
    /// index exactly what pushing each record in turn does.
    #[test]
    fn frames_index_as_records_pushed_one_by_one() {
        use super::{FrameMeta, MemIndex, VersionRef};
        use crate::storage::keytable::KeyTable;
        use crate::storage::record::Op;
        let mut rng = crate::rng::Rng(9);
        let mut idx = MemIndex::default();
        let mut plain: Vec<(String, KeyTable)> = Vec::new();
        let (mut pos, mut off) = (0u64, 0u64);
        let mut keys = Vec::new();
        for frame in 0..60u64 {
            let count = [0, 1, 2, 7, 8, 9, 16, 17, 33, 100][frame as usize % 10];
            let recs: Vec<(String, Vec<u8>, Op, i64, u32)> = (0..count)
                .map(|i| {
                    let stream = ["a", "b", "c"][rng.below(3) as usize].to_string();
                    // Mostly keys seen before, some new, repeated soon after.
                    let key = if rng.below(4) == 0 || keys.is_empty() {
                        keys.push(format!("k{}-{}", frame, i).into_bytes());
                        keys.last().cloned().unwrap_or_default()
                    } else {
                        let back = (rng.below(6) as usize).min(keys.len() - 1);
                        keys[keys.len() - 1 - back].clone()
                    };
                    (stream, key, Op::Put, rng.below(1000) as i64, i as u32 * 40)
                })
                .collect();
            let meta = FrameMeta::for_test(off, pos, count as u32);
            idx.add_frame(
                meta,
                recs.iter()
                    .map(|(s, k, op, t, o)| (s.as_str(), &k[..], *op, *t, *o)),
            );
            for (k, (stream, key, op, t, o)) in recs.iter().enumerate() {
                let v = VersionRef {
                    event_time: *t,
                    position: pos + k as u64,
                    frame_off: off,
                    rec_off: *o,
                    op: *op,
                };
                match plain.iter_mut().find(|(s, _)| s == stream) {
                    Some((_, t)) => t.push(key, v),
                    None => {
                        let mut t = KeyTable::default();
                        t.push(key, v);
                        plain.push((stream.clone(), t));
                    }
                }
            }
            pos += count;
            off += 64;
        }
        assert!(keys.len() > 100, "enough keys to grow the tables");
        for (stream, table) in &plain {
            let built = idx.stream(stream).expect("stream indexed");
            assert_eq!(built.len(), table.len(), "{stream}: keys");
            for key in &keys {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                built.versions_into(key, u64::MAX, &mut a);
                table.versions_into(key, u64::MAX, &mut b);
                assert_eq!(a, b, "{stream} {key:?}");
            }
        }
    }

    /// A recycled index indexes the next frames exactly as a new one does:
    /// none of the keys, versions or streams it held before show through.
    #[test]
    fn a_recycled_index_is_a_new_one() {
        use super::{FrameMeta, MemIndex};
        use crate::storage::record::Op;
        type Frames = Vec<(u64, Vec<(&'static str, Vec<u8>, i64)>)>;
        let frames = |seed: u64, streams: &[&'static str], pos0: u64, keys: u64| -> Frames {
            let mut rng = crate::rng::Rng(seed);
            (0..30u64)
                .map(|f| {
                    let recs = (0..rng.below(40))
                        .map(|_| {
                            let s = streams[rng.below(streams.len() as u64) as usize];
                            let key =
                                format!("key-{}-and-a-long-tail", rng.below(keys)).into_bytes();
                            (s, key, rng.below(100) as i64)
                        })
                        .collect();
                    (pos0 + f * 100, recs)
                })
                .collect()
        };
        let add = |idx: &mut MemIndex, fs: &Frames| {
            for (pos, recs) in fs {
                let meta = FrameMeta::for_test(*pos, *pos, recs.len() as u32);
                idx.add_frame(
                    meta,
                    recs.iter().map(|(s, k, t)| (*s, &k[..], Op::Put, *t, 0)),
                );
            }
        };
        // The same keys and streams again, fewer of them: a table taken back
        // by its stream with anything left in its buckets or arrays would
        // find keys it no longer has.
        let before = frames(1, &["a", "b", "c"], 0, 200);
        let after = frames(2, &["b", "d", "a"], 10_000, 40);
        let mut old = MemIndex::default();
        add(&mut old, &before);
        let mut recycled = old.recycle();
        let mut fresh = MemIndex::default();
        add(&mut recycled, &after);
        add(&mut fresh, &after);
        assert_eq!(recycled.encode_kidx(), fresh.encode_kidx());
        assert_eq!(recycled.encode_fidx(), fresh.encode_fidx());
        assert_eq!(recycled.event_time_range(), fresh.event_time_range());
        let names = |i: &MemIndex| i.streams().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&recycled), names(&fresh));
        for (name, table) in fresh.streams() {
            let again = recycled.stream(name).expect("same streams");
            assert_eq!(again.len(), table.len(), "{name}");
            assert_eq!(again.first_position(), table.first_position(), "{name}");
            assert_eq!(again.version_count(), table.version_count(), "{name}");
            assert_eq!(again.key_bytes(), table.key_bytes(), "{name}");
        }
        for (_, recs) in before.iter().chain(&after) {
            for (_, key, _) in recs {
                for s in ["a", "b", "c", "d"] {
                    let get = |i: &MemIndex| {
                        i.stream(s)
                            .and_then(|t| t.newest_visible(key, i64::MAX, u64::MAX))
                    };
                    assert_eq!(get(&recycled), get(&fresh), "{s} {key:?}");
                }
            }
        }
    }

    /// Hashing in parts on several threads and combining gives the CRC of
    /// the whole, whatever the length and the number of parts (more parts
    /// than bytes included).
    #[test]
    fn crc_in_parts_is_the_crc_of_the_whole() {
        let mut rng = crate::rng::Rng(11);
        let data: Vec<u8> = (0..100_003).map(|_| rng.below(256) as u8).collect();
        for len in [0, 1, 2, 7, 4096, 65_537, 100_003] {
            let b = &data[..len];
            let whole = crc32fast::hash(b);
            for parts in [0, 1, 2, 3, 5, 8] {
                assert_eq!(
                    super::crc_in_parts(b, parts),
                    whole,
                    "{len} bytes in {parts}"
                );
            }
        }
    }
}
