//! A read view: a snapshot of the committed log that never changes and never
//! blocks the writer. Scans by position, stream and event time; key versions.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::frame::parse_record;
use super::frame::{decode_stream_table, trusted_payload, trusted_plain_records, trusted_records};
use super::index::{key_eq, stable_hash, FrameMeta, KeyIndexFile, KeyProbe, VersionRef};
use super::keytable::KeyTable;
use super::log::{LogState, RecoveryReport};
use super::record::{Hlc, Op, Record};
use super::segment::SealedSegment;
use crate::{Error, Result};

/// A consistent, immutable view of the log up to a committed position.
#[derive(Debug, Clone)]
pub struct View {
    state: Arc<LogState>,
    end_pos: u64,
    active_bytes: Bytes,
    active_nframes: usize,
    active_frames: std::sync::OnceLock<Arc<[FrameMeta]>>,
    /// Key cursors for walking whole indexes once (see [`View::bulk`]).
    bulk: bool,
}

/// The key indexes of the segments below position `end` that are already
/// loaded, merged tiers first (`merged` and `rest` as
/// [`LogState::key_sources`] gives them): what lookup hints may read without
/// loading or validating an index.
fn loaded_key_indexes<'a>(
    merged: &'a [&'a KeyIndexFile],
    rest: &'a [Arc<SealedSegment>],
    end: u64,
) -> impl Iterator<Item = &'a KeyIndexFile> {
    merged.iter().copied().chain(
        rest.iter()
            .filter(move |s| s.base < end)
            .filter_map(|s| s.keys_if_loaded()),
    )
}

/// How many key index files [`View::newest_visible`] may start lookups in
/// together (merged tiers first, then segments); past them, files are
/// probed one after another. A log has a few merged tiers and fewer than
/// [`super::merged::MERGE_AFTER`] segments outside them, unless merging is
/// off.
const MAX_OVERLAPPED: usize = 16;

/// Where [`View::locate_value`] found a record's key and value.
enum ValueAt {
    /// These bytes of the mapped segment (an uncompressed frame).
    Mapped {
        key: std::ops::Range<usize>,
        value: std::ops::Range<usize>,
    },
    /// Decompressed from its frame.
    Owned { key: Bytes, value: Bytes },
}

/// [`View::prefetch_record`] of `v` in `bytes`, its segment's.
fn prefetch_record_in(bytes: &Bytes, v: &VersionRef) {
    let frame = v.frame_off as usize;
    let record = frame
        .saturating_add(crate::storage::frame::HEADER_LEN)
        .saturating_add(v.rec_off as usize);
    for at in [frame, record, record.saturating_add(64)] {
        if let Some(b) = bytes.get(at) {
            crate::hint::prefetch(b);
        }
    }
}

/// One segment as seen by a view.
#[derive(Clone, Copy)]
pub(super) enum Seg<'a> {
    Sealed(&'a SealedSegment),
    Active(&'a View),
}

impl<'a> Seg<'a> {
    pub(super) fn path(self) -> &'a Path {
        match self {
            Seg::Sealed(s) => &s.path,
            Seg::Active(v) => &v.state.active.path,
        }
    }

    pub(super) fn bytes(self) -> &'a Bytes {
        match self {
            Seg::Sealed(s) => &s.bytes,
            Seg::Active(v) => &v.active_bytes,
        }
    }

    /// The bytes a point read reads: a sealed segment's
    /// [`SealedSegment::point`] mapping, not read ahead.
    pub(super) fn point_bytes(self) -> &'a Bytes {
        match self {
            Seg::Sealed(s) => &s.point,
            Seg::Active(v) => &v.active_bytes,
        }
    }

    pub(super) fn frames(self) -> Result<&'a [FrameMeta]> {
        match self {
            Seg::Sealed(s) => s.frames(),
            Seg::Active(v) => Ok(v.active_frames()),
        }
    }

    /// Validates frame `i` (checksum and structure) the first time it is read.
    /// Active frames were validated when written or recovered.
    pub(super) fn check_frame(self, i: usize) -> Result<()> {
        match self {
            Seg::Sealed(s) => s.check_frame_once(i),
            Seg::Active(_) => Ok(()),
        }
    }

    /// The raw records of frame `i`, validated, and its stream table: one
    /// read (and at most one decompression) of the frame's payload.
    fn records(self, i: usize) -> Result<(FrameMeta, Bytes, Vec<Arc<str>>)> {
        let meta = self.frames()?[i];
        self.check_frame(i)?;
        let off = meta.offset as usize;
        let (header, payload) = trusted_payload(self.bytes(), off, self.path())?;
        let split = header.records_len as usize;
        let streams = decode_stream_table(&payload[split..])
            .map_err(|r| Error::corrupt(self.path(), meta.offset, r))?
            .into_iter()
            .map(Arc::from)
            .collect();
        Ok((meta, payload.slice(..split), streams))
    }
}

