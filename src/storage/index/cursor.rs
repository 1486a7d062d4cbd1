//! Key-ordered iteration over one stream's section of a key index file.
//!
//! A cursor reads the file in place. A *bulk* cursor, for walking whole
//! indexes once (checkpoints, key index merges, compaction), copies what it
//! reads in windows of [`WINDOW`] bytes and unmaps the pages under each
//! window as soon as it is copied. Key index files are written in one go, so
//! the kernel caches them in large folios and maps them 2 MiB at a time: in
//! place, a walk keeps about 8 MB of every index it walks resident (its key
//! entries, key bytes and versions each pin a 2 MiB piece, measured with
//! `/proc/PID/smaps` on an import's final checkpoint: 17 indexes, 136 MB). A
//! bulk walk keeps three windows per index instead. A key's versions are
//! copied only when they are read ([`KeyFileCursor::best`],
//! [`KeyFileCursor::take`]); a key with more than a window of them (a hot
//! key) is read in place and its pages unmapped after, so windows never grow
//! past a window.

use std::ops::Range;

use bytes::Bytes;

use super::{
    best_version, decode_versions, entry_ranges, KeyIndexFile, StreamSection, VersionRef,
    KEY_ENTRY, VERSION_ENTRY,
};

/// Bytes a bulk cursor copies from a section at a time (more when one key's
/// versions need more).
const WINDOW: usize = 32 << 10;

/// What a bulk cursor unmaps around each window it copies: the size of the
/// pieces the kernel maps file folios in (a PMD on x86-64 and aarch64 with
/// 4 KiB pages). Unmapping more than was read costs the next reader a minor
/// fault, never a wrong byte.
const UNMAP_ALIGN: usize = 2 << 20;

/// Key-ordered iteration over one stream's section of a key index file.
#[derive(Debug, Clone)]
pub struct KeyFileCursor {
    file: KeyIndexFile,
    section: StreamSection,
    i: usize,
    /// A bulk cursor's copies, holding the current key.
    bulk: Option<Box<Bulk>>,
}

/// A bulk cursor's windows over its section's key entries, key bytes and
/// versions, which it reads front to back; where the current key lies in
/// `blob`, and where its versions lie in the file (copied into `versions`
/// only when read: a merge counting versions, or a checkpoint skipping a key,
/// never reads them).
#[derive(Debug, Clone, Default)]
struct Bulk {
    entries: Window,
    blob: Window,
    versions: Window,
    key: Range<usize>,
    rows: Range<usize>,
}

/// A copy of `buf.len()` bytes of the file from offset `off`.
#[derive(Debug, Clone, Default)]
struct Window {
    off: usize,
    buf: Vec<u8>,
}

impl Window {
    /// The range in the copy of the file's bytes `r`, copying them (and what
    /// follows, up to [`WINDOW`] bytes) first if the copy does not hold them.
    /// `None` if `r` is not inside the file. Callers keep `r` to at most
    /// [`WINDOW`] bytes (or a key's few), so the copy stays that small.
    fn cover(&mut self, file: &Bytes, r: Range<usize>) -> Option<Range<usize>> {
        if r.start > r.end || r.end > file.len() {
            return None;
        }
        if r.start < self.off || r.end > self.off + self.buf.len() {
            let stop = r.end.max(r.start.saturating_add(WINDOW)).min(file.len());
            self.buf.clear();
            self.buf.extend_from_slice(&file[r.start..stop]);
            self.off = r.start;
            unmap_around(file, r.start..stop);
        }
        Some(r.start - self.off..r.end - self.off)
    }
}

/// Unmaps the [`UNMAP_ALIGN`] pieces of `file` around `r` (what was just
/// read from them is not read from the mapping again).
fn unmap_around(file: &Bytes, r: Range<usize>) {
    let lo = r.start & !(UNMAP_ALIGN - 1);
    let hi = r.end.next_multiple_of(UNMAP_ALIGN).min(file.len());
    if lo < hi {
        crate::storage::mmap::release(&file[lo..hi]);
    }
}

impl KeyFileCursor {
    pub(super) fn new(file: KeyIndexFile, section: StreamSection, bulk: bool) -> KeyFileCursor {
        let mut c = KeyFileCursor {
            file,
            section,
            i: 0,
            bulk: bulk.then(Box::default),
        };
        c.copy_current();
        c
    }

