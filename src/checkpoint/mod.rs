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
//! Files live in `DIR/checkpoints/<stream>@<K, 20 digits>.ckpt` (format in
//! [`file`](mod@file)).

pub mod file;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::db::Snapshot;
use crate::query::asof::Row;
use crate::storage::frame::RawRecord;
use crate::storage::keytable::sort_by_key_then;
use crate::storage::record::Op;
use crate::storage::sweep::SweepRange;
use crate::{Error, Result};
pub use file::CheckpointInfo;
use file::{SavedRef, SavedRow, SavedRows};

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

/// One key's share of the tail: a run of [`Tail::recs`] sorted by
/// `(event_time, position)`, and whether any is late (event time at or before
/// the checkpoint's, position after it).
#[derive(Debug, Clone)]
pub(crate) struct TailKey {
    recs: std::ops::Range<usize>,
    late: bool,
}

/// What a checkpoint does not reflect, grouped by key.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The records' keys and values, copied out of the log one after the
    /// other: a tail costs no reference count per record, and its records
    /// sort and move as a few words each.
    bytes: Bytes,
    /// The records, sorted by `(key, event_time, position)`.
    recs: Vec<TailRec>,
    /// The keys, in key order.
    keys: Vec<TailKey>,
}

/// One record of a [`Tail`]: where its key and value lie in [`Tail::bytes`].
#[derive(Debug, Clone, Copy)]
struct TailRec {
    key_at: usize,
    value_at: usize,
    key_len: u32,
    value_len: u32,
    event_time: i64,
    position: u64,
    op: Op,
}

impl TailRec {
    /// Copies `r`'s key and value to the end of `bytes`.
    fn copy(r: &RawRecord<'_>, position: u64, bytes: &mut Vec<u8>) -> TailRec {
        let key_at = bytes.len();
        bytes.extend_from_slice(r.key);
        bytes.extend_from_slice(r.value);
        TailRec {
            key_at,
            value_at: key_at + r.key.len(),
            key_len: r.key.len() as u32,
            value_len: r.value.len() as u32,
            event_time: r.event_time,
            position,
            op: r.op,
        }
    }

    fn key(self) -> std::ops::Range<usize> {
        self.key_at..self.key_at + self.key_len as usize
    }

    fn value(self) -> std::ops::Range<usize> {
        self.value_at..self.value_at + self.value_len as usize
    }
}

impl Tail {
    /// Record `i`'s key.
    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.recs[i].key()]
    }

    /// Record `i` (a put) as a row, borrowed.
    fn saved_ref(&self, i: usize) -> SavedRef<'_> {
        let r = self.recs[i];
        SavedRef {
            row: crate::RowRef {
                key: &self.bytes[r.key()],
                value: &self.bytes[r.value()],
                event_time: r.event_time,
                position: r.position,
            },
            settled: true,
        }
    }

    /// Record `i` (a put) as a row.
    fn saved_row(&self, i: usize) -> SavedRow {
        let r = self.recs[i];
        SavedRow {
            row: Row {
                key: self.bytes.slice(r.key()),
                value: self.bytes.slice(r.value()),
                event_time: r.event_time,
                position: r.position,
            },
            settled: true,
        }
    }
}

/// `a <= b` for byte strings, comparing the first 16 bytes as one integer
/// first. A table from a checkpoint compares the next tail key with every
/// checkpoint row's key; calling `memcmp` for each was a fifth of its time.
/// ([`SortPrefix`], which also orders shorter keys by integers, pads them
/// first: a third slower here.)
#[inline]
fn key_le(a: &[u8], b: &[u8]) -> bool {
    let prefix = |k: &[u8]| k.first_chunk::<16>().map(|p| u128::from_be_bytes(*p));
    if let (Some(x), Some(y)) = (prefix(a), prefix(b)) {
        if x != y {
            return x < y;
        }
    }
    a <= b
}

