//! The checkpoint file: a stream's live rows as of event time `T`, known below
//! position `K`, sorted by key, checksummed, written atomically; the rows are
//! zstd-compressed when the database compresses, and otherwise stored raw so
//! that reading them is zero-copy from the memory map.
//!
//! ```text
//! offset 0   magic        8 bytes "TLOGCKPT"
//! offset 8   version      u32     3 (version 1: no flags field, always zstd;
//!                                 versions 1 and 2: no row flags)
//! offset 12  flags        u32     bit 0: the body is a zstd frame; others 0
//! offset 16  stream_len   u8, then the stream name
//!            as_of        i64     T (µs)
//!            known_end    u64     K: rows reflect positions < K
//!            rows         u64
//!            raw_len      u64     bytes of the row area before compression
//!            stored_len   u64     bytes of the body that follows
//!            body         stored_len bytes (raw, or a zstd frame): rows back to back:
//!                         u16 key_len, u32 value_len, i64 event_time,
//!                         u64 position, u8 row flags, key, value
//! end        crc          u32     CRC-32 of every byte before it
//! ```
//!
//! Row flag bit 0, *settled*: the row's value is that of a put, the last record
//! applied to it, so no version sorting before its `(event_time, position)`
//! can change it. A late record that sorts before a settled row is shadowed;
//! one that sorts before an unsettled row (the last record applied was a
//! patch, or a version 1 or 2 file, which does not say) makes the key refold.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::query::asof::{Row, RowRef};
use crate::storage::fsutil::{self, SeqWriter};
use crate::storage::read_file;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"TLOGCKPT";
/// Checkpoint format version written (versions 1 and 2 are still read).
pub const CHECKPOINT_VERSION: u32 = 3;
const FLAG_ZSTD: u32 = 1;
/// Row header of versions 1 and 2: lengths, event time, position.
const ROW_HEADER_V2: usize = 22;
/// Row header of version 3: that, then the row flags.
const ROW_HEADER: usize = 23;
const ROW_SETTLED: u8 = 1;

/// A row as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRow {
    /// The row.
    pub row: Row,
    /// Whether the row's value is that of a put, the last record applied to it:
    /// then no version sorting before it can change it (see the module docs).
    pub settled: bool,
}

impl SavedRow {
    /// The row, borrowed.
    #[must_use]
    pub(crate) fn as_ref(&self) -> SavedRef<'_> {
        SavedRef {
            row: self.row.as_ref(),
            settled: self.settled,
        }
    }
}

/// A [`SavedRow`] borrowed from where it lies (a checkpoint's body, a row
/// folded in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SavedRef<'a> {
    /// The row.
    pub(crate) row: RowRef<'a>,
    /// See [`SavedRow::settled`].
    pub(crate) settled: bool,
}

/// Rows handed to [`write()`] one at a time, each borrowed until the next.
pub(crate) trait SavedRows {
    /// The next row in key order, `None` at the end.
    fn next_saved_ref(&mut self) -> Option<Result<SavedRef<'_>>>;
}

/// What a checkpoint holds, read from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The file.
    pub path: PathBuf,
    /// The stream.
    pub stream: String,
    /// Event time the rows are as of.
    pub as_of: i64,
    /// Rows reflect exactly the records at positions below this.
    pub known_end: u64,
    /// Number of rows.
    pub rows: u64,
    /// Bytes of a row's header in this file's format version.
    row_header: usize,
    raw_len: u64,
    body_off: usize,
    stored_len: u64,
    zstd: bool,
}

impl CheckpointInfo {
    /// Bytes of its rows, uncompressed.
    #[must_use]
    pub(crate) fn rows_len(&self) -> u64 {
        self.raw_len
    }
}

