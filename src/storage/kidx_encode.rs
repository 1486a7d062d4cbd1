//! Encoding a segment's in-memory index as a key index file, section by
//! section, without copying its versions.
//!
//! Sealing a segment writes its key index. Built by copying every version into
//! key order and then encoding the copy, that took about 50 MB of short-lived
//! heap for a 64 MiB segment (the copy, the key order, the encoded file) and
//! more time than indexing the segment had: on two cores the sealing thread
//! took its time from the writer. Here the versions are only numbered in key
//! order (`KeyTable::by_key`, about 8 bytes a version) and the sections are
//! encoded in file order, a pass over the keys each, straight into the file
//! through one buffered writer ([`write`](fn@write)) or into one exactly
//! sized buffer ([`encode`]).
//!
//! The layout is the one every key index file has (see
//! [`super::index::encode_key_index`], which a test checks this against byte
//! for byte): a header and directory (`layout`, shared with
//! [`super::kidx_merge`]), then per stream its keys, key bytes, versions and
//! hash buckets.

use std::io::Write;
use std::path::Path;

use super::chunks::{self, Chunked, Sums, CHUNK};
use super::fsutil::SeqWriter;
use super::index::{
    append_trailer, hash_len, key_entry, HashSection, MemIndex, VersionRef, KEY_ENTRY, KIDX_MAGIC,
    KIDX_VERSION, VERSION_ENTRY,
};
use super::keytable::{ByKey, KeyTable};
use super::vfs::VFile;
use crate::{Error, Result};

/// One stream's section sizes, which fix the file's layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Keys.
    pub keys: usize,
    /// Bytes of all keys.
    pub blob: usize,
    /// Versions of all keys.
    pub versions: usize,
}

impl Sizes {
    /// An error if a key index cannot hold these (its fields are 32-bit).
    pub(crate) fn check(&self, stream: &str) -> Result<()> {
        if self.keys > u32::MAX as usize / 2
            || self.blob > u32::MAX as usize
            || self.versions > u32::MAX as usize
        {
            return Err(Error::InvalidInput(format!(
                "stream {stream}: {} keys, {} key bytes and {} versions exceed what a key index holds",
                self.keys, self.blob, self.versions
            )));
        }
        Ok(())
    }
}

/// The header and directory of a key index file of `streams` (sorted by
/// name) with these sizes, and per stream the offsets of its keys, key bytes,
/// versions and hash sections and of its end. The last end is where the
/// trailer goes.
pub(crate) fn layout(streams: &[(&str, Sizes)]) -> (Vec<u8>, Vec<[u64; 5]>) {
    let mut head = Vec::new();
    head.extend_from_slice(KIDX_MAGIC);
    head.extend_from_slice(&KIDX_VERSION.to_le_bytes());
    head.extend_from_slice(&(streams.len() as u32).to_le_bytes());
    let dir_len: usize = streams.iter().map(|(n, _)| 1 + n.len() + 4 + 32).sum();
    let mut at = (head.len() + dir_len) as u64;
    let mut offsets = Vec::with_capacity(streams.len());
    for (name, s) in streams {
        let keys_off = at;
        let blob_off = keys_off + (s.keys * KEY_ENTRY) as u64;
        let vers_off = blob_off + s.blob as u64;
        let hash_off = vers_off + (s.versions * VERSION_ENTRY) as u64;
        at = hash_off + hash_len(s.keys) as u64;
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(&(s.keys as u32).to_le_bytes());
        for off in [keys_off, blob_off, vers_off, hash_off] {
            head.extend_from_slice(&off.to_le_bytes());
        }
        offsets.push([keys_off, blob_off, vers_off, hash_off, at]);
    }
    (head, offsets)
}

/// The index's non-empty streams, sorted by name, with their sizes.
fn streams(idx: &MemIndex) -> Vec<(&str, &KeyTable, Sizes)> {
    let mut out: Vec<_> = idx
        .streams()
        .filter(|(_, t)| !t.is_empty())
        .map(|(n, t)| {
            let sizes = Sizes {
                keys: t.len(),
                blob: t.key_bytes(),
                versions: t.version_count(),
            };
            (n, t, sizes)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The streams' names and sizes, as [`layout`] takes them.
fn named<'a>(streams: &[(&'a str, &KeyTable, Sizes)]) -> Vec<(&'a str, Sizes)> {
    streams.iter().map(|&(n, _, s)| (n, s)).collect()
}

