//! Incremental materialized views: a stream's latest table, or a grouped
//! aggregate over its live rows, kept current as records are committed and read
//! without recomputation.
//!
//! A view applies the log in position order from where it stopped (it never
//! misses or double-applies a record, whatever threads commit). For each record
//! it updates the key's row: a put or delete newer in `(event_time, position)`
//! than the row replaces it, a patch newer than the row merges into it, and an
//! older (late) record makes the view refold that key from the key index, so a
//! late patch or delete corrects the view exactly as `table` would answer. An
//! aggregate view then moves the key's contribution from its old group to its
//! new one. The state is persisted by [`crate::Db::save_views`] with the
//! position it reflects; on open a view resumes from it and applies only the tail.

mod aggregate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;

use crate::db::Snapshot;
use crate::query::asof::{GetResult, Row};
use crate::query::window::Agg;
use crate::storage::record::Op;
use crate::{Error, Result};
pub use aggregate::Groups;

/// How an aggregate view groups rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// One group per key.
    Key,
    /// One group per value of this field of the row (rows without it are left out).
    Field(String),
}

/// What a view computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewDef {
    /// The stream's latest table: each key's row as of every event time.
    Table {
        /// The stream.
        stream: String,
    },
    /// `agg` of a numeric field over the stream's live rows, grouped.
    Aggregate {
        /// The stream.
        stream: String,
        /// Numeric JSON field of the row.
        field: String,
        /// count, sum, avg, min or max.
        agg: Agg,
        /// Grouping.
        group_by: GroupBy,
    },
}

impl ViewDef {
    /// The stream a view reads.
    #[must_use]
    pub fn stream(&self) -> &str {
        match self {
            ViewDef::Table { stream } | ViewDef::Aggregate { stream, .. } => stream,
        }
    }

