//! Rows as of a time: `get` and the streamed `table`, and the fold of one key's
//! versions that every query shares.
//!
//! The contract (`DESIGN.md`): a record is visible as of `T`, known at `K`, when
//! `event_time <= T` and `position <= K`; a key's visible records apply in ascending
//! `(event_time, position)` order, so at equal event time the later position wins.

use std::sync::Arc;

use bytes::Bytes;

use super::merge::MergeOperator;
use crate::checkpoint::file::{SavedRef, SavedRow, SavedRows};
use crate::db::Snapshot;
use crate::storage::index::VersionRef;
use crate::storage::record::{Hlc, Op};
use crate::storage::view::KeyCursor;
use crate::{Error, Result};

/// Which writes a query takes into account ("as known at").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KnownAt {
    /// Everything committed in the snapshot.
    #[default]
    Latest,
    /// Records at positions `<= p` only.
    Position(u64),
    /// Records recorded at or before this stamp (maps to the last such position).
    RecordedAt(Hlc),
}

impl From<u64> for KnownAt {
    fn from(p: u64) -> Self {
        KnownAt::Position(p)
    }
}

impl From<Option<u64>> for KnownAt {
    fn from(p: Option<u64>) -> Self {
        p.map_or(KnownAt::Latest, KnownAt::Position)
    }
}

/// A live row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The key.
    pub key: Bytes,
    /// The row (the stored object, patches applied).
    pub value: Bytes,
    /// Event time of the last record applied to the row.
    pub event_time: i64,
    /// Position of the last record applied to the row.
    pub position: u64,
}

impl Row {
    /// The row, borrowed.
    #[must_use]
    pub fn as_ref(&self) -> RowRef<'_> {
        RowRef {
            key: &self.key,
            value: &self.value,
            event_time: self.event_time,
            position: self.position,
        }
    }
}

/// A live row borrowed from where it lies: what [`Table::next_ref`] lends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The row (the stored object, patches applied).
    pub value: &'a [u8],
    /// Event time of the last record applied to the row.
    pub event_time: i64,
    /// Position of the last record applied to the row.
    pub position: u64,
}

impl RowRef<'_> {
    /// The row, copied.
    #[must_use]
    pub fn to_row(&self) -> Row {
        Row {
            key: Bytes::copy_from_slice(self.key),
            value: Bytes::copy_from_slice(self.value),
            event_time: self.event_time,
            position: self.position,
        }
    }
}

/// The answer of a lookup as of a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetResult {
    /// The row exists.
    Present(Row),
    /// The row was deleted by the tombstone at this event time and position.
    Deleted {
        /// Event time of the delete.
        event_time: i64,
        /// Position of the delete.
        position: u64,
    },
    /// No visible record of the key exists at or before the time.
    NeverSeen,
}

impl GetResult {
    /// The row, if present.
    #[must_use]
    pub fn row(self) -> Option<Row> {
        match self {
            GetResult::Present(r) => Some(r),
            _ => None,
        }
    }
}

/// Folds a key's versions (sorted by `(event_time, position)`, all visible) into the
/// row after the last one. Reads values only from the last put or delete on.
pub(crate) fn fold(
    snap: &Snapshot,
    stream: &str,
    merge: Option<&Arc<dyn MergeOperator>>,
    key: &Bytes,
    versions: &[VersionRef],
) -> Result<GetResult> {
    let Some(last) = versions.last() else {
        return Ok(GetResult::NeverSeen);
    };
    let base = versions.iter().rposition(|v| v.op != Op::Patch);
    let mut row: Option<(Bytes, &VersionRef)> = None;
    let start = match base {
        Some(i) => {
            let v = &versions[i];
            if v.op == Op::Put {
                row = Some((snap.view.value(v)?, v));
            }
            i + 1
        }
        None => 0,
    };
    for v in &versions[start..] {
        let op = merge.ok_or_else(|| Error::NoMergeOperator(stream.to_string()))?;
        let patch = snap.view.value(v)?;
        let merged = op
            .merge(row.as_ref().map(|(b, _)| &b[..]), &patch)
            .map_err(|reason| Error::Merge {
                stream: stream.to_string(),
                position: v.position,
                reason,
            })?;
        row = Some((Bytes::from(merged), v));
    }
    Ok(match row {
        Some((value, v)) => GetResult::Present(Row {
            key: key.clone(),
            value,
            event_time: v.event_time,
            position: v.position,
        }),
        None => GetResult::Deleted {
            event_time: last.event_time,
            position: last.position,
        },
    })
}

