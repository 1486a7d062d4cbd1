//! Checksums per 4 KiB chunk, for files read in place that are checked as
//! they are first used (field columns, key index files): opening a file costs
//! its trailer, not its size, and a lookup checks about what it reads.
//!
//! A file of this kind ends in a trailer after its body `[0, B)`:
//!
//! ```text
//! B   chunk_crcs  ceil(B / 4096) × u32   CRC-32 of each 4 KiB of [0, B)
//!                                        (the last chunk may be short)
//!     body_end    u64                    B
//!     crc         u32                    CRC-32 of chunk_crcs and body_end
//! ```
//!
//! Writers pass the body through [`Chunked`] (one per sequential run of
//! bytes; the runs of a file written in several at once are joined by
//! [`Sums::join`]) and append [`trailer`]. Readers check the trailer with
//! [`ChunkChecks::open`], then each chunk before its bytes are trusted
//! ([`ChunkChecks::ensure`]), or all of them ([`ChunkChecks::check_all`]).

use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::{Error, Result};

/// Bytes covered by one chunk checksum: a page, so a lookup checks about
/// what it reads and no more.
pub const CHUNK: usize = 4096;

/// Damage found in this process so far: see [`damage_epoch`].
static DAMAGE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// How many times this process has found a file ([`ChunkChecks`]) damaged
/// so far (each [`ChunkChecks::mark_damaged`]). A reader that reads around
/// damaged files takes this before it chooses its files and again when its
/// read fails: if it grew, a file may have been found damaged by that read
/// (or by another reader meanwhile), and the read is worth running again
/// from sources chosen afresh: one load instead of a walk over every
/// source the read could have used. The count is process-wide, so damage
/// found in an unrelated file can cost a reader a needless retry (bounded
/// by its number of files), never a wrong answer.
#[must_use]
pub fn damage_epoch() -> u64 {
    DAMAGE_EPOCH.load(Ordering::Acquire)
}

/// Bytes of the trailer after the chunk checksums: body end and CRC.
const TRAILER_FIXED: usize = 12;

/// A writer that checksums what passes through it in chunks of [`CHUNK`]
/// bytes of the file it writes, from byte `start` of that file.
pub struct Chunked<W: Write> {
    inner: W,
    sums: Sums,
    crc: crc32fast::Hasher,
    /// Bytes in `crc`.
    in_crc: usize,
}

/// The chunk checksums of one run of bytes `[start, start + len)` of a file:
/// piece `i` covers what the run holds of chunk `start / CHUNK + i`.
#[derive(Debug, Default)]
pub struct Sums {
    start: u64,
    len: u64,
    pieces: Vec<crc32fast::Hasher>,
}

impl<W: Write> Chunked<W> {
    /// Checksums what is written through `inner`, which writes the file from
    /// byte `start` on.
    pub fn at(inner: W, start: u64) -> Self {
        Chunked {
            inner,
            sums: Sums {
                start,
                len: 0,
                pieces: Vec::new(),
            },
            crc: crc32fast::Hasher::new(),
            in_crc: 0,
        }
    }

    /// The file offset just past what has been written.
    pub fn end(&self) -> u64 {
        self.sums.start + self.sums.len
    }

    /// Zeros up to the next multiple of 8 bytes of the file.
    pub fn pad(&mut self) -> std::io::Result<()> {
        let n = (8 - (self.end() % 8) as usize) % 8;
        self.write_all(&[0u8; 8][..n])
    }