    fn describe(&self) -> String {
        match self {
            ViewDef::Table { stream } => format!("table {stream}"),
            ViewDef::Aggregate {
                stream,
                field,
                agg,
                group_by,
            } => format!(
                "aggregate {stream} {} {field} by {}",
                agg.name(),
                match group_by {
                    GroupBy::Key => "key".to_string(),
                    GroupBy::Field(f) => format!("field {f}"),
                }
            ),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Every position below this is reflected.
    applied_end: u64,
    rows: HashMap<Bytes, Row>,
    groups: Groups,
}

/// A registered view (see the module docs).
#[derive(Debug)]
pub struct MaterializedView {
    name: String,
    def: ViewDef,
    path: PathBuf,
    state: Mutex<State>,
}

fn group_of(def: &ViewDef, row: &Row) -> Option<(Bytes, Option<f64>)> {
    let ViewDef::Aggregate {
        field, group_by, ..
    } = def
    else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_slice(&row.value).ok()?;
    let x = v.get(field).and_then(serde_json::Value::as_f64);
    let group = match group_by {
        GroupBy::Key => row.key.clone(),
        GroupBy::Field(f) => match v.get(f)? {
            serde_json::Value::String(s) => Bytes::from(s.clone()),
            serde_json::Value::Null => return None,
            other => Bytes::from(other.to_string()),
        },
    };
    Some((group, x))
}

impl MaterializedView {
    pub(crate) fn new(
        name: &str,
        def: ViewDef,
        dir: &std::path::Path,
        vfs: &dyn crate::storage::vfs::Vfs,
    ) -> Result<MaterializedView> {
        crate::storage::record::validate_stream_name(name).map_err(|_| {
            Error::InvalidInput(format!(
                "invalid view name {name:?}: use [A-Za-z0-9_.-]{{1,255}}"
            ))
        })?;
        let view = MaterializedView {
            name: name.to_string(),
            path: dir.join(format!("{name}.view")),
            def,
            state: Mutex::new(State::default()),
        };
        if let Some(state) = persist::load(vfs, &view.path, &view.def.describe())? {
            *view.lock() = state;
        }
        Ok(view)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The view's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The view's definition.
    #[must_use]
    pub fn def(&self) -> &ViewDef {
        &self.def
    }

    /// Positions below this are reflected.
    #[must_use]
    pub fn applied_end(&self) -> u64 {
        self.lock().applied_end
    }

    /// Applies every record of the snapshot not yet reflected, in position order.
    /// `progress` is called with the number of records applied so far.
    pub fn catch_up(&self, snap: &Snapshot, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let mut st = self.lock();
        let end = snap.end_position();
        if st.applied_end >= end {
            return Ok(());
        }
        let stream = self.def.stream().to_string();
        let merge = snap.merge.get(&stream).cloned();
        let compacted_to = snap.horizon().map_or(0, |h| h.position.saturating_sub(1));
        let mut n = 0u64;
        for rec in snap.view().scan(st.applied_end, Some(&stream)) {
            let rec = rec?;
            let old = st.rows.get(&rec.key).cloned();
            // The row after this record, exactly as `table` would fold it: a
            // record newer than the view's row applies directly; anything else (a
            // late record, or a key with no row, which may hide a newer
            // tombstone) refolds the key as known at this record.
            let new = match &old {
                Some(o) if (rec.event_time, rec.position) > (o.event_time, o.position) => match rec
                    .op
                {
                    Op::Put => Some(Row {
                        key: rec.key.clone(),
                        value: rec.value.clone(),
                        event_time: rec.event_time,
                        position: rec.position,
                    }),
                    Op::Delete => None,
                    Op::Patch => {
                        let op = merge
                            .as_ref()
                            .ok_or_else(|| Error::NoMergeOperator(stream.clone()))?;
                        let merged = op.merge(Some(&o.value), &rec.value).map_err(|reason| {
                            Error::Merge {
                                stream: stream.clone(),
                                position: rec.position,
                                reason,
                            }
                        })?;
                        Some(Row {
                            key: rec.key.clone(),
                            value: Bytes::from(merged),
                            event_time: rec.event_time,
                            position: rec.position,
                        })
                    }
                },
                // Known at the record, or, below a compaction, at the first
                // position allowed: the row then already holds this key's later
                // records, and each of them refolds to the same row.
                _ => match snap.get(&stream, &rec.key, i64::MAX, rec.position.max(compacted_to))? {
                    GetResult::Present(r) => Some(r),
                    _ => None,
                },
            };
            if let Some(o) = &old {
                if let Some((g, x)) = group_of(&self.def, o) {
                    st.groups.remove(&g, x);
                }
            }
            match new {
                Some(r) => {
                    if let Some((g, x)) = group_of(&self.def, &r) {
                        st.groups.add(g, x);
                    }
                    st.rows.insert(rec.key.clone(), r);
                }
                None => {
                    st.rows.remove(&rec.key);
                }
            }
            n += 1;
            if n.is_multiple_of(65_536) {
                progress(n);
            }
        }
        st.applied_end = end;
        progress(n);
        Ok(())
    }

    /// The row of `key` in a table view (as of the last catch-up).
    #[must_use]
    pub fn row(&self, key: &[u8]) -> Option<Row> {
        self.lock().rows.get(key).cloned()
    }

    /// Live rows of a table view, sorted by key.
    #[must_use]
    pub fn rows(&self) -> Vec<Row> {
        let st = self.lock();
        let mut v: Vec<Row> = st.rows.values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The aggregate of `group` in an aggregate view: O(1) (min/max O(log n)).
    /// `None` for an unknown group or, except for count, a group with no number.
    #[must_use]
    pub fn aggregate(&self, group: &[u8]) -> Option<f64> {
        let ViewDef::Aggregate { agg, .. } = &self.def else {
            return None;
        };
        self.lock().groups.value(group, *agg)
    }

    /// Every group with its aggregate, sorted by group.
    #[must_use]
    pub fn aggregates(&self) -> Vec<(Bytes, Option<f64>)> {
        let ViewDef::Aggregate { agg, .. } = &self.def else {
            return Vec::new();
        };
        self.lock().groups.all(*agg)
    }

    /// Persists the view's state (atomically) with the position it reflects,
    /// after `sync_log` has made every record it reflects durable (it runs
    /// with the view held, so none is applied in between).
    pub(crate) fn save(
        &self,
        vfs: &dyn crate::storage::vfs::Vfs,
        sync_log: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let st = self.lock();
        // With the view held, nothing more is applied to it: every record it
        // reflects was written before, and is synced now.
        sync_log()?;
        persist::save(
            vfs,
            &self.path,
            &self.def.describe(),
            st.applied_end,
            &st.rows,
        )
    }
}

mod persist {
    //! View state files: `views/<name>.view`, a checkpoint of the view's rows.
    //!
    //! ```text
    //! "TLOGVIEW" | u32 version 1 | u32 definition length | definition text
    //! | u64 applied_end | u64 rows | zstd(rows: u16 key_len, u32 value_len,
    //!   i64 event_time, u64 position, key, value) | u32 CRC-32 of all before
    //! ```
    //! Aggregates are recomputed from the rows on load.

    use std::collections::HashMap;
    use std::path::Path;

    use bytes::Bytes;

    use super::{group_of, State};
    use crate::query::asof::Row;
    use crate::storage::fsutil;
    use crate::{Error, Result};

    const MAGIC: &[u8; 8] = b"TLOGVIEW";

    pub(super) fn save(
        vfs: &dyn crate::storage::vfs::Vfs,
        path: &Path,
        def: &str,
        applied_end: u64,
        rows: &HashMap<Bytes, Row>,
    ) -> Result<()> {
        let mut raw = Vec::new();
        for r in rows.values() {
            raw.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
            raw.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
            raw.extend_from_slice(&r.event_time.to_le_bytes());
            raw.extend_from_slice(&r.position.to_le_bytes());
            raw.extend_from_slice(&r.key);
            raw.extend_from_slice(&r.value);
        }
        let body = zstd::bulk::compress(&raw, 3).map_err(|e| Error::io(path, e))?;
        let mut out = Vec::with_capacity(body.len() + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(def.len() as u32).to_le_bytes());
        out.extend_from_slice(def.as_bytes());
        out.extend_from_slice(&applied_end.to_le_bytes());
        out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
        out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        if let Some(dir) = path.parent() {
            vfs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        fsutil::atomic_write(vfs, path, &out)
    }

    /// Loads a saved state if there is one for the same definition; a damaged or
    /// mismatching file is ignored (the view backfills from the log instead).
    pub(super) fn load(
        vfs: &dyn crate::storage::vfs::Vfs,
        path: &Path,
        def: &str,
    ) -> Result<Option<State>> {
        let b = match vfs.read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        match parse(&b, def) {
            Some(s) => Ok(Some(s)),
            None => {
                log::warn!(
                    "{}: view state unusable; rebuilding the view from the log",
                    path.display()
                );
                Ok(None)
            }
        }
    }

    fn parse(b: &[u8], def: &str) -> Option<State> {
        let body_end = b.len().checked_sub(4)?;
        if b.get(..8)? != MAGIC || crc32fast::hash(&b[..body_end]).to_le_bytes() != b[body_end..] {
            return None;
        }
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        if u32_at(8)? != 1 {
            return None;
        }
        let dl = u32_at(12)? as usize;
        if b.get(16..16 + dl)? != def.as_bytes() {
            return None;
        }
        let at = 16 + dl;
        let applied_end = u64_at(at)?;
        let n = u64_at(at + 8)?;
        let raw_len = u64_at(at + 16)?;
        let body = b.get(at + 24..body_end)?;
        if raw_len
            > (body.len() as u64)
                .saturating_mul(1024)
                .saturating_add(1 << 20)
        {
            return None;
        }
        let raw = zstd::bulk::decompress(body, raw_len as usize).ok()?;
        let raw = Bytes::from(raw);
        let mut st = State {
            applied_end,
            ..State::default()
        };
        let mut p = 0usize;
        for _ in 0..n {
            let h = raw.get(p..p + 22)?;
            let kl = usize::from(u16::from_le_bytes([h[0], h[1]]));
            let vl = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
            let event_time = i64::from_le_bytes(h[6..14].try_into().ok()?);
            let position = u64::from_le_bytes(h[14..22].try_into().ok()?);
            let k0 = p + 22;
            if k0 + kl + vl > raw.len() {
                return None;
            }
            let row = Row {
                key: raw.slice(k0..k0 + kl),
                value: raw.slice(k0 + kl..k0 + kl + vl),
                event_time,
                position,
            };
            p = k0 + kl + vl;
            st.rows.insert(row.key.clone(), row);
        }
        Some(st)
    }

    /// Rebuilds the groups of a loaded state.
    pub(super) fn regroup(def: &super::ViewDef, st: &mut State) {
        let rows: Vec<Row> = st.rows.values().cloned().collect();
        for r in &rows {
            if let Some((g, x)) = group_of(def, r) {
                st.groups.add(g, x);
            }
        }
    }
}

impl MaterializedView {
    /// Completes loading the saved state. State that reflects positions past
    /// `log_end`, the log's end when the database was opened, reflects records
    /// the log lost (saved before they were synced, by tablelog before
    /// 2026-11-27, then a power loss): it is dropped, and the view rebuilt
    /// from the log. (State this process saved after committing past that
    /// end is rebuilt too: correct, only slower.)
    pub(crate) fn finish_load(&self, log_end: u64) {
        let mut st = self.lock();
        if st.applied_end > log_end {
            log::warn!(
                "view {}: its saved state reflects positions up to {}, the log ends at \
                 {log_end}; rebuilding it from the log",
                self.name,
                st.applied_end
            );
            *st = State::default();
        }
        if st.groups.is_empty() && !st.rows.is_empty() {
            persist::regroup(&self.def, &mut st);
        }
    }
}
