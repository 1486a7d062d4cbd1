//! Snapshot checkpoints: a stream's table saved as of event time `T`, known below
//! position `K`, so `table` as of `T' >= T` starts from it and reads only the
//! tail, instead of every version in history.
//!
//! A checkpoint never changes an answer. The tail is every visible record the
//! checkpoint does not reflect, i.e. with `T < event_time <= T'`, or with
//! `position >= K`. Tail records that sort after the last record the
//! checkpoint applied to a key's row (every record with `event_time > T` does;
//! a late one, with `event_time <= T` and `position >= K`, may) fold on top of
//! that row straight from the scan. Late records that sort before it are
//! shadowed when the row is *settled* (that last record was a put, so nothing
//! older counts); under an unsettled row (a patch was applied last), or for a
//! key with no row in the checkpoint (deleted, so the tombstone's place is
//! unknown), the key is refolded from the key index. Every other key's row is
//! the checkpoint's.
//!
//! Files live in `DIR/checkpoints/<stream>@<K, 20 digits>@<T>.ckpt` (format
//! in [`file`](mod@file); files named `<stream>@<K>.ckpt`, before 2026-11-27,
//! are read too).

pub mod file;
mod tail;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::db::Snapshot;
use crate::{Error, Result};
pub use file::CheckpointInfo;
use file::{SavedRef, SavedRows};
pub(crate) use tail::{tail_keys, FromCheckpoint};

/// Subdirectory holding checkpoint files.
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// The checkpoints of a database, by stream.
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    infos: Mutex<Vec<CheckpointInfo>>,
    vfs: std::sync::Arc<dyn crate::storage::vfs::Vfs>,
    /// Checkpoints kept per stream when a new one is taken.
    keep: usize,
    /// Checkpoints opened (mapped and checksummed) by this handle: each file is
    /// validated once, not on every table read from it.
    opened: Mutex<std::collections::HashMap<PathBuf, (CheckpointInfo, Bytes)>>,
}

/// Rows a checkpoint reads between two calls of [`Catalog::release_pages`].
const RELEASE_EVERY_ROWS: u64 = 1 << 12;