/// Writes a checkpoint atomically: temp file, fsync, rename, directory fsync.
/// `rows` must be sorted by key. The rows are streamed to the file (through
/// zstd when `level` is set), so memory does not grow with the table: the
/// header, whose counts are known only at the end, is written last, and the
/// checksum combines its CRC with the body's.
pub(crate) fn write(
    vfs: &dyn crate::storage::vfs::Vfs,
    path: &Path,
    stream: &str,
    as_of: i64,
    known_end: u64,
    rows: &mut dyn SavedRows,
    level: Option<i32>,
) -> Result<CheckpointInfo> {
    let zstd = level.is_some();
    let body_off = 8 + 4 + 4 + 1 + stream.len() + 5 * 8;
    let mut counts = (0u64, 0u64, 0u64); // rows, raw_len, stored_len
    fsutil::atomic_write_with(vfs, path, |file, tmp| {
        let io = |e| Error::io(tmp, e);
        let sink = SeqWriter::new(file, body_off as u64);
        let mut body = match level {
            Some(l) => Body::Zstd(zstd::stream::Encoder::new(sink, l).map_err(io)?),
            None => Body::Raw(sink),
        };
        let (mut count, mut raw_len) = (0u64, 0u64);
        let mut head = [0u8; ROW_HEADER];
        while let Some(saved) = rows.next_saved_ref() {
            let SavedRef { row, settled } = saved?;
            head[0..2].copy_from_slice(&(row.key.len() as u16).to_le_bytes());
            head[2..6].copy_from_slice(&(row.value.len() as u32).to_le_bytes());
            head[6..14].copy_from_slice(&row.event_time.to_le_bytes());
            head[14..22].copy_from_slice(&row.position.to_le_bytes());
            head[22] = if settled { ROW_SETTLED } else { 0 };
            body.write_all(&head).map_err(io)?;
            body.write_all(row.key).map_err(io)?;
            body.write_all(row.value).map_err(io)?;
            raw_len += (ROW_HEADER + row.key.len() + row.value.len()) as u64;
            count += 1;
        }
        let sink = match body {
            Body::Zstd(e) => e.finish().map_err(io)?,
            Body::Raw(s) => s,
        };
        let (body_crc, end) = sink.finish().map_err(io)?;
        let stored_len = end - body_off as u64;
        let mut out = Vec::with_capacity(body_off);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&(if zstd { FLAG_ZSTD } else { 0 }).to_le_bytes());
        out.push(stream.len() as u8);
        out.extend_from_slice(stream.as_bytes());
        out.extend_from_slice(&as_of.to_le_bytes());
        out.extend_from_slice(&known_end.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&raw_len.to_le_bytes());
        out.extend_from_slice(&stored_len.to_le_bytes());
        debug_assert_eq!(out.len(), body_off);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out);
        crc.combine(&body_crc);
        file.write_at(&out, 0).map_err(io)?;
        file.write_at(&crc.finalize().to_le_bytes(), end)
            .map_err(io)?;
        counts = (count, raw_len, stored_len);
        Ok(())
    })?;
    let (rows, raw_len, stored_len) = counts;
    Ok(CheckpointInfo {
        path: path.to_path_buf(),
        stream: stream.to_string(),
        as_of,
        known_end,
        rows,
        row_header: ROW_HEADER,
        raw_len,
        body_off,
        stored_len,
        zstd,
    })
}

