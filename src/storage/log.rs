//! The log: opening and recovery, the single writer with group commit, segment
//! rolls, and the published state readers snapshot. Streaming transactions
//! are in `transaction`, the group-commit state and the syncer in `sync`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use super::frame::{FrameBuilder, FrameKind};
use super::horizon::Horizon;
use super::index::{FrameMeta, MemIndex};
use super::merged::{MergedIndex, MERGE_AFTER};
use super::meta::{self, Durability, Settings};
use super::record::{Clock, Hlc, HlcState};
use super::segment::{self, SealedSegment};
use super::vfs::{VFile, Vfs};
use crate::{Error, Result};

mod indexer;
mod sync;
mod transaction;
use indexer::{spawn_indexer, IndexJob};
use sync::{poison_shared, spawn_periodic_sync, spawn_syncer, SyncShared, SyncState};
pub use transaction::{add_count, Transaction};

/// Resolved configuration of an open log.
#[derive(Debug, Clone)]
pub struct Config {
    /// Persisted settings (possibly overridden for this handle).
    pub settings: Settings,
    /// Largest key accepted.
    pub max_key_size: usize,
    /// Largest value accepted.
    pub max_value_size: usize,
    /// Open without the writer lock; refuse writes.
    pub read_only: bool,
    /// Wall clock for recorded_at stamps.
    pub clock: Arc<dyn Clock>,
    /// The file I/O seam (real, fault-injecting or recording).
    pub vfs: Arc<dyn Vfs>,
    /// Merge key indexes in the background every few rolls.
    pub auto_merge: bool,
    /// Write a sealed segment's index sidecars on a background thread.
    pub background_seal: bool,
}

/// What opening found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the end of the active segment (torn or uncommitted tail).
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub reason: Option<String>,
}

/// The segment being appended to.
#[derive(Debug)]
pub struct ActiveSegment {
    /// First position.
    pub base: u64,
    /// File path.
    pub path: PathBuf,
    file: Arc<dyn VFile>,
    /// Indexes and the committed (visible) end.
    pub inner: RwLock<ActiveInner>,
    map: Mutex<Bytes>,
    /// Record marks of the frames read by position, by frame offset (frames
    /// never change once written).
    record_marks: Mutex<std::collections::HashMap<u64, Arc<super::segment::RecordMarks>>>,
    /// Where the index goes when the segment is dropped: the log's next
    /// active segment indexes into its memory (see [`MemIndex::recycle`]).
    spare: SpareIndex,
}

/// The index of a retired active segment, kept for the next one to empty and
/// index into.
type SpareIndex = Arc<Mutex<Option<MemIndex>>>;

impl Drop for ActiveSegment {
    fn drop(&mut self) {
        // No one reads this index again: whoever held the segment (views,
        // the seal, the writer) has let it go. Kept as it is, to be emptied
        // by the segment that takes it (not here, on whichever thread let
        // go last); and not kept when no segment of the log is left to take it.
        if Arc::strong_count(&self.spare) == 1 {
            return;
        }
        let inner = self
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = std::mem::take(&mut inner.index);
        let mut spare = lock(&self.spare);
        if spare.is_none() {
            *spare = Some(index);
        }
    }
}

/// Mutable state of the active segment, shared with readers.
#[derive(Debug)]
pub struct ActiveInner {
    /// Indexes of every frame written (readers filter by `end_pos`).
    pub index: MemIndex,
    /// One past the last visible position.
    pub end_pos: u64,
    /// Bytes of the file that are visible.
    pub end_off: u64,
}

impl ActiveSegment {
    /// Where record `index` of the frame at `frame_off` starts in `recs`, its
    /// records area: from the frame's marks, found on the first call for it.
    pub fn record_offset(
        &self,
        frame_off: u64,
        recs: &[u8],
        count: usize,
        index: usize,
    ) -> Result<usize> {
        let known = lock(&self.record_marks).get(&frame_off).cloned();
        let marks = match known {
            Some(m) => m,
            None => {
                let m = Arc::new(super::segment::RecordMarks::of(
                    recs, count, &self.path, frame_off,
                )?);
                lock(&self.record_marks).insert(frame_off, m.clone());
                m
            }
        };
        marks.offset(recs, index, &self.path, frame_off)
    }

    /// A segment just created at `base` by [`segment::create`]: only its
    /// header. It indexes into the memory of a retired segment's index if the
    /// log kept one.
    fn created(base: u64, path: PathBuf, file: Arc<dyn VFile>, spare: SpareIndex) -> ActiveSegment {
        let index = lock(&spare)
            .take()
            .map(MemIndex::recycle)
            .unwrap_or_default();
        ActiveSegment {
            spare,
            base,
            path,
            file,
            inner: RwLock::new(ActiveInner {
                index,
                end_pos: base,
                end_off: segment::SEGMENT_HEADER_LEN as u64,
            }),
            map: Mutex::new(Bytes::new()),
            record_marks: Mutex::default(),
        }
    }

    /// Makes the positions below `pos` (ending at byte `off`) visible to
    /// readers; the visible end never moves back. The write lock is taken only
    /// when it moves: a sealing thread may hold the read lock for long.
    fn show_up_to(&self, pos: u64, off: u64) {
        {
            let inner = self.read_inner();
            if inner.end_pos >= pos && inner.end_off >= off {
                return;
            }
        }
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.end_pos = inner.end_pos.max(pos);
        inner.end_off = inner.end_off.max(off);
    }