impl Catalog {
    /// Drops the process's mapping of the key index pages `snap` can read and
    /// of the checkpoint files this catalog opened (see
    /// [`crate::storage::log::LogState::release_index_pages`]).
    fn release_pages(&self, snap: &Snapshot) {
        snap.view().release_index_pages();
        let opened: Vec<Bytes> = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|(_, bytes)| bytes.clone())
            .collect();
        for bytes in &opened {
            crate::storage::mmap::release(bytes);
        }
    }

    /// Lists the checkpoint files of the database at `db_dir` (headers only).
    /// Files that do not parse are ignored here and reported by `verify`.
    /// After each checkpoint taken, only the newest `keep` of its stream stay.
    ///
    /// A checkpoint that reflects positions at or past `log_end` (the log's
    /// end on opening) reflects records the log lost: a checkpoint written
    /// before its records were synced (tablelog before 2026-11-27 did not
    /// sync them first), then a power loss. It is never used, and a
    /// `writable` handle removes it, before new records reuse the positions.
    #[must_use]
    pub fn load(
        vfs: std::sync::Arc<dyn crate::storage::vfs::Vfs>,
        db_dir: &Path,
        keep: usize,
        log_end: u64,
        writable: bool,
    ) -> Catalog {
        let dir = db_dir.join(CHECKPOINT_DIR);
        let infos = crate::storage::fsutil::derived_files(
            &*vfs,
            vfs.list(&dir).unwrap_or_default(),
            "ckpt",
            "checkpoint",
            (log_end, writable),
            file::peek,
            |i| i.known_end,
        );
        Catalog {
            dir,
            infos: Mutex::new(infos),
            vfs,
            keep: keep.max(1),
            opened: Mutex::default(),
        }
    }

    /// Opens a checkpoint of this catalog: header, whole checksum, rows. The
    /// first open maps and checks the file; later ones reuse that mapping
    /// (checkpoint files are never rewritten in place). A file whose header is
    /// not `info`'s (replaced since this catalog listed it) is refused.
    pub fn open(&self, info: &CheckpointInfo) -> Result<(CheckpointInfo, bytes::Bytes)> {
        let cached = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&info.path)
            .cloned();
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let fresh = file::open(&*self.vfs, &info.path)?;
        if (&fresh.0.stream, fresh.0.as_of, fresh.0.known_end)
            != (&info.stream, info.as_of, info.known_end)
        {
            return Err(Error::corrupt(
                &info.path,
                0,
                format!(
                    "checkpoint replaced since it was listed: as of {} known at {}, \
                     where the catalog has {} and {}",
                    fresh.0.as_of, fresh.0.known_end, info.as_of, info.known_end
                ),
            ));
        }
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(info.path.clone(), fresh.clone());
        Ok(fresh)
    }

    /// Every checkpoint known, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<CheckpointInfo> {
        let mut v = self
            .infos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        v.sort_by_key(|i| (i.stream.clone(), i.known_end, i.as_of));
        v
    }

    /// The best checkpoint of `stream` usable for a query as of `as_of` known below
    /// `end`: the latest `T <= as_of` with `K <= end`.
    #[must_use]
    pub fn best(&self, stream: &str, as_of: i64, end: u64) -> Option<CheckpointInfo> {
        self.infos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|i| i.stream == stream && i.as_of <= as_of && i.known_end <= end)
            .max_by_key(|i| (i.as_of, i.known_end))
            .cloned()
    }

    /// Writes a checkpoint of `stream` as of `as_of`, known at the snapshot's end.
    pub fn take(
        &self,
        vfs: &dyn crate::storage::vfs::Vfs,
        snap: &Snapshot,
        stream: &str,
        as_of: i64,
        level: Option<i32>,
    ) -> Result<CheckpointInfo> {
        let end = snap.end_position();
        if self.vfs.list(&self.dir).is_err() {
            vfs.create_dir_all(&self.dir)
                .map_err(|e| Error::io(&self.dir, e))?;
            if let Some(parent) = self.dir.parent() {
                crate::storage::fsutil::sync_dir(vfs, parent)?;
            }
        }
        // One file per position and time: two checkpoints of a position at
        // different times differ, and a handle that listed one must never
        // open the other under its name.
        let path = self.dir.join(format!("{stream}@{end:020}@{as_of}.ckpt"));
        // From the previous checkpoint plus its tail when that is cheaper: a
        // checkpoint costs about the table's size, not the history's, so
        // periodic checkpoints stay linear in the log.
        //
        // A table from scratch walks every key index of the stream, through
        // bulk cursors that unmap what they copied; from a checkpoint, it
        // reads that checkpoint's file, and every few thousand rows its pages
        // and those of the indexes (read by lookups) are unmapped. Either
        // way the process does not keep the whole history's indexes
        // resident. (Values are read at random and keep their pages: mapping
        // them again cost a checkpoint of 1M keys 75% more time.)
        let mut table = snap
            .clone()
            .bulk()
            .table(stream, as_of, crate::KnownAt::Latest)?;
        let mut rows = Releasing {
            table: &mut table,
            catalog: self,
            snap,
            read: 0,
        };
        let written = file::write(vfs, &path, stream, as_of, end, &mut rows, level);
        self.release_pages(snap);
        let info = written?;
        let doomed = {
            let mut infos = self
                .infos
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            infos.retain(|i| i.path != path);
            infos.push(info.clone());
            // The stream's checkpoints, newest first; those past `keep` go.
            let mut mine: Vec<&CheckpointInfo> =
                infos.iter().filter(|i| i.stream == stream).collect();
            mine.sort_by_key(|i| std::cmp::Reverse((i.known_end, i.as_of)));
            let doomed: Vec<PathBuf> = mine
                .iter()
                .skip(self.keep)
                .map(|i| i.path.clone())
                .collect();
            infos.retain(|i| !doomed.contains(&i.path));
            doomed
        };
        {
            let mut opened = self
                .opened
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            opened.remove(&path);
            for p in &doomed {
                opened.remove(p);
            }
        }
        // Best effort: a checkpoint is never needed for an answer, and one
        // left behind is removed after the next checkpoint of its stream.
        for p in &doomed {
            if let Err(e) = crate::storage::fsutil::remove_if_exists(vfs, p) {
                log::warn!("could not remove an old checkpoint: {e}");
            }
        }
        Ok(info)
    }
}

/// A table's rows that unmap the pages read every [`RELEASE_EVERY_ROWS`].
struct Releasing<'a> {
    table: &'a mut crate::Table,
    catalog: &'a Catalog,
    snap: &'a Snapshot,
    read: u64,
}

impl SavedRows for Releasing<'_> {
    fn next_saved_ref(&mut self) -> Option<Result<SavedRef<'_>>> {
        self.read += 1;
        if self.read.is_multiple_of(RELEASE_EVERY_ROWS) {
            self.catalog.release_pages(self.snap);
        }
        self.table.next_saved_ref()
    }
}
