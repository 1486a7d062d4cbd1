//! A sequential pass over one stream's records: the access path for queries that
//! touch most keys, where probing the key indexes key by key would cost a random
//! read per version.
//!
//! The pass walks frames in position order, skips frames whose event-time range
//! or stream table rules them out, and hands each record to the caller as
//! borrowed bytes: no allocation and no reference counting per record.

use super::frame::{parse_record, trusted_payload, RawRecord};
use std::path::Path;

use super::index::{FrameMeta, VersionRef};
use super::view::View;
use crate::{Error, Result};

/// Which records a sweep hands over: one stream, event times in `lo..=hi`,
/// positions in `start..end`.
#[derive(Debug, Clone, Copy)]
pub struct SweepRange<'a> {
    /// The stream.
    pub stream: &'a str,
    /// Smallest event time of interest.
    pub lo: i64,
    /// Largest event time of interest.
    pub hi: i64,
    /// First position of interest.
    pub start: u64,
    /// One past the last position of interest (capped at the view's end).
    pub end: u64,
}

impl<'a> SweepRange<'a> {
    /// Every record of `stream` at positions `start..end`, whatever its event
    /// time.
    #[must_use]
    pub fn positions(stream: &'a str, start: u64, end: u64) -> SweepRange<'a> {
        SweepRange {
            stream,
            lo: i64::MIN,
            hi: i64::MAX,
            start,
            end,
        }
    }
}

/// How far ahead of the record it parses a walk over a frame's records starts
/// loading the frame's bytes. On the benchmark machine the hardware's own
/// prefetching leaves a record-by-record walk waiting on memory: a bare sweep
/// of 2M records (278 MB of log, one thread, `ONLY=floor
/// examples/profile_window`) took 35 ms with none, 25 ms at 512 bytes, 22 ms
/// at 1 KiB, 18 ms at 2 KiB and 16 ms from 4 KiB to 16 KiB.
const SWEEP_AHEAD: usize = 8192;

/// Index of `stream` in a frame's raw stream table, `None` if it is absent.
fn stream_index(table: &[u8], stream: &str) -> Option<u16> {
    let n = u16::from_le_bytes([*table.first()?, *table.get(1)?]);
    let mut at = 2usize;
    for i in 0..n {
        let len = usize::from(*table.get(at)?);
        if table.get(at + 1..at + 1 + len)? == stream.as_bytes() {
            return Some(i);
        }
        at += 1 + len;
    }
    None
}

impl View {
    /// Calls `f(record, version)` for every record of `range`, in position order.
    /// `version` locates the record like a key-index entry does, so callers can
    /// mix the two access paths. Frames are validated (checksum and structure)
    /// before their bytes are trusted, as every other read does.
    pub fn sweep(
        &self,
        range: SweepRange<'_>,
        mut f: impl FnMut(&RawRecord<'_>, VersionRef),
    ) -> Result<()> {
        self.sweep_while(range, |r, v| {
            f(r, v);
            true
        })
    }

    /// [`View::sweep`] that stops as soon as `f` returns `false`.
    pub fn sweep_while(
        &self,
        range: SweepRange<'_>,
        mut f: impl FnMut(&RawRecord<'_>, VersionRef) -> bool,
    ) -> Result<()> {
        self.sweep_frames(range, |frame| frame.each(&mut f))
    }

    /// [`View::sweep_while`] a frame at a time: `f` receives each validated
    /// frame that may hold records of `range`, in position order, and walks
    /// its records with [`FrameRecords::each`] (so a caller can keep a few of
    /// a frame's records at hand at once); `false` ends the sweep.
    pub(crate) fn sweep_frames(
        &self,
        range: SweepRange<'_>,
        mut f: impl FnMut(FrameRecords<'_>) -> Result<bool>,
    ) -> Result<()> {
        let end = range.end.min(self.end_position());
        for s in 0..self.seg_count() {
            let seg = self.seg(s);
            let frames = seg.frames()?;
            let first = frames.partition_point(|f| f.end_pos() <= range.start);
            for (i, meta) in frames.iter().enumerate().skip(first) {
                if meta.first_pos >= end {
                    return Ok(());
                }
                if meta.count == 0 || meta.max_et < range.lo || meta.min_et > range.hi {
                    continue;
                }
                seg.check_frame(i)?;
                // The records area, then the stream table (decompressed once).
                let (header, payload) =
                    trusted_payload(seg.bytes(), meta.offset as usize, seg.path())?;
                let split = (header.records_len as usize).min(payload.len());
                let (recs, table) = payload.split_at(split);
                let Some(want) = stream_index(table, range.stream) else {
                    continue;
                };
                let frame = FrameRecords {
                    recs,
                    meta,
                    count: header.count,
                    want,
                    range: &range,
                    end,
                    path: seg.path(),
                };
                if !f(frame)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// One validated frame's records area, with what selects its records.
pub(crate) struct FrameRecords<'a> {
    recs: &'a [u8],
    meta: &'a FrameMeta,
    count: u32,
    /// The stream's index in the frame's stream table.
    want: u16,
    range: &'a SweepRange<'a>,
    /// One past the last position of interest, capped at the view's end.
    end: u64,
    path: &'a Path,
}

impl<'a> FrameRecords<'a> {
    /// Calls `f` with each record of the range in this frame, in position
    /// order. `Ok(false)` (when `f` returns `false`, or the range's end is
    /// reached) means the sweep is over.
    pub(crate) fn each(
        &self,
        mut f: impl FnMut(&RawRecord<'a>, VersionRef) -> bool,
    ) -> Result<bool> {
        let (meta, range) = (self.meta, self.range);
        let mut at = 0usize;
        for k in 0..self.count {
            let Some(r) = parse_record(self.recs, at) else {
                return Err(Error::corrupt(
                    self.path,
                    meta.offset,
                    "record does not parse",
                ));
            };
            at = r.value_off + r.value.len();
            if let Some(b) = self.recs.get(at + SWEEP_AHEAD) {
                crate::hint::prefetch(b);
            }
            let position = meta.first_pos + u64::from(k);
            if position >= self.end {
                return Ok(false);
            }
            if r.stream_idx != self.want
                || position < range.start
                || r.event_time < range.lo
                || r.event_time > range.hi
            {
                continue;
            }
            let version = VersionRef {
                event_time: r.event_time,
                position,
                frame_off: meta.offset,
                rec_off: r.offset as u32,
                op: r.op,
            };
            if !f(&r, version) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::stream_index;

    #[test]
    fn stream_index_reads_the_raw_table() {
        let mut t = vec![3, 0];
        for name in ["a", "prices", "b"] {
            t.push(name.len() as u8);
            t.extend_from_slice(name.as_bytes());
        }
        assert_eq!(stream_index(&t, "prices"), Some(1));
        assert_eq!(stream_index(&t, "b"), Some(2));
        assert_eq!(stream_index(&t, "c"), None);
        assert_eq!(stream_index(&t[..5], "prices"), None, "truncated");
        assert_eq!(stream_index(&[], "a"), None);
    }
}