/// Keeps the versions visible as of `as_of` and known below `end` (exclusive).
pub(crate) fn visible(versions: &mut Vec<VersionRef>, as_of: i64, end: u64) {
    versions.retain(|v| v.event_time <= as_of && v.position < end);
}

impl Snapshot {
    /// Resolves `known_at` to the exclusive end position of visible records.
    ///
    /// After a compaction, a known-at position before the compaction's (see
    /// [`Snapshot::horizon`]) is refused with [`Error::KnownBeforeHorizon`].
    pub fn known_end(&self, known_at: impl Into<KnownAt>) -> Result<u64> {
        let end = self.view.end_position();
        let known = match known_at.into() {
            KnownAt::Latest => end,
            KnownAt::Position(p) if p < end => p + 1,
            KnownAt::Position(p) => {
                return Err(Error::PositionNotWritten {
                    requested: p,
                    next: end,
                })
            }
            KnownAt::RecordedAt(h) => self.view.position_at(h)?.map_or(0, |p| p + 1),
        };
        match self.horizon() {
            Some(h) if known < h.position => Err(Error::KnownBeforeHorizon {
                requested: known.saturating_sub(1),
                position: h.position - 1,
            }),
            _ => Ok(known),
        }
    }

    /// The compaction horizon, if the log was compacted: queries as of an earlier
    /// event time, or known at an earlier position than `position - 1`, are
    /// refused (see [`crate::storage::compact`]).
    #[must_use]
    pub fn horizon(&self) -> Option<crate::storage::horizon::Horizon> {
        self.view.state().horizon
    }

    /// Refuses an as-of time before the compaction horizon. Event times `> t`
    /// are complete when `t >= horizon`: windows and changes check their lower
    /// bound, exclusive, with this.
    pub(crate) fn check_as_of(&self, t: i64) -> Result<()> {
        self.check_after(i128::from(t))
    }

