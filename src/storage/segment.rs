//! Segment files: naming, header, the recovery scan of the active segment, and
//! sealed segments with their lazily validated sidecar indexes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

use bytes::Bytes;

use super::frame::{check_frame, record_end, Frame, FrameError, FrameKind};
use super::fsutil;
use super::index::{decode_fidx, FrameMeta, KeyIndexFile, MemIndex};
use super::vfs::{VFile, Vfs};
use crate::{Error, Result};

/// Segment file magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TLOGSEG\0";
/// Segment format version of segments written by the writer.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;
/// Segment format version of segments rewritten by compaction: positions may
/// have gaps (dropped records), and the header names the segment's end.
pub const COMPACTED_VERSION: u32 = 2;
/// Bytes of a compacted segment's header.
pub const COMPACTED_HEADER_LEN: usize = 32;
/// Segment format version of a writer's segment whose first frames continue a
/// streaming transaction begun in the previous segment (same 16-byte header as
/// version 1). Only such a transaction's segments may end in a data frame; if
/// it never committed, recovery removes its segments (see `Log::open`).
pub const CONTINUED_VERSION: u32 = 3;

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegHeader {
    /// Bytes of the header (frames start here).
    pub len: usize,
    /// For a compacted segment, one past the last position it covers (its
    /// records are a subset of `[base, end)`); `None` for a gap-free segment.
    pub compacted_end: Option<u64>,
    /// Whether its first frames continue a transaction from the previous
    /// segment ([`CONTINUED_VERSION`]).
    pub continues: bool,
}

/// File name of the segment whose first position is `base`.
#[must_use]
pub fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// File name of generation `generation` (>= 1) of a compacted segment whose
/// first position is `base`. Each rewrite takes a new name, so a file (and its
/// sidecars) is never replaced in place: a reader of the old file never meets
/// the new file's indexes.
#[must_use]
pub fn compacted_segment_name(base: u64, generation: u32) -> String {
    format!("{base:020}-{generation:06}.seg")
}

/// Parses a segment file name back to its base position.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<u64> {
    parse_segment_file(name).map(|(base, _)| base)
}

/// Parses a segment file name to `(base, generation)`; generation 0 is a
/// segment as the writer wrote it.
#[must_use]
pub fn parse_segment_file(name: &str) -> Option<(u64, u32)> {
    let stem = name.strip_suffix(".seg")?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match stem.split_once('-') {
        None if digits(stem, 20) => Some((stem.parse().ok()?, 0)),
        Some((b, g)) if digits(b, 20) && digits(g, 6) => {
            let generation: u32 = g.parse().ok()?;
            (generation > 0).then_some((b.parse().ok()?, generation))
        }
        _ => None,
    }
}

/// Paths of a segment's sidecars: (frame index, key index).
#[must_use]
pub fn sidecar_paths(seg: &Path) -> (PathBuf, PathBuf) {
    (seg.with_extension("fidx"), seg.with_extension("kidx"))
}

/// The 16-byte segment header: magic, version, CRC of the first 12 bytes.
#[must_use]
pub fn encode_header() -> [u8; SEGMENT_HEADER_LEN] {
    encode_writer_header(false)
}

