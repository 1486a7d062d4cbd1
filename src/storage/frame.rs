//! Physical frames: the checksummed, optionally compressed unit written to a segment.
//!
//! A transaction is one or more frames; all but the last have kind [`FrameKind::Data`],
//! the last has kind [`FrameKind::Commit`]. The byte layout is in `docs/format.md`.

use std::path::Path;

use bytes::Bytes;

use super::record::{Hlc, Op};
use crate::{Error, Result};

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 48;
/// Frame magic, "TLFR" little-endian.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"TLFR");
/// Hard upper bound on a frame's stored or raw payload: a length above it is corruption.
pub const MAX_FRAME_PAYLOAD: u32 = 256 << 20;
/// Bytes of record data after which a builder starts a new frame.
pub const FRAME_TARGET: usize = 1 << 20;
/// Size of a record's fixed header inside a payload.
pub const RECORD_HEADER_LEN: usize = 17;
/// Flag bit: payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;
/// Batches with fewer raw payload bytes than this stay uncompressed.
pub const COMPRESS_MIN: usize = 4096;

/// Whether more frames of the same transaction follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// More frames of this transaction follow.
    Data = 1,
    /// The last frame: the transaction is committed once this frame is on disk.
    Commit = 2,
}

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes as stored (compressed size when compressed).
    pub stored_len: u32,
    /// Payload bytes after decompression.
    pub raw_len: u32,
    /// Position of the first record.
    pub first_pos: u64,
    /// Recorded-at stamp of the first record; record `i` has `hlc + i`.
    pub hlc: Hlc,
    /// Number of records.
    pub count: u32,
    /// Raw payload offset where the stream table starts (records come before it).
    pub records_len: u32,
    /// Data or commit.
    pub kind: FrameKind,
    /// Flag bits ([`FLAG_ZSTD`]).
    pub flags: u8,
}

impl FrameHeader {
    /// Total bytes the frame occupies on disk.
    #[must_use]
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Why a frame failed to parse. `Incomplete` at the end of an active segment is a
/// torn tail; anything else is damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the header or its declared length needs.
    Incomplete,
    /// The frame is invalid for the stated reason.
    Invalid(String),
}

/// Parses and fully validates the frame starting at `buf[0]`, returning its header.
/// The checksum covers header bytes 4.. and the stored payload, so all-zero bytes never
/// pass, and the length is bounded before it is used.
pub fn check_frame(buf: &[u8]) -> std::result::Result<FrameHeader, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let h = &buf[..HEADER_LEN];
    if u32_at(h, 4) != FRAME_MAGIC {
        return Err(FrameError::Invalid(format!(
            "bad frame magic {:#010x}, expected {FRAME_MAGIC:#010x}",
            u32_at(h, 4)
        )));
    }
    let stored_len = u32_at(h, 8);
    let raw_len = u32_at(h, 12);
    if stored_len > MAX_FRAME_PAYLOAD || raw_len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::Invalid(format!(
            "frame length {stored_len} (raw {raw_len}) exceeds the limit {MAX_FRAME_PAYLOAD}"
        )));
    }
    let total = HEADER_LEN + stored_len as usize;
    if buf.len() < total {
        return Err(FrameError::Incomplete);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[4..total]);
    let crc = hasher.finalize();
    if crc != u32_at(h, 0) {
        return Err(FrameError::Invalid(format!(
            "frame checksum mismatch: stored {:#010x}, computed {crc:#010x}",
            u32_at(h, 0)
        )));
    }
    let kind = match h[40] {
        1 => FrameKind::Data,
        2 => FrameKind::Commit,
        k => return Err(FrameError::Invalid(format!("unknown frame kind {k}"))),
    };
    let flags = h[41];
    if flags & !FLAG_ZSTD != 0 {
        return Err(FrameError::Invalid(format!(
            "unknown frame flags {flags:#04x}"
        )));
    }
    let header = FrameHeader {
        stored_len,
        raw_len,
        first_pos: u64_at(h, 16),
        hlc: Hlc(u64_at(h, 24)),
        count: u32_at(h, 32),
        records_len: u32_at(h, 36),
        kind,
        flags,
    };
    if flags & FLAG_ZSTD == 0 && raw_len != stored_len {
        return Err(FrameError::Invalid(
            "uncompressed frame with raw length != stored length".into(),
        ));
    }
    if header.records_len > raw_len {
        return Err(FrameError::Invalid("records length beyond payload".into()));
    }
    // Every record takes at least a header: bounds the count before anyone allocates by it.
    if u64::from(header.count) * RECORD_HEADER_LEN as u64 > u64::from(header.records_len) {
        return Err(FrameError::Invalid(format!(
            "record count {} cannot fit in {} bytes",
            header.count, header.records_len
        )));
    }
    Ok(header)
}