    /// [`Snapshot::check_as_of`] for a bound computed exactly (a window's start
    /// `t - width` may lie below `i64::MIN`).
    pub(crate) fn check_after(&self, t: i128) -> Result<()> {
        match self.horizon() {
            Some(h) if t < i128::from(h.time) => Err(Error::BeyondHorizon {
                requested: i64::try_from(t).unwrap_or(i64::MIN),
                horizon: h.time,
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn check_stream(&self, stream: &str) -> Result<()> {
        crate::storage::record::validate_stream_name(stream)?;
        if self.view.has_stream(stream)? {
            Ok(())
        } else {
            Err(Error::UnknownStream(stream.to_string()))
        }
    }

    /// The row of `key` in `stream` as of event time `as_of` (µs), known at `known_at`.
    ///
    /// Uses the key indexes: the cost grows with the key's versions, not the log.
    ///
    /// ```
    /// # use tablelog::{Batch, Db, GetResult};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Db::open(dir.path())?;
    /// let w = db.writer();
    /// let mut b = Batch::new();
    /// b.put_at("prices", "apple", "1", 100)?;
    /// w.commit(b)?;
    /// let mut late = Batch::new();
    /// late.delete_at("prices", "apple", 50)?; // a late event, before the put
    /// w.commit(late)?;
    /// let s = db.snapshot()?;
    /// assert!(matches!(s.get("prices", b"apple", 60, None)?, GetResult::Deleted { position: 1, .. }));
    /// assert!(matches!(s.get("prices", b"apple", 60, Some(0))?, GetResult::NeverSeen));
    /// assert!(matches!(s.get("prices", b"apple", 100, None)?, GetResult::Present(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(
        &self,
        stream: &str,
        key: &[u8],
        as_of: i64,
        known_at: impl Into<KnownAt>,
    ) -> Result<GetResult> {
        let end = self.known_end(known_at)?;
        self.check_as_of(as_of)?;
        // A key found proves its stream exists, under a name every write
        // checked; only a miss checks the name and asks whether the stream
        // exists (an unknown stream is an error, not `NeverSeen`).
        let found = self.get_below(stream, key, as_of, end)?;
        if matches!(found, GetResult::NeverSeen) {
            self.check_stream(stream)?;
        }
        Ok(found)
    }

    /// [`Snapshot::get`] with `known_at` resolved to an exclusive end and
    /// `as_of` checked; the stream is the caller's to check (a miss on an
    /// unknown stream is `NeverSeen` here).
    #[inline]
    pub(crate) fn get_below(
        &self,
        stream: &str,
        key: &[u8],
        as_of: i64,
        end: u64,
    ) -> Result<GetResult> {
        Ok(self.get_settled(stream, key, as_of, end)?.0)
    }

    /// [`Snapshot::get_below`], with whether a present row is settled: its
    /// value is that of a put, the newest visible version.
    #[inline]
    pub(crate) fn get_settled(
        &self,
        stream: &str,
        key: &[u8],
        as_of: i64,
        end: u64,
    ) -> Result<(GetResult, bool)> {
        // Fast path: the newest visible version decides alone unless it is a
        // patch (one probe per key index, no version list).
        match self.view.newest_visible(stream, key, as_of, end)? {
            None => Ok((GetResult::NeverSeen, false)),
            Some(v) if v.op == Op::Put => {
                // The key comes from the record (no copy), checked against
                // the one asked for.
                let (key, value) = self.view.key_and_value(&v, key)?;
                let row = Row {
                    key,
                    value,
                    event_time: v.event_time,
                    position: v.position,
                };
                Ok((GetResult::Present(row), true))
            }
            Some(v) if v.op == Op::Delete => {
                let gone = GetResult::Deleted {
                    event_time: v.event_time,
                    position: v.position,
                };
                Ok((gone, false))
            }
            Some(_) => Ok((self.get_folded(stream, key, as_of, end)?, false)),
        }
    }

    /// [`Snapshot::get_settled`] of a key whose newest visible version is a
    /// patch: its versions folded from the last put or delete on.
    #[cold]
    fn get_folded(&self, stream: &str, key: &[u8], as_of: i64, end: u64) -> Result<GetResult> {
        let mut versions = self.view.versions(stream, key)?;
        visible(&mut versions, as_of, end);
        fold(
            self,
            stream,
            self.merge.get(stream),
            &Bytes::copy_from_slice(key),
            &versions,
        )
    }

    /// Every live row of `stream` as of `as_of`, known at `known_at`, in key order,
    /// streamed.
    ///
    /// Starts from the best usable checkpoint (see [`crate::checkpoint`]) when its
    /// tail is smaller than the table, else merges the segments' sorted key
    /// indexes ([`Snapshot::table_from_scratch`]). Both give the same rows.
    pub fn table(&self, stream: &str, as_of: i64, known_at: impl Into<KnownAt>) -> Result<Table> {
        let end = self.known_end(known_at)?;
        self.check_as_of(as_of)?;
        self.check_stream(stream)?;
        if let Some(ck) = self.checkpoints.best(stream, as_of, end) {
            if let Some(tail) = crate::checkpoint::tail_keys(self, &ck, as_of, end)? {
                match self
                    .checkpoints
                    .open(&ck)
                    .and_then(|(info, bytes)| crate::checkpoint::file::Rows::new(&info, &bytes))
                {
                    Ok(rows) => {
                        return Ok(Table {
                            inner: Inner::Checkpoint(Box::new(crate::checkpoint::FromCheckpoint {
                                snap: self.clone(),
                                stream: stream.to_string(),
                                as_of,
                                end,
                                rows,
                                peeked: false,
                                folded: None,
                                tail,
                                next_tail: 0,
                            })),
                        })
                    }
                    Err(e) => log::warn!(
                        "checkpoint {} unusable, rebuilding from the log: {e}",
                        ck.path.display()
                    ),
                }
            }
        }
        self.scratch(stream, as_of, end)
    }

    /// Like [`Snapshot::table`], but always from the log's key indexes, never from
    /// a checkpoint.
    pub fn table_from_scratch(
        &self,
        stream: &str,
        as_of: i64,
        known_at: impl Into<KnownAt>,
    ) -> Result<Table> {
        let end = self.known_end(known_at)?;
        self.check_as_of(as_of)?;
        self.check_stream(stream)?;
        self.scratch(stream, as_of, end)
    }

    fn scratch(&self, stream: &str, as_of: i64, end: u64) -> Result<Table> {
        Ok(Table {
            inner: Inner::Scratch(Box::new(Scratch {
                snap: self.clone(),
                stream: stream.to_string(),
                cursor: self.view.keys_as_of(stream, as_of)?,
                as_of,
                end,
                ahead: std::collections::VecDeque::with_capacity(READ_AHEAD),
                spare: Vec::new(),
                current: None,
            })),
        })
    }
}

/// Streamed rows of a table as of a time (see [`Snapshot::table`]).
#[derive(Debug)]
pub struct Table {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Scratch(Box<Scratch>),
    Checkpoint(Box<crate::checkpoint::FromCheckpoint>),
}

/// Keys a table from scratch reads ahead of the row it returns, their
/// records prefetched: reading each key's value is a cache miss at random in
/// the log, and the misses of the keys ahead overlap.
const READ_AHEAD: usize = 16;

#[derive(Debug)]
struct Scratch {
    snap: Snapshot,
    stream: String,
    cursor: KeyCursor,
    as_of: i64,
    end: u64,
    /// The next keys from the cursor, each with its visible versions (sorted
    /// by `(event_time, position)`), their records prefetched.
    ahead: std::collections::VecDeque<(Bytes, Vec<VersionRef>)>,
    /// Emptied version buffers, for the keys read next.
    spare: Vec<Vec<VersionRef>>,
    /// The row [`Table::next_ref`] lent last.
    current: Option<SavedRow>,
}

impl Scratch {
    /// Reads keys from the cursor until [`READ_AHEAD`] wait, prefetching the
    /// records each will read.
    fn read_ahead(&mut self) {
        while self.ahead.len() < READ_AHEAD {
            let mut buf = self.spare.pop().unwrap_or_default();
            let Some(key) = self.cursor.next_visible(self.as_of, self.end, &mut buf) else {
                self.spare.push(buf);
                return;
            };
            for v in &buf {
                self.snap.view.prefetch_record(v);
            }
            self.ahead.push_back((key, buf));
        }
    }

    fn next_saved(&mut self) -> Option<Result<SavedRow>> {
        loop {
            self.read_ahead();
            let (key, buf) = self.ahead.pop_front()?;
            let folded = fold(
                &self.snap,
                &self.stream,
                self.snap.merge.get(&self.stream),
                &key,
                &buf,
            );
            // `buf` is sorted by `(event_time, position)`.
            let settled = buf.last().is_some_and(|v| v.op == Op::Put);
            self.spare.push(buf);
            match folded {
                Ok(GetResult::Present(row)) => return Some(Ok(SavedRow { row, settled })),
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Table {
    /// Whether the rows come from a checkpoint plus its tail.
    #[must_use]
    pub fn from_checkpoint(&self) -> bool {
        matches!(self.inner, Inner::Checkpoint(_))
    }
}

impl Table {
    /// The next row, with whether it is settled (its value is that of a put,
    /// the last record applied), as a checkpoint keeps it.
    pub(crate) fn next_saved(&mut self) -> Option<Result<SavedRow>> {
        match &mut self.inner {
            Inner::Checkpoint(c) => c.next_row(),
            Inner::Scratch(s) => s.next_saved(),
        }
    }

    /// The next row, borrowed until the next call: like [`Iterator::next`],
    /// without making the row's own handles on its bytes. The fastest way to
    /// read a table from a checkpoint, whose rows are read in place.
    ///
    /// ```
    /// # fn main() -> tablelog::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = tablelog::Db::open(dir.path())?;
    /// # let mut b = tablelog::Batch::new();
    /// # b.put_at("prices", "apple", br#"{"price":3}"#.to_vec(), 10)?;
    /// # db.writer().commit(b)?;
    /// let snap = db.snapshot()?;
    /// let mut table = snap.table("prices", 100, None)?;
    /// let mut bytes = 0;
    /// while let Some(row) = table.next_ref() {
    ///     bytes += row?.value.len();
    /// }
    /// assert_eq!(bytes, 11);
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn next_ref(&mut self) -> Option<Result<RowRef<'_>>> {
        self.next_saved_ref().map(|r| r.map(|saved| saved.row))
    }
}

impl SavedRows for Table {
    #[inline]
    fn next_saved_ref(&mut self) -> Option<Result<SavedRef<'_>>> {
        match &mut self.inner {
            Inner::Checkpoint(c) => c.next_ref(),
            Inner::Scratch(s) => match s.next_saved()? {
                Ok(row) => Some(Ok(s.current.insert(row).as_ref())),
                Err(e) => Some(Err(e)),
            },
        }
    }
}

impl Iterator for Table {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        self.next_saved().map(|r| r.map(|saved| saved.row))
    }
}