    /// The checksums of what was written, and the writer.
    pub fn finish(mut self) -> (Sums, W) {
        if self.in_crc > 0 {
            self.sums.pieces.push(self.crc);
        }
        (self.sums, self.inner)
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - (self.end() % CHUNK as u64) as usize;
        let n = self.inner.write(&b[..b.len().min(room)])?;
        self.crc.update(&b[..n]);
        self.in_crc += n;
        self.sums.len += n as u64;
        if n > 0 && self.end().is_multiple_of(CHUNK as u64) {
            let done = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
            self.sums.pieces.push(done);
            self.in_crc = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Sums {
    /// The chunk checksums of `[0, body_end)` from runs that tile it (in any
    /// order), or `None` if they do not tile it exactly.
    #[must_use]
    pub fn join(mut parts: Vec<Sums>, body_end: u64) -> Option<Vec<u32>> {
        parts.sort_by_key(|p| (p.start, p.len));
        let mut out: Vec<crc32fast::Hasher> = Vec::new();
        let mut at = 0u64;
        for p in parts {
            if p.start != at {
                return None;
            }
            let first = (p.start / CHUNK as u64) as usize;
            for (i, h) in p.pieces.into_iter().enumerate() {
                match (first + i).cmp(&out.len()) {
                    std::cmp::Ordering::Less => out[first + i].combine(&h),
                    std::cmp::Ordering::Equal => out.push(h),
                    std::cmp::Ordering::Greater => return None,
                }
            }
            at += p.len;
        }
        (at == body_end && out.len() == (body_end as usize).div_ceil(CHUNK))
            .then(|| out.into_iter().map(crc32fast::Hasher::finalize).collect())
    }
}

/// The trailer of a body of `body_end` bytes with these chunk checksums.
#[must_use]
pub fn trailer(crcs: &[u32], body_end: u64) -> Vec<u8> {
    let mut t = Vec::with_capacity(crcs.len() * 4 + TRAILER_FIXED);
    for c in crcs {
        t.extend_from_slice(&c.to_le_bytes());
    }
    t.extend_from_slice(&body_end.to_le_bytes());
    let crc = crc32fast::hash(&t);
    t.extend_from_slice(&crc.to_le_bytes());
    t
}

/// What is known of a file's chunks: each is checked against its checksum
/// the first time it is read, and the outcome kept.
#[derive(Debug)]
pub struct ChunkChecks {
    body_end: usize,
    /// Per chunk: 0 not checked yet, 1 matches its checksum, 2 does not.
    state: Box<[AtomicU8]>,
    /// Chunks found to match so far.
    matched: AtomicUsize,
    /// Every chunk matches (checked, or vouched for by a whole-file checksum):
    /// reads then check nothing.
    all: AtomicBool,
    /// Chunk numbers that lookups never read (see [`ChunkChecks::set_cold`]).
    cold: Vec<Range<usize>>,
    /// Chunks outside `cold` yet to match.
    hot_left: AtomicUsize,
    /// Every chunk outside `cold` matches.
    hot: AtomicBool,
    /// Some chunk does not match, or the bytes were found inconsistent.
    damaged: AtomicBool,
}

impl ChunkChecks {
    /// Checks the trailer of `b` (its length and its checksum); `min_body`
    /// is the least body the file's kind has. Every chunk is yet to be checked.
    pub fn open(b: &[u8], min_body: usize, path: &Path, what: &str) -> Result<ChunkChecks> {
        let len = b.len();
        if len < min_body + TRAILER_FIXED {
            return Err(Error::corrupt(
                path,
                0,
                format!("{what} file too short ({len} bytes)"),
            ));
        }
        let body_end = u64::from_le_bytes(b[len - 12..len - 4].try_into().expect("8 bytes"));
        let (body_end, chunks) = usize::try_from(body_end)
            .ok()
            .filter(|&e| e >= min_body && e <= len)
            .and_then(|e| {
                let chunks = e.div_ceil(CHUNK);
                (e.checked_add(chunks.checked_mul(4)?.checked_add(TRAILER_FIXED)?)? == len)
                    .then_some((e, chunks))
            })
            .ok_or_else(|| {
                Error::corrupt(
                    path,
                    (len - 12) as u64,
                    format!("{what} body end {body_end} does not fit a {len}-byte file"),
                )
            })?;
        let stored = u32::from_le_bytes(b[len - 4..].try_into().expect("4 bytes"));
        // One read for the whole table (0.1% of the file), not a fault a
        // page: files lookups read are advised random.
        super::mmap::will_need(&b[body_end..]);
        if crc32fast::hash(&b[body_end..len - 4]) != stored {
            return Err(Error::corrupt(
                path,
                body_end as u64,
                format!("{what} trailer checksum mismatch"),
            ));
        }
        Ok(ChunkChecks {
            body_end,
            state: (0..chunks).map(|_| AtomicU8::new(0)).collect(),
            matched: AtomicUsize::new(0),
            all: AtomicBool::new(chunks == 0),
            cold: Vec::new(),
            hot_left: AtomicUsize::new(chunks),
            hot: AtomicBool::new(chunks == 0),
            damaged: AtomicBool::new(false),
        })
    }

    /// Chunks for a body of `body_end` bytes that a checksum of the whole
    /// file already vouched for (a format without chunk checksums).
    #[must_use]
    pub fn vouched(body_end: usize) -> ChunkChecks {
        ChunkChecks {
            body_end,
            state: Box::new([]),
            matched: AtomicUsize::new(0),
            all: AtomicBool::new(true),
            cold: Vec::new(),
            hot_left: AtomicUsize::new(0),
            hot: AtomicBool::new(true),
            damaged: AtomicBool::new(false),
        }
    }

    /// Whether every chunk has matched its checksum: reads need no more
    /// checksum checks (their bounds are the reader's to check).
    #[must_use]
    pub fn all_matched(&self) -> bool {
        self.all.load(Ordering::Acquire)
    }

    /// Declares the byte ranges of the body that lookups never read (only
    /// walks, which check every chunk first): once every chunk not wholly
    /// inside one has matched, [`ChunkChecks::hot_matched`] says so. The
    /// ranges must not overlap, and no chunk wholly inside one may have been
    /// checked yet (a file opening declares them after reading only its
    /// header). It costs a step a range, not a chunk: opening a large index
    /// stays cheap.
    pub fn set_cold(&mut self, ranges: impl IntoIterator<Item = Range<usize>>) {
        self.cold = ranges
            .into_iter()
            .map(|r| r.start.div_ceil(CHUNK)..r.end.min(self.body_end) / CHUNK)
            .filter(|c| !c.is_empty())
            .collect();
        debug_assert!(self.cold.iter().flat_map(Clone::clone).all(|c| {
            self.state
                .get(c)
                .is_some_and(|s| s.load(Ordering::Acquire) == 0)
        }));
        let cold: usize = self.cold.iter().map(ExactSizeIterator::len).sum();
        let left = self
            .state
            .len()
            .saturating_sub(cold)
            .saturating_sub(self.matched.load(Ordering::Acquire));
        self.hot_left.store(left, Ordering::Release);
        if left == 0 {
            self.hot.store(true, Ordering::Release);
        }
    }

    /// Whether every chunk outside the ranges given to
    /// [`ChunkChecks::set_cold`] (every chunk, if none were) has matched its
    /// checksum: reads outside them need no more checks.
    #[must_use]
    pub fn hot_matched(&self) -> bool {
        self.hot.load(Ordering::Acquire)
    }

    fn is_cold(&self, c: usize) -> bool {
        self.cold.iter().any(|r| r.contains(&c))
    }

    /// The body's length: where the trailer starts.
    #[must_use]
    pub fn body_end(&self) -> usize {
        self.body_end
    }

    /// Whether a chunk was found not to match, or [`ChunkChecks::mark_damaged`]
    /// was called. Every error a read returns for damage is preceded by
    /// this flag: a reader whose read failed can tell from it that it may
    /// read around the file (a chunk is marked bad only after the file is
    /// marked damaged, so a reader that saw the bad chunk sees the flag).
    #[must_use]
    pub fn damaged(&self) -> bool {
        self.damaged.load(Ordering::Acquire)
    }

    /// Marks the file damaged: a chunk did not match its checksum, or the
    /// bytes match but are inconsistent (only a bug writes such a file).
    pub fn mark_damaged(&self) {
        // Flag, then count, on every call: a reader whose read fails either
        // counted itself, or saw a bad chunk stored after another reader
        // counted (the chunk's state is stored after this returns). A
        // reader that saw the count grow before it chose its files sees the
        // flag too, and does not choose this one. Counting only the first
        // call would let a reader fail between another's flag and its count
        // and see no growth.
        self.damaged.store(true, Ordering::Release);
        DAMAGE_EPOCH.fetch_add(1, Ordering::AcqRel);
    }

    /// Checks the chunks holding bytes `r` of `b` (the file), those not
    /// checked yet; an error names the first that does not match, or says
    /// `r` reaches past the body. An empty range checks nothing.
    #[inline]
    pub fn ensure(&self, b: &[u8], r: Range<usize>, path: &Path) -> Result<()> {
        if r.start >= r.end {
            return Ok(());
        }
        if r.end > self.body_end {
            return Err(self.beyond(path, &r));
        }
        if self.all.load(Ordering::Acquire) {
            return Ok(());
        }
        let chunks = r.start / CHUNK..=(r.end - 1) / CHUNK;
        if chunks.clone().all(|c| {
            self.state
                .get(c)
                .is_some_and(|s| s.load(Ordering::Acquire) == 1)
        }) {
            return Ok(());
        }
        self.check_chunks(b, chunks, path)
    }

    /// The byte range of chunks `r` in the file, clamped to the body.
    fn chunk_bytes(&self, r: Range<usize>) -> Range<usize> {
        (r.start * CHUNK).min(self.body_end)..(r.end * CHUNK).min(self.body_end)
    }

    /// [`ChunkChecks::ensure`]'s first reads: checks each chunk not checked
    /// yet and records the outcome (two threads may both check one; they
    /// agree).
    #[cold]
    fn check_chunks(
        &self,
        b: &[u8],
        chunks: std::ops::RangeInclusive<usize>,
        path: &Path,
    ) -> Result<()> {
        if chunks.end() > chunks.start() {
            // A read of several chunks (a hot key's versions): one request
            // for all, not a fault a page, in a file advised random.
            super::mmap::will_need(&b[self.chunk_bytes(*chunks.start()..chunks.end() + 1)]);
        }
        for c in chunks {
            let Some(state) = self.state.get(c) else {
                return Err(self.mismatch(path, c));
            };
            match state.load(Ordering::Acquire) {
                1 => continue,
                2 => return Err(self.mismatch(path, c)),
                _ => {}
            }
            if self.is_bad(b, c) {
                self.mark_damaged();
                state.store(2, Ordering::Release);
                return Err(self.mismatch(path, c));
            }
            // Counted once, by whichever thread marks it first; the last
            // chunk to match lets reads skip the checks.
            if state
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if self.matched.fetch_add(1, Ordering::AcqRel) + 1 == self.state.len() {
                    self.all.store(true, Ordering::Release);
                }
                if !self.is_cold(c) && self.hot_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.hot.store(true, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// Checks every chunk not checked yet, on every core; releases the
    /// mapped pages it reads as it goes (`MADV_DONTNEED` on its own mappings).
    pub fn check_all(&self, b: &[u8], path: &Path) -> Result<()> {
        if self.all.load(Ordering::Acquire) {
            return Ok(());
        }
        let n = self.state.len();
        if let Some(c) = self.first_bad(b, 0..n) {
            self.mark_damaged();
            self.state[c].store(2, Ordering::Release);
            return Err(self.mismatch(path, c));
        }
        for s in self.state.iter() {
            s.store(1, Ordering::Release);
        }
        self.all.store(true, Ordering::Release);
        self.hot.store(true, Ordering::Release);
        Ok(())
    }

    /// The first chunk of `chunks` that does not match its checksum (one
    /// known to match is not hashed again), checked on every core.
    fn first_bad(&self, b: &[u8], chunks: Range<usize>) -> Option<usize> {
        /// Chunks hashed between releases of their pages: 4 MiB.
        const RELEASE_EVERY: usize = 1024;
        let check = |r: Range<usize>| {
            let bad = r
                .clone()
                .find(|&c| self.state[c].load(Ordering::Acquire) != 1 && self.is_bad(b, c));
            super::mmap::release(&b[self.chunk_bytes(r)]);
            bad
        };
        // Files lookups read are advised random (`mmap::advise_random`):
        // the scan reads the next stretch ahead while it hashes one.
        let read_ahead = |r: Range<usize>| {
            super::mmap::will_need(&b[self.chunk_bytes(r)]);
        };
        let scan = |r: Range<usize>| {
            let mut at = r.start;
            read_ahead(at..(at + RELEASE_EVERY).min(r.end));
            while at < r.end {
                let to = (at + RELEASE_EVERY).min(r.end);
                read_ahead(to..(to + RELEASE_EVERY).min(r.end));
                if let Some(c) = check(at..to) {
                    return Some(c);
                }
                at = to;
            }
            None
        };
        let n = chunks.len();
        let threads = super::cores().min(n.div_ceil(4 * RELEASE_EVERY)).max(1);
        if threads == 1 {
            return scan(chunks);
        }
        let (first, per) = (chunks.start, n.div_ceil(threads));
        let part = move |t: usize| first + t * per..(first + (t + 1) * per).min(chunks.end);
        std::thread::scope(|s| {
            let handles: Vec<_> = (1..threads)
                .map(|t| s.spawn(move || scan(part(t))))
                .collect();
            let mut bad = scan(part(0));
            for h in handles {
                let found = h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                bad = bad.or(found);
            }
            bad
        })
    }

    /// Whether chunk `c` of `b` does not match its checksum.
    fn is_bad(&self, b: &[u8], c: usize) -> bool {
        let at = self.body_end + 4 * c;
        let stored = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        crc32fast::hash(&b[c * CHUNK..((c + 1) * CHUNK).min(self.body_end)]) != stored
    }

    #[cold]
    fn beyond(&self, path: &Path, r: &Range<usize>) -> Error {
        self.mark_damaged();
        Error::corrupt(
            path,
            r.start as u64,
            format!("bytes {r:?} reach past the {}-byte body", self.body_end),
        )
    }

    fn mismatch(&self, path: &Path, c: usize) -> Error {
        Error::corrupt(
            path,
            (c * CHUNK) as u64,
            format!(
                "checksum mismatch in the {CHUNK}-byte chunk at {}",
                c * CHUNK
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data` written as runs of these lengths, each through its own
    /// [`Chunked`], joined, with its trailer.
    fn file_of_runs(data: &[u8], runs: &[usize]) -> Vec<u8> {
        let (mut parts, mut at) = (Vec::new(), 0usize);
        let mut out = vec![0u8; data.len()];
        for &n in runs {
            let mut w = Chunked::at(Vec::new(), at as u64);
            // Odd write sizes, so pieces end mid-write.
            for piece in data[at..at + n].chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let (sums, bytes) = w.finish();
            out[at..at + n].copy_from_slice(&bytes);
            parts.push(sums);
            at += n;
        }
        parts.reverse(); // any order
        let crcs = Sums::join(parts, data.len() as u64).expect("runs tile the body");
        out.extend_from_slice(&trailer(&crcs, data.len() as u64));
        out
    }

    #[test]
    fn runs_joined_checksum_as_one_write() {
        let data: Vec<u8> = (0..3 * CHUNK + 123).map(|i| (i * 7 % 251) as u8).collect();
        let whole = file_of_runs(&data, &[data.len()]);
        for runs in [
            vec![1, data.len() - 1],
            vec![CHUNK, CHUNK, data.len() - 2 * CHUNK],
            vec![5000, 0, 3000, data.len() - 8000],
        ] {
            assert_eq!(file_of_runs(&data, &runs), whole, "runs {runs:?}");
        }
        let c = ChunkChecks::open(&whole, 0, Path::new("f"), "test").unwrap();
        c.check_all(&whole, Path::new("f")).unwrap();
        assert!(!c.damaged());
        // Chunks checked one read at a time: once the last matches, reads
        // check nothing more.
        let c = ChunkChecks::open(&whole, 0, Path::new("f"), "test").unwrap();
        for at in (0..data.len()).step_by(CHUNK).rev() {
            assert!(!c.all.load(Ordering::Acquire));
            c.ensure(&whole, at..at + 1, Path::new("f")).unwrap();
            c.ensure(&whole, at..at + 1, Path::new("f")).unwrap();
        }
        assert!(c.all.load(Ordering::Acquire));
        assert_eq!(c.matched.load(Ordering::Acquire), 4);
    }

    #[test]
    fn runs_that_do_not_tile_are_refused() {
        let gap = vec![
            Sums {
                start: 0,
                len: 10,
                pieces: vec![crc32fast::Hasher::new()],
            },
            Sums {
                start: 11,
                len: 10,
                pieces: vec![crc32fast::Hasher::new()],
            },
        ];
        assert!(Sums::join(gap, 21).is_none());
        assert!(Sums::join(Vec::new(), 1).is_none());
        assert_eq!(Sums::join(Vec::new(), 0), Some(Vec::new()));
    }

    /// Every flipped byte is caught: in the body by the chunk it lies in
    /// (and no other), in the trailer at open.
    #[test]
    fn every_flipped_byte_is_caught_where_it_lies() {
        let data: Vec<u8> = (0..2 * CHUNK + 77).map(|i| (i % 13) as u8).collect();
        let good = file_of_runs(&data, &[data.len()]);
        let p = Path::new("f");
        for at in 0..good.len() {
            let mut b = good.clone();
            b[at] ^= 0x20;
            let Ok(c) = ChunkChecks::open(&b, 0, p, "test") else {
                assert!(at >= data.len(), "byte {at} of the body failed the trailer");
                continue;
            };
            assert!(at < data.len(), "byte {at} of the trailer went unnoticed");
            let chunk = at / CHUNK;
            for other in 0..data.len().div_ceil(CHUNK) {
                let r = other * CHUNK..other * CHUNK + 1;
                assert_eq!(c.ensure(&b, r, p).is_err(), other == chunk, "byte {at}");
            }
            assert!(c.damaged());
            assert!(c.check_all(&b, p).is_err());
        }
    }

    /// Reads outside the cold ranges make the checks "hot matched" once
    /// they have checked every chunk outside them, and only then; a whole
    /// check still checks the cold chunks, and finds damage there.
    #[test]
    fn hot_chunks_matched_leave_the_cold_ones_to_a_whole_check() {
        let data: Vec<u8> = (0..8 * CHUNK).map(|i| (i * 13 % 251) as u8).collect();
        let mut file = file_of_runs(&data, &[data.len()]);
        // Chunks 2, 3 and 4 lie wholly in the cold range; 1 and 5 only in part.
        let cold = CHUNK + 100..5 * CHUNK + 100;
        file[3 * CHUNK + 5] ^= 1; // damage in a cold chunk
        let p = Path::new("f");
        let mut checks = ChunkChecks::open(&file, 0, p, "test").unwrap();
        checks.ensure(&file, 0..10, p).unwrap(); // chunk 0, before set_cold
        checks.set_cold([cold]);
        for c in [1, 5, 6] {
            assert!(!checks.hot_matched());
            checks.ensure(&file, c * CHUNK..c * CHUNK + 1, p).unwrap();
        }
        assert!(!checks.hot_matched());
        checks.ensure(&file, 7 * CHUNK..8 * CHUNK, p).unwrap();
        assert!(checks.hot_matched() && !checks.all_matched());
        assert!(checks.check_all(&file, p).is_err());
        assert!(checks.damaged());
    }
}