/// Where rows are written: through a zstd stream, or as they are.
enum Body<W: Write> {
    Zstd(zstd::stream::Encoder<'static, W>),
    Raw(W),
}

impl<W: Write> Write for Body<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Body::Zstd(e) => e.write(b),
            Body::Raw(w) => w.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Body::Zstd(e) => e.flush(),
            Body::Raw(w) => w.flush(),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads and validates a checkpoint header and checksum (the whole file is
/// checksummed before anything in it is trusted).
pub fn open(vfs: &dyn crate::storage::vfs::Vfs, path: &Path) -> Result<(CheckpointInfo, Bytes)> {
    let bytes = read_file(vfs, path)?;
    let info = parse(&bytes, path)?;
    Ok((info, bytes))
}

/// Validates `b` as a checkpoint file (checksum, version, bounds).
pub fn parse(b: &[u8], path: &Path) -> Result<CheckpointInfo> {
    let body = b
        .len()
        .checked_sub(4)
        .ok_or_else(|| Error::corrupt(path, 0, "checkpoint file too short"))?;
    if b.starts_with(MAGIC) && b[body..] != crc32fast::hash(&b[..body]).to_le_bytes() {
        return Err(Error::corrupt(
            path,
            body as u64,
            "checkpoint checksum mismatch",
        ));
    }
    parse_header(b, b.len() as u64, path)
}

/// Parses and checks the header, given the file's total length; `head` holds at
/// least the header (or the whole file).
fn parse_header(head: &[u8], file_len: u64, path: &Path) -> Result<CheckpointInfo> {
    let bad = |at: usize, why: &str| Error::corrupt(path, at as u64, why.to_string());
    if head.len() < 13 || file_len < 8 + 4 + 1 + 40 + 4 {
        return Err(bad(0, "checkpoint file too short"));
    }
    if &head[..8] != MAGIC {
        return Err(bad(0, "bad checkpoint magic"));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let (zstd, name_at) = match version {
        1 => (true, 12),
        2 | CHECKPOINT_VERSION => {
            let flags = u32_at(head, 12).ok_or_else(|| bad(12, "truncated header"))?;
            if flags & !FLAG_ZSTD != 0 {
                return Err(bad(12, &format!("unknown checkpoint flags {flags:#x}")));
            }
            (flags & FLAG_ZSTD != 0, 16)
        }
        _ => {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: CHECKPOINT_VERSION,
            })
        }
    };
    let n = usize::from(
        *head
            .get(name_at)
            .ok_or_else(|| bad(name_at, "truncated header"))?,
    );
    let stream = std::str::from_utf8(
        head.get(name_at + 1..name_at + 1 + n)
            .ok_or_else(|| bad(name_at, "truncated"))?,
    )
    .map_err(|_| bad(name_at + 1, "stream name not UTF-8"))?
    .to_string();
    let at = name_at + 1 + n;
    let field = |i: usize| u64_at(head, at + 8 * i).ok_or_else(|| bad(at, "truncated header"));
    let info = CheckpointInfo {
        path: path.to_path_buf(),
        stream,
        as_of: field(0)? as i64,
        known_end: field(1)?,
        rows: field(2)?,
        row_header: if version < 3 {
            ROW_HEADER_V2
        } else {
            ROW_HEADER
        },
        raw_len: field(3)?,
        stored_len: field(4)?,
        body_off: at + 40,
        zstd,
    };
    if (info.body_off as u64)
        .checked_add(info.stored_len)
        .and_then(|x| x.checked_add(4))
        != Some(file_len)
    {
        return Err(bad(
            at + 32,
            "checkpoint body length does not match the file",
        ));
    }
    if info.rows.saturating_mul(info.row_header as u64) > info.raw_len {
        return Err(bad(at + 16, "row count does not fit the body"));
    }
    if !info.zstd && info.raw_len != info.stored_len {
        return Err(bad(
            at + 24,
            "raw body length does not match the stored length",
        ));
    }
    Ok(info)
}

/// The rows of a validated checkpoint in key order: zero-copy slices of the
/// file's bytes (of the body decompressed once, for a zstd body).
pub struct Rows {
    raw: Bytes,
    at: usize,
    left: u64,
    row_header: usize,
    path: PathBuf,
    /// The row read last.
    cur: RowAt,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl Rows {
    /// Rows of a checkpoint whose bytes were validated by [`open`].
    pub fn new(info: &CheckpointInfo, bytes: &Bytes) -> Result<Rows> {
        let corrupt = |why: String| Error::corrupt(&info.path, info.body_off as u64, why);
        // The checksum passed, but bound the allocation anyway.
        if info.raw_len > info.stored_len.saturating_mul(1024).saturating_add(1 << 20) {
            return Err(corrupt(format!("implausible raw length {}", info.raw_len)));
        }
        let body = bytes.slice(info.body_off..info.body_off + info.stored_len as usize);
        let raw = if info.zstd {
            let raw = zstd::bulk::decompress(&body, info.raw_len as usize)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            if raw.len() as u64 != info.raw_len {
                return Err(corrupt(
                    "decompressed length does not match the header".into(),
                ));
            }
            Bytes::from(raw)
        } else {
            body
        };
        Ok(Rows {
            raw,
            at: 0,
            left: info.rows,
            row_header: info.row_header,
            path: info.path.clone(),
            cur: RowAt::default(),
        })
    }

    /// Reads the next row's header and bounds into [`Rows::current`]: `false`
    /// at the end. After an error, there are no more rows.
    #[inline]
    pub(crate) fn step(&mut self) -> Result<bool> {
        if self.left == 0 {
            return Ok(false);
        }
        self.left -= 1;
        match self.read_at() {
            Ok(at) => {
                self.cur = at;
                Ok(true)
            }
            Err(e) => {
                self.left = 0;
                Err(e)
            }
        }
    }

    /// The row the last successful [`Rows::step`] read.
    #[inline]
    pub(crate) fn current(&self) -> &RowAt {
        &self.cur
    }

    #[inline]
    fn read_at(&mut self) -> Result<RowAt> {
        let b = &self.raw;
        let at = self.at;
        let head = b.get(at..at + self.row_header).ok_or_else(|| {
            Error::corrupt(&self.path, 0, format!("row header beyond the body at {at}"))
        })?;
        let kl = usize::from(u16::from_le_bytes([head[0], head[1]]));
        let vl = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let event_time = i64::from_le_bytes(head[6..14].try_into().unwrap_or_default());
        let position = u64::from_le_bytes(head[14..22].try_into().unwrap_or_default());
        // Versions 1 and 2 do not say: such a row is never taken as settled.
        let flags = head.get(ROW_HEADER_V2).copied().unwrap_or(0);
        if flags & !ROW_SETTLED != 0 {
            return Err(Error::corrupt(
                &self.path,
                0,
                format!("unknown row flags {flags:#x} at {at}"),
            ));
        }
        let key = at + self.row_header;
        let end = key + kl + vl;
        if end > b.len() {
            return Err(Error::corrupt(
                &self.path,
                0,
                format!("row at {at} runs past the body"),
            ));
        }
        self.at = end;
        // Rows are read one after the other, each decoded from its header:
        // as for sweeps (`storage::sweep`), loading the body 8 KiB ahead
        // keeps the walk from waiting on memory row by row.
        if let Some(b) = b.get(end + 8192) {
            crate::hint::prefetch(b);
        }
        Ok(RowAt {
            key,
            value: key + kl,
            end,
            event_time,
            position,
            settled: flags & ROW_SETTLED != 0,
        })
    }

    /// The key of a row [`Rows::step`] read.
    #[inline]
    pub(crate) fn key(&self, at: &RowAt) -> &[u8] {
        &self.raw[at.key..at.value]
    }

    /// A row [`Rows::step`] read, borrowed from the body.
    #[inline]
    pub(crate) fn row_ref(&self, at: &RowAt) -> SavedRef<'_> {
        SavedRef {
            row: RowRef {
                key: &self.raw[at.key..at.value],
                value: &self.raw[at.value..at.end],
                event_time: at.event_time,
                position: at.position,
            },
            settled: at.settled,
        }
    }

