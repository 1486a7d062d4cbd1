//! Compaction and retention: rewriting sealed segments without the versions no
//! answerable query can see.
//!
//! # What is kept
//!
//! Compaction takes a horizon time `H` and examines the sealed segments, whose
//! positions end at `P` (the active segment's base). For each key it finds the
//! *base*: the newest put or delete (in `(event_time, position)` order) with
//! `event_time <= H` and position below `P`. The base and every version after
//! it in that order are kept; the versions before it are dropped. Versions at or
//! above `P` are never touched.
//!
//! Every query as of `T >= H`, known at `K >= P - 1`, folds the same versions
//! from the base on, so it gives the same answer as before; a late record
//! written after the compaction sorts into the same place among the kept
//! versions as it would have among all of them. That is why a tombstone base is
//! kept even though nothing older remains: it still hides a late put with an
//! older event time. And why a patch is never a base: it needs what it patches.
//! Queries as of an earlier time or known at an earlier position fail with
//! [`crate::Error::BeyondHorizon`] or [`crate::Error::KnownBeforeHorizon`]; the
//! horizon is persisted before any segment is rewritten.
//!
//! # How segments are replaced
//!
//! Runs of adjacent segments that lose records (or were compacted before) are
//! rewritten into segments of up to the configured segment size, each a new
//! generation with its own name (`<base>-<generation>.seg`), whose header names
//! the end position it covers (positions inside may have gaps). Each is written
//! to a temporary file, fsynced, renamed into place and the directory fsynced;
//! only then are the files it replaces removed. Its appearance is what makes
//! them redundant ([`super::segment::list_all`]), so a crash at any point leaves
//! for every range either the old segments or the new one, and opening removes
//! whatever a crash left over. Readers holding a snapshot keep their maps of the
//! old files, whose space returns when the last of them finishes. The writer is
//! never blocked: it only appends to the active segment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{Frame, FrameBuilder, FrameKind, FRAME_TARGET};
use super::horizon::Horizon;
use super::index::{FrameMeta, MemIndex};
use super::log::{Log, LogState};
use super::record::{Hlc, Op};
use super::segment::{self, SealedSegment};
use super::view::View;
use super::{fsutil, merged};
use crate::{Error, Result};

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// The horizon now in force (the furthest of the old one and the one asked for).
    pub horizon: Horizon,
    /// Sealed segments before and after.
    pub segments_before: usize,
    /// Sealed segments after.
    pub segments_after: usize,
    /// Sealed segments read and replaced.
    pub segments_rewritten: usize,
    /// Records dropped.
    pub records_dropped: u64,
    /// Bytes of the segments rewritten, before.
    pub bytes_read: u64,
    /// Bytes of the segments that replaced them.
    pub bytes_written: u64,
    /// Bytes of all sealed segments before.
    pub sealed_bytes_before: u64,
    /// Bytes of all sealed segments after.
    pub sealed_bytes_after: u64,
    /// Wall time of the compaction.
    pub elapsed: Duration,
}

/// A retention policy: how much history to keep. Retention computes a horizon
/// from it and compacts to that horizon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep what queries as of `now - max_age` and later need (µs).
    pub max_age: Option<i64>,
    /// Aim for at most this many bytes of segments: the horizon moves past the
    /// newest event time of the oldest segments whose bytes exceed it. Best
    /// effort, since each key's base version survives any horizon.
    pub max_bytes: Option<u64>,
}

