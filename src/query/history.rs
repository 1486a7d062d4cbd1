//! A key's history and the net changes of a stream between two times.

use bytes::Bytes;

use super::asof::{fold, visible, GetResult, KnownAt, Row};
use crate::db::Snapshot;
use crate::storage::record::{Hlc, Op};
use crate::Result;

/// One version of a key, with the row it leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Put, patch or delete.
    pub op: Op,
    /// Event time of the record.
    pub event_time: i64,
    /// Position of the record.
    pub position: u64,
    /// When it was recorded.
    pub recorded_at: Hlc,
    /// The record's own value (the patch, for a patch).
    pub value: Bytes,
    /// The row after applying this record in `(event_time, position)` order
    /// (`None` after a delete).
    pub row: Option<Bytes>,
}

/// How a row changed between two times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Absent at the start, present at the end.
    Insert,
    /// Present at both, with a different value.
    Update,
    /// Present at the start, absent at the end.
    Delete,
}

impl ChangeKind {
    /// `insert`, `update` or `delete`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// The net change of one key between two times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: Bytes,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// The row as of the start time.
    pub before: Option<Row>,
    /// The row as of the end time.
    pub after: Option<Row>,
}

impl Snapshot {
    /// Every version of `key` in `(event_time, position)` order, each with the row
    /// it leaves behind, known at `known_at`.
    ///
    /// After a compaction the history starts at the key's base version (the
    /// newest put or delete at or before the horizon): the versions before it,
    /// which no answerable query can see, are gone.
    pub fn history(
        &self,
        stream: &str,
        key: &[u8],
        known_at: impl Into<KnownAt>,
    ) -> Result<Vec<HistoryEntry>> {
        let end = self.known_end(known_at)?;
        self.check_stream(stream)?;
        let mut versions = self.view.versions(stream, key)?;
        visible(&mut versions, i64::MAX, end);
        let key = Bytes::copy_from_slice(key);
        let merge = self.merge.get(stream);
        let mut out = Vec::with_capacity(versions.len());
        for (i, v) in versions.iter().enumerate() {
            let (value, recorded_at) = self.view.value_and_stamp(v)?;
            let row = match v.op {
                Op::Put => Some(value.clone()),
                Op::Delete => None,
                Op::Patch => match fold(self, stream, merge, &key, &versions[..=i])? {
                    GetResult::Present(r) => Some(r.value),
                    _ => None,
                },
            };
            out.push(HistoryEntry {
                op: v.op,
                event_time: v.event_time,
                position: v.position,
                recorded_at,
                value,
                row,
            });
        }
        Ok(out)
    }

    /// Keys whose row differs between `from` and `to` (event times, `from < to`):
    /// inserted, updated or deleted, with the rows before and after, in key order.
    /// Net changes only: a key changed and changed back is not listed.
    pub fn changes(
        &self,
        stream: &str,
        from: i64,
        to: i64,
        known_at: impl Into<KnownAt>,
    ) -> Result<Vec<Change>> {
        let end = self.known_end(known_at)?;
        self.check_as_of(from)?;
        self.check_stream(stream)?;
        let mut keys = Vec::new();
        if from < to {
            for r in self.view.scan_time(stream, from.saturating_add(1), to) {
                let r = r?;
                if r.position < end {
                    keys.push(r.key);
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::new();
        for key in keys {
            let before = self
                .get(stream, &key, from, KnownAt::Position(end.saturating_sub(1)))?
                .row();
            let after = self
                .get(stream, &key, to, KnownAt::Position(end.saturating_sub(1)))?
                .row();
            let kind = match (&before, &after) {
                (None, Some(_)) => ChangeKind::Insert,
                (Some(_), None) => ChangeKind::Delete,
                (Some(b), Some(a)) if b.value != a.value => ChangeKind::Update,
                _ => continue,
            };
            out.push(Change {
                key,
                kind,
                before,
                after,
            });
        }
        Ok(out)
    }
}