/// A validated frame with its payload decompressed and stream table decoded.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// Raw (decompressed) payload: records followed by the stream table.
    pub payload: Bytes,
    /// Stream names in the frame, indexed by a record's stream index.
    pub streams: Vec<String>,
}

/// One record decoded in place from a frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Index into the frame's stream table.
    pub stream_idx: u16,
    /// Operation.
    pub op: Op,
    /// Event time (µs).
    pub event_time: i64,
    /// Key bytes.
    pub key: &'a [u8],
    /// Offset of the value within the payload.
    pub value_off: usize,
    /// Value bytes.
    pub value: &'a [u8],
    /// Offset of this record's header within the payload.
    pub offset: usize,
}

impl Frame {
    /// Decodes a frame whose bytes are `seg.slice(off..)`. `seg` should be the
    /// memory-mapped segment so uncompressed payloads stay zero-copy.
    pub fn decode(seg: &Bytes, off: usize, path: &Path) -> Result<Frame> {
        let buf = seg.get(off..).unwrap_or(&[]);
        let header = check_frame(buf).map_err(|e| match e {
            FrameError::Incomplete => Error::corrupt(path, off as u64, "truncated frame"),
            FrameError::Invalid(r) => Error::corrupt(path, off as u64, r),
        })?;
        Frame::from_checked(seg, off, header, path)
    }

    /// Decodes the frame at `off` whose header [`check_frame`] has just accepted
    /// (checksum included), without checksumming it again: the recovery scan
    /// checks each frame first to tell a torn tail from a bad frame.
    pub fn from_checked(
        seg: &Bytes,
        off: usize,
        header: FrameHeader,
        path: &Path,
    ) -> Result<Frame> {
        let start = off + HEADER_LEN;
        let stored = seg.slice(start..start + header.stored_len as usize);
        let payload = if header.flags & FLAG_ZSTD != 0 {
            let raw = zstd::bulk::decompress(&stored, header.raw_len as usize)
                .map_err(|e| Error::corrupt(path, off as u64, format!("zstd: {e}")))?;
            if raw.len() != header.raw_len as usize {
                return Err(Error::corrupt(
                    path,
                    off as u64,
                    "decompressed length mismatch",
                ));
            }
            Bytes::from(raw)
        } else {
            stored
        };
        let streams = decode_stream_table(&payload[header.records_len as usize..])
            .map_err(|r| Error::corrupt(path, off as u64, r))?;
        let frame = Frame {
            header,
            payload,
            streams,
        };
        frame
            .validate_records()
            .map_err(|r| Error::corrupt(path, off as u64, r))?;
        Ok(frame)
    }

    /// Checks that the records parse, fill the records area exactly, and name streams
    /// of the table. After this, iteration cannot fail.
    fn validate_records(&self) -> std::result::Result<(), String> {
        let mut at = 0usize;
        for i in 0..self.header.count {
            let r = parse_record(&self.payload[..self.header.records_len as usize], at)
                .ok_or_else(|| format!("record {i} is malformed"))?;
            if usize::from(r.stream_idx) >= self.streams.len() {
                return Err(format!(
                    "record {i} names stream {} of {}",
                    r.stream_idx,
                    self.streams.len()
                ));
            }
            at = r.value_off + r.value.len();
        }
        if at != self.header.records_len as usize {
            return Err(format!(
                "records end at {at}, header says {}",
                self.header.records_len
            ));
        }
        Ok(())
    }

    /// Iterates the records in position order.
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter {
            buf: &self.payload[..self.header.records_len as usize],
            at: 0,
            left: self.header.count,
        }
    }

    /// Decodes the record whose header starts at payload offset `at`.
    #[must_use]
    pub fn record_at(&self, at: usize) -> Option<RawRecord<'_>> {
        parse_record(&self.payload[..self.header.records_len as usize], at)
    }
}

