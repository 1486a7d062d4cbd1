//! Streaming transactions: batches larger than memory, written frame by frame
//! as they are built, across as many segments as they fill, and published
//! (or erased) as one. The format side is in `docs/format.md`.

use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use super::{lock, ActiveSegment, Log, SealSource, WriterState};
use crate::storage::frame::{Frame, FrameBuilder, FrameKind, FRAME_TARGET};
use crate::storage::index::{FrameMeta, MemIndex};
use crate::storage::segment::{self, SealedSegment};
use crate::{Error, Result};

impl Log {
    /// Starts a streaming transaction that holds the writer until it commits or drops.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        let w = self.writer()?;
        // It indexes its frames itself, after those of earlier commits.
        self.drain_index()?;
        // Frames small enough that a segment holds several: the transaction
        // rolls to a new segment at a frame boundary past the segment size.
        let segment_size = usize::try_from(self.config.settings.segment_size).unwrap_or(usize::MAX);
        Ok(Transaction {
            log: self,
            start_off: w.off,
            first: w.next_pos,
            next: w.next_pos,
            off: w.off,
            data_frames: Vec::new(),
            written_counts: Vec::new(),
            origin: w.active.clone(),
            staged: Vec::new(),
            rolled: false,
            creating: None,
            frame_target: (segment_size / 4).clamp(1024, FRAME_TARGET),
            w,
            cur: FrameBuilder::new(),
            done: false,
        })
    }

    /// Publishes a committed transaction that spans segments: the segments it
    /// filled become sealed and the one holding its commit frame active, all
    /// in one state change. Synced first whatever the durability, so no crash
    /// can leave published (and so mergeable or compactable) segments of a
    /// transaction whose commit frame was lost.
    fn finish_spanning(
        &self,
        w: &mut WriterState,
        staged: Vec<Arc<SealedSegment>>,
        end_pos: u64,
        end_off: u64,
    ) -> Result<()> {
        self.fsync_segment(&w.active, Some(end_pos))?;
        // The staged segments' key indexes load from their files: wait until
        // the last is written rather than have a reader rebuild it meanwhile.
        self.join_seal();
        w.off = end_off;
        w.next_pos = end_pos;
        w.active.show_up_to(end_pos, end_off);
        self.check_poison()?;
        self.publish_rolled(staged, &w.active);
        // Only now that readers see the transaction (and every batch before
        // it in the origin) may group-commit waiters return.
        {
            let mut s = lock(&self.sync.state);
            s.mark_all((w.active.clone(), end_pos, end_off));
            s.synced_pos = s.synced_pos.max(end_pos);
            self.sync.done.notify_all();
        }
        if w.off >= self.config.settings.segment_size {
            self.roll_after_commit(w)?;
        }
        Ok(())
    }
}

/// A transaction written as it is built, for batches larger than memory: full frames
/// go to disk as data frames; the commit frame makes them all visible at once.
/// Dropping it without commit erases what it wrote.
///
/// When the segment fills, the transaction goes on in a new one (marked as
/// continuing it), so memory stays bounded by two segments' indexes whatever
/// its size: each filled segment is synced, its sidecars written, and its
/// in-memory index dropped (or kept, emptied, for a later segment to index
/// into: see [`MemIndex::recycle`]). Readers see none of these segments until
/// the commit publishes them together.
pub struct Transaction<'a> {
    log: &'a Log,
    w: MutexGuard<'a, WriterState>,
    cur: FrameBuilder,
    /// Where the transaction began in `origin`.
    start_off: u64,
    first: u64,
    next: u64,
    /// Where the next frame goes in `w.active`.
    off: u64,
    /// Offsets of the data frames written to `w.active` and not yet indexed.
    data_frames: Vec<u64>,
    written_counts: Vec<(String, u64)>,
    /// The active segment the transaction began in.
    origin: Arc<ActiveSegment>,
    /// Segments filled so far (`origin` first), sealed but not yet published.
    staged: Vec<Arc<SealedSegment>>,
    /// Whether it ever rolled to a new segment (it may have written sidecars).
    rolled: bool,
    /// A segment being created by `roll_within`, until it is `w.active`.
    creating: Option<PathBuf>,
    /// Raw bytes at which a frame is flushed.
    frame_target: usize,
    done: bool,
}

