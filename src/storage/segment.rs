//! Segment files: naming, header, the recovery scan of the active segment, and
//! sealed segments with their lazily validated sidecar indexes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

use bytes::Bytes;

use super::frame::{check_frame, Frame, FrameError, FrameKind};
use super::index::{decode_fidx, FrameMeta, KeyIndexFile, MemIndex};
use super::vfs::{VFile, Vfs};
use super::{fsutil, mmap};
use crate::{Error, Result};

/// Segment file magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TLOGSEG\0";
/// Segment format version written by this build.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;

/// File name of the segment whose first position is `base`.
#[must_use]
pub fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Parses a segment file name back to its base position.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Paths of a segment's sidecars: (frame index, key index).
#[must_use]
pub fn sidecar_paths(seg: &Path) -> (PathBuf, PathBuf) {
    (seg.with_extension("fidx"), seg.with_extension("kidx"))
}

/// The 16-byte segment header: magic, version, CRC of the first 12 bytes.
#[must_use]
pub fn encode_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Validates a segment header.
pub fn check_header(b: &[u8], path: &Path) -> Result<()> {
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
    if version != SEGMENT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    Ok(())
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

/// Scans the frames of a segment whose first position is `base`, stopping at the
/// first frame that is incomplete or invalid. Frames of a transaction with no commit
/// frame are not indexed, and `committed_end` stays before them.
pub fn scan(seg: &Bytes, base: u64, path: &Path) -> Result<ScanOutcome> {
    check_header(seg, path)?;
    let mut index = MemIndex::default();
    let mut pending: Vec<(u64, Frame)> = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
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
        if header.first_pos != next_pos {
            stopped = Some((
                off as u64,
                format!(
                    "frame starts at position {}, expected {next_pos}",
                    header.first_pos
                ),
            ));
            break;
        }
        let frame = match Frame::decode(seg, off, path) {
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
    if stopped.is_none() && !pending.is_empty() {
        stopped = Some((
            committed_end,
            "transaction without a commit frame".to_string(),
        ));
    }
    Ok(ScanOutcome {
        index,
        committed_end,
        end_pos,
        stopped,
    })
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
    frames: OnceLock<std::result::Result<Vec<FrameMeta>, String>>,
    keys: OnceLock<std::result::Result<KeyIndexFile, String>>,
    validated: OnceLock<Vec<AtomicBool>>,
    /// Where rebuilt sidecars are written; `None` for read-only handles.
    vfs: Option<Arc<dyn Vfs>>,
}

impl SealedSegment {
    /// Maps a sealed segment and checks its header. Indexes are loaded lazily.
    pub fn open(path: PathBuf, base: u64, vfs: Option<Arc<dyn Vfs>>) -> Result<SealedSegment> {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let bytes = mmap::map(&file, len as usize, &path)?;
        check_header(&bytes, &path)?;
        Ok(SealedSegment {
            base,
            path,
            bytes,
            frames: OnceLock::new(),
            keys: OnceLock::new(),
            validated: OnceLock::new(),
            vfs,
        })
    }

    /// A segment just sealed by this process, with its frame index already known.
    pub fn from_sealed(
        path: PathBuf,
        base: u64,
        frames: Vec<FrameMeta>,
        vfs: Arc<dyn Vfs>,
    ) -> Result<SealedSegment> {
        let s = SealedSegment::open(path, base, Some(vfs))?;
        let _ = s.frames.set(Ok(frames));
        Ok(s)
    }

    /// The frame index (position and time blocks), from the sidecar or rebuilt.
    pub fn frames(&self) -> Result<&[FrameMeta]> {
        let r = self
            .frames
            .get_or_init(|| self.load_frames().map_err(|e| e.to_string()));
        r.as_deref()
            .map_err(|e| Error::corrupt(&self.path, 0, e.clone()))
    }

    /// The key index, from the sidecar or rebuilt.
    pub fn keys(&self) -> Result<&KeyIndexFile> {
        let r = self
            .keys
            .get_or_init(|| self.load_keys().map_err(|e| e.to_string()));
        r.as_ref()
            .map_err(|e| Error::corrupt(&self.path, 0, e.clone()))
    }

    /// Validates frame number `i` (checksum and record bounds) the first time it is
    /// read in this process; later reads trust it.
    pub fn check_frame_once(&self, i: usize) -> Result<()> {
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
            Frame::decode(&self.bytes, frames[i].offset as usize, &self.path)?;
            flag.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// One past the last position of the segment.
    pub fn end_pos(&self) -> Result<u64> {
        Ok(self.frames()?.last().map_or(self.base, FrameMeta::end_pos))
    }

    fn load_frames(&self) -> Result<Vec<FrameMeta>> {
        let (fidx, _) = sidecar_paths(&self.path);
        match read_sidecar(&fidx).and_then(|b| decode_fidx(&b, &fidx)) {
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
        let mut off = SEGMENT_HEADER_LEN as u64;
        let mut pos = self.base;
        for m in f {
            if m.offset != off || m.first_pos != pos {
                return false;
            }
            off += u64::from(m.total_len);
            pos += u64::from(m.count);
        }
        off == self.bytes.len() as u64
    }

    fn load_keys(&self) -> Result<KeyIndexFile> {
        let (_, kidx) = sidecar_paths(&self.path);
        match read_sidecar(&kidx).and_then(|b| KeyIndexFile::open(b, &kidx)) {
            Ok(k) => Ok(k),
            Err(_) => {
                log::warn!(
                    "{}: key index missing or damaged, rebuilding",
                    kidx.display()
                );
                let idx = self.rebuild()?;
                KeyIndexFile::open(Bytes::from(idx.encode_kidx()), &kidx)
            }
        }
    }

    /// Scans the whole segment; any damage is an error naming file and offset.
    pub fn rebuild_in_memory(&self) -> Result<MemIndex> {
        let out = scan(&self.bytes, self.base, &self.path)?;
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
        if let Some(vfs) = &self.vfs {
            write_sidecars(&**vfs, &self.path, &idx)?;
        }
        Ok(idx)
    }
}

fn read_sidecar(path: &Path) -> Result<Bytes> {
    super::mmap_file(path)
}

/// Writes both sidecars of a segment atomically.
pub fn write_sidecars(vfs: &dyn Vfs, seg: &Path, idx: &MemIndex) -> Result<()> {
    let (fidx, kidx) = sidecar_paths(seg);
    fsutil::atomic_write(vfs, &kidx, &idx.encode_kidx())?;
    fsutil::atomic_write(vfs, &fidx, &idx.encode_fidx())?;
    Ok(())
}

/// Creates a new, empty segment file (header written and synced, directory synced).
pub fn create(vfs: &dyn Vfs, dir: &Path, base: u64) -> Result<(Arc<dyn VFile>, PathBuf)> {
    let path = dir.join(segment_name(base));
    let file = vfs.create(&path).map_err(|e| Error::io(&path, e))?;
    file.write_at(&encode_header(), 0)
        .map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    fsutil::sync_dir(vfs, dir)?;
    Ok((file, path))
}

/// Lists `(base, path)` of every segment in `dir`, sorted by base.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if let Some(base) = e.file_name().to_str().and_then(parse_segment_name) {
            out.push((base, e.path()));
        }
    }
    out.sort_unstable_by_key(|(b, _)| *b);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
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