/// Iterator over the records of a validated frame.
#[derive(Debug)]
pub struct RecordIter<'a> {
    buf: &'a [u8],
    at: usize,
    left: u32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RawRecord<'a>;

    fn next(&mut self) -> Option<RawRecord<'a>> {
        if self.left == 0 {
            return None;
        }
        let r = parse_record(self.buf, self.at)?;
        self.at = r.value_off + r.value.len();
        self.left -= 1;
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// Where the record whose header is at `at` ends, reading only its lengths:
/// how a reader skips to the `k`-th record of a frame. `None` if it runs past
/// `buf`.
pub(crate) fn record_end(buf: &[u8], at: usize) -> Option<usize> {
    let h = buf.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
    let key_len = usize::from(u16_at(h, 11));
    let value_len = u32_at(h, 13) as usize;
    let end = (at + RECORD_HEADER_LEN)
        .checked_add(key_len)?
        .checked_add(value_len)?;
    (end <= buf.len()).then_some(end)
}

/// Parses one record at `at`, `None` if it does not fit.
#[must_use]
pub fn parse_record(buf: &[u8], at: usize) -> Option<RawRecord<'_>> {
    let h = buf.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
    let stream_idx = u16_at(h, 0);
    let op = Op::from_u8(h[2])?;
    let event_time = u64_at(h, 3) as i64;
    let key_len = usize::from(u16_at(h, 11));
    let value_len = u32_at(h, 13) as usize;
    let key_off = at + RECORD_HEADER_LEN;
    let value_off = key_off.checked_add(key_len)?;
    let end = value_off.checked_add(value_len)?;
    Some(RawRecord {
        stream_idx,
        op,
        event_time,
        key: buf.get(key_off..value_off)?,
        value_off,
        value: buf.get(value_off..end)?,
        offset: at,
    })
}

/// Decodes and checks a frame's stream table (the bytes after its records).
pub(crate) fn decode_stream_table(b: &[u8]) -> std::result::Result<Vec<String>, String> {
    if b.len() < 2 {
        return Err("stream table missing".into());
    }
    let n = usize::from(u16_at(b, 0));
    let mut at = 2;
    let mut out = Vec::with_capacity(n.min(b.len() / 2));
    for i in 0..n {
        let len = usize::from(*b.get(at).ok_or("stream table truncated")?);
        let name = b
            .get(at + 1..at + 1 + len)
            .ok_or("stream table truncated")?;
        let name =
            std::str::from_utf8(name).map_err(|_| format!("stream name {i} is not UTF-8"))?;
        crate::storage::record::validate_stream_name(name).map_err(|e| e.to_string())?;
        out.push(name.to_string());
        at += 1 + len;
    }
    if at != b.len() {
        return Err("trailing bytes after stream table".into());
    }
    Ok(out)
}