    /// A bulk cursor copies the current key's entry and bytes into its
    /// windows, and notes where its versions are (a damaged entry, which
    /// [`KeyIndexFile::open`] refuses, reads as an empty key without
    /// versions).
    fn copy_current(&mut self) {
        let Some(bulk) = self.bulk.as_deref_mut() else {
            return;
        };
        if self.i >= self.section.key_count {
            return;
        }
        let file = &self.file.bytes;
        let e = self.section.keys_off + self.i * KEY_ENTRY;
        let (key, rows) = match bulk.entries.cover(file, e..e + KEY_ENTRY) {
            Some(at) => entry_ranges(&self.section, &bulk.entries.buf[at]),
            None => (0..0, 0..0),
        };
        bulk.key = bulk.blob.cover(file, key).unwrap_or(0..0);
        bulk.rows = if rows.end <= file.len() { rows } else { 0..0 };
    }

    /// The file range of the current key's versions (empty at the end).
    fn rows(&self) -> Range<usize> {
        if self.i >= self.section.key_count {
            return 0..0;
        }
        match &self.bulk {
            Some(b) => b.rows.clone(),
            None => self.file.key_ranges(&self.section, self.i).1,
        }
    }

    /// `f` of the current key's version rows. A bulk cursor reads them from
    /// its window; a key with more than a window of versions (a hot key) is
    /// read in place and its pages unmapped after.
    fn with_rows<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> T {
        let rows = self.rows();
        let file = &self.file;
        match self.bulk.as_deref_mut() {
            None => f(file.at(rows)),
            Some(b) if rows.len() <= WINDOW => {
                let at = b.versions.cover(&file.bytes, rows).unwrap_or(0..0);
                f(&b.versions.buf[at])
            }
            Some(_) => {
                let out = f(file.at(rows.clone()));
                unmap_around(&file.bytes, rows);
                out
            }
        }
    }

    /// The current key, `None` at the end.
    #[must_use]
    pub fn key(&self) -> Option<&[u8]> {
        if self.i >= self.section.key_count {
            return None;
        }
        Some(match &self.bulk {
            Some(b) => &b.blob.buf[b.key.clone()],
            None => self.file.at(self.file.key_ranges(&self.section, self.i).0),
        })
    }

    /// The current key as shared bytes (zero-copy, but for a bulk cursor).
    #[must_use]
    pub fn key_bytes(&self) -> Bytes {
        match &self.bulk {
            Some(_) => Bytes::copy_from_slice(self.key().unwrap_or_default()),
            None => match self.key() {
                Some(_) => self
                    .file
                    .bytes
                    .slice(self.file.key_ranges(&self.section, self.i).0),
                None => Bytes::new(),
            },
        }
    }

    /// The current key's newest version visible as of `as_of` below position
    /// `end`, by `(event_time, position)`: a binary search, since the key's
    /// versions are sorted by `(event_time, position)`.
    pub fn best(&mut self, as_of: i64, end: u64) -> Option<VersionRef> {
        self.with_rows(|rows| best_version(rows, as_of, end))
    }

    /// How many versions the current key has (0 at the end).
    #[must_use]
    pub fn version_count(&self) -> usize {
        self.rows().len() / VERSION_ENTRY
    }

    /// Moves to the next key without reading the current one's versions.
    pub fn skip(&mut self) {
        self.i += 1;
        self.copy_current();
    }

    /// Appends the current key's versions to `out` and moves to the next key.
    pub fn take(&mut self, out: &mut Vec<VersionRef>) {
        self.with_rows(|rows| decode_versions(rows, out));
        self.skip();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::storage::index::{encode_key_index, StreamKeys};
    use crate::storage::record::Op;
    use std::io::Write;
    use std::path::Path;

    /// A key index of `keys` keys over two streams: short and long keys, most
    /// with a few versions, and one key with more versions than a window
    /// holds, so windows are refilled at every boundary and for oversized
    /// runs.
    fn index_bytes(rng: &mut Rng, keys: usize) -> Vec<u8> {
        let mut pos = 0u64;
        let mut per_stream = Vec::new();
        for name in ["a", "b"] {
            let mut ks: Vec<(Vec<u8>, Vec<VersionRef>)> = (0..keys)
                .map(|i| {
                    let key = format!("{name}{i:08}{}", "x".repeat(rng.below(40) as usize));
                    let n = if i == keys / 2 {
                        WINDOW / VERSION_ENTRY + 1000
                    } else {
                        1 + rng.below(5) as usize
                    };
                    let mut t = rng.below(1000) as i64;
                    let vs = (0..n)
                        .map(|_| {
                            t += rng.below(3) as i64;
                            pos += 1;
                            VersionRef {
                                event_time: t,
                                position: rng.below(1 << 20),
                                frame_off: pos,
                                rec_off: rng.below(1 << 16) as u32,
                                op: [Op::Put, Op::Patch, Op::Delete][rng.below(3) as usize],
                            }
                        })
                        .collect::<Vec<_>>();
                    (key.into_bytes(), vs)
                })
                .collect();
            ks.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, vs) in &mut ks {
                vs.sort_by_key(VersionRef::order);
            }
            per_stream.push((name, ks));
        }
        let streams: Vec<StreamKeys<'_, &Vec<u8>>> = per_stream
            .iter()
            .map(|(n, ks)| (*n, ks.iter().map(|(k, v)| (k, &v[..])).collect()))
            .collect();
        encode_key_index(&streams)
    }