/// What `stream`'s checkpoint does not reflect, by key (sorted): every visible
/// record (below `end`, at or before `as_of`) with event time after the
/// checkpoint's or position after it. `None` when the tail looks larger than the
/// checkpoint itself, in records or in bytes (starting from scratch is then
/// cheaper, and the copy of the tail held here stays within the size of the
/// checkpoint's rows).
pub(crate) fn tail_keys(
    snap: &Snapshot,
    ck: &CheckpointInfo,
    as_of: i64,
    end: u64,
) -> Result<Option<Tail>> {
    let view = snap.view();
    let budget = ck.rows.max(1024);
    let byte_budget = usize::try_from(ck.rows_len().max(1 << 20)).unwrap_or(usize::MAX);
    let mut bytes: Vec<u8> = Vec::new();
    let mut recs: Vec<TailRec> = Vec::new();
    let mut seen = 0u64;
    let within = |seen: u64, bytes: &[u8]| seen <= budget && bytes.len() <= byte_budget;
    // Records before the checkpoint's position that are newer in event time
    // (frames skipped by the time index), then every record of the stream
    // from it on, counted against the budget whatever its time: each record
    // is read once.
    let older = SweepRange {
        stream: &ck.stream,
        lo: ck.as_of.saturating_add(1),
        hi: as_of,
        start: 0,
        end: ck.known_end.min(end),
    };
    view.sweep_while(older, |r, v| {
        recs.push(TailRec::copy(r, v.position, &mut bytes));
        seen += 1;
        within(seen, &bytes)
    })?;
    let newer = SweepRange {
        stream: &ck.stream,
        lo: i64::MIN,
        hi: i64::MAX,
        start: ck.known_end,
        end,
    };
    if within(seen, &bytes) {
        view.sweep_while(newer, |r, v| {
            if r.event_time <= as_of {
                recs.push(TailRec::copy(r, v.position, &mut bytes));
            }
            seen += 1;
            within(seen, &bytes)
        })?;
    }
    if !within(seen, &bytes) {
        return Ok(None);
    }
    let bytes = Bytes::from(bytes);
    let order = sort_by_key_then(
        recs.len(),
        |i| &bytes[recs[i].key()],
        |i| (recs[i].event_time, recs[i].position),
    );
    let recs: Vec<TailRec> = order.iter().map(|&i| recs[i]).collect();
    let mut keys: Vec<TailKey> = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let late = r.position >= ck.known_end && r.event_time <= ck.as_of;
        match keys.last_mut() {
            Some(t) if bytes[recs[t.recs.start].key()] == bytes[r.key()] => {
                t.recs.end = i + 1;
                t.late |= late;
            }
            _ => keys.push(TailKey {
                recs: i..i + 1,
                late,
            }),
        }
    }
    Ok(Some(Tail { bytes, recs, keys }))
}

/// Rows of a table from a checkpoint plus its tail, in key order.
pub(crate) struct FromCheckpoint {
    pub(crate) snap: Snapshot,
    pub(crate) stream: String,
    pub(crate) as_of: i64,
    pub(crate) end: u64,
    pub(crate) rows: file::Rows,
    /// Whether the checkpoint row read last ([`file::Rows::current`]) is
    /// still to be returned.
    pub(crate) peeked: bool,
    /// A row folded from the tail, until it is returned or lent.
    pub(crate) folded: Option<SavedRow>,
    pub(crate) tail: Tail,
    /// The next key of `tail.keys` to merge.
    pub(crate) next_tail: usize,
}

impl std::fmt::Debug for FromCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromCheckpoint")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Applies the tail records `recs` (of one key, all newer than everything the
/// checkpoint folded) to its row, from `from`: the last put or delete of
/// `recs` if it has one (nothing before it counts), else its first record.
fn fold_on_top(
    snap: &Snapshot,
    stream: &str,
    mut row: Option<SavedRow>,
    tail: &Tail,
    from: usize,
    recs: std::ops::Range<usize>,
) -> Result<Option<SavedRow>> {
    for i in from..recs.end {
        let r = tail.recs[i];
        row = match r.op {
            Op::Delete => None,
            Op::Put => Some(tail.saved_row(i)),
            Op::Patch => {
                let op = snap
                    .merge
                    .get(stream)
                    .ok_or_else(|| Error::NoMergeOperator(stream.to_string()))?;
                let merged = op
                    .merge(
                        row.as_ref().map(|o| &o.row.value[..]),
                        &tail.bytes[r.value()],
                    )
                    .map_err(|reason| Error::Merge {
                        stream: stream.to_string(),
                        position: r.position,
                        reason,
                    })?;
                Some(SavedRow {
                    row: Row {
                        key: tail.bytes.slice(r.key()),
                        value: Bytes::from(merged),
                        event_time: r.event_time,
                        position: r.position,
                    },
                    settled: false,
                })
            }
        };
    }
    Ok(row)
}