/// The 16-byte header of a writer's segment; version 3 when it `continues` a
/// transaction from the previous segment, else version 1.
#[must_use]
pub fn encode_writer_header(continues: bool) -> [u8; SEGMENT_HEADER_LEN] {
    let version = if continues {
        CONTINUED_VERSION
    } else {
        SEGMENT_VERSION
    };
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The 32-byte header of a compacted segment: magic, version 2, flags (bit 0:
/// compacted, the only one defined), the end position, 4 zero bytes, CRC of
/// bytes 0..28.
#[must_use]
pub fn encode_compacted_header(end_pos: u64) -> [u8; COMPACTED_HEADER_LEN] {
    let mut h = [0u8; COMPACTED_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&COMPACTED_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&1u32.to_le_bytes());
    h[16..24].copy_from_slice(&end_pos.to_le_bytes());
    let crc = crc32fast::hash(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Validates a segment header (either version) and says what it holds.
pub fn check_header(b: &[u8], path: &Path) -> Result<SegHeader> {
    if b.len() >= 12 && b[..8] == SEGMENT_MAGIC[..] && b[8..12] == COMPACTED_VERSION.to_le_bytes() {
        return check_compacted_header(b, path);
    }
    if b.len() < SEGMENT_HEADER_LEN {
        return Err(Error::corrupt(
            path,
            0,
            format!("segment shorter than its {SEGMENT_HEADER_LEN}-byte header"),
        ));
    }
    if &b[..8] != SEGMENT_MAGIC {
        return Err(Error::corrupt(
            path,
            0,
            "not a tablelog segment (bad magic)",
        ));
    }
    let crc = crc32fast::hash(&b[..12]);
    if b[12..16] != crc.to_le_bytes() {
        return Err(Error::corrupt(path, 12, "segment header checksum mismatch"));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != SEGMENT_VERSION && version != CONTINUED_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: CONTINUED_VERSION,
        });
    }
    Ok(SegHeader {
        len: SEGMENT_HEADER_LEN,
        compacted_end: None,
        continues: version == CONTINUED_VERSION,
    })
}

fn check_compacted_header(b: &[u8], path: &Path) -> Result<SegHeader> {
    if b.len() < COMPACTED_HEADER_LEN {
        return Err(Error::corrupt(
            path,
            0,
            format!("compacted segment shorter than its {COMPACTED_HEADER_LEN}-byte header"),
        ));
    }
    let crc = crc32fast::hash(&b[..28]);
    if b[28..32] != crc.to_le_bytes() {
        return Err(Error::corrupt(path, 28, "segment header checksum mismatch"));
    }
    let flags = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    if flags != 1 || b[24..28] != [0; 4] {
        return Err(Error::corrupt(
            path,
            12,
            format!("unknown compacted-segment flags {flags:#x}"),
        ));
    }
    let mut end = [0u8; 8];
    end.copy_from_slice(&b[16..24]);
    Ok(SegHeader {
        len: COMPACTED_HEADER_LEN,
        compacted_end: Some(u64::from_le_bytes(end)),
        continues: false,
    })
}

/// Reads and validates the header of the segment file at `path` (for the
/// supersession check on open, which must not map every segment).
pub fn peek_header(vfs: &dyn Vfs, path: &Path) -> Result<SegHeader> {
    let file = vfs.open(path, false).map_err(|e| Error::io(path, e))?;
    read_header(&*file, path)
}

/// Reads and validates the header of the open segment file `file`, with a
/// read rather than through a mapping: on a cold cache the first page fault
/// in a fresh mapping reads as much around it as the device's read-ahead
/// (megabytes), once per segment opened.
fn read_header(file: &dyn VFile, path: &Path) -> Result<SegHeader> {
    let mut head = [0u8; COMPACTED_HEADER_LEN];
    let n = file.read_at(&mut head, 0).map_err(|e| Error::io(path, e))?;
    check_header(&head[..n], path)
}

/// What a scan of a segment's frames found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Indexes of the committed frames.
    pub index: MemIndex,
    /// Byte offset just past the last commit frame.
    pub committed_end: u64,
    /// Position just past the last committed record.
    pub end_pos: u64,
    /// Where and why the scan stopped before the end of the bytes, if it did.
    pub stopped: Option<(u64, String)>,
}

/// Scans the frames of the active segment, whose first position is `base`,
/// stopping at the first frame that is incomplete or invalid. Frames of a
/// transaction with no commit frame are not indexed, and `committed_end` stays
/// before them.
///
/// In a compacted segment positions may jump forward between frames (never back,
/// never past the header's end position), and the outcome's `end_pos` is the
/// header's end.
pub fn scan(seg: &Bytes, base: u64, path: &Path) -> Result<ScanOutcome> {
    scan_frames(seg, base, path, false)
}

/// [`scan`] for a sealed segment: complete data frames at its end are indexed
/// too, as the first part of a transaction that continues (and commits) in the
/// next segment. Sealed segments are only ever published whole and committed;
/// a transaction that never committed is removed by recovery before anything
/// else reads its segments.
pub fn scan_sealed(seg: &Bytes, base: u64, path: &Path) -> Result<ScanOutcome> {
    scan_frames(seg, base, path, true)
}

fn scan_frames(seg: &Bytes, base: u64, path: &Path, sealed: bool) -> Result<ScanOutcome> {
    let head = check_header(seg, path)?;
    let mut index = MemIndex::default();
    let mut pending: Vec<(u64, Frame)> = Vec::new();
    let mut off = head.len;
    let mut committed_end = off as u64;
    let mut end_pos = base;
    let mut next_pos = base;
    let mut stopped = None;
    while off < seg.len() {
        let header = match check_frame(&seg[off..]) {
            Ok(h) => h,
            Err(FrameError::Incomplete) => {
                stopped = Some((off as u64, "incomplete frame".to_string()));
                break;
            }
            Err(FrameError::Invalid(r)) => {
                stopped = Some((off as u64, r));
                break;
            }
        };
        let in_place = match head.compacted_end {
            None => header.first_pos == next_pos,
            Some(end) => {
                header.first_pos >= next_pos
                    && header.first_pos.saturating_add(u64::from(header.count)) <= end
            }
        };
        if !in_place {
            stopped = Some((
                off as u64,
                match head.compacted_end {
                    None => format!(
                        "frame starts at position {}, expected {next_pos}",
                        header.first_pos
                    ),
                    Some(end) => format!(
                        "frame at positions {}..+{} outside {next_pos}..{end}",
                        header.first_pos, header.count
                    ),
                },
            ));
            break;
        }
        next_pos = header.first_pos;
        let frame = match Frame::from_checked(seg, off, header, path) {
            Ok(f) => f,
            Err(e) => {
                stopped = Some((off as u64, e.to_string()));
                break;
            }
        };
        next_pos += u64::from(header.count);
        off += header.total_len() as usize;
        pending.push(((off as u64) - header.total_len(), frame));
        if header.kind == FrameKind::Commit {
            for (at, f) in pending.drain(..) {
                index.add_decoded(&f, at);
            }
            committed_end = off as u64;
            end_pos = next_pos;
        }
    }
    if sealed && stopped.is_none() && !pending.is_empty() {
        for (at, f) in pending.drain(..) {
            index.add_decoded(&f, at);
        }
        committed_end = off as u64;
        end_pos = next_pos;
    }
    if stopped.is_none() && !pending.is_empty() {
        stopped = Some((
            committed_end,
            "transaction without a commit frame".to_string(),
        ));
    }
    if let (Some(end), None) = (head.compacted_end, &stopped) {
        end_pos = end;
    }
    Ok(ScanOutcome {
        index,
        committed_end,
        end_pos,
        stopped,
    })
}

/// Where every [`RecordMarks::EVERY`]-th record of a frame starts in its
/// records area: a read by position skips at most `EVERY - 1` records by
/// their lengths, instead of every record before it (a chain of dependent
/// loads through the frame, ~500 on average in a 1,000-record frame).
#[derive(Debug, Clone)]
pub struct RecordMarks(Box<[u32]>);

impl RecordMarks {
    /// Records between marks (4 bytes a mark).
    pub const EVERY: usize = 32;

    /// The marks of a frame's `count` records in `recs` (validated bytes;
    /// `path` and `frame_off` name the frame in errors).
    pub fn of(recs: &[u8], count: usize, path: &Path, frame_off: u64) -> Result<RecordMarks> {
        let corrupt = |why: &str| Error::corrupt(path, frame_off, why);
        let mut marks = Vec::with_capacity(count.div_ceil(Self::EVERY));
        let mut at = 0usize;
        for k in 0..count {
            if k % Self::EVERY == 0 {
                marks.push(u32::try_from(at).map_err(|_| corrupt("frame too large"))?);
            }
            at = record_end(recs, at).ok_or_else(|| corrupt("record does not parse"))?;
        }
        Ok(RecordMarks(marks.into_boxed_slice()))
    }

    /// Where record `index` starts in `recs` (the bytes the marks were made of).
    pub fn offset(&self, recs: &[u8], index: usize, path: &Path, frame_off: u64) -> Result<usize> {
        let corrupt = |why: &str| Error::corrupt(path, frame_off, why);
        let mut at = *self
            .0
            .get(index / Self::EVERY)
            .ok_or_else(|| corrupt("record beyond the frame"))? as usize;
        // Each record's length is in its header, so skipping records is a
        // chain of dependent loads, a cache miss each. The records skipped
        // lie after the mark, back to back: asking for the lines they likely
        // span (at the frame's mean record size, up to 8 KiB) overlaps those
        // misses.
        let skip = index % Self::EVERY;
        if skip > 0 {
            let mean = recs.len() / (self.0.len() * Self::EVERY).max(1);
            let span = (skip + 1).saturating_mul(mean).min(8 << 10);
            for line in (at..at.saturating_add(span).min(recs.len())).step_by(64) {
                crate::hint::prefetch(&recs[line]);
            }
        }
        for _ in 0..skip {
            at = record_end(recs, at).ok_or_else(|| corrupt("record does not parse"))?;
        }
        Ok(at)
    }
}

/// A sealed, immutable segment: memory-mapped, with indexes loaded on first use.
#[derive(Debug)]
pub struct SealedSegment {
    /// First position.
    pub base: u64,
    /// The segment file.
    pub path: PathBuf,
    /// The whole file, mapped.
    pub bytes: Bytes,
    /// The whole file mapped a second time and advised `MADV_RANDOM`, for
    /// point reads (`get`): a cold page fault there reads its page, and the
    /// first check of a frame reads that frame ahead (see
    /// [`SealedSegment::check_frame_in`]), where one in `bytes` reads
    /// the disk's read-ahead around it (8 MiB on some disks), which scans
    /// want and a lookup pays for. Both map the same page cache pages. (The
    /// same bytes as `bytes` where that is not a mapping of a real file.)
    pub point: Bytes,
    /// What its header says (compacted or not, where frames start).
    pub header: SegHeader,
    frames: OnceLock<std::result::Result<Vec<FrameMeta>, String>>,
    et_range: OnceLock<(i64, i64)>,
    keys: OnceLock<std::result::Result<KeyIndexFile, String>>,
    /// The key index rebuilt from the segment, once a read found the one
    /// in `keys` damaged.
    rebuilt_keys: OnceLock<std::result::Result<KeyIndexFile, String>>,
    validated: OnceLock<Vec<AtomicBool>>,
    /// The frames' offsets, densely: see [`SealedSegment::frame_at`].
    frame_offsets: OnceLock<Box<[u64]>>,
    /// Per frame, its [`RecordMarks`], found the first time a record of it is
    /// read by position.
    record_marks: OnceLock<Vec<OnceLock<RecordMarks>>>,
    /// Where the segment and its sidecars are read from (and rebuilt sidecars written).
    vfs: Arc<dyn Vfs>,
    /// Whether rebuilt sidecars are written (not for read-only handles).
    writable: bool,
}

impl SealedSegment {
    /// Maps a sealed segment and checks its header, read from the same file
    /// rather than through the mapping (a cold mapping's first page fault
    /// reads megabytes around it). Indexes are loaded lazily.
    pub fn open(
        path: PathBuf,
        base: u64,
        vfs: Arc<dyn Vfs>,
        writable: bool,
    ) -> Result<SealedSegment> {
        let io = |e| Error::io(&path, e);
        let file = vfs.open(&path, false).map_err(io)?;
        let header = read_header(&*file, &path)?;
        let len = usize::try_from(file.len().map_err(io)?)
            .map_err(|_| Error::corrupt(&path, 0, "segment larger than the address space"))?;
        let bytes = file.map(len).map_err(io)?;
        // Point reads share `bytes` where it is no mapping of ours (an
        // in-memory file system's copy), where the process has used a
        // quarter of its limit of mappings (the rest is kept for mappings
        // reads need: key indexes are mapped later), or where a second
        // mapping fails: slower cold, never wrong.
        let second = super::mmap::is_mapped(&bytes) && super::mmap::spare_mapping();
        let point = match second.then(|| file.map(len)) {
            Some(Ok(point)) => {
                super::mmap::advise_random(&point);
                point
            }
            _ => bytes.clone(),
        };
        Ok(SealedSegment {
            base,
            path,
            bytes,
            point,
            header,
            frames: OnceLock::new(),
            et_range: OnceLock::new(),
            keys: OnceLock::new(),
            rebuilt_keys: OnceLock::new(),
            validated: OnceLock::new(),
            frame_offsets: OnceLock::new(),
            record_marks: OnceLock::new(),
            vfs,
            writable,
        })
    }

    /// A segment just sealed by this process, with its frame index already known.
    pub fn from_sealed(
        path: PathBuf,
        base: u64,
        frames: Vec<FrameMeta>,
        vfs: Arc<dyn Vfs>,
    ) -> Result<SealedSegment> {
        let s = SealedSegment::open(path, base, vfs, true)?;
        let _ = s.frames.set(Ok(frames));
        Ok(s)
    }

    /// Sets the key index with `make` unless it is already set (or being set):
    /// the sealing thread calls this first, so readers that need the key index
    /// wait for it rather than rebuilding it from the segment.
    pub fn init_keys(&self, make: impl FnOnce() -> Result<KeyIndexFile>) {
        let _ = self.keys.get_or_init(|| make().map_err(|e| e.to_string()));
    }

    /// Gives the mapped pages of the segment's key index, if loaded, back to
    /// the page cache (see [`KeyIndexFile::release_pages`]).
    pub fn release_index_pages(&self) -> usize {
        match self.keys_if_loaded() {
            Some(k) => k.release_pages(),
            None => 0,
        }
    }

    /// The frame index (position and time blocks), from the sidecar or rebuilt.
    pub fn frames(&self) -> Result<&[FrameMeta]> {
        let r = self
            .frames
            .get_or_init(|| self.load_frames().map_err(|e| e.to_string()));
        r.as_deref()
            .map_err(|e| Error::corrupt(&self.path, 0, e.clone()))
    }

    /// The key index if [`SealedSegment::keys`] has loaded it: for hints that
    /// must not load or validate one.
    pub(crate) fn keys_if_loaded(&self) -> Option<&KeyIndexFile> {
        match self.keys.get() {
            Some(Ok(k)) if !k.damaged() => Some(k),
            Some(Ok(_)) => self.rebuilt_keys.get().and_then(|r| r.as_ref().ok()),
            _ => None,
        }
    }

    /// The key index: the sidecar, its header checked and the rest as it is
    /// read ([`KeyIndexFile::open_lazy`]), or rebuilt from the segment if it
    /// is missing or damaged, or once a read has found it damaged.
    pub fn keys(&self) -> Result<&KeyIndexFile> {
        let r = self
            .keys
            .get_or_init(|| self.load_keys().map_err(|e| e.to_string()));
        let r = match r {
            Ok(k) if k.damaged() => self.rebuilt_keys.get_or_init(|| {
                log::warn!("{}: key index damaged, rebuilding", self.path.display());
                self.rebuild_keys().map_err(|e| e.to_string())
            }),
            r => r,
        };
        r.as_ref()
            .map_err(|e| Error::corrupt(&self.path, 0, e.clone()))
    }

    /// The number of the frame that starts at byte `offset`, if one does: a
    /// guess from the frames' average size (right when they are about
    /// equal, as batches of like records make them), then a binary search.
    /// Both read a dense copy of the frames' offsets, 8 bytes a frame, where
    /// a search of the frame index's 56-byte rows reads a line a step: a
    /// `get` finds its record's frame here.
    pub fn frame_at(&self, offset: u64) -> Result<Option<usize>> {
        let offs = match self.frame_offsets.get() {
            Some(o) => o,
            None => {
                let o = self.frames()?.iter().map(|f| f.offset).collect();
                self.frame_offsets.get_or_init(|| o)
            }
        };
        let (Some(&first), Some(&last)) = (offs.first(), offs.last()) else {
            return Ok(None);
        };
        if first < offset && offset <= last {
            let guess = (u128::from(offset - first) * (offs.len() - 1) as u128
                / u128::from(last - first)) as usize;
            if offs.get(guess) == Some(&offset) {
                return Ok(Some(guess));
            }
        }
        let i = offs.partition_point(|&o| o < offset);
        Ok((offs.get(i) == Some(&offset)).then_some(i))
    }

    /// Validates frame number `i` (checksum and record bounds) the first time it is
    /// read in this process; later reads trust it.
    pub fn check_frame_once(&self, i: usize) -> Result<()> {
        self.check_frame_in(i, false)
    }

    /// [`SealedSegment::check_frame_once`], through [`SealedSegment::point`]
    /// when `point` (for a read through it: a first check then reads the
    /// frame ahead in one request, instead of a fault a page), else through
    /// [`SealedSegment::bytes`].
    pub(crate) fn check_frame_in(&self, i: usize, point: bool) -> Result<()> {
        let bytes = if point { &self.point } else { &self.bytes };
        let frames = self.frames()?;
        let flags = self
            .validated
            .get_or_init(|| (0..frames.len()).map(|_| AtomicBool::new(false)).collect());
        let Some(flag) = flags.get(i) else {
            return Err(Error::corrupt(
                &self.path,
                0,
                format!("frame {i} beyond the frame index"),
            ));
        };
        if !flag.load(Ordering::Acquire) {
            let at = frames[i].offset as usize;
            if point {
                let end = at.saturating_add(frames[i].total_len as usize);
                if let Some(frame) = bytes.get(at..end) {
                    super::mmap::will_need(frame);
                }
            }
            Frame::decode(bytes, at, &self.path)?;
            flag.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Where record `index` of frame `i` starts in `recs`, the frame's records
    /// area (validated by [`SealedSegment::check_frame_once`]): from the
    /// frame's marks (see [`RecordMarks`]), found on the first call for it.
    pub fn record_offset(&self, i: usize, recs: &[u8], index: usize) -> Result<usize> {
        let frames = self.frames()?;
        let meta = frames
            .get(i)
            .ok_or_else(|| Error::corrupt(&self.path, 0, "frame beyond the frame index"))?;
        let cells = self
            .record_marks
            .get_or_init(|| (0..frames.len()).map(|_| OnceLock::new()).collect());
        let marks = match cells[i].get() {
            Some(m) => m,
            None => {
                let m = RecordMarks::of(recs, meta.count as usize, &self.path, meta.offset)?;
                cells[i].get_or_init(|| m)
            }
        };
        marks.offset(recs, index, &self.path, meta.offset)
    }

    /// One past the last position of the segment.
    pub fn end_pos(&self) -> Result<u64> {
        if let Some(end) = self.header.compacted_end {
            return Ok(end);
        }
        Ok(self.frames()?.last().map_or(self.base, FrameMeta::end_pos))
    }

    /// The smallest and largest event times of the segment's records
    /// (`(i64::MAX, i64::MIN)` if it has none), from the frame index.
    #[inline]
    pub fn event_time_range(&self) -> Result<(i64, i64)> {
        if let Some(r) = self.et_range.get() {
            return Ok(*r);
        }
        let r = self
            .frames()?
            .iter()
            .filter(|f| f.count > 0)
            .fold((i64::MAX, i64::MIN), |(lo, hi), f| {
                (lo.min(f.min_et), hi.max(f.max_et))
            });
        Ok(*self.et_range.get_or_init(|| r))
    }

    /// Whether compaction rewrote this segment (its positions may have gaps).
    #[must_use]
    pub fn is_compacted(&self) -> bool {
        self.header.compacted_end.is_some()
    }

    fn load_frames(&self) -> Result<Vec<FrameMeta>> {
        let (fidx, _) = sidecar_paths(&self.path);
        match super::read_file(&*self.vfs, &fidx).and_then(|b| decode_fidx(&b, &fidx)) {
            Ok(f) if self.frames_fit(&f) => Ok(f),
            Ok(_) | Err(_) => {
                log::warn!(
                    "{}: frame index missing or damaged, rebuilding",
                    fidx.display()
                );
                let idx = self.rebuild()?;
                Ok(idx.frames)
            }
        }
    }

    fn frames_fit(&self, f: &[FrameMeta]) -> bool {
        let mut off = self.header.len as u64;
        let mut pos = self.base;
        for m in f {
            let pos_ok = match self.header.compacted_end {
                None => m.first_pos == pos,
                Some(end) => m.first_pos >= pos && m.end_pos() <= end,
            };
            if m.offset != off || !pos_ok {
                return false;
            }
            off += u64::from(m.total_len);
            pos = m.end_pos();
        }
        off == self.bytes.len() as u64
    }

    fn load_keys(&self) -> Result<KeyIndexFile> {
        let (_, kidx) = sidecar_paths(&self.path);
        match KeyIndexFile::load_lazy(&*self.vfs, &kidx) {
            Ok(k) => Ok(k),
            Err(_) => {
                log::warn!(
                    "{}: key index missing or damaged, rebuilding",
                    kidx.display()
                );
                self.rebuild_keys()
            }
        }
    }

    /// The key index rebuilt from the segment (and its sidecars rewritten
    /// when writable), checked whole.
    fn rebuild_keys(&self) -> Result<KeyIndexFile> {
        let (_, kidx) = sidecar_paths(&self.path);
        let idx = self.rebuild()?;
        KeyIndexFile::open(Bytes::from(idx.encode_kidx()), &kidx)
    }

    /// Scans the whole segment; any damage is an error naming file and offset.
    pub fn rebuild_in_memory(&self) -> Result<MemIndex> {
        let out = scan_sealed(&self.bytes, self.base, &self.path)?;
        if let Some((off, why)) = out.stopped {
            return Err(Error::corrupt(
                &self.path,
                off,
                format!("sealed segment damaged: {why}"),
            ));
        }
        Ok(out.index)
    }

    /// Rebuilds both sidecars from the segment and, when writable, rewrites them.
    pub fn rebuild(&self) -> Result<MemIndex> {
        let idx = self.rebuild_in_memory()?;
        if self.writable {
            write_sidecars(&*self.vfs, &self.path, &idx)?;
        }
        Ok(idx)
    }
}

/// Where sealing reads a just-sealed segment's in-memory index from: each call
/// lends it to `f` (an active segment's under its read lock, held only while
/// `f` runs).
pub trait IndexSource {
    /// Calls `f` with the index.
    fn with_index(&self, f: &mut dyn FnMut(&MemIndex));
}

/// Writes both sidecars of a just-sealed segment atomically next to `seg`,
/// the key index streamed into its file as it is encoded
/// ([`super::kidx_encode::write`]). Returns the key index and the outcome of
/// the writes, which the caller reports. Once written (and synced), the key
/// index is served from the file, mapped and checked whole once, so a
/// long-running writer does not keep every segment's index on its heap (about
/// 40 bytes a record, for the segment's life); if the writes failed, or the
/// file does not read back valid, from a copy encoded in memory.
pub fn write_sealed(
    vfs: &dyn Vfs,
    seg: &Path,
    src: &dyn IndexSource,
) -> (Result<KeyIndexFile>, Result<()>) {
    let (fidx_path, kidx_path) = sidecar_paths(seg);
    let mut fidx = Vec::new();
    src.with_index(&mut |idx| fidx = idx.encode_fidx());
    let written = fsutil::atomic_write_with(vfs, &kidx_path, |file, tmp| {
        let mut r = Ok(());
        src.with_index(&mut |idx| r = super::kidx_encode::write(idx, file, tmp));
        r
    })
    .and_then(|()| fsutil::atomic_write(vfs, &fidx_path, &fidx));
    let mapped = match &written {
        Ok(()) => KeyIndexFile::load(vfs, &kidx_path)
            .map_err(|e| log::warn!("{}: reading back its key index: {e}", kidx_path.display()))
            .ok(),
        Err(_) => None,
    };
    let keys = match mapped {
        Some(k) => Ok(k),
        None => {
            let mut kidx = Ok(Vec::new());
            src.with_index(&mut |idx| {
                kidx = super::kidx_encode::check(idx).map(|()| idx.encode_kidx());
            });
            kidx.and_then(|k| KeyIndexFile::open(Bytes::from(k), &kidx_path))
        }
    };
    (keys, written)
}

/// Writes both sidecars of a segment atomically.
pub fn write_sidecars(vfs: &dyn Vfs, seg: &Path, idx: &MemIndex) -> Result<()> {
    let (fidx, kidx) = sidecar_paths(seg);
    fsutil::atomic_write(vfs, &kidx, &idx.encode_kidx())?;
    fsutil::atomic_write(vfs, &fidx, &idx.encode_fidx())?;
    Ok(())
}

/// Creates a new, empty segment file (header written and synced, directory
/// synced); `continues` marks it as continuing the previous segment's open
/// transaction.
pub fn create(
    vfs: &dyn Vfs,
    dir: &Path,
    base: u64,
    continues: bool,
) -> Result<(Arc<dyn VFile>, PathBuf)> {
    let path = dir.join(segment_name(base));
    // Sidecars at this base can only be left over from a segment that was
    // removed (a transaction that never committed): never let them describe
    // this one.
    remove_stale_sidecars(vfs, dir, &path)?;
    let file = vfs.create(&path).map_err(|e| Error::io(&path, e))?;
    file.write_at(&encode_writer_header(continues), 0)
        .map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    fsutil::sync_dir(vfs, dir)?;
    Ok((file, path))
}

/// Removes the sidecars of `seg` if there are any (durably), for a segment
/// that must have none: the active one, or one being created. Existence is
/// checked first, so nothing is written when there are none.
pub fn remove_stale_sidecars(vfs: &dyn Vfs, dir: &Path, seg: &Path) -> Result<()> {
    let (fidx, kidx) = sidecar_paths(seg);
    let stale: Vec<&PathBuf> = [&kidx, &fidx]
        .into_iter()
        .filter(|p| vfs.open(p, false).is_ok())
        .collect();
    for p in &stale {
        log::warn!("{}: removing a stale sidecar", p.display());
        fsutil::remove_if_exists(vfs, p)?;
    }
    if !stale.is_empty() {
        fsutil::sync_dir(vfs, dir)?;
    }
    Ok(())
}

/// Removes a segment with its sidecars (durably, the sidecars first, so a
/// later segment at its base never meets them): a segment of a transaction
/// that never committed.
pub fn remove_with_sidecars(vfs: &dyn Vfs, dir: &Path, seg: &Path) -> Result<()> {
    let (fidx, kidx) = sidecar_paths(seg);
    fsutil::remove_if_exists(vfs, &kidx)?;
    fsutil::remove_if_exists(vfs, &fidx)?;
    fsutil::remove_if_exists(vfs, seg)?;
    fsutil::sync_dir(vfs, dir)
}

/// A segment file: its first position and its path.
pub type SegmentFile = (u64, PathBuf);

/// Lists `(base, path)` of every live segment in `dir`, sorted by base.
pub fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    Ok(list_all(vfs, dir)?.0)
}

/// The segments of `dir`: the live ones as `(base, path)` sorted by base, and
/// the files a compaction superseded but had not yet removed when it stopped.
///
/// A compacted segment (generation >= 1) replaces every segment whose base lies
/// in `[its base, its end)`, including lower generations at its own base. It
/// only ever appears under its final name complete and synced, so finding it is
/// proof that the files it covers are redundant.
pub fn list_all(vfs: &dyn Vfs, dir: &Path) -> Result<(Vec<SegmentFile>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    for path in vfs.list(dir).map_err(|e| Error::io(dir, e))? {
        let name = path.file_name().and_then(|n| n.to_str());
        if let Some((base, generation)) = name.and_then(parse_segment_file) {
            files.push((base, std::cmp::Reverse(generation), path));
        }
    }
    files.sort_unstable();
    let (mut live, mut stale) = (Vec::new(), Vec::new());
    let mut covered = 0u64; // positions below this belong to a kept segment
    for (base, std::cmp::Reverse(generation), path) in files {
        if base < covered {
            stale.push(path);
            continue;
        }
        covered = base + 1;
        if generation > 0 {
            if let Some(end) = peek_header(vfs, &path)?.compacted_end {
                covered = covered.max(end);
            }
        }
        live.push((base, path));
    }
    Ok((live, stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(
            parse_segment_file(&compacted_segment_name(42, 3)),
            Some((42, 3))
        );
        assert_eq!(parse_segment_file("00000000000000000042-000000.seg"), None);
        assert_eq!(parse_segment_file("00000000000000000042-3.seg"), None);
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
    }

    /// A segment of one commit frame then two data frames (the start of a
    /// transaction that goes on in the next segment).
    fn open_ended() -> Bytes {
        use super::super::frame::FrameBuilder;
        use super::super::record::{Hlc, Op};
        let mut bytes = encode_header().to_vec();
        for (pos, kind) in [FrameKind::Commit, FrameKind::Data, FrameKind::Data]
            .into_iter()
            .enumerate()
        {
            let mut f = FrameBuilder::new();
            f.push("s", Op::Put, b"k", b"v", 1);
            f.finish(kind, pos as u64, Hlc(pos as u64), None).unwrap();
            bytes.extend_from_slice(f.encoded());
        }
        Bytes::from(bytes)
    }

    /// `frame_at` finds every frame by its offset and nothing elsewhere,
    /// whether the frames are alike (the guess finds them) or not (the
    /// search does).
    #[test]
    fn frames_are_found_at_their_offsets_only() {
        use super::super::frame::FrameBuilder;
        use super::super::record::{Hlc, Op};
        for sizes in [
            vec![3usize; 40],
            vec![1, 9, 2, 30, 1, 1, 7, 64, 3, 5, 2, 18],
        ] {
            let mut bytes = encode_header().to_vec();
            let mut pos = 0u64;
            for n in &sizes {
                let mut f = FrameBuilder::new();
                for _ in 0..*n {
                    f.push("s", Op::Put, b"k", b"value", 1);
                }
                f.finish(FrameKind::Commit, pos, Hlc(pos), None).unwrap();
                bytes.extend_from_slice(f.encoded());
                pos += *n as u64;
            }
            let vfs = super::super::memvfs::MemVfs::new();
            let dir = Path::new("/db");
            vfs.create_dir_all(dir).unwrap();
            let path = dir.join(segment_name(0));
            vfs.create(&path).unwrap().write_at(&bytes, 0).unwrap();
            let seg = SealedSegment::open(path, 0, Arc::new(vfs), false).unwrap();
            let frames = seg.frames().unwrap().to_vec();
            assert_eq!(frames.len(), sizes.len());
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(seg.frame_at(f.offset).unwrap(), Some(i));
                for off in [f.offset - 1, f.offset + 1] {
                    assert_eq!(seg.frame_at(off).unwrap(), None, "offset {off}");
                }
            }
            for off in [0, bytes.len() as u64, u64::MAX] {
                assert_eq!(seg.frame_at(off).unwrap(), None, "offset {off}");
            }
        }
    }

    #[test]
    fn trailing_data_frames_count_in_a_sealed_segment_only() {
        let b = open_ended();
        let active = scan(&b, 0, Path::new("s")).unwrap();
        assert_eq!((active.end_pos, active.index.frames.len()), (1, 1));
        assert!(active.committed_end < b.len() as u64);
        assert!(active.stopped.unwrap().1.contains("without a commit"));
        let sealed = scan_sealed(&b, 0, Path::new("s")).unwrap();
        assert_eq!((sealed.end_pos, sealed.index.frames.len()), (3, 3));
        assert_eq!(sealed.committed_end, b.len() as u64);
        assert!(sealed.stopped.is_none());
        // Torn in the middle of its last frame, it is damaged either way.
        let torn = b.slice(..b.len() - 1);
        assert!(scan_sealed(&torn, 0, Path::new("s"))
            .unwrap()
            .stopped
            .is_some());
    }

    /// A file system whose mappings of segment files show a zeroed header,
    /// while reads see the real one: opening must check the header it read,
    /// never the mapped one (touching a cold mapping reads megabytes).
    #[derive(Debug)]
    struct MappedHeadersZeroed(super::super::memvfs::MemVfs);

    #[derive(Debug)]
    struct ZeroedFile(Arc<dyn VFile>);

    fn zero_header(b: Bytes) -> Bytes {
        let mut v = b.to_vec();
        let n = v.len().min(COMPACTED_HEADER_LEN);
        v[..n].fill(0);
        Bytes::from(v)
    }

    impl VFile for ZeroedFile {
        fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            self.0.write_at(buf, off)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.0.sync_data()
        }
        fn sync_all(&self) -> std::io::Result<()> {
            self.0.sync_all()
        }
        fn len(&self) -> std::io::Result<u64> {
            self.0.len()
        }
        fn map(&self, len: usize) -> std::io::Result<Bytes> {
            self.0.map(len).map(zero_header)
        }
        fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
            self.0.read_at(buf, off)
        }
    }

    impl Vfs for MappedHeadersZeroed {
        fn create(&self, path: &Path) -> std::io::Result<Arc<dyn VFile>> {
            Ok(Arc::new(ZeroedFile(self.0.create(path)?)))
        }
        fn open(&self, path: &Path, write: bool) -> std::io::Result<Arc<dyn VFile>> {
            Ok(Arc::new(ZeroedFile(self.0.open(path, write)?)))
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.0.rename(from, to)
        }
        fn remove(&self, path: &Path) -> std::io::Result<()> {
            self.0.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.0.sync_dir(dir)
        }
        fn read(&self, path: &Path) -> std::io::Result<Bytes> {
            self.0.read(path).map(zero_header)
        }
        fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
            self.0.list(dir)
        }
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
            self.0.create_dir_all(dir)
        }
        fn lock(&self, path: &Path) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
            self.0.lock(path)
        }
    }

    /// A sealed segment is mapped twice: for scans, read ahead by the
    /// kernel, and for point reads, advised random (a cold fault reads its
    /// page), where a frame's first check reads it ahead whole. Both read
    /// the same bytes and pass the same checks.
    #[test]
    fn point_reads_have_a_mapping_of_their_own_advised_random() {
        use super::super::frame::FrameBuilder;
        use super::super::record::{Hlc, Op};
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_header().to_vec();
        for pos in 0..20u64 {
            let mut f = FrameBuilder::new();
            for _ in 0..100 {
                f.push("s", Op::Put, b"key", &[pos as u8; 300], 1);
            }
            f.finish(FrameKind::Commit, pos * 100, Hlc(pos), None)
                .unwrap();
            bytes.extend_from_slice(f.encoded());
        }
        let path = dir.path().join(segment_name(0));
        std::fs::write(&path, &bytes).unwrap();
        let vfs: Arc<dyn Vfs> = Arc::new(super::super::vfs::OsVfs);
        let seg = SealedSegment::open(path.clone(), 0, vfs.clone(), false).unwrap();
        assert_eq!(&seg.point[..], &bytes[..]);
        assert_eq!(&seg.bytes[..], &bytes[..]);
        assert_ne!(seg.point.as_ptr(), seg.bytes.as_ptr());
        #[cfg(target_os = "linux")]
        if let (Some(p), Some(b)) = (
            super::super::mmap::vm_flags(&seg.point),
            super::super::mmap::vm_flags(&seg.bytes),
        ) {
            assert!(p.iter().any(|f| f == "rr"), "{p:?}");
            assert!(!b.iter().any(|f| f == "rr"), "{b:?}");
        }
        let frames = seg.frames().unwrap().len();
        assert_eq!(frames, 20);
        for i in 0..frames {
            seg.check_frame_in(i, true).unwrap();
        }
        // A flipped byte of a frame fails its first check through either
        // (the frame index, kept healthy, says where the frames lie).
        let fidx = scan_sealed(&Bytes::from(bytes.clone()), 0, &path).unwrap();
        std::fs::write(sidecar_paths(&path).0, fidx.index.encode_fidx()).unwrap();
        let at = bytes.len() - 500;
        bytes[at] ^= 4;
        std::fs::write(&path, &bytes).unwrap();
        for point in [true, false] {
            let seg = SealedSegment::open(path.clone(), 0, vfs.clone(), false).unwrap();
            let last = seg.frames().unwrap().len() - 1;
            let check = |i| seg.check_frame_in(i, point);
            check(0).unwrap();
            assert!(matches!(check(last), Err(Error::Corruption { .. })));
        }
        // An in-memory file system's copy is not copied twice.
        let mem = super::super::memvfs::MemVfs::new();
        mem.create_dir_all(Path::new("/db")).unwrap();
        let path = Path::new("/db").join(segment_name(0));
        mem.create(&path).unwrap().write_at(&bytes, 0).unwrap();
        let seg = SealedSegment::open(path, 0, Arc::new(mem), false).unwrap();
        assert_eq!(seg.point.as_ptr(), seg.bytes.as_ptr());
    }

    #[test]
    fn opening_reads_segment_headers_instead_of_mapping_them() {
        let fs = MappedHeadersZeroed(super::super::memvfs::MemVfs::new());
        let dir = Path::new("/db");
        fs.create_dir_all(dir).unwrap();
        let plain = dir.join(segment_name(0));
        fs.create(&plain)
            .unwrap()
            .write_at(&open_ended(), 0)
            .unwrap();
        let compacted = dir.join(compacted_segment_name(3, 1));
        let mut c = encode_compacted_header(10).to_vec();
        c.extend_from_slice(&open_ended()[SEGMENT_HEADER_LEN..]);
        fs.create(&compacted).unwrap().write_at(&c, 0).unwrap();
        // Through a mapping, neither header would pass.
        assert!(check_header(&fs.read(&plain).unwrap(), &plain).is_err());
        let vfs: Arc<dyn Vfs> = Arc::new(fs);
        let seg = SealedSegment::open(plain.clone(), 0, vfs.clone(), false).unwrap();
        assert_eq!(seg.header.compacted_end, None);
        assert_eq!(
            peek_header(&*vfs, &compacted).unwrap().compacted_end,
            Some(10)
        );
        let (live, stale) = list_all(&*vfs, dir).unwrap();
        assert_eq!(live, vec![(0, plain), (3, compacted)]);
        assert!(stale.is_empty());
    }

    #[test]
    fn creating_a_segment_removes_sidecars_left_at_its_base() {
        let vfs = super::super::memvfs::MemVfs::new();
        let dir = Path::new("/db");
        vfs.create_dir_all(dir).unwrap();
        let (fidx, kidx) = sidecar_paths(&dir.join(segment_name(42)));
        for p in [&fidx, &kidx] {
            fsutil::atomic_write(&vfs, p, b"stale").unwrap();
        }
        let (_, path) = create(&vfs, dir, 42, true).unwrap();
        assert!(vfs.read(&fidx).is_err() && vfs.read(&kidx).is_err());
        let h = check_header(&vfs.read(&path).unwrap(), &path).unwrap();
        assert!(h.continues);
    }

    #[test]
    fn a_continuing_segment_says_so_in_its_header() {
        let h = check_header(&encode_writer_header(true), Path::new("s")).unwrap();
        assert!(h.continues && h.compacted_end.is_none());
        assert_eq!(h.len, SEGMENT_HEADER_LEN);
        assert!(
            !check_header(&encode_header(), Path::new("s"))
                .unwrap()
                .continues
        );
    }

    #[test]
    fn header_checks() {
        let h = encode_header();
        assert!(check_header(&h, Path::new("s")).is_ok());
        assert!(check_header(&[0u8; 16], Path::new("s")).is_err());
        let mut v = h;
        v[8] = 9;
        let crc = crc32fast::hash(&v[..12]);
        v[12..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&v, Path::new("s")),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }
}