    /// A key index file written to `dir` and mapped, as sealed segments' are.
    fn mapped(dir: &Path, bytes: &[u8]) -> KeyIndexFile {
        let path = dir.join("i.kidx");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let map = crate::storage::mmap::map(&f, bytes.len()).unwrap();
        KeyIndexFile::open(map, &path).unwrap()
    }

    #[test]
    fn bulk_cursors_read_what_cursors_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(11);
        let bytes = index_bytes(&mut rng, 20_000);
        // Mapped (windows unmap what they copied) and on the heap (nothing to
        // unmap): the same keys and versions as a cursor reading in place.
        // The hot key has more versions than a window: it is read in place,
        // and the windows stay one window large.
        for file in [
            mapped(dir.path(), &bytes),
            KeyIndexFile::open(Bytes::from(bytes.clone()), Path::new("heap")).unwrap(),
        ] {
            for stream in ["a", "b"] {
                let mut inplace = file.cursor(stream).unwrap().unwrap();
                let mut bulk = file.bulk_cursor(stream).unwrap().unwrap();
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let mut n = 0;
                while let Some(key) = inplace.key() {
                    assert_eq!(bulk.key(), Some(key), "key {n} of {stream}");
                    assert_eq!(bulk.key_bytes(), inplace.key_bytes());
                    assert_eq!(bulk.version_count(), inplace.version_count());
                    for _ in 0..3 {
                        let as_of = rng.below(1200) as i64;
                        let end = rng.below(1 << 20);
                        assert_eq!(bulk.best(as_of, end), inplace.best(as_of, end));
                    }
                    if rng.below(3) == 0 {
                        inplace.skip();
                        bulk.skip();
                    } else {
                        a.clear();
                        b.clear();
                        inplace.take(&mut a);
                        bulk.take(&mut b);
                        assert_eq!(a, b, "versions of key {n} of {stream}");
                    }
                    n += 1;
                }
                assert_eq!(n, 20_000);
                assert_eq!(bulk.key(), None);
                assert_eq!(bulk.version_count(), 0);
                let b = bulk.bulk.as_deref().unwrap();
                for w in [&b.entries, &b.blob, &b.versions] {
                    assert!(w.buf.capacity() <= 2 * WINDOW, "{}", w.buf.capacity());
                }
            }
        }
    }

    /// Lookups read a few lines of a key index, so its mapping is advised
    /// random (a cold fault reads a page, not the disk's read-ahead);
    /// checking it whole, which reads ahead explicitly, still passes.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_key_index_is_mapped_for_random_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = mapped(dir.path(), &index_bytes(&mut Rng(6), 2_000));
        let Some(flags) = crate::storage::mmap::vm_flags(&file.bytes) else {
            return; // no /proc/self/smaps here
        };
        assert!(flags.iter().any(|f| f == "rr"), "{flags:?}");
    }

    /// The point of bulk cursors: walking an index leaves (almost) none of it
    /// mapped, where walking it in place leaves it all.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_bulk_walk_leaves_the_index_unmapped() {
        use crate::storage::mmap::resident_kb;
        let dir = tempfile::tempdir().unwrap();
        let bytes = index_bytes(&mut Rng(5), 100_000);
        assert!(bytes.len() > 16 << 20, "{} bytes", bytes.len());
        let file = mapped(dir.path(), &bytes);
        let walk = |mut c: KeyFileCursor| {
            let mut out = Vec::new();
            while c.key().is_some() {
                c.take(&mut out);
                out.clear();
            }
        };
        let Some(opened) = resident_kb(&file.bytes) else {
            return; // no /proc/self/smaps here
        };
        walk(file.bulk_cursor("a").unwrap().unwrap());
        let bulk = resident_kb(&file.bytes).unwrap();
        walk(file.cursor("a").unwrap().unwrap());
        let inplace = resident_kb(&file.bytes).unwrap();
        // A window's piece stays mapped only between its copy and its unmap.
        assert!(
            bulk <= opened + 64,
            "opened {opened} kB, after a bulk walk {bulk} kB"
        );
        assert!(
            inplace > bulk + 4096,
            "in place {inplace} kB, bulk {bulk} kB"
        );
    }
}