/// How far ahead of the key being encoded its slot and version numbers
/// start loading; the versions themselves, half as far.
const AHEAD: usize = 16;

/// Encodes one stream's four sections in file order, a pass over the keys
/// for each: its keys (filling its hash buckets in memory as it goes), key
/// bytes, versions, then the buckets. One sequential writer, so the whole file goes out in
/// 2 MiB-aligned pieces ([`SeqWriter`]), which the page cache can keep in
/// huge folios: `get` reads three of the four sections.
fn write_stream<W: Write>(by: &ByKey<'_>, w: &mut W) -> std::io::Result<()> {
    let n = by.len();
    let mut hash = HashSection::new(n);
    let (mut blob_at, mut ver_at) = (0u32, 0u32);
    for i in 0..n {
        by.prefetch(i + AHEAD);
        let (key, count) = (by.key(i), by.version_count(i) as u32);
        w.write_all(&key_entry(blob_at, key.len() as u32, ver_at, count))?;
        hash.insert(key, blob_at, ver_at, count);
        blob_at += key.len() as u32;
        ver_at += count;
    }
    for i in 0..n {
        by.prefetch(i + AHEAD);
        w.write_all(by.key(i))?;
    }
    // Rows are encoded into a buffer written 64 KiB at a time.
    const ROWS: usize = 64 << 10;
    let (mut vs, mut rows): (Vec<VersionRef>, Vec<u8>) = (Vec::new(), Vec::with_capacity(ROWS));
    for i in 0..n {
        by.prefetch(i + AHEAD);
        by.prefetch_versions(i + AHEAD / 2);
        by.versions_into(i, &mut vs);
        for v in &vs {
            rows.extend_from_slice(&v.encode());
            if rows.len() >= ROWS {
                w.write_all(&rows)?;
                rows.clear();
            }
        }
    }
    w.write_all(&rows)?;
    w.write_all(hash.bytes())
}

/// An error if a key index file cannot hold `idx` (its fields are 32-bit):
/// [`write`](fn@write) checks it, and so must whoever calls [`encode`] on an
/// index that may be that large.
pub(crate) fn check(idx: &MemIndex) -> Result<()> {
    for (n, _, s) in streams(idx) {
        s.check(n)?;
    }
    Ok(())
}

/// The key index file of `idx`, encoded in memory: streams sorted by name,
/// keys sorted by bytes, each key's versions sorted by
/// `(event_time, position)`.
#[must_use]
pub fn encode(idx: &MemIndex) -> Vec<u8> {
    let streams = streams(idx);
    let (head, offsets) = layout(&named(&streams));
    let end = offsets.last().map_or(head.len() as u64, |o| o[4]) as usize;
    let mut out = Vec::with_capacity(end + end.div_ceil(CHUNK) * 4 + 12);
    out.extend_from_slice(&head);
    for (_, table, _) in &streams {
        write_stream(&table.by_key(), &mut out).expect("writing to memory");
    }
    debug_assert_eq!(out.len(), end, "sections sized from the tables they encode");
    append_trailer(&mut out);
    out
}

