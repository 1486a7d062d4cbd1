//! Snapshot checkpoints: a stream's table saved as of event time `T`, known below
//! position `K`, so `table` as of `T' >= T` starts from it and reads only the
//! tail, instead of every version in history.
//!
//! A checkpoint never changes an answer. The tail is every visible record the
//! checkpoint does not reflect, i.e. with `T < event_time <= T'`, or with
//! `position >= K`. A key whose tail records all sort after the last record
//! the checkpoint applied to its row (every record with `event_time > T` does;
//! a late one, with `event_time <= T` and `position >= K`, may) folds them on
//! top of that row straight from the scan. A key with a late record that sorts
//! before it, or with no row in the checkpoint (deleted, so the tombstone's
//! place is unknown), is refolded from the key index. Every other key's row is
//! the checkpoint's.
//!
//! Files live in `DIR/checkpoints/<stream>@<K, 20 digits>.ckpt` (format in
//! [`file`](mod@file)).

pub mod file;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::db::Snapshot;
use crate::query::asof::{GetResult, Row};
use crate::storage::record::{Op, Record};
use crate::{Error, Result};
pub use file::CheckpointInfo;

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

impl Catalog {
    /// Lists the checkpoint files of the database at `db_dir` (headers only).
    /// Files that do not parse are ignored here and reported by `verify`.
    /// After each checkpoint taken, only the newest `keep` of its stream stay.
    #[must_use]
    pub fn load(
        vfs: std::sync::Arc<dyn crate::storage::vfs::Vfs>,
        db_dir: &Path,
        keep: usize,
    ) -> Catalog {
        let dir = db_dir.join(CHECKPOINT_DIR);
        let mut infos = Vec::new();
        if let Ok(paths) = vfs.list(&dir) {
            for p in paths {
                if p.extension().is_some_and(|x| x == "ckpt") {
                    match file::peek(&*vfs, &p) {
                        Ok(i) => infos.push(i),
                        Err(err) => log::warn!("ignoring checkpoint {}: {err}", p.display()),
                    }
                }
            }
        }
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
    /// (checkpoint files are never rewritten in place).
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
        let path = self.dir.join(format!("{stream}@{end:020}.ckpt"));
        // From the previous checkpoint plus its tail when that is cheaper: a
        // checkpoint costs about the table's size, not the history's, so
        // periodic checkpoints stay linear in the log.
        let rows = snap.table(stream, as_of, crate::KnownAt::Latest)?;
        let info = file::write(vfs, &path, stream, as_of, end, rows, level)?;
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

/// One key's share of the tail: its records sorted by `(event_time,
/// position)`, and whether any is late (event time at or before the
/// checkpoint's, position after it).
#[derive(Debug)]
pub(crate) struct TailKey {
    recs: Vec<Record>,
    late: bool,
}

/// What `stream`'s checkpoint does not reflect, by key (sorted): every visible
/// record (below `end`, at or before `as_of`) with event time after the
/// checkpoint's or position after it. `None` when the tail looks larger than the
/// checkpoint itself (starting from scratch is then cheaper).
pub(crate) fn tail_keys(
    snap: &Snapshot,
    ck: &CheckpointInfo,
    as_of: i64,
    end: u64,
) -> Result<Option<Vec<(Bytes, TailKey)>>> {
    let view = snap.view();
    let budget = ck.rows.max(1024);
    let mut recs: Vec<(Record, bool)> = Vec::new();
    let mut seen = 0u64;
    // Records newer in event time than the checkpoint (skipping frames by the
    // time index), then records appended after it with an older event time.
    for r in view.scan_time(&ck.stream, ck.as_of.saturating_add(1), as_of) {
        let r = r?;
        if r.position < end {
            recs.push((r, false));
        }
        seen += 1;
        if seen > budget {
            return Ok(None);
        }
    }
    for r in view.scan(ck.known_end, Some(&ck.stream)) {
        let r = r?;
        if r.position >= end {
            break;
        }
        if r.event_time <= ck.as_of {
            recs.push((r, true));
        }
        seen += 1;
        if seen > budget {
            return Ok(None);
        }
    }
    recs.sort_unstable_by(|(a, _), (b, _)| {
        (&a.key, a.event_time, a.position).cmp(&(&b.key, b.event_time, b.position))
    });
    let mut out: Vec<(Bytes, TailKey)> = Vec::new();
    for (r, late) in recs {
        match out.last_mut() {
            Some((k, t)) if *k == r.key => {
                t.late |= late;
                t.recs.push(r);
            }
            _ => out.push((
                r.key.clone(),
                TailKey {
                    recs: vec![r],
                    late,
                },
            )),
        }
    }
    Ok(Some(out))
}

/// Rows of a table from a checkpoint plus its tail, in key order.
pub(crate) struct FromCheckpoint {
    pub(crate) snap: Snapshot,
    pub(crate) stream: String,
    pub(crate) as_of: i64,
    pub(crate) end: u64,
    pub(crate) rows: file::Rows,
    pub(crate) peeked: Option<Row>,
    pub(crate) tail: std::vec::IntoIter<(Bytes, TailKey)>,
    pub(crate) next_tail: Option<(Bytes, TailKey)>,
}

impl std::fmt::Debug for FromCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromCheckpoint")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl FromCheckpoint {
    fn recompute(&mut self, key: &Bytes) -> Result<Option<Row>> {
        Ok(
            match self
                .snap
                .get_below(&self.stream, key, self.as_of, self.end)?
            {
                GetResult::Present(r) => Some(r),
                _ => None,
            },
        )
    }

    /// Applies records newer than everything the checkpoint folded to its row.
    fn on_top(&self, mut row: Option<Row>, recs: Vec<Record>) -> Result<Option<Row>> {
        for r in recs {
            row = match r.op {
                Op::Delete => None,
                Op::Put => Some(Row {
                    key: r.key,
                    value: r.value,
                    event_time: r.event_time,
                    position: r.position,
                }),
                Op::Patch => {
                    let op = self
                        .snap
                        .merge
                        .get(&self.stream)
                        .ok_or_else(|| Error::NoMergeOperator(self.stream.clone()))?;
                    let merged = op
                        .merge(row.as_ref().map(|o| &o.value[..]), &r.value)
                        .map_err(|reason| Error::Merge {
                            stream: self.stream.clone(),
                            position: r.position,
                            reason,
                        })?;
                    Some(Row {
                        key: r.key,
                        value: Bytes::from(merged),
                        event_time: r.event_time,
                        position: r.position,
                    })
                }
            };
        }
        Ok(row)
    }

    pub(crate) fn next_row(&mut self) -> Option<Result<Row>> {
        loop {
            if self.peeked.is_none() {
                match self.rows.next() {
                    Some(Ok(r)) => self.peeked = Some(r),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
            if self.next_tail.is_none() {
                self.next_tail = self.tail.next();
            }
            let take_tail = match (&self.peeked, &self.next_tail) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(r), Some((k, _))) => *k <= r.key,
            };
            if !take_tail {
                return self.peeked.take().map(Ok);
            }
            let Some((key, tail)) = self.next_tail.take() else {
                continue;
            };
            let base = if self.peeked.as_ref().is_some_and(|r| r.key == key) {
                self.peeked.take()
            } else {
                None
            };
            // Records that all sort after the last one the checkpoint applied
            // to this row fold on top of it. A late record may sort before it
            // (among versions the checkpoint folded), or before a tombstone
            // the checkpoint does not keep: then the key is refolded.
            let on_top = match (&base, tail.recs.first()) {
                _ if !tail.late => true,
                (Some(r), Some(first)) => {
                    (first.event_time, first.position) > (r.event_time, r.position)
                }
                _ => false,
            };
            let row = if on_top {
                self.on_top(base, tail.recs)
            } else {
                self.recompute(&key)
            };
            match row {
                Ok(Some(row)) => return Some(Ok(row)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