    /// A row [`Rows::step`] read, as zero-copy slices of the body.
    pub(crate) fn row(&self, at: &RowAt) -> SavedRow {
        SavedRow {
            row: Row {
                key: self.raw.slice(at.key..at.value),
                value: self.raw.slice(at.value..at.end),
                event_time: at.event_time,
                position: at.position,
            },
            settled: at.settled,
        }
    }
}

/// Where a validated row lies in a checkpoint's body (offsets into it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RowAt {
    key: usize,
    value: usize,
    end: usize,
    event_time: i64,
    position: u64,
    settled: bool,
}

impl Iterator for Rows {
    type Item = Result<SavedRow>;

    fn next(&mut self) -> Option<Result<SavedRow>> {
        match self.step() {
            Ok(true) => Some(Ok(self.row(&self.cur))),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// Reads only the header of a checkpoint for the catalog (no checksum: the
/// whole file is validated when it is used).
pub fn peek(vfs: &dyn crate::storage::vfs::Vfs, path: &Path) -> Result<CheckpointInfo> {
    let b = read_file(vfs, path)?;
    parse_header(
        &b[..b.len().min(8 + 8 + 1 + 255 + 40)],
        b.len() as u64,
        path,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned rows from an iterator, lent one at a time.
    #[derive(Debug)]
    struct OwnedRows<I> {
        rows: I,
        current: Option<SavedRow>,
    }

    impl<I: Iterator<Item = Result<SavedRow>>> OwnedRows<I> {
        /// Lends the rows of `rows`.
        fn new(rows: I) -> Self {
            OwnedRows {
                rows,
                current: None,
            }
        }
    }

    impl<I: Iterator<Item = Result<SavedRow>>> SavedRows for OwnedRows<I> {
        fn next_saved_ref(&mut self) -> Option<Result<SavedRef<'_>>> {
            match self.rows.next()? {
                Ok(row) => Some(Ok(self.current.insert(row).as_ref())),
                Err(e) => Some(Err(e)),
            }
        }
    }
    use crate::storage::memvfs::MemVfs;
    use crate::storage::vfs::Vfs;

    fn rows() -> Vec<SavedRow> {
        (0..50u64)
            .map(|i| SavedRow {
                row: Row {
                    key: Bytes::from(format!("k{i:03}")),
                    value: Bytes::from(format!(r#"{{"v":{i}}}"#)),
                    event_time: i as i64,
                    position: i * 2,
                },
                settled: i % 3 != 0,
            })
            .collect()
    }

    #[test]
    fn raw_and_zstd_bodies_round_trip_and_every_flipped_byte_is_caught() {
        let fs = MemVfs::new();
        fs.create_dir_all(Path::new("/c")).unwrap();
        for level in [None, Some(3)] {
            let path = Path::new("/c/s@00000000000000000100.ckpt");
            let info = write(
                &fs,
                path,
                "s",
                77,
                100,
                &mut OwnedRows::new(rows().into_iter().map(Ok)),
                level,
            )
            .unwrap();
            let (read, bytes) = open(&fs, path).unwrap();
            assert_eq!(read, info);
            let back: Vec<SavedRow> = Rows::new(&read, &bytes)
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(back, rows());
            for i in 0..bytes.len() {
                let mut b = bytes.to_vec();
                b[i] ^= 0x01;
                assert!(
                    parse(&b, path).is_err(),
                    "flip at {i} (level {level:?}) passed"
                );
            }
        }
    }
}