impl Log {
    /// Compacts the sealed segments to `horizon` (µs). `progress` gets
    /// `(bytes read, bytes to read)`. See the [module docs](self).
    pub fn compact(
        &self,
        horizon: i64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CompactReport> {
        let report = self.compact_locked(horizon, progress);
        self.merge_soon();
        report
    }

    fn compact_locked(
        &self,
        horizon: i64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CompactReport> {
        let started = Instant::now();
        let guard = self.begin_compaction()?;
        let log = guard.log();
        let before = log.state();
        let wanted = Horizon {
            time: horizon,
            position: before.active.base,
        };
        let h = before.horizon.map_or(wanted, |old| old.max(wanted));
        if before.horizon != Some(h) {
            h.store(&*log.config.vfs, &log.dir)?;
            log.update_state(|cur| LogState {
                horizon: Some(h),
                ..cur.clone()
            });
        }
        let st = log.state();
        let sealed: Vec<Arc<SealedSegment>> = st.sealed.clone();
        let sealed_bytes_before: u64 = sealed.iter().map(|s| s.bytes.len() as u64).sum();
        let dropped = dropped_positions(View::new(st.clone())?, h)?;
        let groups = plan(&sealed, &dropped, log.config.settings.segment_size)?;
        let bytes_total: u64 = groups
            .iter()
            .flat_map(|g| &sealed[g.clone()])
            .map(|s| s.bytes.len() as u64)
            .sum();
        let mut report = CompactReport {
            horizon: h,
            segments_before: sealed.len(),
            segments_after: sealed.len() + groups.len(),
            segments_rewritten: 0,
            records_dropped: 0,
            bytes_read: 0,
            bytes_written: 0,
            sealed_bytes_before,
            sealed_bytes_after: sealed_bytes_before,
            elapsed: Duration::ZERO,
        };
        if !groups.is_empty() {
            // A merged index points into the files about to be replaced: it goes
            // first, durably, so no crash leaves one beside the new segments.
            remove_merged_indexes(log)?;
        }
        for g in groups {
            let inputs = &sealed[g];
            let out = rewrite(log, inputs, &dropped)?;
            report.segments_rewritten += inputs.len();
            report.records_dropped += out.dropped;
            report.bytes_read += out.bytes_read;
            report.bytes_written += out.segment.bytes.len() as u64;
            switch(log, inputs, out.segment).map_err(|e| log.poison(e))?;
            progress(report.bytes_read, bytes_total);
        }
        // Of the segments this compaction saw (the writer may have sealed more).
        report.segments_after -= report.segments_rewritten;
        report.sealed_bytes_after = sealed_bytes_before - report.bytes_read + report.bytes_written;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The horizon a retention policy asks for now (`now` in µs), if any.
    pub fn retention_horizon(&self, policy: Retention, now: i64) -> Result<Option<i64>> {
        let mut h = policy.max_age.map(|age| now.saturating_sub(age));
        if let Some(max) = policy.max_bytes {
            let st = self.state();
            let active = st.active.read_inner().end_off;
            let total: u64 = st.sealed.iter().map(|s| s.bytes.len() as u64).sum::<u64>() + active;
            if total > max {
                let excess = total - max;
                let mut acc = 0u64;
                let mut t: Option<i64> = None;
                for s in &st.sealed {
                    acc += s.bytes.len() as u64;
                    for f in s.frames()?.iter().filter(|f| f.count > 0) {
                        t = Some(t.map_or(f.max_et, |t| t.max(f.max_et)));
                    }
                    if acc >= excess {
                        break;
                    }
                }
                if let Some(t) = t {
                    h = Some(h.map_or(t, |h| h.max(t)));
                }
            }
        }
        Ok(h)
    }
}

/// Positions (sorted) of the sealed versions no query at or after `h` can see.
fn dropped_positions(view: View, h: Horizon) -> Result<Vec<u64>> {
    // Every key index is walked once: bulk cursors keep it from staying resident.
    let view = view.bulk();
    let mut dropped = Vec::new();
    let mut buf = Vec::new();
    for stream in view.streams()? {
        let mut keys = view.keys(&stream)?;
        while keys.next_key(&mut buf).is_some() {
            let base = buf.iter().rposition(|v| {
                v.position < h.position && v.op != Op::Patch && v.event_time <= h.time
            });
            if let Some(i) = base {
                dropped.extend(
                    buf[..i]
                        .iter()
                        .map(|v| v.position)
                        .filter(|&p| p < h.position),
                );
            }
        }
    }
    dropped.sort_unstable();
    Ok(dropped)
}

fn count_in(dropped: &[u64], lo: u64, hi: u64) -> usize {
    dropped.partition_point(|&p| p < hi) - dropped.partition_point(|&p| p < lo)
}

/// Groups of adjacent sealed segments (index ranges) to rewrite into one each:
/// runs of segments that lose records or were compacted before, cut when the
/// kept bytes reach the segment size. A lone segment that loses nothing stays.
fn plan(
    sealed: &[Arc<SealedSegment>],
    dropped: &[u64],
    segment_size: u64,
) -> Result<Vec<std::ops::Range<usize>>> {
    let mut info = Vec::with_capacity(sealed.len());
    for s in sealed {
        let end = s.end_pos()?;
        let records: u64 = s.frames()?.iter().map(|f| u64::from(f.count)).sum();
        let lost = count_in(dropped, s.base, end) as u64;
        let kept_bytes = (s.bytes.len() as u64)
            .saturating_mul(records - lost.min(records))
            .checked_div(records)
            .unwrap_or(0);
        info.push((lost > 0, s.is_compacted(), kept_bytes));
    }
    let mut groups = Vec::new();
    let mut i = 0;
    while i < sealed.len() {
        let (loses, compacted, _) = info[i];
        if !loses && !compacted {
            i += 1;
            continue;
        }
        let start = i;
        let mut bytes = 0u64;
        while i < sealed.len() && (info[i].0 || info[i].1) {
            bytes += info[i].2;
            i += 1;
            if bytes >= segment_size {
                break;
            }
        }
        if i - start > 1 || info[start].0 {
            groups.push(start..i);
        }
    }
    Ok(groups)
}

struct Rewritten {
    segment: SealedSegment,
    dropped: u64,
    bytes_read: u64,
}

/// Writes the kept records of `inputs` as one new, synced segment (not yet live).
fn rewrite(log: &Log, inputs: &[Arc<SealedSegment>], dropped: &[u64]) -> Result<Rewritten> {
    let first = &inputs[0];
    let base = first.base;
    let end = inputs[inputs.len() - 1].end_pos()?;
    let generation = first
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(segment::parse_segment_file)
        .map_or(0, |(_, g)| g)
        + 1;
    let path = log
        .dir
        .join(segment::compacted_segment_name(base, generation));
    let tmp = path.with_extension("seg.tmp");
    let vfs = &*log.config.vfs;
    let mut w = SegmentWriter {
        file: vfs.create(&tmp).map_err(|e| Error::io(&tmp, e))?,
        path: tmp.clone(),
        buf: segment::encode_compacted_header(end).to_vec(),
        written: 0,
        index: MemIndex::default(),
        level: log.config.settings.compression.level(),
    };
    let result = (|| {
        let mut n_dropped = 0u64;
        let mut d = dropped.partition_point(|&p| p < base);
        let mut bytes_read = 0u64;
        for seg in inputs {
            bytes_read += seg.bytes.len() as u64;
            // Load and check the key index whole now: once this segment is
            // replaced, its sidecars may be gone, and a rebuild (on damage a
            // lookup finds later) must not race a rewrite.
            seg.keys()?.check_all()?;
            let frames = seg.frames()?;
            for (fi, meta) in frames.iter().enumerate() {
                seg.check_frame_once(fi)?;
                let frame = Frame::decode(&seg.bytes, meta.offset as usize, &seg.path)?;
                let mut run = Run::default();
                for (i, r) in frame.records().enumerate() {
                    let pos = meta.first_pos + i as u64;
                    while d < dropped.len() && dropped[d] < pos {
                        d += 1;
                    }
                    if dropped.get(d) == Some(&pos) {
                        n_dropped += 1;
                        w.flush(&mut run)?;
                        continue;
                    }
                    let stream = &frame.streams[usize::from(r.stream_idx)];
                    if run
                        .frame
                        .is_full_for(stream, r.key.len() + r.value.len(), FRAME_TARGET)
                    {
                        w.flush(&mut run)?;
                    }
                    if run.frame.count() == 0 {
                        run.first_pos = pos;
                        run.hlc = Hlc(meta.hlc.0 + i as u64);
                    }
                    run.frame.push(stream, r.op, r.key, r.value, r.event_time);
                }
                w.flush(&mut run)?;
            }
        }
        w.finish()?;
        Ok((n_dropped, bytes_read))
    })();
    let (n_dropped, bytes_read) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = vfs.remove(&tmp);
            return Err(e);
        }
    };
    let index = std::mem::take(&mut w.index);
    let frames = index.frames.clone();
    drop(w);
    segment::write_sidecars(vfs, &path, &index)?;
    vfs.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    fsutil::sync_dir(vfs, &log.dir)?;
    let segment = SealedSegment::from_sealed(path, base, frames, log.config.vfs.clone())?;
    Ok(Rewritten {
        segment,
        dropped: n_dropped,
        bytes_read,
    })
}

/// One run of consecutive kept positions from one frame, becoming one frame.
struct Run {
    frame: FrameBuilder,
    first_pos: u64,
    hlc: Hlc,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            frame: FrameBuilder::new(),
            first_pos: 0,
            hlc: Hlc(0),
        }
    }
}