/// Adds `n` to `stream`'s count in a short list (streams per batch are few).
pub fn add_count(counts: &mut Vec<(String, u64)>, stream: &str, n: u64) {
    match counts.iter_mut().find(|(s, _)| s == stream) {
        Some((_, c)) => *c += n,
        None => counts.push((stream.to_string(), n)),
    }
}

/// Decodes the frames at `offsets` of `seg` (the last ending at `end`) from
/// disk, one at a time: each is mapped, decoded, handed to `add` and unmapped
/// before the next, so a transaction of any size never has more than a frame
/// mapped.
fn each_written_frame(
    seg: &ActiveSegment,
    offsets: &[u64],
    end: u64,
    mut add: impl FnMut(&Frame, u64),
) -> Result<()> {
    let ends = offsets.iter().skip(1).copied().chain([end]);
    for (&at, end) in offsets.iter().zip(ends) {
        let bytes = seg
            .file
            .map(end as usize)
            .map_err(|e| Error::io(&seg.path, e))?;
        let frame = Frame::decode(&bytes, at as usize, &seg.path)?;
        add(&frame, at);
    }
    Ok(())
}

impl Transaction<'_> {
    /// The frame being filled; flushes it first when `extra` more bytes would overflow it.
    pub fn frame_for(&mut self, stream: &str, extra: usize) -> Result<&mut FrameBuilder> {
        if self.cur.is_full_for(stream, extra, self.frame_target) {
            self.flush_frame(FrameKind::Data)?;
            if self.off >= self.log.config.settings.segment_size {
                self.roll_within()?;
            }
        }
        Ok(&mut self.cur)
    }

    /// Position the next record will get.
    #[must_use]
    pub fn next_position(&self) -> u64 {
        self.next + u64::from(self.cur.count())
    }

    /// First position of the transaction.
    #[must_use]
    pub fn first_position(&self) -> u64 {
        self.first
    }

    /// Records per stream added so far.
    #[must_use]
    pub fn stream_counts(&self) -> Vec<(String, u64)> {
        let mut out = self.written_counts.clone();
        for (s, n) in self.cur.stream_counts() {
            add_count(&mut out, s, n);
        }
        out
    }

    /// Seals the full segment mid-transaction and goes on in a new one. The
    /// sealed segment's index is built apart from the one readers use (the
    /// origin's keeps describing only what is committed), and it is not
    /// published before the commit.
    fn roll_within(&mut self) -> Result<()> {
        self.rolled = true;
        // Any failure here leaves the transaction's segments half made: the
        // log refuses further writes (the transaction included) until reopened.
        self.roll_within_steps()
            .map_err(|e| self.log.poison_with(e))
    }

    fn roll_within_steps(&mut self) -> Result<()> {
        let log = self.log;
        let seg = self.w.active.clone();
        let mut idx = if self.staged.is_empty() {
            seg.read_inner().index.clone()
        } else {
            MemIndex::default()
        };
        each_written_frame(&seg, &self.data_frames, self.off, |f, at| {
            idx.add_decoded(f, at);
        })?;
        log.fsync_segment(&seg, None)?;
        let sealed = Arc::new(SealedSegment::from_sealed(
            seg.path.clone(),
            seg.base,
            idx.frames.clone(),
            log.config.vfs.clone(),
        )?);
        log.seal(&sealed, SealSource::Built(idx))?;
        self.staged.push(sealed);
        // Named before it exists, so an abort removes it whatever state a
        // failed creation left it in.
        self.creating = Some(log.dir.join(segment::segment_name(self.next)));
        let (file, path) = segment::create(&*log.config.vfs, &log.dir, self.next, true)?;
        self.creating = None;
        self.data_frames.clear();
        let spare = self.w.active.spare.clone();
        self.w.active = Arc::new(ActiveSegment::created(self.next, path, file, spare));
        self.off = segment::SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    fn flush_frame(&mut self, kind: FrameKind) -> Result<()> {
        let log = self.log;
        // After a failed write this transaction's frames on disk are not what
        // it holds: it may not go on, let alone commit.
        log.check_poison()?;
        let mut f = std::mem::take(&mut self.cur);
        log.validate(std::slice::from_ref(&f))?;
        for (s, n) in f.stream_counts() {
            add_count(&mut self.written_counts, s, n);
        }
        let hlc = self
            .w
            .hlc
            .reserve(log.config.clock.now_ms(), u64::from(f.count()));
        f.finish(
            kind,
            self.next,
            hlc,
            log.config.settings.compression.level(),
        )?;
        let seg = self.w.active.clone();
        if let Err(e) = seg
            .file
            .write_at(f.encoded(), self.off)
            .map_err(|e| Error::io(&seg.path, e))
        {
            return Err(log.poison_with(e));
        }
        if kind == FrameKind::Data {
            self.data_frames.push(self.off);
        } else {
            let meta = FrameMeta {
                offset: self.off,
                first_pos: self.next,
                hlc,
                min_et: 0,
                max_et: 0,
                total_len: f.encoded().len() as u32,
                count: f.count(),
                kind,
            };
            // Index the data frames from disk (page cache), one at a time, so
            // readers wait for one frame at a time. They see none of it before
            // `end_pos` moves.
            // A failure part-way leaves some of them in the active index (not
            // visible, but an abort would let later commits reuse their
            // positions): the log is poisoned.
            each_written_frame(&seg, &self.data_frames, self.off, |frame, at| {
                seg.inner
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .index
                    .add_decoded(frame, at);
            })
            .map_err(|e| log.poison_with(e))?;
            let mut inner = seg
                .inner
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.index.add_built(meta, &f);
        }
        self.off += f.encoded().len() as u64;
        self.next += u64::from(f.count());
        Ok(())
    }

    /// Writes the commit frame and publishes the whole transaction.
    pub fn commit(mut self, force_sync: bool) -> Result<std::ops::Range<u64>> {
        if self.next == self.first && self.cur.count() == 0 {
            self.done = true;
            return Ok(self.first..self.first);
        }
        self.flush_frame(FrameKind::Commit)?;
        self.done = true;
        let (first, end, off, log) = (self.first, self.next, self.off, self.log);
        if !self.staged.is_empty() {
            let staged = std::mem::take(&mut self.staged);
            log.finish_spanning(&mut self.w, staged, end, off)?;
            return Ok(first..end);
        }
        let wait = log.finish_commit(&mut self.w, end, off, force_sync, true)?;
        drop(self);
        if wait {
            log.wait_synced(end)?;
        }
        Ok(first..end)
    }

    /// Erases what an uncommitted transaction wrote: the segments it created
    /// (newest first), the sidecars sealing wrote for the one it began in, and
    /// its frames there. Any failure poisons the log (reopening repairs).
    fn abort(&mut self) -> Result<()> {
        let log = self.log;
        let vfs = &*log.config.vfs;
        if self.rolled {
            log.join_seal();
            let mut created: Vec<PathBuf> =
                self.staged.iter().skip(1).map(|s| s.path.clone()).collect();
            if !Arc::ptr_eq(&self.w.active, &self.origin) {
                created.push(self.w.active.path.clone());
            }
            created.extend(self.creating.take());
            created.dedup();
            // Newest first, and the origin cut only once they are all gone: a
            // failure or crash part-way leaves a prefix of the chain, which
            // recovery removes (its origin still ends in a data frame).
            // One at a time (each removal synced), so a crash leaves a prefix.
            for path in created.iter().rev() {
                segment::remove_with_sidecars(vfs, &log.dir, path)?;
            }
            segment::remove_stale_sidecars(vfs, &log.dir, &self.origin.path)?;
            // Their sidecars are gone too: a failure writing them is moot.
            let gone: Vec<&std::path::Path> =
                self.staged.iter().map(|s| s.path.as_path()).collect();
            log.forget_seal_error_of(&gone);
            self.staged.clear();
            self.rolled = false;
            self.w.active = self.origin.clone();
        }
        self.origin
            .file
            .set_len(self.start_off)
            .map_err(|e| Error::io(&self.origin.path, e))
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        let wrote = self.rolled || self.off > self.start_off;
        if !self.done && wrote {
            if let Err(e) = self.abort() {
                self.log.poison_with(e);
            }
        }
    }
}