    /// Shared access to the in-memory indexes and the committed end. Readers
    /// hold it only to copy what they need.
    pub fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, ActiveInner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The first `len` bytes of the file, mapped (remapped when it has grown).
    pub fn bytes_upto(&self, len: u64) -> Result<Bytes> {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if (m.len() as u64) < len {
            *m = self
                .file
                .map(len as usize)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(m.slice(..len as usize))
    }
}

/// The segments readers see: an immutable list, replaced on every roll.
#[derive(Debug, Clone)]
pub struct LogState {
    /// Sealed segments in position order.
    pub sealed: Vec<Arc<SealedSegment>>,
    /// The active segment.
    pub active: Arc<ActiveSegment>,
    /// Merged key indexes tiling the oldest sealed segments, oldest first.
    pub merged: Vec<Arc<MergedIndex>>,
    /// The compaction horizon, if the log was ever compacted.
    pub horizon: Option<Horizon>,
}

impl LogState {
    /// The usable merged indexes (oldest first) and the sealed segments they do
    /// not cover. Tiers are used from the first segment on while each starts
    /// where the previous ended, opens, and has not been found damaged by a
    /// read; the rest goes per segment.
    #[must_use]
    pub fn key_sources(&self) -> (Vec<&super::index::KeyIndexFile>, &[Arc<SealedSegment>]) {
        if self.merged.is_empty() {
            return (Vec::new(), &self.sealed);
        }
        let (tiers, end) = self.usable_tiers();
        let first = self.sealed.partition_point(|s| s.base < end);
        (tiers, &self.sealed[first..])
    }

    /// Drops the process's mapping of the pages of every loaded, mapped key
    /// index (per segment and merged; an index held in memory, because its
    /// file failed to write, is not affected). A checkpoint built from
    /// scratch walks all of them in key order and calls this every few
    /// thousand rows, so the process's resident set does not grow with the
    /// history it reads; the pages stay in the page cache, and reading them
    /// again maps them again. Segments keep their pages: values are read at
    /// random, and mapping them again cost more than they weigh (a checkpoint
    /// of 1M keys took 75% longer). Returns the length advised.
    pub fn release_index_pages(&self) -> usize {
        let sealed: usize = self.sealed.iter().map(|s| s.release_index_pages()).sum();
        let merged: usize = self.merged.iter().map(|m| m.release_pages()).sum();
        sealed + merged
    }

    fn usable_tiers(&self) -> (Vec<&super::index::KeyIndexFile>, u64) {
        let mut out = Vec::new();
        let Some(mut end) = self.sealed.first().map(|s| s.base) else {
            return (out, 0);
        };
        for m in &self.merged {
            if m.cover_start != end {
                break;
            }
            match m.index() {
                Some(i) => out.push(i),
                None => break,
            }
            end = m.cover_end;
        }
        (out, end)
    }