/// Accumulates encoded records for one frame: the header space, the records, and
/// (on [`FrameBuilder::finish`]) the stream table.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    buf: Vec<u8>,
    streams: Vec<String>,
    per_stream: Vec<u64>,
    count: u32,
    compressed: Option<Vec<u8>>,
    max_key: usize,
    max_value: usize,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBuilder {
    /// An empty builder.
    #[must_use]
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.resize(HEADER_LEN, 0);
        FrameBuilder {
            buf,
            streams: Vec::new(),
            per_stream: Vec::new(),
            count: 0,
            compressed: None,
            max_key: 0,
            max_value: 0,
        }
    }

    /// The longest key and the longest value pushed, so that limits are checked
    /// without walking the records again.
    #[must_use]
    pub fn max_lens(&self) -> (usize, usize) {
        (self.max_key, self.max_value)
    }

    /// Records in the frame.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Records per stream in this frame.
    pub fn stream_counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.streams
            .iter()
            .map(String::as_str)
            .zip(self.per_stream.iter().copied())
    }

    /// Bytes of encoded records.
    #[must_use]
    pub fn records_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    /// Whether a record with this key/value would need a new frame, given the
    /// raw size `target` at which frames are flushed (usually [`FRAME_TARGET`]).
    #[must_use]
    pub fn is_full_for(&self, stream: &str, extra: usize, target: usize) -> bool {
        self.count > 0
            && (self.records_len() + extra > target
                || (self.streams.len() >= usize::from(u16::MAX)
                    && !self.streams.iter().any(|s| s == stream)))
    }

    fn stream_idx(&mut self, stream: &str) -> u16 {
        if let Some(i) = self.streams.iter().rposition(|s| s == stream) {
            return i as u16;
        }
        self.streams.push(stream.to_string());
        self.per_stream.push(0);
        (self.streams.len() - 1) as u16
    }

    /// Appends one record. The caller has validated the stream name and the
    /// key length (≤ `u16::MAX`).
    pub fn push(&mut self, stream: &str, op: Op, key: &[u8], value: &[u8], event_time: i64) {
        let idx = self.stream_idx(stream);
        self.per_stream[usize::from(idx)] += 1;
        self.max_key = self.max_key.max(key.len());
        self.max_value = self.max_value.max(value.len());
        let b = &mut self.buf;
        b.reserve(RECORD_HEADER_LEN + key.len() + value.len());
        b.extend_from_slice(&idx.to_le_bytes());
        b.push(op as u8);
        b.extend_from_slice(&event_time.to_le_bytes());
        b.extend_from_slice(&(key.len() as u16).to_le_bytes());
        b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(value);
        self.count += 1;
    }

    /// Iterates the records pushed so far (for indexing and validation).
    pub fn records(&self) -> impl Iterator<Item = (&str, RawRecord<'_>)> {
        let body = &self.buf[HEADER_LEN..];
        RecordIter {
            buf: body,
            at: 0,
            left: self.count,
        }
        .map(|r| (self.streams[usize::from(r.stream_idx)].as_str(), r))
    }

    /// Closes the frame: appends the stream table, compresses if asked, fills the
    /// header and checksum. Afterwards [`FrameBuilder::encoded`] holds the bytes to
    /// write and [`FrameBuilder::records`] still iterates the raw records.
    pub fn finish(
        &mut self,
        kind: FrameKind,
        first_pos: u64,
        hlc: Hlc,
        zstd_level: Option<i32>,
    ) -> Result<()> {
        let records_len = (self.buf.len() - HEADER_LEN) as u32;
        self.buf
            .extend_from_slice(&(self.streams.len() as u16).to_le_bytes());
        for s in &self.streams {
            self.buf.push(s.len() as u8);
            self.buf.extend_from_slice(s.as_bytes());
        }
        let raw_len = self.buf.len() - HEADER_LEN;
        if raw_len > MAX_FRAME_PAYLOAD as usize {
            return Err(Error::InvalidInput(format!(
                "a single frame of {raw_len} bytes exceeds the limit of {MAX_FRAME_PAYLOAD}"
            )));
        }
        let mut flags = 0u8;
        self.compressed = None;
        if let Some(level) = zstd_level {
            if raw_len >= COMPRESS_MIN {
                let c = zstd::bulk::compress(&self.buf[HEADER_LEN..], level)
                    .map_err(|e| Error::InvalidInput(format!("zstd compression failed: {e}")))?;
                if c.len() < raw_len {
                    let mut nb = Vec::with_capacity(HEADER_LEN + c.len());
                    nb.resize(HEADER_LEN, 0);
                    nb.extend_from_slice(&c);
                    self.compressed = Some(nb);
                    flags |= FLAG_ZSTD;
                }
            }
        }
        let count = self.count;
        let out = self.compressed.as_mut().unwrap_or(&mut self.buf);
        let stored_len = (out.len() - HEADER_LEN) as u32;
        let h = &mut out[..HEADER_LEN];
        h[4..8].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        h[8..12].copy_from_slice(&stored_len.to_le_bytes());
        h[12..16].copy_from_slice(&(raw_len as u32).to_le_bytes());
        h[16..24].copy_from_slice(&first_pos.to_le_bytes());
        h[24..32].copy_from_slice(&hlc.0.to_le_bytes());
        h[32..36].copy_from_slice(&count.to_le_bytes());
        h[36..40].copy_from_slice(&records_len.to_le_bytes());
        h[40] = kind as u8;
        h[41] = flags;
        h[42..48].fill(0);
        let crc = crc32fast::hash(&out[4..]);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// The finished frame's bytes, as they go to disk.
    #[must_use]
    pub fn encoded(&self) -> &[u8] {
        self.compressed.as_deref().unwrap_or(&self.buf)
    }
}

/// Reads a frame header without checking the checksum: only for frames already
/// validated once (see `SealedSegment`), or written by this process.
#[must_use]
pub fn trusted_header(buf: &[u8]) -> Option<FrameHeader> {
    let h = buf.get(..HEADER_LEN)?;
    Some(FrameHeader {
        stored_len: u32_at(h, 8),
        raw_len: u32_at(h, 12),
        first_pos: u64_at(h, 16),
        hlc: Hlc(u64_at(h, 24)),
        count: u32_at(h, 32),
        records_len: u32_at(h, 36),
        kind: if h[40] == 1 {
            FrameKind::Data
        } else {
            FrameKind::Commit
        },
        flags: h[41],
    })
}

