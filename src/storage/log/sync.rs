//! Group commit: the state committers and fsyncs share, the syncer thread of
//! sync durability, and the periodic sync thread.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::{lock, ActiveSegment, Log};
use crate::Error;

/// A point of the active segment: the segment, a position and the file
/// offset that goes with it.
pub(super) type Mark = (Arc<ActiveSegment>, u64, u64);

pub(super) struct SyncState {
    /// How far frames are written to the file.
    pub(super) written: Mark,
    /// How far the active segment's in-memory index is complete (with the
    /// syncer, `written` runs ahead of it while a commit indexes).
    pub(super) indexed: Mark,
    /// How far the last fsync reached (with the syncer).
    pub(super) synced: Mark,
    /// Positions below this are durable and may be acknowledged (set once
    /// what an fsync covered is also visible, where that matters).
    pub(super) synced_pos: u64,
    /// Positions below this have been fsynced: the syncer skips an fsync a
    /// roll or a leading committer already did (set under the fsync lock).
    pub(super) fsynced_pos: u64,
    pub(super) syncing: bool,
    /// Tells the syncer thread to end.
    pub(super) stop: bool,
    /// The indexer thread died: what it left unindexed never shows.
    pub(super) indexer_gone: bool,
    /// The syncer's failed fsync: the file and the OS error (code, or kind
    /// and message). Each committer whose batch it left unsynced gets it as
    /// its own I/O error; later writes find the log poisoned.
    pub(super) fsync_failed: Option<(PathBuf, Option<i32>, std::io::ErrorKind, String)>,
}

impl SyncState {
    /// Moves every mark to `mark`: a new, empty active segment, or a commit
    /// that is both durable and indexed.
    pub(super) fn mark_all(&mut self, mark: Mark) {
        self.written = mark.clone();
        self.indexed = mark.clone();
        self.synced = mark;
    }

    /// Publishes to readers what is both durable and indexed (with the
    /// syncer). Segments a roll sealed were published by it.
    pub(super) fn publish_durable(&self) {
        let ((iseg, ipos, ioff), (sseg, spos, soff)) = (&self.indexed, &self.synced);
        if !Arc::ptr_eq(iseg, sseg) {
            return;
        }
        let (pos, off) = if spos <= ipos {
            (*spos, *soff)
        } else {
            (*ipos, *ioff)
        };
        iseg.show_up_to(pos, off);
    }
}

/// The group-commit state, shared with the syncer thread.
pub(super) struct SyncShared {
    pub(super) state: Mutex<SyncState>,
    /// Signalled when `synced_pos` moves or the log is poisoned.
    pub(super) done: Condvar,
    /// Signalled when there is something for the syncer to fsync.
    pub(super) work: Condvar,
    /// Signalled when the indexer has indexed a batch, or died.
    pub(super) indexed: Condvar,
    /// Why writes are refused, once an I/O error made the log's state unknown.
    pub(super) poison: Mutex<Option<String>>,
    /// Held across every fsync of a segment and the use of its result, so
    /// fsyncs never overlap: the kernel reports a write-back error to one fsync
    /// only, and a later one that succeeds must not count (see
    /// [`Log::fsync_segment`]). Taken before `state`, never while holding it.
    pub(super) fsync: Mutex<()>,
}

/// Refuses further writes with `why` (the first reason sticks) and wakes
/// everyone waiting for an fsync, so they see it.
pub(super) fn poison_shared(sync: &SyncShared, why: &str) {
    {
        let mut p = lock(&sync.poison);
        if p.is_none() {
            *p = Some(why.to_string());
        }
    }
    let _g = lock(&sync.state);
    sync.done.notify_all();
    sync.work.notify_all();
    sync.indexed.notify_all();
}

/// Starts the syncer of a log in sync durability: it fsyncs whatever commits
/// have written (`written`) beyond what is durable, as soon as they have
/// written it, so a commit's fsync runs while the committing thread indexes its
/// batch instead of after; and, like a group-commit leader, one fsync covers
/// every batch written meanwhile. It publishes what is both durable and
/// indexed, and wakes the committers waiting for it. An fsync failure poisons
/// the log and ends the thread; dropping the log ends it too. `None` if the
/// thread cannot start (committers then lead fsyncs themselves).
pub(super) fn spawn_syncer(sync: Arc<SyncShared>) -> Option<std::thread::JoinHandle<()>> {
    /// If the thread unwinds (a file system that panics), committers waiting
    /// for it must not wait forever: poison the log on the way out.
    struct PoisonOnPanic(Arc<SyncShared>);
    impl Drop for PoisonOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                poison_shared(&self.0, "the syncer thread panicked");
            }
        }
    }
    let run = move || {
        let _guard = PoisonOnPanic(sync.clone());
        let mut s = lock(&sync.state);
        loop {
            if s.stop || lock(&sync.poison).is_some() {
                return;
            }
            if s.written.1 <= s.synced_pos {
                s = sync
                    .work
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            let (seg, pos, off) = s.written.clone();
            drop(s);
            // Serialised with the committers' fsyncs (see `Log::fsync_segment`).
            let serial = lock(&sync.fsync);
            // A segment roll may have fsynced all of it meanwhile (the writer
            // no longer indexes between telling the syncer and rolling, so it
            // often does): no fsync then, which would also come after the
            // commit had returned.
            let state = lock(&sync.state);
            if state.fsynced_pos >= pos {
                drop(serial);
                s = state;
                continue;
            }
            drop(state);
            let r = seg.file.sync_data();
            s = lock(&sync.state);
            if let Err(e) = r {
                s.fsync_failed =
                    Some((seg.path.clone(), e.raw_os_error(), e.kind(), e.to_string()));
                drop(s);
                poison_shared(&sync, &Error::io(&seg.path, e).to_string());
                return;
            }
            if lock(&sync.poison).is_some() {
                // A failure elsewhere came first: this success proves nothing.
                return;
            }
            drop(serial);
            s.synced_pos = s.synced_pos.max(pos);
            s.fsynced_pos = s.fsynced_pos.max(pos);
            // A roll may have moved on to a new segment meanwhile (it synced
            // and published the old one itself).
            if Arc::ptr_eq(&seg, &s.synced.0) && pos > s.synced.1 {
                s.synced = (seg, pos, off);
            }
            s.publish_durable();
            sync.done.notify_all();
        }
    };
    match std::thread::Builder::new()
        .name("tablelog-syncer".into())
        .spawn(run)
    {
        Ok(h) => Some(h),
        Err(e) => {
            log::warn!("could not start the syncer thread, committers will fsync: {e}");
            None
        }
    }
}

pub(super) fn spawn_periodic_sync(log: Weak<Log>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tablelog-sync".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(log) = log.upgrade() else { return };
            if log.flush().is_err() {
                return;
            }
        });
    if let Err(e) = spawned {
        log::error!("could not start the periodic sync thread: {e}");
    }
}
