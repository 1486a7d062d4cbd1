//! Field columns: one numeric field of one stream kept typed beside the log,
//! per key in `(event_time, position)` order, so a window over a key costs a
//! hash lookup, two binary searches and a pass over the window's values,
//! instead of reading and parsing every JSON value it spans.
//!
//! A column is built from a snapshot ([`crate::Db::build_column`]) and holds
//! the stream's records at positions below its `known_end` `K`. A window
//! known at `E >= K` is answered from the column plus the *tail*, the
//! stream's records at positions `K..E`, read from the log: a key with tail
//! records (late ones included) has them merged into its column events in
//! `(event_time, position)` order; every other key is answered from the column
//! alone. A window known before `K` cannot use the column and reads the log.
//! A window's values are summed afresh in `(event_time, position)` order, so a
//! column changes no answer, only its cost (beyond the last bits of a sum,
//! which the log paths, adding and subtracting as their window slides, can
//! differ in): a stale column costs a longer tail. Rebuild it to shorten
//! the tail: a rebuild reads the column it replaces (until the database is
//! first compacted) and only the tail from the log, and writes what a
//! build from the log would.
//!
//! Compaction to a horizon `H` drops only versions with `event_time <= H`.
//! A column records the horizon in force when it was built, `Hc`, and is
//! read only by windows whose exclusive start `time - width` is at or after
//! `Hc` (a snapshot taken before the compaction may ask for earlier ones;
//! they read the log). A column built before a compaction needs no rebuild:
//! every window answerable after it starts at or after `H`, and nothing it
//! holds above `H` was dropped.
//!
//! Files live in `DIR/columns/<stream>@<field in hex>.col`, or
//! `<hash of both>.col` when that name would be too long for a file system
//! (format in [`file`](mod@file)).

mod build;
pub mod file;
mod spill;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use file::{Column, ColumnInfo};

use crate::db::Snapshot;
use crate::storage::vfs::Vfs;
use crate::{Error, Result};

/// Subdirectory holding column files.
pub const COLUMN_DIR: &str = "columns";

/// Longest field name a column can be built for (its file name holds it in hex).
pub const MAX_FIELD_LEN: usize = 100;

/// Default memory a column build holds events in before it spills them to
/// temporary files ([`crate::DbBuilder::column_build_memory`]): 256 MiB,
/// about 11 million events.
pub const DEFAULT_BUILD_MEMORY: usize = 256 << 20;