    /// Sealed segments no merged index covers.
    fn uncovered(&self) -> usize {
        let end = self.merged.last().map_or(0, |m| m.cover_end);
        self.sealed.len() - self.sealed.partition_point(|s| s.base < end)
    }
}

struct WriterState {
    active: Arc<ActiveSegment>,
    off: u64,
    next_pos: u64,
    hlc: HlcState,
    /// Where commits send their frames to be indexed (see [`indexer`]);
    /// `None`: they index them themselves.
    index_tx: Option<crossbeam_channel::Sender<IndexJob>>,
}

/// What a just-sealed segment's sidecars are encoded from.
enum SealSource {
    /// The segment's own in-memory index, as it was while active.
    Active(Arc<ActiveSegment>),
    /// An index built for it alone: a segment a streaming transaction filled.
    Built(MemIndex),
}

impl SealSource {
    /// Whether the sealed segment keeps the encoded key index in memory
    /// (readers may need it right away).
    fn keeps_keys(&self) -> bool {
        matches!(self, SealSource::Active(_))
    }
}

impl segment::IndexSource for SealSource {
    fn with_index(&self, f: &mut dyn FnMut(&MemIndex)) {
        match self {
            SealSource::Active(seg) => f(&seg.read_inner().index),
            SealSource::Built(idx) => f(idx),
        }
    }
}

/// The append-only log of one database directory.
pub struct Log {
    /// The database directory.
    pub dir: PathBuf,
    /// Configuration.
    pub config: Config,
    state: Arc<RwLock<Arc<LogState>>>,
    writer: Option<Mutex<WriterState>>,
    sync: Arc<SyncShared>,
    /// In sync durability, the thread that fsyncs what commits wrote while
    /// they index it (see [`sync::spawn_syncer`]).
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Whether that thread runs (else committers lead fsyncs themselves).
    syncer_on: bool,
    /// The thread that indexes what commits wrote (see [`indexer`]).
    indexer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Whether it runs (else commits index their frames themselves).
    indexer_on: bool,
    merging: Arc<std::sync::atomic::AtomicBool>,
    merge_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The thread writing the last sealed segment's sidecars (see `spawn_seal`).
    seal_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// A failure of that thread's writes, returned by the next write.
    /// (With the segment it was for: an aborted transaction forgets the
    /// failures of the segments it removed.)
    seal_error: Arc<Mutex<Option<(PathBuf, Error)>>>,
    compacting: Mutex<()>,
    /// What recovery did at open.
    pub recovery: RecoveryReport,
    _lock: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Log {
    /// Opens (or, when `create`, creates) the log in `dir`.
    pub fn open(dir: &Path, config: Config) -> Result<Arc<Log>> {
        let lock_file = if config.read_only {
            None
        } else {
            Some(meta::lock(&*config.vfs, dir)?)
        };
        let (mut segs, stale) = segment::list_all(&*config.vfs, dir)?;
        if !config.read_only {
            remove_leftovers(&*config.vfs, dir, &segs, &stale)?;
        }
        let horizon = Horizon::load(&*config.vfs, dir)?;
        if segs.is_empty() {
            if config.read_only {
                return Err(Error::NotADatabase(dir.to_path_buf()));
            }
            let (_, path) = segment::create(&*config.vfs, dir, 0, false)?;
            segs.push((0, path));
        }
        let (mut active_base, mut active_path) = segs.pop().expect("at least one segment");
        let writable = !config.read_only;
        let mut recovery = RecoveryReport::default();
        // The last segment is the active one, unless it continues a streaming
        // transaction that never committed: then it goes, with every segment of
        // that transaction back to the one it began in, which is cut as usual.
        let (file, len, scan) = loop {
            let (file, len, scan, continues) =
                open_active(&*config.vfs, &active_path, active_base, writable)?;
            if !scan.index.frames.is_empty() {
                break (file, len, scan);
            }
            // No commit frame here: if the previous segment ends in a data
            // frame (or this one says it continues one), that transaction never
            // committed. The header alone would not do: a crash while creating
            // this segment can leave it without one.
            let open_before = match segs.last() {
                Some((b, p)) => {
                    continues
                        || SealedSegment::open(p.clone(), *b, config.vfs.clone(), false)?
                            .frames()?
                            .last()
                            .is_some_and(|f| f.kind == FrameKind::Data)
                }
                None if continues => {
                    return Err(Error::corrupt(
                        &active_path,
                        8,
                        "the first segment says it continues a transaction from a previous one",
                    ))
                }
                None => false,
            };
            if !open_before {
                break (file, len, scan);
            }
            let (prev_base, prev_path) = segs.pop().expect("checked above");
            recovery.truncated_bytes += len;
            recovery.reason = Some(format!(
                "a transaction spanning segments from {} on never committed",
                prev_path.display()
            ));
            if writable {
                log::warn!(
                    "{}: removing a segment of a transaction that never committed",
                    active_path.display()
                );
                drop(file);
                segment::remove_with_sidecars(&*config.vfs, dir, &active_path)?;
            }
            (active_base, active_path) = (prev_base, prev_path);
        };
        if writable {
            // An active segment has no sidecars; any found were written when an
            // uncommitted transaction sealed it, and describe frames now cut.
            segment::remove_stale_sidecars(&*config.vfs, dir, &active_path)?;
        }
        let sealed = segs
            .into_iter()
            .map(|(base, path)| {
                SealedSegment::open(path, base, config.vfs.clone(), writable).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        if scan.committed_end < len {
            recovery.truncated_bytes += len - scan.committed_end;
            if recovery.reason.is_none() {
                recovery.reason = scan
                    .stopped
                    .as_ref()
                    .map(|(off, why)| format!("at offset {off}: {why}"));
            }
            if writable {
                log::warn!(
                    "{}: cut {} bytes of torn or uncommitted tail ({})",
                    active_path.display(),
                    len - scan.committed_end,
                    recovery.reason.as_deref().unwrap_or("")
                );
                file.set_len(scan.committed_end)
                    .map_err(|e| Error::io(&active_path, e))?;
                file.sync_all().map_err(|e| Error::io(&active_path, e))?;
            }
        }
        if let Some(prev) = sealed.last() {
            let end = prev.end_pos()?;
            if end != active_base {
                return Err(Error::corrupt(
                    &prev.path,
                    0,
                    format!("segment ends at position {end} but the next segment starts at {active_base}"),
                ));
            }
        }
        let last_hlc = match scan.index.frames.last() {
            Some(f) => Hlc(f.hlc.0 + u64::from(f.count.max(1)) - 1),
            None => match sealed.last() {
                Some(s) => s
                    .frames()?
                    .last()
                    .map_or(Hlc(0), |f| Hlc(f.hlc.0 + u64::from(f.count.max(1)) - 1)),
                None => Hlc(0),
            },
        };
        let active = Arc::new(ActiveSegment {
            base: active_base,
            path: active_path,
            file,
            inner: RwLock::new(ActiveInner {
                index: scan.index,
                end_pos: scan.end_pos,
                end_off: scan.committed_end,
            }),
            map: Mutex::new(Bytes::new()),
            record_marks: Mutex::default(),
            spare: SpareIndex::default(),
        });
        let writer = writable.then(|| {
            Mutex::new(WriterState {
                active: active.clone(),
                off: scan.committed_end,
                next_pos: scan.end_pos,
                hlc: HlcState::starting_after(last_hlc),
                index_tx: None,
            })
        });
        let bases: Vec<u64> = sealed.iter().map(|s| s.base).chain([active_base]).collect();
        let merged = MergedIndex::find(&config.vfs, dir, &bases);
        let sync = Arc::new(SyncShared {
            state: Mutex::new(SyncState {
                written: (active.clone(), scan.end_pos, scan.committed_end),
                indexed: (active.clone(), scan.end_pos, scan.committed_end),
                synced: (active.clone(), scan.end_pos, scan.committed_end),
                synced_pos: scan.end_pos,
                fsynced_pos: scan.end_pos,
                syncing: false,
                stop: false,
                indexer_gone: false,
                fsync_failed: None,
            }),
            done: Condvar::new(),
            work: Condvar::new(),
            indexed: Condvar::new(),
            poison: Mutex::new(None),
            fsync: Mutex::new(()),
        });
        // Without background sealing there is no background I/O at all: the
        // deterministic order fault-injection tests rely on.
        let syncer = (config.settings.durability == Durability::Sync
            && !config.read_only
            && config.background_seal)
            .then(|| spawn_syncer(sync.clone()))
            .flatten();
        let syncer_on = syncer.is_some();
        // The indexer makes batches visible once indexed, or hands that to the
        // syncer's publishing; a committer leading its own fsync in sync
        // durability would show what it synced, indexed or not: no indexer then.
        let indexer = (!config.read_only
            && config.background_seal
            && (config.settings.durability != Durability::Sync || syncer_on))
            .then(|| spawn_indexer(sync.clone(), syncer_on))
            .flatten();
        let (index_tx, indexer) = match indexer {
            Some((tx, h)) => (Some(tx), Some(h)),
            None => (None, None),
        };
        let indexer_on = indexer.is_some();
        if let Some(w) = &writer {
            lock(w).index_tx = index_tx;
        }
        let log = Arc::new(Log {
            dir: dir.to_path_buf(),
            config,
            state: Arc::new(RwLock::new(Arc::new(LogState {
                merged,
                sealed,
                active: active.clone(),
                horizon,
            }))),
            writer,
            sync,
            syncer: Mutex::new(syncer),
            syncer_on,
            indexer: Mutex::new(indexer),
            indexer_on,
            merging: Arc::default(),
            merge_thread: Mutex::new(None),
            seal_thread: Mutex::new(None),
            seal_error: Arc::default(),
            compacting: Mutex::new(()),
            recovery,
            _lock: lock_file,
        });
        if let (Durability::Periodic(every), false) =
            (log.config.settings.durability, log.config.read_only)
        {
            spawn_periodic_sync(Arc::downgrade(&log), every);
        }
        Ok(log)
    }

    /// The current segment list. What it shows of the active segment may
    /// lag the commits that have returned by what the indexer has not indexed
    /// yet ([`Log::wait_indexed`] first, for read-your-writes).
    pub fn state(&self) -> Arc<LogState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn check_poison(&self) -> Result<()> {
        match &*lock(&self.sync.poison) {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison_with(&self, e: Error) -> Error {
        poison_shared(&self.sync, &e.to_string());
        e
    }

    fn writer(&self) -> Result<MutexGuard<'_, WriterState>> {
        let w = self.writer.as_ref().ok_or(Error::ReadOnly)?;
        let g = lock(w);
        self.check_poison()?;
        if let Some((_, e)) = lock(&self.seal_error).take() {
            return Err(self.poison_with(e));
        }
        Ok(g)
    }

    /// Checks limits on every record of the frames before anything is written.
    fn validate(&self, frames: &[FrameBuilder]) -> Result<()> {
        for f in frames {
            let (key, value) = f.max_lens();
            if key > self.config.max_key_size {
                return Err(Error::InvalidInput(format!(
                    "key of {key} bytes exceeds the limit of {} bytes",
                    self.config.max_key_size
                )));
            }
            if value > self.config.max_value_size {
                return Err(Error::InvalidInput(format!(
                    "value of {value} bytes exceeds the limit of {} bytes",
                    self.config.max_value_size
                )));
            }
        }
        Ok(())
    }

    /// Commits a batch of frames atomically. Returns the position range.
    ///
    /// In sync durability (or with `force_sync`) it returns once the batch is
    /// durable. With the indexer thread running, the batch becomes visible
    /// once indexed (in sync durability, and durable), which may be just after
    /// this returns: [`Log::wait_indexed`] before [`Log::state`] sees it (as
    /// `Db::snapshot` does). `read_back`: the caller reads the batch right
    /// after (the database's materialized views do), so this thread indexes
    /// it, after whatever the indexer still has, instead of handing it over
    /// (a hand-off and a wait for it per commit cost a third of the rate).
    pub fn commit(
        &self,
        mut frames: Vec<FrameBuilder>,
        force_sync: bool,
        read_back: bool,
    ) -> Result<std::ops::Range<u64>> {
        frames.retain(|f| f.count() > 0);
        self.validate(&frames)?;
        let mut w = self.writer()?;
        if frames.is_empty() {
            return Ok(w.next_pos..w.next_pos);
        }
        if read_back {
            // Indexed here, so after what the indexer still has (nothing more
            // is queued while this holds the writer). Before anything is
            // written, or marked written: in sync durability that mark would
            // be a position no one is going to index.
            self.drain_index()?;
        }
        let first = w.next_pos;
        let n = frames.len();
        let start_off = w.off;
        let mut metas = Vec::with_capacity(n);
        let mut pos = first;
        let mut off = w.off;
        for (i, f) in frames.iter_mut().enumerate() {
            let kind = if i + 1 == n {
                FrameKind::Commit
            } else {
                FrameKind::Data
            };
            let hlc = w
                .hlc
                .reserve(self.config.clock.now_ms(), u64::from(f.count()));
            f.finish(kind, pos, hlc, self.config.settings.compression.level())?;
            let bytes = f.encoded();
            if let Err(e) = w
                .active
                .file
                .write_at(bytes, off)
                .map_err(|e| Error::io(&w.active.path, e))
            {
                let _ = w.active.file.set_len(start_off);
                return Err(self.poison_with(e));
            }
            metas.push(FrameMeta {
                offset: off,
                first_pos: pos,
                hlc,
                min_et: 0,
                max_et: 0,
                total_len: bytes.len() as u32,
                count: f.count(),
                kind,
            });
            off += bytes.len() as u64;
            pos += u64::from(f.count());
        }
        // The syncer starts on the batch before the indexer gets it: on two
        // cores, telling the indexer first delays the fsync by the indexing
        // (a lone sync committer lost about half its rate).
        self.start_sync(&w, pos, off);
        let mut indexed_here = true;
        if let Some(tx) = w.index_tx.as_ref().filter(|_| !read_back) {
            let job = IndexJob {
                seg: w.active.clone(),
                frames,
                metas,
                end_pos: pos,
                end_off: off,
            };
            if tx.send(job).is_err() {
                // The indexer is gone (it poisoned the log on its way out),
                // and what it left unindexed can never show: the batch is
                // not acknowledged, and cut as when its write fails (unless
                // the syncer, told already, made it durable first: then it
                // may be there after reopening, like any batch not
                // acknowledged).
                let _ = w.active.file.set_len(start_off);
                return Err(self.poison_with(Error::Poisoned("the indexer thread is gone".into())));
            }
            indexed_here = false;
        } else {
            let mut inner = w
                .active
                .inner
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (f, meta) in frames.iter().zip(metas) {
                inner.index.add_built(meta, f);
            }
        }
        let wait = self.finish_commit(&mut w, pos, off, force_sync, indexed_here)?;
        drop(w);
        if wait {
            self.wait_synced(pos)?;
        }
        Ok(first..pos)
    }

    /// With the syncer on, asks it to fsync what the writer `w` wrote up to
    /// `pos` (ending at `off`) while the batch is indexed; readers see the
    /// batch once it is both (`publish_durable`).
    fn start_sync(&self, w: &WriterState, pos: u64, off: u64) {
        if self.syncer_on {
            let mut s = lock(&self.sync.state);
            s.written = (w.active.clone(), pos, off);
            self.sync.work.notify_one();
        }
    }

    /// Publishes a written transaction and rolls the segment if full. Returns whether
    /// the caller must wait for the fsync (after releasing the writer, so the next
    /// batches are written while this one syncs). `indexed_here`: the caller
    /// indexed the transaction itself (else the indexer thread has it, and
    /// shows it once indexed).
    fn finish_commit(
        &self,
        w: &mut WriterState,
        end_pos: u64,
        end_off: u64,
        force_sync: bool,
        indexed_here: bool,
    ) -> Result<bool> {
        w.off = end_off;
        w.next_pos = end_pos;
        let sync_mode = self.config.settings.durability == Durability::Sync;
        if !sync_mode && indexed_here {
            w.active.show_up_to(end_pos, end_off);
        }
        {
            let mut s = lock(&self.sync.state);
            s.written = (w.active.clone(), end_pos, end_off);
            if indexed_here {
                s.indexed = (w.active.clone(), end_pos, end_off);
                if self.syncer_on {
                    s.publish_durable();
                    self.sync.work.notify_one();
                }
            }
        }
        if w.off >= self.config.settings.segment_size {
            self.roll_after_commit(w)?;
        }
        Ok(sync_mode || force_sync)
    }

    /// Waits until every position below `end` is durable, leading an fsync when no
    /// one else is (group commit). (Not until it is indexed: a snapshot waits
    /// for that, see [`Log::wait_indexed`]; waiting here too cost a lone sync
    /// committer about a fifth of its rate.)
    fn wait_synced(&self, end: u64) -> Result<()> {
        let mut s = lock(&self.sync.state);
        if self.syncer_on {
            loop {
                if s.synced_pos >= end {
                    return Ok(());
                }
                if let Some((path, code, kind, msg)) = &s.fsync_failed {
                    let e = match code {
                        Some(c) => std::io::Error::from_raw_os_error(*c),
                        None => std::io::Error::new(*kind, msg.clone()),
                    };
                    return Err(Error::io(path, e));
                }
                self.check_poison()?;
                self.sync.work.notify_one();
                s = self
                    .sync
                    .done
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        loop {
            if s.synced_pos >= end {
                return Ok(());
            }
            self.check_poison()?;
            if s.syncing {
                s = self
                    .sync
                    .done
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            s.syncing = true;
            let (seg, pos, off) = s.written.clone();
            drop(s);
            let r = self.fsync_segment(&seg, Some(pos));
            if r.is_ok() && self.config.settings.durability == Durability::Sync {
                // Sync durability shows a batch once durable (no indexer runs
                // then: commits indexed it). Otherwise commits or the indexer
                // show it. (A segment rolled meanwhile shows all it holds.)
                seg.show_up_to(pos, off);
            }
            s = lock(&self.sync.state);
            s.syncing = false;
            if let Err(e) = r {
                self.sync.done.notify_all();
                return Err(e);
            }
            s.synced_pos = s.synced_pos.max(pos);
            self.sync.done.notify_all();
        }
    }

    /// Fsyncs a segment's data, serialised with every other fsync of the log.
    /// A failure poisons the log. A success after an earlier failure does not
    /// count: the kernel reports a write-back error to one fsync only, so the
    /// pages that failed may be gone while this one returns Ok.
    ///
    /// `covers`: the end of the committed positions this fsync makes durable,
    /// recorded as `fsynced_pos` before the next fsync may start, so the
    /// syncer skips an fsync this one already did; `None` for the segment of
    /// a transaction not committed yet. (Acknowledging, `synced_pos`, is the
    /// caller's, once what it synced is visible.)
    fn fsync_segment(&self, seg: &ActiveSegment, covers: Option<u64>) -> Result<()> {
        let _serial = lock(&self.sync.fsync);
        seg.file
            .sync_data()
            .map_err(|e| self.poison_with(Error::io(&seg.path, e)))?;
        self.check_poison()?;
        if let Some(end) = covers {
            let mut s = lock(&self.sync.state);
            s.fsynced_pos = s.fsynced_pos.max(end);
        }
        Ok(())
    }

    /// Makes everything committed so far durable.
    pub fn flush(&self) -> Result<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        let end = lock(&self.sync.state).written.1;
        self.wait_synced(end)
    }

    /// Rolls after a commit has been written and published. The roll's fsync
    /// makes the commit durable; a failure after it (creating the next
    /// segment, sealing) does not undo the commit, so it is not the commit's
    /// error: the log is poisoned and the next write returns it. (Failing the
    /// commit would have a caller retry a batch that is already in the log.)
    fn roll_after_commit(&self, w: &mut WriterState) -> Result<()> {
        match self.roll(w) {
            Ok(()) => Ok(()),
            Err(e) if lock(&self.sync.state).synced_pos >= w.next_pos => {
                log::warn!(
                    "{}: rolling after a durable commit failed: {e}",
                    self.dir.display()
                );
                self.poison_with(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Publishes newly sealed segments and the new active segment in one
    /// state change, then starts a background merge if enough segments are
    /// not covered by a merged index (after the state lock is released: the
    /// merge reads the state).
    fn publish_rolled(&self, sealed: Vec<Arc<SealedSegment>>, active: &Arc<ActiveSegment>) {
        let uncovered = {
            let mut st = self
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut sealed_list = st.sealed.clone();
            sealed_list.extend(sealed);
            *st = Arc::new(LogState {
                sealed: sealed_list,
                active: active.clone(),
                ..LogState::clone(&st)
            });
            st.uncovered()
        };
        if self.config.auto_merge && uncovered >= MERGE_AFTER {
            self.spawn_merge();
        }
    }

    /// Seals the active segment and starts a new one.
    fn roll(&self, w: &mut WriterState) -> Result<()> {
        // Sealing reads the whole index: the indexer must be done with it.
        self.drain_index()?;
        let old = w.active.clone();
        self.fsync_segment(&old, Some(w.next_pos))?;
        let frames = {
            let mut inner = old
                .inner
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.end_pos = w.next_pos;
            inner.end_off = w.off;
            inner.index.frames.clone()
        };
        {
            let mut s = lock(&self.sync.state);
            s.synced_pos = s.synced_pos.max(w.next_pos);
            self.sync.done.notify_all();
        }
        let (file, path) = segment::create(&*self.config.vfs, &self.dir, w.next_pos, false)
            .map_err(|e| self.poison_with(e))?;
        let sealed = Arc::new(SealedSegment::from_sealed(
            old.path.clone(),
            old.base,
            frames,
            self.config.vfs.clone(),
        )?);
        self.seal(&sealed, SealSource::Active(old))?;
        let active = Arc::new(ActiveSegment::created(
            w.next_pos,
            path,
            file,
            w.active.spare.clone(),
        ));
        self.publish_rolled(vec![sealed], &active);
        // The new segment is empty, and synced: its header was, at creation.
        lock(&self.sync.state).mark_all((
            active.clone(),
            w.next_pos,
            segment::SEGMENT_HEADER_LEN as u64,
        ));
        w.active = active;
        w.off = segment::SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Writes the sidecars of the segment just sealed: on a background thread
    /// (see [`Log::spawn_seal`]) or, without background sealing, right here.
    fn seal(&self, sealed: &Arc<SealedSegment>, source: SealSource) -> Result<()> {
        if self.config.background_seal {
            self.spawn_seal(sealed, source);
            return Ok(());
        }
        let keep = source.keeps_keys();
        let (keys, written) = segment::write_sealed(&*self.config.vfs, &sealed.path, &source);
        written.map_err(|e| self.poison_with(e))?;
        if keep {
            sealed.init_keys(|| keys);
        }
        Ok(())
    }

    /// Encodes and writes the sidecars of the segment just sealed on a
    /// background thread, so the writer goes on into the new segment (this was
    /// about 80 ms of every 64 MiB roll on the writer's path). The thread
    /// holds the segment's key-index cell before this returns, so a reader
    /// that needs the key index waits for the encoded one instead of
    /// rebuilding it; readers with older views keep using the segment's
    /// in-memory index, as while it was active. A failed write is returned by
    /// the next write (and poisons the log, as a failure on the writer's own
    /// path does); this process then serves the encoded index from memory
    /// (otherwise the written file, mapped: see [`segment::write_sealed`]).
    /// A segment a streaming transaction filled has no readers before the
    /// commit (which waits for this job): its key index is left to load from
    /// the written file on first use, so a long transaction's indexes do not
    /// pile up in memory.
    /// One such job at a time; dropping the log joins it.
    fn spawn_seal(&self, sealed: &Arc<SealedSegment>, source: SealSource) {
        self.join_seal();
        let seal = |source: &SealSource,
                    path: &Path,
                    vfs: &dyn Vfs,
                    error: &Mutex<Option<(PathBuf, Error)>>| {
            let (keys, written) = segment::write_sealed(vfs, path, source);
            if let Err(e) = written {
                log::warn!("{}: writing its index sidecars failed: {e}", path.display());
                lock(error).get_or_insert((path.to_path_buf(), e));
            }
            keys
        };
        let keep = source.keeps_keys();
        let (held_tx, held_rx) = crossbeam_channel::bounded::<()>(1);
        let job_sealed = sealed.clone();
        let (vfs, error) = (self.config.vfs.clone(), self.seal_error.clone());
        let source = Arc::new(source);
        let job_source = source.clone();
        let spawned = std::thread::Builder::new()
            .name("tablelog-seal".into())
            .spawn(move || {
                if keep {
                    job_sealed.init_keys(|| {
                        let _ = held_tx.send(());
                        seal(&job_source, &job_sealed.path, &*vfs, &error)
                    });
                } else {
                    drop(held_tx);
                    let _ = seal(&job_source, &job_sealed.path, &*vfs, &error);
                }
            });
        match spawned {
            Ok(h) => {
                // Returns once the thread holds the cell (or has died, or
                // holds none).
                let _ = held_rx.recv();
                *lock(&self.seal_thread) = Some(h);
            }
            Err(_) => {
                let keys = seal(&source, &sealed.path, &*self.config.vfs, &self.seal_error);
                if keep {
                    sealed.init_keys(|| keys);
                }
            }
        }
    }

    /// Forgets a failed sidecar write for one of `gone`: segments that no
    /// longer exist, or whose sidecars were removed (an aborted transaction's).
    /// A failure for any other segment still fails the next write.
    fn forget_seal_error_of(&self, gone: &[&Path]) {
        let mut e = lock(&self.seal_error);
        if e.as_ref().is_some_and(|(p, _)| gone.contains(&p.as_path())) {
            *e = None;
        }
    }

    /// Waits for the sidecar job of the last sealed segment, if one runs.
    fn join_seal(&self) {
        if let Some(h) = lock(&self.seal_thread).take() {
            let _ = h.join();
        }
    }

    /// Builds the next merged key index tier in the background and publishes it
    /// (one merge at a time). Failures only log: the index is derived.
    fn spawn_merge(&self) {
        use std::sync::atomic::Ordering;
        if self.merging.swap(true, Ordering::AcqRel) {
            return;
        }
        // The thread holds what it reads and the state cell it publishes to, never
        // the log; dropping the log joins it (see `Drop for Log`), so no
        // background work outlives the handle or its lock.
        let st = self.state();
        let cell = self.state.clone();
        let merging = self.merging.clone();
        let vfs = self.config.vfs.clone();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("tablelog-merge".into())
            .spawn(move || {
                // Segments sealed while a merge ran are merged next, without
                // waiting for another roll: after a burst of writes nothing may
                // roll again, and every unmerged segment is one more key-index
                // probe per lookup. Goes on while a merge publishes and enough
                // segments are left; the flag is cleared on every way out.
                let read = || {
                    cell.read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                };
                let cover_end = |st: &LogState| st.merged.last().map_or(0, |m| m.cover_end);
                let mut st = st;
                loop {
                    let covered = cover_end(&st);
                    let merged = match merge_tier(&cell, &*vfs, &vfs, &dir, &st, false) {
                        Ok(()) => true,
                        Err(e) => {
                            log::warn!("building a merged key index failed: {e}");
                            false
                        }
                    };
                    let now = read();
                    let progress = merged && cover_end(&now) > covered;
                    if progress && now.uncovered() >= MERGE_AFTER {
                        st = now;
                        continue;
                    }
                    merging.store(false, Ordering::Release);
                    // A roll that found the flag set started no merge: take its
                    // turn if it left enough behind.
                    let again = read();
                    if progress
                        && again.uncovered() >= MERGE_AFTER
                        && !merging.swap(true, Ordering::AcqRel)
                    {
                        st = again;
                        continue;
                    }
                    break;
                }
            });
        match spawned {
            Ok(h) => {
                let previous = lock(&self.merge_thread).replace(h);
                if let Some(p) = previous {
                    let _ = p.join(); // done merging (`merging` was clear), at most exiting
                }
            }
            Err(_) => self.merging.store(false, Ordering::Release),
        }
    }

    /// Builds one merged key index over every sealed segment now (folding the
    /// existing tiers) and publishes it. Returns the first position it does not
    /// cover (0: nothing sealed yet).
    pub fn merge_now(&self) -> Result<u64> {
        if self.config.read_only {
            return Err(Error::ReadOnly);
        }
        // Not beside a compaction: an index of the segments it replaces must
        // never be published after it. Nor beside a background merge, which
        // could publish a smaller tier over this one and remove its file.
        let _exclusive = lock(&self.compacting);
        self.hold_merging();
        let st = self.state();
        let merged = if st.sealed.is_empty() {
            Ok(())
        } else {
            merge_tier(
                &self.state,
                &*self.config.vfs,
                &self.config.vfs,
                &self.dir,
                &st,
                true,
            )
        };
        self.merging
            .store(false, std::sync::atomic::Ordering::Release);
        merged?;
        Ok(if st.sealed.is_empty() {
            0
        } else {
            st.active.base
        })
    }

    /// Waits for any background merge and takes the merging flag, so none
    /// starts until the caller clears it.
    fn hold_merging(&self) {
        use std::sync::atomic::Ordering;
        loop {
            if let Some(h) = lock(&self.merge_thread).take() {
                let _ = h.join();
            }
            if !self.merging.swap(true, Ordering::AcqRel) {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Serialises compactions and keeps background merges from running during
    /// one (a merged index built from segments a compaction replaces would point
    /// into files that are gone). Held for the whole compaction.
    pub(super) fn begin_compaction(&self) -> Result<CompactionGuard<'_>> {
        if self.config.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_poison()?;
        let exclusive = lock(&self.compacting);
        self.hold_merging();
        Ok(CompactionGuard {
            log: self,
            _exclusive: exclusive,
        })
    }

    /// Replaces the published state through `f` (under the state lock, so rolls
    /// and compaction never lose each other's changes).
    pub(super) fn update_state(&self, f: impl FnOnce(&LogState) -> LogState) {
        let mut st = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *st = Arc::new(f(&st));
    }

    /// Starts a background merge of the key indexes if enough sealed segments
    /// are uncovered (after a compaction dropped the merged index).
    pub(super) fn merge_soon(&self) {
        let st = self.state();
        if self.config.auto_merge && !self.config.read_only && st.uncovered() >= MERGE_AFTER {
            self.spawn_merge();
        }
    }

    /// Records a failure that leaves the directory in a state this handle no
    /// longer describes: further writes are refused until reopened.
    pub(super) fn poison(&self, e: Error) -> Error {
        self.poison_with(e)
    }
}

/// Held while a compaction runs: see [`Log::begin_compaction`].
pub(super) struct CompactionGuard<'a> {
    log: &'a Log,
    _exclusive: MutexGuard<'a, ()>,
}

impl CompactionGuard<'_> {
    /// The log being compacted.
    pub(super) fn log(&self) -> &Log {
        self.log
    }
}

impl Drop for CompactionGuard<'_> {
    fn drop(&mut self) {
        self.log
            .merging
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Opens the segment at `path` as the active one: repairs a header a crash left
/// short, maps it and scans its frames. Returns the file, its length, the scan
/// and whether it continues a transaction from the previous segment.
fn open_active(
    vfs: &dyn Vfs,
    path: &Path,
    base: u64,
    writable: bool,
) -> Result<(Arc<dyn VFile>, u64, segment::ScanOutcome, bool)> {
    let file = vfs.open(path, writable).map_err(|e| Error::io(path, e))?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    if len < segment::SEGMENT_HEADER_LEN as u64 && !writable {
        // A crash while creating it (see below), not repaired by a reader.
        let empty = segment::ScanOutcome {
            index: MemIndex::default(),
            committed_end: len,
            end_pos: base,
            stopped: None,
        };
        return Ok((file, len, empty, false));
    }
    if len < segment::SEGMENT_HEADER_LEN as u64 {
        // Crash while creating the segment: the header never became durable.
        // Whether it was to continue a transaction does not matter: such a
        // segment holds no frame, and if the previous one ends in a data
        // frame the caller removes it all the same.
        file.set_len(0).map_err(|e| Error::io(path, e))?;
        file.write_at(&segment::encode_header(), 0)
            .map_err(|e| Error::io(path, e))?;
        file.sync_all().map_err(|e| Error::io(path, e))?;
    }
    let len = file.len().map_err(|e| Error::io(path, e))?;
    let bytes = file.map(len as usize).map_err(|e| Error::io(path, e))?;
    let scan = segment::scan(&bytes, base, path)?;
    let header = segment::check_header(&bytes, path)?;
    if header.compacted_end.is_some() {
        return Err(Error::corrupt(
            path,
            0,
            "the last segment is a compacted one; the active segment is missing",
        ));
    }
    Ok((file, len, scan, header.continues))
}

/// Removes what an interrupted compaction or sidecar write left behind: segments
/// superseded by a compacted one, temporary files, and sidecars of segments that
/// no longer exist. All of it is redundant by construction (see
/// [`segment::list_all`]).
fn remove_leftovers(
    vfs: &dyn Vfs,
    dir: &Path,
    live: &[(u64, PathBuf)],
    stale: &[PathBuf],
) -> Result<()> {
    let mut doomed: Vec<PathBuf> = stale.to_vec();
    let live_stems: std::collections::HashSet<_> = live
        .iter()
        .filter_map(|(_, p)| p.file_stem().map(std::ffi::OsStr::to_os_string))
        .collect();
    for path in vfs.list(dir).map_err(|e| Error::io(dir, e))? {
        let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let orphan_sidecar = (ext == "fidx" || ext == "kidx")
            && !name.starts_with("index-")
            && path
                .file_stem()
                .is_some_and(|stem| !live_stems.contains(stem));
        let tmp = name.ends_with(".seg.tmp")
            || name.ends_with(".fidx.tmp")
            || name.ends_with(".kidx.tmp");
        if orphan_sidecar || tmp {
            doomed.push(path);
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    for p in &doomed {
        log::warn!(
            "{}: removing what an interrupted compaction left",
            p.display()
        );
        super::fsutil::remove_if_exists(vfs, p)?;
    }
    super::fsutil::sync_dir(vfs, dir)
}

/// Builds the next tier from the state `st` and publishes it: a merged index
/// over the segments no tier covers, absorbing the newest tiers while it is at
/// least half their size (all of them when `all`). Nothing to do when fewer
/// than [`MERGE_AFTER`] segments are uncovered (unless `all`).
fn merge_tier(
    cell: &RwLock<Arc<LogState>>,
    vfs: &dyn Vfs,
    vfs_arc: &Arc<dyn Vfs>,
    dir: &Path,
    st: &LogState,
    all: bool,
) -> Result<()> {
    let (usable, covered_end) = st.usable_tiers();
    let kept_tiers = usable.len();
    let first_uncovered = st.sealed.partition_point(|s| s.base < covered_end);
    let uncovered = &st.sealed[first_uncovered..];
    let worth = if all {
        !uncovered.is_empty() || kept_tiers > 1
    } else {
        uncovered.len() >= MERGE_AFTER
    };
    if !worth {
        return Ok(());
    }
    // How many of the newest tiers the new one absorbs.
    let mut absorb = 0;
    let mut weight = uncovered.len();
    while absorb < kept_tiers {
        let t = &st.merged[kept_tiers - 1 - absorb];
        if !all && weight * 2 < t.segments {
            break;
        }
        weight += t.segments;
        absorb += 1;
    }
    let from = kept_tiers - absorb;
    let mut files: Vec<&super::index::KeyIndexFile> = usable[from..].to_vec();
    for s in uncovered {
        files.push(s.keys()?);
    }
    let start = st.merged.get(from).map_or_else(
        || uncovered.first().map_or(covered_end, |s| s.base),
        |m| m.cover_start,
    );
    let end = st.active.base;
    let m = MergedIndex::build(vfs_arc, dir, &files, start, end, weight)?;
    // Publish only onto the state it was built from: the same tiers below it and
    // the same segments (a compaction may have replaced them meanwhile).
    let mut cur = cell
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let same_tiers = cur.merged.len() >= kept_tiers
        && cur.merged[..kept_tiers]
            .iter()
            .zip(&st.merged[..kept_tiers])
            .all(|(a, b)| Arc::ptr_eq(a, b));
    let n = st.sealed.partition_point(|s| s.base < end);
    let same_segments = cur.sealed.len() >= n
        && cur.sealed[..n]
            .iter()
            .zip(&st.sealed[..n])
            .all(|(a, b)| Arc::ptr_eq(a, b));
    if !(same_tiers && same_segments) {
        drop(cur);
        let _ = vfs.remove(&m.path);
        return Ok(());
    }
    let mut merged: Vec<Arc<MergedIndex>> = cur.merged[..from].to_vec();
    merged.push(m);
    *cur = Arc::new(LogState {
        merged: merged.clone(),
        ..LogState::clone(&cur)
    });
    drop(cur);
    MergedIndex::remove_others(vfs, dir, &merged);
    Ok(())
}

impl Drop for Log {
    fn drop(&mut self) {
        // Closing the queue ends the indexer once it has indexed what is in it.
        if let Some(w) = self.writer.as_mut() {
            w.get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .index_tx = None;
        }
        if let Some(h) = lock(&self.indexer).take() {
            let _ = h.join();
        }
        if let Some(h) = lock(&self.syncer).take() {
            lock(&self.sync.state).stop = true;
            self.sync.work.notify_all();
            let _ = h.join();
        }
        if let Some(h) = lock(&self.seal_thread).take() {
            let _ = h.join();
        }
        if let Some(h) = lock(&self.merge_thread).take() {
            let _ = h.join();
        }
    }
}