/// Writes the key index file of `idx` into `file` (a new, empty file at
/// `tmp`), as [`encode`] would encode it: the filling step of an atomic
/// write ([`super::fsutil::atomic_write_with`]).
pub fn write(idx: &MemIndex, file: &dyn VFile, tmp: &Path) -> Result<()> {
    let io = |e| Error::io(tmp, e);
    check(idx)?;
    let streams = streams(idx);
    let named = named(&streams);
    let (head, offsets) = layout(&named);
    let want_end = offsets.last().map_or(head.len() as u64, |o| o[4]);
    let mut w = Chunked::at(SeqWriter::new(file, 0), 0);
    w.write_all(&head).map_err(io)?;
    for (_, table, _) in &streams {
        write_stream(&table.by_key(), &mut w).map_err(io)?;
    }
    let end = w.end();
    if end != want_end {
        return Err(Error::corrupt(
            tmp,
            end,
            format!("the key index ends at {end}, expected {want_end}"),
        ));
    }
    let (sums, mut w) = w.finish();
    let crcs = Sums::join(vec![sums], end)
        .ok_or_else(|| Error::corrupt(tmp, 0, "key index body written out of order"))?;
    w.write_all(&chunks::trailer(&crcs, end)).map_err(io)?;
    w.finish().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fsutil::atomic_write_with;
    use crate::storage::index::{encode_key_index, FrameMeta, StreamKeys};
    use crate::storage::memvfs::MemVfs;
    use crate::storage::record::Op;
    use crate::storage::vfs::Vfs;

    /// The key index as sealing encoded it before: a copy of every version
    /// in key order, sorted, then one encoding.
    fn by_copies(idx: &MemIndex) -> Vec<u8> {
        let mut copies: Vec<_> = idx
            .streams()
            .filter(|(_, t)| !t.is_empty())
            .map(|(n, t)| {
                let mut c = t.copy_below(u64::MAX);
                c.sort();
                for (_, vr) in &c.ranges {
                    c.versions[vr.clone()].sort_unstable_by_key(VersionRef::order);
                }
                (n, c)
            })
            .collect();
        copies.sort_by(|a, b| a.0.cmp(b.0));
        let streams: Vec<StreamKeys<'_, &[u8]>> = copies
            .iter()
            .map(|(n, c)| {
                let keys = c
                    .ranges
                    .iter()
                    .map(|(kr, vr)| (&c.keys[kr.clone()], &c.versions[vr.clone()]))
                    .collect();
                (*n, keys)
            })
            .collect();
        encode_key_index(&streams)
    }

    /// An index of random frames over three streams: short keys, empty
    /// keys, long keys sharing their first 16 bytes, event times out of
    /// order (so a key's versions need sorting), every op.
    fn random_index(seed: u64, frames: u64) -> MemIndex {
        let mut rng = crate::rng::Rng(seed);
        let mut idx = MemIndex::default();
        let (mut pos, mut off) = (0u64, 0u64);
        for _ in 0..frames {
            let count = rng.below(50);
            let recs: Vec<(&str, Vec<u8>, Op, i64, u32)> = (0..count)
                .map(|i| {
                    let stream = ["a", "bb", "c"][rng.below(3) as usize];
                    let n = rng.below(300);
                    let key = match rng.below(3) {
                        0 => format!("{n}").into_bytes(),
                        1 => format!("a-long-shared-prefix-{n}").into_bytes(),
                        _ => vec![b'x'; n as usize % 20],
                    };
                    let op = [Op::Put, Op::Patch, Op::Delete][rng.below(3) as usize];
                    (stream, key, op, rng.below(1000) as i64 - 500, i as u32 * 30)
                })
                .collect();
            let meta = FrameMeta::for_test(off, pos, count as u32);
            idx.add_frame(
                meta,
                recs.iter()
                    .map(|(s, k, op, t, o)| (*s, &k[..], *op, *t, *o)),
            );
            pos += count;
            off += 64;
        }
        idx
    }

    #[test]
    fn encoding_by_key_order_is_byte_for_byte_the_copy() {
        let vfs = MemVfs::new();
        // The last is over 5 MiB: several of the writer's 2 MiB pieces.
        for (seed, frames) in [(1, 0), (2, 1), (3, 5), (4, 40), (5, 200), (6, 7000)] {
            let idx = random_index(seed, frames);
            let want = by_copies(&idx);
            assert_eq!(encode(&idx), want, "seed {seed}: in memory");
            let path = Path::new("/k.kidx");
            atomic_write_with(&vfs, path, |f, tmp| write(&idx, f, tmp)).unwrap();
            let f = vfs.open(path, false).unwrap();
            let mut got = vec![0u8; f.len().unwrap() as usize];
            f.read_at(&mut got, 0).unwrap();
            assert_eq!(got, want, "seed {seed}: streamed");
        }
    }
}