impl View {
    /// Drops the process's mapping of the pages of the key indexes this view
    /// can read; they stay in the page cache (see
    /// [`LogState::release_index_pages`]). Returns the length advised.
    pub fn release_index_pages(&self) -> usize {
        self.state.release_index_pages()
    }

    /// Takes a view of everything committed in `state` now.
    pub fn new(state: Arc<LogState>) -> Result<View> {
        let (end_pos, end_off, n) = {
            let inner = state.active.read_inner();
            let n = inner
                .index
                .frames
                .partition_point(|f| f.end_pos() <= inner.end_pos && f.offset < inner.end_off);
            (inner.end_pos, inner.end_off, n)
        };
        let active_bytes = state.active.bytes_upto(end_off)?;
        Ok(View {
            state,
            end_pos,
            active_bytes,
            active_nframes: n,
            active_frames: std::sync::OnceLock::new(),
            bulk: false,
        })
    }

    /// This view, with [`View::keys`] walking the sealed key indexes through
    /// bulk cursors ([`super::index::KeyIndexFile::bulk_cursor`]): for work
    /// that reads whole indexes once (checkpoints, compaction), which then
    /// keeps a few windows per index resident instead of large pieces of
    /// every index. Answers are the same; a query walking a small part of
    /// the indexes is faster without.
    #[must_use]
    pub fn bulk(mut self) -> View {
        self.bulk = true;
        self
    }

    /// The active segment's committed frames, copied on first use only (scans
    /// need them; lookups do not), so taking a view costs O(1).
    fn active_frames(&self) -> &[FrameMeta] {
        self.active_frames.get_or_init(|| {
            let inner = self.state.active.read_inner();
            Arc::from(&inner.index.frames[..self.active_nframes])
        })
    }

    /// One past the last visible position (the number of records ever committed).
    #[must_use]
    pub fn end_position(&self) -> u64 {
        self.end_pos
    }

    fn segs(&self) -> impl DoubleEndedIterator<Item = Seg<'_>> + '_ {
        self.state
            .sealed
            .iter()
            .map(|s| Seg::Sealed(s))
            .chain(std::iter::once(Seg::Active(self)))
    }

    pub(super) fn seg_count(&self) -> usize {
        self.state.sealed.len() + 1
    }