/// The columns of a database.
#[derive(Debug)]
pub struct Columns {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    infos: Mutex<Vec<ColumnInfo>>,
    /// Columns opened (mapped, their headers checked) by this handle, by
    /// path; a chunk checked by one query is not checked again. A rebuild
    /// replaces the file and drops its entry.
    opened: Mutex<HashMap<PathBuf, Arc<Column>>>,
    /// Files found damaged by this handle: not read again until rebuilt.
    bad: Mutex<std::collections::HashSet<PathBuf>>,
    /// Held while a column is built, written and listed: builds of one
    /// handle take turns (they share a temporary file name).
    building: Mutex<()>,
    /// Bytes of events a build holds in memory before spilling.
    build_memory: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Columns {
    /// Lists the column files of the database at `db_dir` (headers only; files
    /// that do not parse are ignored here and reported by `verify`).
    ///
    /// A column holding positions past `log_end` (the log's end on opening)
    /// holds records the log lost, were a power loss to keep the column and
    /// lose them (building one syncs the log first, so only a damaged
    /// database can show this): it is never used, and a `writable` handle
    /// removes it before new records reuse the positions. A writable handle
    /// also removes the temporary files a crash left mid-build. A build holds
    /// up to about `build_memory` bytes of events in memory (see
    /// [`crate::DbBuilder::column_build_memory`]).
    #[must_use]
    pub fn load(
        vfs: Arc<dyn Vfs>,
        db_dir: &Path,
        log_end: u64,
        writable: bool,
        build_memory: usize,
    ) -> Columns {
        let dir = db_dir.join(COLUMN_DIR);
        let (tmp, paths): (Vec<_>, Vec<_>) = vfs
            .list(&dir)
            .unwrap_or_default()
            .into_iter()
            .partition(|p| p.extension().is_some_and(|x| x == "tmp"));
        if writable {
            for p in &tmp {
                if let Err(e) = crate::storage::fsutil::remove_if_exists(&*vfs, p) {
                    log::warn!("could not remove {}: {e}", p.display());
                }
            }
        }
        let infos = crate::storage::fsutil::derived_files(
            &*vfs,
            paths,
            "col",
            "column",
            (log_end, writable),
            file::peek,
            |i| i.known_end,
        );
        Columns {
            dir,
            vfs,
            infos: Mutex::new(infos),
            opened: Mutex::default(),
            bad: Mutex::default(),
            building: Mutex::new(()),
            build_memory,
        }
    }

    /// Every column known, by stream and field.
    #[must_use]
    pub fn list(&self) -> Vec<ColumnInfo> {
        let mut v = lock(&self.infos).clone();
        v.sort_by(|a, b| (&a.stream, &a.field).cmp(&(&b.stream, &b.field)));
        v
    }

    /// The file of `stream`'s column of `field`: named after both, or after
    /// their hash when that name would pass 255 bytes (a collision only makes
    /// one column replace the other: the header names what a file holds).
    fn path(&self, stream: &str, field: &str) -> PathBuf {
        let hex: String = field.bytes().map(|b| format!("{b:02x}")).collect();
        let name = format!("{stream}@{hex}.col");
        if name.len() + ".tmp".len() <= 255 {
            return self.dir.join(name);
        }
        let both = [stream.as_bytes(), b"\0", field.as_bytes()].concat();
        self.dir.join(format!("{:016x}.col", file::key_hash(&both)))
    }

    /// Stops reading a column this handle found damaged mid-query, until it
    /// is rebuilt.
    pub(crate) fn mark_bad(&self, path: &Path) {
        lock(&self.opened).remove(path);
        lock(&self.bad).insert(path.to_path_buf());
    }

    /// The column of `field` in `stream` that windows known below `end`,
    /// none starting (exclusively) before `from`, can read, opened by this
    /// handle on first use. `None` if there is none, it holds positions at or
    /// past `end`, it was built under a compaction horizon after `from`, or
    /// it is damaged (logged: the window reads the log instead, and `verify`
    /// reports the file).
    pub(crate) fn usable(
        &self,
        stream: &str,
        field: &str,
        end: u64,
        from: i128,
    ) -> Option<Arc<Column>> {
        let info = lock(&self.infos)
            .iter()
            .find(|i| i.stream == stream && i.field == field)
            .cloned()?;
        if info.known_end > end || lock(&self.bad).contains(&info.path) {
            return None;
        }
        let cached = lock(&self.opened).get(&info.path).cloned();
        let col = match cached {
            Some(c) => c,
            None => match Column::open(&*self.vfs, &info.path) {
                Ok(c) => {
                    let c = Arc::new(c);
                    lock(&self.opened).insert(info.path.clone(), c.clone());
                    c
                }
                Err(e) => {
                    log::warn!(
                        "column {} unusable, reading the log: {e}",
                        info.path.display()
                    );
                    return None;
                }
            },
        };
        // Another handle may have rebuilt the file since this one listed it:
        // what counts is the header of the file opened.
        let i = col.info();
        if i.stream == stream && i.field == field && i.known_end <= end {
            return i
                .horizon
                .is_none_or(|h| i128::from(h) <= from)
                .then_some(col);
        }
        if i.stream != stream || i.field != field {
            log::warn!(
                "column {} names another stream or field; reading the log",
                info.path.display()
            );
        }
        None
    }

    /// Builds (or rebuilds) the column of `field` in `stream` from `snap`,
    /// holding every record below its end, and the compaction horizon it
    /// was built under. A rebuild reads the column it replaces, when that
    /// one is whole (every checksum and its layout checked) and the
    /// database was never compacted, and only the records after it from
    /// the log.
    /// `progress` is called with the events read so far. The records must
    /// already be durable (the caller syncs the log first).
    pub(crate) fn build(
        &self,
        vfs: &dyn Vfs,
        snap: &Snapshot,
        stream: &str,
        field: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ColumnInfo> {
        if field.is_empty() || field.len() > MAX_FIELD_LEN {
            return Err(Error::InvalidInput(format!(
                "a column's field name must be 1 to {MAX_FIELD_LEN} bytes, got {}",
                field.len()
            )));
        }
        snap.check_stream(stream)?;
        let _turn = lock(&self.building);
        let horizon = snap.horizon().map(|h| h.time);
        if self.vfs.list(&self.dir).is_err() {
            vfs.create_dir_all(&self.dir)
                .map_err(|e| Error::io(&self.dir, e))?;
            if let Some(parent) = self.dir.parent() {
                crate::storage::fsutil::sync_dir(vfs, parent)?;
            }
        }
        let path = self.path(stream, field);
        let base = self.base(vfs, &path, stream, field, snap.end_position(), horizon);
        let info = build::build(
            vfs,
            snap,
            (stream, field, horizon),
            &path,
            self.build_memory,
            base.as_ref(),
            progress,
        )?;
        let mut infos = lock(&self.infos);
        infos.retain(|i| i.path != path);
        infos.push(info.clone());
        lock(&self.opened).remove(&path);
        lock(&self.bad).remove(&path);
        Ok(info)
    }

    /// The column at `path` a rebuild can start from: one of `stream`'s
    /// `field` below `end`, whole, in a database never compacted (`horizon`
    /// is `None`). After a compaction the log may lack events a column
    /// holds, even one built under the same horizon time: compacting again
    /// to that time drops more from segments sealed since, and a column
    /// does not record which segments the compaction it saw examined. So
    /// the rebuild reads the log. A damaged column is logged and the
    /// rebuild reads the log.
    fn base(
        &self,
        vfs: &dyn Vfs,
        path: &Path,
        stream: &str,
        field: &str,
        end: u64,
        horizon: Option<i64>,
    ) -> Option<Column> {
        if horizon.is_some() || !lock(&self.infos).iter().any(|i| i.path == path) {
            return None;
        }
        let col = Column::open(vfs, path).and_then(|c| c.check_all().map(|()| c));
        match col {
            Ok(c) => {
                let i = c.info();
                (i.stream == stream
                    && i.field == field
                    && i.known_end <= end
                    && i.horizon.is_none())
                .then_some(c)
            }
            Err(e) => {
                log::warn!(
                    "column {} damaged, rebuilding it from the log: {e}",
                    path.display()
                );
                None
            }
        }
    }

    /// Removes the column of `field` in `stream`; `false` if there was none.
    pub(crate) fn remove(&self, vfs: &dyn Vfs, stream: &str, field: &str) -> Result<bool> {
        let _turn = lock(&self.building);
        let path = self.path(stream, field);
        let known = {
            let mut infos = lock(&self.infos);
            let before = infos.len();
            infos.retain(|i| i.path != path);
            infos.len() != before
        };
        lock(&self.opened).remove(&path);
        if known {
            crate::storage::fsutil::remove_if_exists(vfs, &path)?;
            crate::storage::fsutil::sync_dir(vfs, &self.dir)?;
        }
        Ok(known)
    }
}