struct SegmentWriter {
    file: Arc<dyn super::vfs::VFile>,
    path: PathBuf,
    buf: Vec<u8>,
    written: u64,
    index: MemIndex,
    level: Option<i32>,
}

impl SegmentWriter {
    const CHUNK: usize = 4 << 20;

    fn offset(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Closes the run as a commit frame (every frame of a compacted segment
    /// stands alone) and indexes it.
    fn flush(&mut self, run: &mut Run) -> Result<()> {
        if run.frame.count() == 0 {
            return Ok(());
        }
        let mut f = std::mem::take(&mut run.frame);
        f.finish(FrameKind::Commit, run.first_pos, run.hlc, self.level)?;
        let meta = FrameMeta {
            offset: self.offset(),
            first_pos: run.first_pos,
            hlc: run.hlc,
            min_et: 0,
            max_et: 0,
            total_len: f.encoded().len() as u32,
            count: f.count(),
            kind: FrameKind::Commit,
        };
        self.buf.extend_from_slice(f.encoded());
        self.index.add_frame(
            meta,
            f.records()
                .map(|(s, r)| (s, r.key, r.op, r.event_time, r.offset as u32)),
        );
        if self.buf.len() >= Self::CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        self.file
            .write_at(&self.buf, self.written)
            .map_err(|e| Error::io(&self.path, e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.write_out()?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

/// Publishes the new segment in place of `inputs`, then removes their files.
fn switch(log: &Log, inputs: &[Arc<SealedSegment>], new: SealedSegment) -> Result<()> {
    let lo = inputs[0].base;
    let hi = new.end_pos()?;
    let new = Arc::new(new);
    log.update_state(|cur| {
        let mut sealed = Vec::with_capacity(cur.sealed.len());
        let mut placed = false;
        for s in &cur.sealed {
            if s.base >= lo && s.base < hi {
                if !placed {
                    sealed.push(new.clone());
                    placed = true;
                }
            } else {
                sealed.push(s.clone());
            }
        }
        LogState {
            sealed,
            merged: Vec::new(),
            ..cur.clone()
        }
    });
    let vfs = &*log.config.vfs;
    for s in inputs {
        let (fidx, kidx) = segment::sidecar_paths(&s.path);
        for p in [&s.path, &fidx, &kidx] {
            fsutil::remove_if_exists(vfs, p)?;
        }
    }
    fsutil::sync_dir(vfs, &log.dir)
}

fn remove_merged_indexes(log: &Log) -> Result<()> {
    log.update_state(|cur| LogState {
        merged: Vec::new(),
        ..cur.clone()
    });
    let vfs = &*log.config.vfs;
    let mut any = false;
    for p in vfs.list(&log.dir).map_err(|e| Error::io(&log.dir, e))? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| merged::MergedIndex::is_file_name(&n)) {
            vfs.remove(&p).map_err(|e| Error::io(&p, e))?;
            any = true;
        }
    }
    if any {
        fsutil::sync_dir(vfs, &log.dir)?;
    }
    Ok(())
}