/// The whole raw payload (records, then the stream table) of a validated frame
/// at `off`, decompressed if needed, and its header. Bounds are checked, the
/// checksum is not: only for frames validated once already.
pub fn trusted_payload(seg: &Bytes, off: usize, path: &Path) -> Result<(FrameHeader, Bytes)> {
    let header = seg
        .get(off..)
        .and_then(trusted_header)
        .ok_or_else(|| Error::corrupt(path, off as u64, "frame header beyond end of segment"))?;
    let start = off + HEADER_LEN;
    let end = start + header.stored_len as usize;
    if end > seg.len() {
        return Err(Error::corrupt(
            path,
            off as u64,
            "frame beyond end of segment",
        ));
    }
    let payload = if header.flags & FLAG_ZSTD != 0 {
        Bytes::from(
            zstd::bulk::decompress(&seg[start..end], header.raw_len as usize)
                .map_err(|e| Error::corrupt(path, off as u64, format!("zstd: {e}")))?,
        )
    } else {
        seg.slice(start..end)
    };
    if (header.records_len as usize) > payload.len() {
        return Err(Error::corrupt(
            path,
            off as u64,
            "records length beyond payload",
        ));
    }
    Ok((header, payload))
}

/// The raw record area of a validated frame at `off` (decompressed if needed) and its header.
pub fn trusted_records(seg: &Bytes, off: usize, path: &Path) -> Result<(FrameHeader, Bytes)> {
    let (header, payload) = trusted_payload(seg, off, path)?;
    Ok((header, payload.slice(..header.records_len as usize)))
}

/// The raw record area of a validated, uncompressed frame at `off`, borrowed
/// from `seg`, with its header and the area's offset in `seg`; `Ok(None)` for a
/// compressed frame (use [`trusted_records`]). Saves the reference counting of
/// slicing when only a part of the area is wanted.
pub fn trusted_plain_records<'a>(
    seg: &'a [u8],
    off: usize,
    path: &Path,
) -> Result<Option<(FrameHeader, &'a [u8], usize)>> {
    let header = seg
        .get(off..)
        .and_then(trusted_header)
        .ok_or_else(|| Error::corrupt(path, off as u64, "frame header beyond end of segment"))?;
    if header.flags & FLAG_ZSTD != 0 {
        return Ok(None);
    }
    let start = off + HEADER_LEN;
    if header.records_len > header.stored_len {
        return Err(Error::corrupt(
            path,
            off as u64,
            "records length beyond payload",
        ));
    }
    let recs = seg
        .get(start..start + header.records_len as usize)
        .ok_or_else(|| Error::corrupt(path, off as u64, "frame beyond end of segment"))?;
    Ok(Some((header, recs, start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(level: Option<i32>) -> Vec<u8> {
        let mut b = FrameBuilder::new();
        for i in 0..300u32 {
            let stream = if i % 2 == 0 { "a" } else { "bb" };
            b.push(
                stream,
                Op::Put,
                format!("k{i}").as_bytes(),
                &[7u8; 40],
                i64::from(i) - 5,
            );
        }
        b.finish(FrameKind::Commit, 10, Hlc(99), level).unwrap();
        assert_eq!(b.records().count(), 300);
        b.encoded().to_vec()
    }

    #[test]
    fn round_trip_plain_and_zstd() {
        for level in [None, Some(3)] {
            let bytes = Bytes::from(sample(level));
            let f = Frame::decode(&bytes, 0, Path::new("x")).unwrap();
            assert_eq!(f.header.count, 300);
            assert_eq!(f.header.first_pos, 10);
            assert_eq!(f.header.kind, FrameKind::Commit);
            assert_eq!(level.is_some(), f.header.flags & FLAG_ZSTD != 0);
            let recs: Vec<_> = f.records().collect();
            assert_eq!(recs.len(), 300);
            assert_eq!(recs[3].key, b"k3");
            assert_eq!(f.streams[usize::from(recs[3].stream_idx)], "bb");
            assert_eq!(recs[0].event_time, -5);
            assert_eq!(recs[299].value, &[7u8; 40]);
        }
    }

    #[test]
    fn zeros_and_flips_never_pass() {
        assert!(matches!(
            check_frame(&[0u8; 200]),
            Err(FrameError::Invalid(_))
        ));
        let good = sample(None);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(check_frame(&bad).is_err(), "flip at {i} passed");
        }
        for cut in 0..good.len() {
            assert_eq!(
                check_frame(&good[..cut]),
                Err(FrameError::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn huge_length_is_rejected_before_use() {
        let mut good = sample(None);
        good[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(check_frame(&good), Err(FrameError::Invalid(_))));
    }
}
