//! The indexer thread: with background work on, a commit writes its frames
//! and hands them to this thread, which adds them to the active segment's
//! in-memory index and only then makes them visible. The writer goes on with
//! the next batch meanwhile; on two cores, key indexing (a hash probe and a
//! cache miss or two a record, about 45% of a writer's time) leaves the
//! writer's path.
//!
//! What stays true:
//! - Readers never see a position before it is indexed: the visible end moves
//!   here, after the index (in sync durability, once a batch is also durable,
//!   through [`SyncState::publish_durable`](super::sync::SyncState)).
//! - Read-your-writes: a snapshot first waits until everything written when it
//!   was asked for is indexed ([`Log::wait_indexed`]), so a commit that has
//!   returned is in every snapshot taken after it.
//! - Versions reach a key table in position order: one thread indexes, jobs
//!   arrive in commit order, and whatever else indexes or reads the whole
//!   active index (a roll, a streaming transaction) first waits for the
//!   queue to drain ([`Log::drain_index`]).
//! - The queue is bounded: a writer faster than the indexer waits for it.

use std::sync::Arc;

use super::sync::{poison_shared, SyncShared};
use super::{lock, ActiveSegment, Log};
use crate::storage::frame::FrameBuilder;
use crate::storage::index::FrameMeta;
use crate::Result;

/// Jobs queued at most before a writer waits (a job is one commit).
const QUEUE: usize = 4;

/// Out of sync durability, write-back of what commits wrote is started every
/// this many bytes, so that the fsync of a segment roll, on the writer's path,
/// finds most of the segment already written (the syncer fsyncs each batch in
/// sync durability anyway).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// One commit's frames, written to `seg`, to index and then show.
pub(super) struct IndexJob {
    pub(super) seg: Arc<ActiveSegment>,
    pub(super) frames: Vec<FrameBuilder>,
    pub(super) metas: Vec<FrameMeta>,
    pub(super) end_pos: u64,
    pub(super) end_off: u64,
}

/// Starts the indexer. `publish_durable`: whether visibility also waits for
/// durability (sync durability with the syncer), else a batch shows once
/// indexed. `None` if the thread cannot start (commits then index themselves).
pub(super) fn spawn_indexer(
    sync: Arc<SyncShared>,
    publish_durable: bool,
) -> Option<(
    crossbeam_channel::Sender<IndexJob>,
    std::thread::JoinHandle<()>,
)> {
    /// If the thread unwinds, nobody may wait for it forever.
    struct PoisonOnPanic(Arc<SyncShared>);
    impl Drop for PoisonOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                lock(&self.0.state).indexer_gone = true;
                poison_shared(&self.0, "the indexer thread panicked");
            }
        }
    }
    let (tx, rx) = crossbeam_channel::bounded::<IndexJob>(QUEUE);
    let run = move || {
        // Declared after `rx`, so dropped before it: a commit that finds the
        // queue closed finds the log already poisoned with the reason.
        let _guard = PoisonOnPanic(sync.clone());
        // Where write-back was last started: the segment and the offset.
        let mut hinted: Option<(Arc<ActiveSegment>, u64)> = None;
        // Ends when the log drops its sender, after the queue is empty.
        for job in rx.iter() {
            {
                let mut inner = job
                    .seg
                    .inner
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (f, meta) in job.frames.iter().zip(job.metas) {
                    inner.index.add_built(meta, f);
                }
            }
            if !publish_durable {
                job.seg.show_up_to(job.end_pos, job.end_off);
                let from = match &hinted {
                    Some((seg, at)) if Arc::ptr_eq(seg, &job.seg) => *at,
                    _ => 0,
                };
                if job.end_off >= from + WRITEBACK_EVERY {
                    job.seg.file.start_writeback(from, job.end_off - from);
                    hinted = Some((job.seg.clone(), job.end_off));
                }
            }
            let mut s = lock(&sync.state);
            if job.end_pos > s.indexed.1 {
                s.indexed = (job.seg, job.end_pos, job.end_off);
            }
            if publish_durable {
                s.publish_durable();
            }
            drop(s);
            sync.indexed.notify_all();
            // The frames (the batch's buffers) are freed here, off the writer.
        }
    };
    match std::thread::Builder::new()
        .name("tablelog-indexer".into())
        .spawn(run)
    {
        Ok(h) => Some((tx, h)),
        Err(e) => {
            log::warn!("could not start the indexer thread, commits will index: {e}");
            None
        }
    }
}

impl Log {
    /// Waits until everything written so far is indexed (and, out of sync
    /// durability, visible). For what reads or extends the whole active
    /// index: a roll, a streaming transaction. The caller holds the writer, so
    /// nothing new is queued meanwhile.
    pub(super) fn drain_index(&self) -> Result<()> {
        self.wait_indexed()
    }

    /// Waits until everything written when it is called is indexed, so that
    /// every commit that has returned shows in a snapshot taken now
    /// (read-your-writes with the indexer thread; [`crate::Db::snapshot`]
    /// calls it). Returns at once without the indexer.
    pub fn wait_indexed(&self) -> Result<()> {
        if !self.indexer_on {
            return Ok(());
        }
        let mut s = lock(&self.sync.state);
        let target = s.written.1;
        while s.indexed.1 < target {
            if s.indexer_gone {
                // What it left unindexed would never show: say so rather
                // than wait (it poisoned the log on its way out).
                drop(s);
                self.check_poison()?;
                return Err(crate::Error::Poisoned("the indexer thread panicked".into()));
            }
            s = self
                .sync
                .indexed
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }
}