impl FromCheckpoint {
    fn recompute(&self, key: &[u8]) -> Result<Option<SavedRow>> {
        let (got, settled) = self
            .snap
            .get_settled(&self.stream, key, self.as_of, self.end)?;
        Ok(got.row().map(|row| SavedRow { row, settled }))
    }

    /// The next row as an owned row.
    #[inline]
    pub(crate) fn next_row(&mut self) -> Option<Result<SavedRow>> {
        match self.advance()? {
            Ok(Next::Saved) => Some(Ok(self.rows.row(self.rows.current()))),
            Ok(Next::Folded) => self.folded.take().map(Ok),
            Ok(Next::Tail(i)) => Some(Ok(self.tail.saved_row(i))),
            Err(e) => Some(Err(e)),
        }
    }

    /// The next row, borrowed from the checkpoint's body or the folded row.
    #[inline]
    pub(crate) fn next_ref(&mut self) -> Option<Result<SavedRef<'_>>> {
        match self.advance()? {
            Ok(Next::Saved) => Some(Ok(self.rows.row_ref(self.rows.current()))),
            Ok(Next::Folded) => self.folded.as_ref().map(|r| Ok(r.as_ref())),
            Ok(Next::Tail(i)) => Some(Ok(self.tail.saved_ref(i))),
            Err(e) => Some(Err(e)),
        }
    }

    /// Moves to the next row: a checkpoint row as it is, or a key of the
    /// tail folded into [`FromCheckpoint::folded`].
    #[inline]
    fn advance(&mut self) -> Option<Result<Next>> {
        loop {
            if !self.peeked {
                match self.rows.step() {
                    Ok(more) => self.peeked = more,
                    Err(e) => return Some(Err(e)),
                }
            }
            let take_tail = match (self.peeked, self.tail.keys.get(self.next_tail)) {
                (false, None) => return None,
                (true, None) => false,
                (false, Some(_)) => true,
                (true, Some(t)) => key_le(
                    self.tail.key(t.recs.start),
                    self.rows.key(self.rows.current()),
                ),
            };
            if !take_tail {
                self.peeked = false;
                return Some(Ok(Next::Saved));
            }
            let TailKey { recs, late } = self.tail.keys[self.next_tail].clone();
            self.next_tail += 1;
            let key = self.tail.key(recs.start);
            let at = self.rows.current();
            let has_base = self.peeked && self.rows.key(at) == key;
            if has_base {
                self.peeked = false;
            }
            // The tail records that sort after the last one the checkpoint
            // applied to this row fold on top of it. Late records may sort
            // before it (among versions the checkpoint folded): a settled row
            // shadows them; otherwise, and for a key with no row (a tombstone
            // the checkpoint does not keep), the key is refolded.
            let before = if !late {
                Some(0)
            } else if has_base {
                let b = self.rows.row_ref(at);
                let order = (b.row.event_time, b.row.position);
                let n = self.tail.recs[recs.clone()]
                    .partition_point(|r| (r.event_time, r.position) < order);
                (n == 0 || b.settled).then_some(n)
            } else {
                None
            };
            let row = match before {
                Some(n) => {
                    let recs = recs.start + n..recs.end;
                    if recs.is_empty() && has_base {
                        // Every record of the key is shadowed by the row.
                        return Some(Ok(Next::Saved));
                    }
                    let last = recs
                        .clone()
                        .rev()
                        .find(|&i| self.tail.recs[i].op != Op::Patch);
                    match last {
                        // A put and nothing after it: the row is that record.
                        Some(i) if i + 1 == recs.end && self.tail.recs[i].op == Op::Put => {
                            return Some(Ok(Next::Tail(i)));
                        }
                        // The checkpoint's row counts only under patches alone.
                        _ => {
                            let base = (has_base && last.is_none()).then(|| self.rows.row(at));
                            let from = last.unwrap_or(recs.start);
                            fold_on_top(&self.snap, &self.stream, base, &self.tail, from, recs)
                        }
                    }
                }
                None => self.recompute(key),
            };
            match row {
                Ok(Some(row)) => {
                    self.folded = Some(row);
                    return Some(Ok(Next::Folded));
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// What [`FromCheckpoint::advance`] moved to.
enum Next {
    /// The checkpoint row [`file::Rows::current`], untouched by the tail.
    Saved,
    /// A row folded from the tail, in [`FromCheckpoint::folded`].
    Folded,
    /// A row that is tail record `i`, a put with no record after it.
    Tail(usize),
}