    pub(super) fn seg(&self, i: usize) -> Seg<'_> {
        if i < self.state.sealed.len() {
            Seg::Sealed(&self.state.sealed[i])
        } else {
            Seg::Active(self)
        }
    }

    fn seg_index_for(&self, pos: u64) -> usize {
        let sealed = &self.state.sealed;
        if pos >= self.state.active.base {
            return sealed.len();
        }
        sealed.partition_point(|s| s.base <= pos).saturating_sub(1)
    }

    /// Sealed segments (for stats and verify).
    #[must_use]
    pub fn sealed_segments(&self) -> &[Arc<SealedSegment>] {
        &self.state.sealed
    }

    /// Path and visible byte length of the active segment.
    #[must_use]
    pub fn active_segment(&self) -> (&Path, u64, &[FrameMeta]) {
        (
            &self.state.active.path,
            self.active_bytes.len() as u64,
            self.active_frames(),
        )
    }

    /// Reads the record at `pos`: its frame is found by binary search, and
    /// the record in it from the frame's marks ([`super::segment::RecordMarks`]),
    /// made the first time the frame is read this way.
    pub fn read(&self, pos: u64) -> Result<Record> {
        if pos >= self.end_pos {
            return Err(Error::PositionNotWritten {
                requested: pos,
                next: self.end_pos,
            });
        }
        let seg = self.seg(self.seg_index_for(pos));
        let frames = seg.frames()?;
        let i = frames.partition_point(|f| f.end_pos() <= pos);
        if frames.get(i).is_none_or(|f| f.first_pos > pos) {
            return Err(Error::PositionCompacted(pos));
        }
        let (meta, recs, streams) = seg.records(i)?;
        let corrupt = |why: &str| Error::corrupt(seg.path(), meta.offset, why);
        let index = pos - meta.first_pos;
        let at = match seg {
            Seg::Sealed(s) => s.record_offset(i, &recs, index as usize)?,
            Seg::Active(_) => self.state.active.record_offset(
                meta.offset,
                &recs,
                meta.count as usize,
                index as usize,
            )?,
        };
        let r = parse_record(&recs, at).ok_or_else(|| corrupt("record does not parse"))?;
        let stream = streams
            .get(usize::from(r.stream_idx))
            .cloned()
            .ok_or_else(|| corrupt("stream index beyond the frame's table"))?;
        let key_off = r.offset + super::frame::RECORD_HEADER_LEN;
        Ok(Record {
            stream,
            key: recs.slice(key_off..key_off + r.key.len()),
            op: r.op,
            value: recs.slice(r.value_off..r.value_off + r.value.len()),
            event_time: r.event_time,
            position: pos,
            recorded_at: Hlc(meta.hlc.0 + index),
        })
    }

    /// Iterates records from position `from` on, optionally of one stream only.
    #[must_use]
    pub fn scan(&self, from: u64, stream: Option<&str>) -> Scan {
        Scan::new(
            self.clone(),
            from,
            stream.map(Arc::from),
            i64::MIN,
            i64::MAX,
        )
    }

    /// Iterates a stream's records with `lo <= event_time <= hi`, in position order,
    /// skipping frames whose event-time range does not overlap.
    #[must_use]
    pub fn scan_time(&self, stream: &str, lo: i64, hi: i64) -> Scan {
        Scan::new(self.clone(), 0, Some(Arc::from(stream)), lo, hi)
    }

    /// [`View::scan_time`] over the positions below `until` only.
    #[must_use]
    pub fn scan_time_below(&self, stream: &str, lo: i64, hi: i64, until: u64) -> Scan {
        let mut scan = Scan::new(self.clone(), 0, Some(Arc::from(stream)), lo, hi);
        scan.until = scan.until.min(until);
        scan
    }

    /// Every visible version of `key` in `stream`, sorted by `(event_time, position)`.
    /// Uses the key indexes: cost grows with the key's versions and the number of
    /// segments, not with the log.
    pub fn versions(&self, stream: &str, key: &[u8]) -> Result<Vec<VersionRef>> {
        let mut out = Vec::new();
        self.with_key_sources(|merged, rest| {
            out.clear();
            for m in merged {
                m.versions(stream, key, &mut out)?;
            }
            out.retain(|v| v.position < self.end_pos);
            for s in rest {
                s.keys()?.versions(stream, key, &mut out)?;
            }
            Ok(())
        })?;
        {
            let inner = self.state.active.read_inner();
            if let Some(t) = inner.index.stream(stream) {
                t.versions_into(key, self.end_pos, &mut out);
            }
        }
        out.sort_unstable_by_key(VersionRef::order);
        Ok(out)
    }

    /// Runs `f` over the log's key sources ([`LogState::key_sources`]): the
    /// merged indexes, then the sealed segments they do not cover. Key
    /// index files are checked as they are read. If `f` fails and some file
    /// has been found damaged since it started (a read that fails on damage
    /// marks its file first, see [`super::chunks::damage_epoch`]), the
    /// damaged file is no longer used (a merged index gives way to the
    /// segments' own, a segment's own to one rebuilt from the segment) and
    /// `f` runs again. Each file is found damaged once, so the runs are
    /// bounded by the number of files.
    fn with_key_sources<T>(
        &self,
        mut f: impl FnMut(&[&super::index::KeyIndexFile], &[Arc<SealedSegment>]) -> Result<T>,
    ) -> Result<T> {
        let mut retries = self.state.merged.len() + self.state.sealed.len();
        loop {
            // Merged indexes already damaged are left out here, and
            // segments' own are replaced by `keys()`.
            let epoch = super::chunks::damage_epoch();
            let (merged, rest) = self.state.key_sources();
            match f(&merged, rest) {
                Err(e) if retries > 0 && super::chunks::damage_epoch() != epoch => {
                    retries -= 1;
                    log::warn!("a key index is damaged, reading around it: {e}");
                }
                r => return r,
            }
        }
    }

    /// Starts loading where [`View::versions`] of `key` will look first in
    /// each loaded key index. Only a hint: it reads nothing, checks nothing,
    /// and loads no index.
    pub(crate) fn prefetch_key(&self, stream: &str, key: &[u8]) {
        let (merged, rest) = self.state.key_sources();
        let hash = stable_hash(key);
        for f in loaded_key_indexes(&merged, rest, self.end_pos) {
            if let Some(p) = f.probe(stream, hash) {
                p.prefetch(0);
            }
        }
    }

    /// The newest version of `key` visible as of `as_of` below position `end` (by
    /// `(event_time, position)`), or `None` if it has none. One probe per key
    /// index, newest segment first, skipping a segment whose newest event time
    /// is below the best version found so far.
    pub fn newest_visible(
        &self,
        stream: &str,
        key: &[u8],
        as_of: i64,
        end: u64,
    ) -> Result<Option<VersionRef>> {
        let end = end.min(self.end_pos);
        self.with_key_sources(|merged, rest| {
            self.newest_visible_in(merged, rest, stream, key, as_of, end)
        })
    }

    /// [`View::newest_visible`] over these key sources.
    fn newest_visible_in(
        &self,
        merged: &[&super::index::KeyIndexFile],
        rest: &[Arc<SealedSegment>],
        stream: &str,
        key: &[u8],
        as_of: i64,
        end: u64,
    ) -> Result<Option<VersionRef>> {
        // Each file's hash of the key, and the active table's, computed once.
        let hash = stable_hash(key);
        let rest = &rest[..rest.partition_point(|s| s.base < end)];
        // The lookup in each key index that will surely be read, its section
        // found once, started below a stage at a time: the merged tiers
        // newest first (slots `0..m`), then the segments outside them newest
        // first (slot `m + i` for the `i`-th, the order they are read in
        // below). A segment's lookup is not started when all its events
        // precede `as_of` and a newer segment's (or the active one's) span
        // it: that newer one almost always holds a version that decides, and
        // this one is then skipped. `None`: not started (the index is not
        // loaded yet, or has no such stream): the file is read below through
        // `keys`. Past `MAX_OVERLAPPED` files, none is started.
        let mut probes: [Option<KeyProbe<'_>>; MAX_OVERLAPPED] = [None; MAX_OVERLAPPED];
        let m = merged.len().min(MAX_OVERLAPPED);
        let mut started = 0;
        for (slot, f) in probes.iter_mut().zip(merged.iter().rev()) {
            *slot = f.probe(stream, hash);
            started += usize::from(slot.is_some());
        }
        // The active segment, newest of all, spans `as_of` too when it has
        // events on both sides of it.
        let inner = self.state.active.read_inner();
        let active_range = inner.index.event_time_range();
        let mut spanned = active_range.is_some_and(|(lo, hi)| lo <= as_of && as_of <= hi);
        for (slot, s) in probes[m..].iter_mut().zip(rest.iter().rev()) {
            let (lo, hi) = s.event_time_range()?;
            let spans = lo <= as_of && as_of <= hi;
            if lo <= as_of && (spans || !spanned) {
                *slot = s.keys_if_loaded().and_then(|f| f.probe(stream, hash));
                started += usize::from(slot.is_some());
            }
            spanned |= spans;
        }
        let probes = &probes[..(m + rest.len()).min(MAX_OVERLAPPED)];
        let mut best: Option<VersionRef> = {
            // Released once the active table is read.
            let inner = inner;
            // The active table is read unless every record of the active
            // segment is after `as_of`, or the key has none as old. Most
            // lookups ask about a time before the segment's first event,
            // when only its late events can be visible: a filter of their
            // keys rules the table out for most keys, its hash table unread.
            let active = inner
                .index
                .stream(stream)
                .filter(|_| active_range.is_some_and(|(lo, _)| lo <= as_of))
                .map(|t| (t, t.hash32(key)))
                .filter(|&(t, h)| t.may_have_visible(h, as_of));
            // The lookups that will be read start together, a stage at a
            // time (see `KeyProbe::prefetch`), so the cache misses of one
            // overlap those of the others, and the probes below find their
            // lines loaded or on their way.
            if started + usize::from(active.is_some()) > 1 {
                for stage in 0..3 {
                    match (active, stage) {
                        (Some((t, h)), 0) => t.bucket_hint(h),
                        (Some((t, h)), 1) => {
                            t.locate_hashed(h);
                        }
                        _ => {}
                    }
                    for p in probes.iter().flatten() {
                        p.prefetch(stage);
                    }
                }
            }
            active.and_then(|(t, h)| t.newest_visible_hashed(key, h, as_of, end))
        };
        let consider = |best: &mut Option<VersionRef>, v: Option<VersionRef>| {
            if let Some(v) = v {
                if best.is_none_or(|b| v.order() > b.order()) {
                    *best = Some(v);
                }
            }
        };
        for (i, s) in rest.iter().rev().enumerate() {
            let (lo, hi) = s.event_time_range()?;
            if lo > as_of || best.is_some_and(|b| b.event_time > hi) {
                continue; // nothing in it is visible, or can be newer
            }
            let found = match probes.get(m + i) {
                Some(Some(p)) => p.newest_visible(key, as_of, end)?,
                _ => s
                    .keys()?
                    .newest_visible_hashed(stream, key, hash, as_of, end)?,
            };
            consider(&mut best, found);
        }
        for (j, tier) in merged.iter().rev().enumerate() {
            let found = match probes.get(j) {
                Some(Some(p)) => p.newest_visible(key, as_of, end)?,
                _ => tier.newest_visible_hashed(stream, key, hash, as_of, end)?,
            };
            consider(&mut best, found);
        }
        Ok(best)
    }

    /// Starts loading into cache what [`View::value`] of `v` will read first:
    /// the frame's header and the record (for an uncompressed frame), so a
    /// reader that knows its next versions ahead can overlap their cache
    /// misses. Only a hint: it reads nothing and checks nothing.
    pub(crate) fn prefetch_record(&self, v: &VersionRef) {
        prefetch_record_in(self.seg(self.seg_index_for(v.position)).bytes(), v);
    }

    /// The value of the record a version points to (zero-copy when uncompressed).
    pub fn value(&self, v: &VersionRef) -> Result<Bytes> {
        self.value_and_stamp(v).map(|(value, _)| value)
    }

    /// The value and the recorded-at stamp of the record a version points to,
    /// read directly at its frame and payload offsets.
    pub fn value_and_stamp(&self, v: &VersionRef) -> Result<(Bytes, Hlc)> {
        let (bytes, stamp, at) = self.locate_value(v)?;
        let value = match at {
            // Uncompressed frames (the common case) slice the value straight
            // out of the mapped segment: one reference-count increment.
            ValueAt::Mapped { value, .. } => bytes.slice(value),
            ValueAt::Owned { value, .. } => value,
        };
        Ok((value, stamp))
    }

    /// The key and the value of the record a version of `key` points to,
    /// both sliced from the mapped segment when its frame is uncompressed
    /// (no copy of the key). An error if the record holds another key: the
    /// index that gave `v` is then wrong.
    pub(crate) fn key_and_value(&self, v: &VersionRef, key: &[u8]) -> Result<(Bytes, Bytes)> {
        let seg = self.seg(self.seg_index_for(v.position));
        // The frame's header and the record start loading together, and
        // while the frame is found in the frame index.
        prefetch_record_in(seg.point_bytes(), v);
        let (bytes, _, at) = self.locate_value_in(seg, v, true)?;
        let (got, value) = match at {
            ValueAt::Mapped { key, value } => (bytes.slice(key), bytes.slice(value)),
            ValueAt::Owned { key, value } => (key, value),
        };
        if !key_eq(&got, key) {
            return Err(Error::corrupt(
                seg.path(),
                v.frame_off,
                format!(
                    "the record at payload offset {} (position {}) holds a different key \
                     than the key index that points at it",
                    v.rec_off, v.position
                ),
            ));
        }
        Ok((got, value))
    }

    /// Calls `f` with the value of the record a version points to, borrowed
    /// from the mapped segment when its frame is uncompressed: for readers that
    /// only look at a value, this saves [`View::value`]'s reference counting.
    pub(crate) fn with_value<R>(&self, v: &VersionRef, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let (bytes, _, at) = self.locate_value(v)?;
        Ok(match at {
            ValueAt::Mapped { value, .. } => f(&bytes[value]),
            ValueAt::Owned { value, .. } => f(&value),
        })
    }

    /// Finds, after validating its frame, the value of the record `v` points
    /// to: the segment's bytes, the record's stamp and where the value lies.
    fn locate_value(&self, v: &VersionRef) -> Result<(&Bytes, Hlc, ValueAt)> {
        self.locate_value_in(self.seg(self.seg_index_for(v.position)), v, false)
    }

    /// [`View::locate_value`] in `seg`, the segment holding `v`, read
    /// through its [`point`](Seg::point_bytes) mapping when `point` (a
    /// lookup's one record, which kernel read-ahead would not serve).
    fn locate_value_in<'a>(
        &self,
        seg: Seg<'a>,
        v: &VersionRef,
        point: bool,
    ) -> Result<(&'a Bytes, Hlc, ValueAt)> {
        if let Seg::Sealed(s) = seg {
            let Some(i) = s.frame_at(v.frame_off)? else {
                return Err(Error::corrupt(
                    s.path.with_extension("kidx"),
                    0,
                    "version points at no frame",
                ));
            };
            s.check_frame_in(i, point)?;
        }
        let bytes = if point {
            seg.point_bytes()
        } else {
            seg.bytes()
        };
        let no_record = || {
            Error::corrupt(
                seg.path(),
                v.frame_off,
                format!("no record at payload offset {}", v.rec_off),
            )
        };
        let (header, at) = match trusted_plain_records(bytes, v.frame_off as usize, seg.path())? {
            Some((header, recs, start)) => {
                let r = parse_record(recs, v.rec_off as usize).ok_or_else(no_record)?;
                let at = start + r.value_off;
                let key = at - r.key.len()..at;
                (
                    header,
                    ValueAt::Mapped {
                        key,
                        value: at..at + r.value.len(),
                    },
                )
            }
            None => {
                let (header, recs) = trusted_records(bytes, v.frame_off as usize, seg.path())?;
                let r = parse_record(&recs, v.rec_off as usize).ok_or_else(no_record)?;
                let key = recs.slice(r.value_off - r.key.len()..r.value_off);
                let value = recs.slice(r.value_off..r.value_off + r.value.len());
                (header, ValueAt::Owned { key, value })
            }
        };
        let index = v
            .position
            .checked_sub(header.first_pos)
            .filter(|&i| i < u64::from(header.count))
            .ok_or_else(|| {
                Error::corrupt(
                    seg.path(),
                    v.frame_off,
                    format!("position {} is not in this frame", v.position),
                )
            })?;
        Ok((bytes, Hlc(header.hlc.0 + index), at))
    }

    /// Stream names with at least one visible record.
    pub fn streams(&self) -> Result<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        let (merged, rest) = self.state.key_sources();
        for m in merged {
            names.extend(m.stream_names().map(str::to_string));
        }
        for s in rest {
            names.extend(s.keys()?.stream_names().map(str::to_string));
        }
        let inner = self.state.active.read_inner();
        for (name, keys) in inner.index.streams() {
            if keys.first_position().is_some_and(|p| p < self.end_pos) {
                names.insert(name.to_string());
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Records and distinct keys of `stream` (keys counted once per segment they
    /// appear in is avoided by a merge over the key indexes).
    pub fn stream_counts(&self, stream: &str) -> Result<(u64, u64)> {
        let mut cursor = self.keys(stream)?;
        let mut buf = Vec::new();
        let (mut records, mut keys) = (0u64, 0u64);
        while cursor.next_key(&mut buf).is_some() {
            if !buf.is_empty() {
                keys += 1;
                records += buf.len() as u64;
            }
        }
        Ok((records, keys))
    }

    /// Whether `stream` has any visible record.
    pub fn has_stream(&self, stream: &str) -> Result<bool> {
        // The active segment first: its index is in memory, where a sealed
        // segment's key index file must be mapped and its trailer checked.
        let active = {
            let inner = self.state.active.read_inner();
            inner
                .index
                .stream(stream)
                .and_then(KeyTable::first_position)
                .is_some_and(|p| p < self.end_pos)
        };
        if active {
            return Ok(true);
        }
        // Then the merged indexes, whose directories say it without
        // reading (or checking) their sections, then the segments they do
        // not cover.
        let (merged, rest) = self.state.key_sources();
        if merged.iter().any(|m| m.key_count(stream) > 0) {
            return Ok(true);
        }
        for s in rest {
            if s.keys()?.key_count(stream) > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every key of `stream` in byte order with its visible versions sorted by
    /// `(event_time, position)`: a merge of the segments' key indexes.
    pub fn keys(&self, stream: &str) -> Result<KeyCursor> {
        self.keys_as_of(stream, i64::MAX)
    }

    /// Like [`View::keys`], but the active segment contributes only versions
    /// with `event_time <= as_of` (sealed segments' key indexes are searched
    /// as they are, so they are not filtered): enough for [`KeyCursor::next_visible`] as of
    /// `as_of` or earlier, and much cheaper for a past time.
    pub fn keys_as_of(&self, stream: &str, as_of: i64) -> Result<KeyCursor> {
        let cursor = |f: &super::index::KeyIndexFile| {
            if self.bulk {
                f.bulk_cursor(stream)
            } else {
                f.cursor(stream)
            }
        };
        // Cursors check each index whole before they read it.
        let sealed = self.with_key_sources(|merged, rest| {
            let mut sealed = Vec::new();
            for m in merged {
                sealed.extend(cursor(m)?);
            }
            for s in rest {
                sealed.extend(cursor(s.keys()?)?);
            }
            Ok(sealed)
        })?;
        let sorted = {
            let inner = self.state.active.read_inner();
            inner
                .index
                .stream(stream)
                .map(|t| t.copy_visible(as_of, self.end_pos))
                .unwrap_or_default()
        };
        // Sorted after the lock is released: the writer waits only for the copy.
        let mut sorted = sorted;
        sorted.sort();
        Ok(KeyCursor {
            sealed,
            active_keys: Bytes::from(sorted.keys),
            active: sorted.ranges,
            active_versions: sorted.versions,
            next_active: 0,
            end_pos: self.end_pos,
        })
    }

    /// The last position recorded at or before `at`, or `None` if nothing was.
    pub fn position_at(&self, at: Hlc) -> Result<Option<u64>> {
        // Walk segments from the newest; frames are in hlc order.
        for seg in self.segs().rev() {
            let frames = seg.frames()?;
            let i = frames.partition_point(|f| f.hlc <= at);
            if i == 0 {
                continue;
            }
            let f = frames[i - 1];
            if f.count == 0 {
                return Ok(f.first_pos.checked_sub(1));
            }
            let within = (at.0 - f.hlc.0).min(u64::from(f.count) - 1);
            return Ok(Some(
                (f.first_pos + within).min(self.end_pos.saturating_sub(1)),
            ));
        }
        Ok(None)
    }

    /// The largest event time of any visible record (from the frame indexes).
    pub fn max_event_time(&self) -> Result<Option<i64>> {
        let mut best: Option<i64> = None;
        for seg in self.segs() {
            for f in seg
                .frames()?
                .iter()
                .filter(|f| f.count > 0 && f.first_pos < self.end_pos)
            {
                best = Some(best.map_or(f.max_et, |b| b.max(f.max_et)));
            }
        }
        Ok(best)
    }

    /// What recovery found at open (the view's log).
    #[must_use]
    pub fn state(&self) -> &LogState {
        &self.state
    }
}

/// Report of recovery, re-exported for the database handle.
pub type Recovery = RecoveryReport;

/// Merged, key-ordered iteration over one stream's keys across all segments.
#[derive(Debug)]
pub struct KeyCursor {
    sealed: Vec<super::index::KeyFileCursor>,
    active_keys: Bytes,
    active: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    active_versions: Vec<VersionRef>,
    next_active: usize,
    end_pos: u64,
}

impl KeyCursor {
    /// The smallest key any source is at (zero-copy, but from a bulk view's
    /// sealed segments), without moving.
    fn smallest_key(&self) -> Option<Bytes> {
        let active = self
            .active
            .get(self.next_active)
            .map(|(k, _)| &self.active_keys[k.clone()]);
        let mut min: Option<(&[u8], Option<usize>)> = active.map(|k| (k, None));
        for (i, c) in self.sealed.iter().enumerate() {
            if let Some(k) = c.key() {
                if min.is_none_or(|(m, _)| k < m) {
                    min = Some((k, Some(i)));
                }
            }
        }
        Some(match min?.1 {
            None => self
                .active_keys
                .slice(self.active[self.next_active].0.clone()),
            Some(i) => self.sealed[i].key_bytes(),
        })
    }

    /// The next key that has a version visible as of `as_of` (below the view's end
    /// and `end`), with the versions needed to fold its row into `out`: only the
    /// newest visible version when that is a put or delete, else every visible
    /// version, sorted by `(event_time, position)`. Keys with no visible version
    /// are skipped. Sealed segments answer by binary search in their key index.
    pub fn next_visible(
        &mut self,
        as_of: i64,
        end: u64,
        out: &mut Vec<VersionRef>,
    ) -> Option<Bytes> {
        let end = end.min(self.end_pos);
        loop {
            out.clear();
            let key = self.smallest_key()?;
            let visible = |v: &VersionRef| v.event_time <= as_of && v.position < end;
            let mut best: Option<VersionRef> = None;
            let active_here = self
                .active
                .get(self.next_active)
                .is_some_and(|(k, _)| self.active_keys[k.clone()] == key[..]);
            if active_here {
                let vs = &self.active_versions[self.active[self.next_active].1.clone()];
                best = vs
                    .iter()
                    .copied()
                    .filter(visible)
                    .max_by_key(VersionRef::order);
            }
            for c in &mut self.sealed {
                if c.key() == Some(&key[..]) {
                    if let Some(b) = c.best(as_of, end) {
                        if best.is_none_or(|x| b.order() > x.order()) {
                            best = Some(b);
                        }
                    }
                }
            }
            let full = best.is_some_and(|b| b.op == Op::Patch);
            if active_here {
                if full {
                    let vs = &self.active_versions[self.active[self.next_active].1.clone()];
                    out.extend(vs.iter().copied().filter(visible));
                }
                self.next_active += 1;
            }
            for c in &mut self.sealed {
                if c.key() == Some(&key[..]) {
                    if full {
                        let before = out.len();
                        c.take(out);
                        let kept: Vec<VersionRef> = out.drain(before..).filter(visible).collect();
                        out.extend(kept);
                    } else {
                        c.skip();
                    }
                }
            }
            match best {
                None => continue,
                Some(b) if !full => out.push(b),
                Some(_) => out.sort_unstable_by_key(VersionRef::order),
            }
            return Some(key);
        }
    }

    /// The next key with every visible version, sorted by `(event_time, position)`.
    pub fn next_key(&mut self, out: &mut Vec<VersionRef>) -> Option<Bytes> {
        out.clear();
        let key = self.smallest_key()?;
        if let Some((k, vs)) = self.active.get(self.next_active) {
            if self.active_keys[k.clone()] == key[..] {
                out.extend_from_slice(&self.active_versions[vs.clone()]);
                self.next_active += 1;
            }
        }
        let before = out.len();
        for c in &mut self.sealed {
            if c.key() == Some(&key[..]) {
                c.take(out);
            }
        }
        if out.len() > before {
            out.retain(|v| v.position < self.end_pos);
        }
        // Each source is sorted by (event_time, position) except the active
        // segment's, which is in position order: sort whenever sources mix or the
        // active part has more than one version.
        if out.len() > 1 {
            out.sort_unstable_by_key(VersionRef::order);
        }
        Some(key)
    }
}

/// The frame a scan is in: its metadata, raw records, stream names, the offset
/// of the next record and its index.
#[derive(Debug)]
struct CurrentFrame {
    meta: FrameMeta,
    recs: Bytes,
    streams: Vec<Arc<str>>,
    at: usize,
    i: u32,
}

/// Iterator over records in position order (see [`View::scan`]).
#[derive(Debug)]
pub struct Scan {
    view: View,
    stream: Option<Arc<str>>,
    from: u64,
    /// Positions at and after this end the scan (at most the view's end).
    until: u64,
    lo: i64,
    hi: i64,
    seg: usize,
    frame: usize,
    cur: Option<CurrentFrame>,
    failed: bool,
}

impl Scan {
    fn new(view: View, from: u64, stream: Option<Arc<str>>, lo: i64, hi: i64) -> Scan {
        let seg = view.seg_index_for(from);
        Scan {
            until: view.end_pos,
            view,
            stream,
            from,
            lo,
            hi,
            seg,
            frame: usize::MAX,
            cur: None,
            failed: false,
        }
    }

    fn advance_frame(&mut self) -> Result<bool> {
        loop {
            if self.seg >= self.view.seg_count() {
                return Ok(false);
            }
            let seg = self.view.seg(self.seg);
            let frames = seg.frames()?;
            if self.frame == usize::MAX {
                self.frame = frames.partition_point(|f| f.end_pos() <= self.from);
            } else {
                self.frame += 1;
            }
            let Some(meta) = frames.get(self.frame).copied() else {
                self.seg += 1;
                self.frame = usize::MAX;
                continue;
            };
            if meta.first_pos >= self.until {
                self.seg = usize::MAX;
                return Ok(false);
            }
            if meta.count == 0 || meta.max_et < self.lo || meta.min_et > self.hi {
                continue;
            }
            let (meta, recs, streams) = seg.records(self.frame)?;
            if let Some(want) = &self.stream {
                if !streams.iter().any(|s| s == want) {
                    continue;
                }
            }
            self.cur = Some(CurrentFrame {
                meta,
                recs,
                streams,
                at: 0,
                i: 0,
            });
            return Ok(true);
        }
    }
}

impl Iterator for Scan {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(CurrentFrame {
                meta,
                recs,
                streams,
                at,
                i,
            }) = &mut self.cur
            {
                while *i < meta.count {
                    let pos = meta.first_pos + u64::from(*i);
                    let Some(r) = parse_record(recs, *at) else {
                        self.failed = true;
                        let path = self.view.seg(self.seg).path().to_path_buf();
                        return Some(Err(Error::corrupt(
                            path,
                            meta.offset,
                            "record does not parse",
                        )));
                    };
                    *at = r.value_off + r.value.len();
                    *i += 1;
                    if pos >= self.until {
                        self.failed = true;
                        return None;
                    }
                    if pos < self.from || r.event_time < self.lo || r.event_time > self.hi {
                        continue;
                    }
                    let stream = &streams[usize::from(r.stream_idx)];
                    if self.stream.as_ref().is_some_and(|s| s != stream) {
                        continue;
                    }
                    let key_off = r.offset + super::frame::RECORD_HEADER_LEN;
                    return Some(Ok(Record {
                        stream: stream.clone(),
                        key: recs.slice(key_off..key_off + r.key.len()),
                        op: r.op,
                        value: recs.slice(r.value_off..r.value_off + r.value.len()),
                        event_time: r.event_time,
                        position: pos,
                        recorded_at: Hlc(meta.hlc.0 + u64::from(*i - 1)),
                    }));
                }
                self.cur = None;
            }
            match self.advance_frame() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Batch, Compression, Db, Error};

    /// A value that compresses, though not to nothing.
    fn value_of(round: i64, i: u64) -> String {
        format!(
            "{round}-{:016x}-{}",
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            "x".repeat(40)
        )
    }

    /// A version whose record holds another key (an index gone wrong) is a
    /// corruption error, not another key's row: in the active segment, in a
    /// sealed one, and in a compressed frame.
    #[test]
    fn a_version_pointing_at_another_keys_record_is_corruption() {
        for compression in [Compression::None, Compression::Zstd(3)] {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::builder(dir.path())
                .segment_size(4096)
                .compression(compression)
                .open()
                .unwrap();
            let w = db.writer();
            for round in 0..2 {
                // 1,000 records of 64-byte values: frames above the 4 KiB
                // that compression needs, and (compressed too) past a
                // segment's size, so round 0 is sealed.
                let mut b = Batch::new();
                for i in 0..1000 {
                    let value = value_of(round, i);
                    b.put_at("s", format!("key-{i}"), value, round).unwrap();
                }
                w.commit(b).unwrap();
            }
            let snap = db.snapshot().unwrap();
            let view = snap.view();
            assert!(
                !view.state.sealed.is_empty(),
                "round 0 is in a sealed segment"
            );
            for as_of in [0, 1] {
                let v = view
                    .newest_visible("s", b"key-7", as_of, u64::MAX)
                    .unwrap()
                    .unwrap();
                let (key, value) = view.key_and_value(&v, b"key-7").unwrap();
                assert_eq!(&key[..], b"key-7");
                assert_eq!(value, value_of(as_of, 7).as_bytes());
                let err = view.key_and_value(&v, b"key-8").unwrap_err();
                assert!(
                    matches!(&err, Error::Corruption { reason, .. } if reason.contains("different key")),
                    "{compression}, as of {as_of}: {err}"
                );
            }
        }
    }
}
