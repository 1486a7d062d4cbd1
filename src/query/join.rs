//! Point-in-time (as-of) joins of requests to stream rows.

use bytes::Bytes;

use super::access::{prefer_sweep, KeySet, JOIN_VERSION_NS};
use super::asof::{KnownAt, Row};
use crate::db::Snapshot;
use crate::storage::record::Op;
use crate::{Error, Result};

/// One join request: a key and the time its features are wanted as of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Key looked up in every feature stream.
    pub key: Bytes,
    /// Event time (µs) the rows are taken as of.
    pub time: i64,
}

/// Indices of `requests` sorted by `(key, time, index)`, so each key's versions are
/// fetched once and swept forward.
pub(crate) fn by_key_then_time(requests: &[Request]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        (&requests[a].key, requests[a].time, a).cmp(&(&requests[b].key, requests[b].time, b))
    });
    order
}

impl Snapshot {
    /// For each request, each stream's row as of the request's time, known at
    /// `known_at`: `result[i][j]` is stream `j`'s row for request `i`, in request
    /// order. With `ttl` (µs), a row whose last change is more than `ttl` before the
    /// request time counts as missing.
    ///
    /// Requests are sorted by key and time, each key's versions read once (through
    /// the key indexes, or one sweep of the stream when that is estimated to
    /// be cheaper: see [`AccessPath`](crate::AccessPath)) and swept forward, so
    /// the cost is about `(requests + versions) · log`, not `requests × versions`.
    pub fn asof_join(
        &self,
        requests: &[Request],
        streams: &[&str],
        ttl: Option<i64>,
        known_at: impl Into<KnownAt>,
    ) -> Result<Vec<Vec<Option<Row>>>> {
        let end = self.known_end(known_at)?;
        if let Some(t) = requests.iter().map(|r| r.time).min() {
            self.check_as_of(t)?;
        }
        for s in streams {
            self.check_stream(s)?;
        }
        let mut out = vec![vec![None; streams.len()]; requests.len()];
        let order = by_key_then_time(requests);
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        for i in 0..order.len() {
            match groups.last_mut() {
                Some(g) if requests[order[g.start]].key == requests[order[i]].key => g.end = i + 1,
                _ => groups.push(i..i + 1),
            }
        }
        for (j, stream) in streams.iter().enumerate() {
            let merge = self.merge.get(stream);
            // Requests over most keys gather every key's versions in one
            // sweep of the stream; a few keys probe the key indexes.
            let swept = if prefer_sweep(
                self.access,
                &self.view,
                stream,
                groups.len(),
                JOIN_VERSION_NS,
            )? {
                let set = KeySet::new(groups.iter().map(|g| &requests[order[g.start]].key));
                Some(set.versions(&self.view, stream, end)?)
            } else {
                None
            };
            for (k, g) in groups.iter().enumerate() {
                let key = &requests[order[g.start]].key;
                let probed;
                let versions = match &swept {
                    Some((starts, all)) => &all[starts[k]..starts[k + 1]],
                    None => {
                        let mut v = self.view.versions(stream, key)?;
                        v.retain(|v| v.position < end);
                        probed = v;
                        &probed[..]
                    }
                };
                let mut i = g.start;
                // `row` is the fold of `versions[..applied]`; a request folds in
                // what its time adds, reading values from the last put or delete
                // on only (most versions are never read).
                let (mut next, mut applied) = (0usize, 0usize);
                let mut row: Option<Row> = None;
                while i < g.end {
                    let r = &requests[order[i]];
                    while next < versions.len() && versions[next].event_time <= r.time {
                        next += 1;
                    }
                    let added = &versions[applied..next];
                    if let Some(b) = added.iter().rposition(|v| v.op != Op::Patch) {
                        let v = added[b];
                        row = match v.op {
                            Op::Put => Some(Row {
                                key: key.clone(),
                                value: self.view.value(&v)?,
                                event_time: v.event_time,
                                position: v.position,
                            }),
                            _ => None,
                        };
                        row = self.patch_row(stream, merge, key, row, &added[b + 1..])?;
                    } else {
                        row = self.patch_row(stream, merge, key, row, added)?;
                    }
                    applied = next;
                    out[order[i]][j] = row
                        .as_ref()
                        .filter(|row| {
                            ttl.is_none_or(|t| {
                                i128::from(r.time) - i128::from(row.event_time) <= i128::from(t)
                            })
                        })
                        .cloned();
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Applies patch versions, in order, to a row (or to nothing).
    fn patch_row(
        &self,
        stream: &str,
        merge: Option<&std::sync::Arc<dyn crate::query::merge::MergeOperator>>,
        key: &Bytes,
        mut row: Option<Row>,
        patches: &[crate::storage::index::VersionRef],
    ) -> Result<Option<Row>> {
        for v in patches {
            let op = merge.ok_or_else(|| Error::NoMergeOperator(stream.to_string()))?;
            let patch = self.view.value(v)?;
            let merged = op
                .merge(row.as_ref().map(|r| &r.value[..]), &patch)
                .map_err(|reason| Error::Merge {
                    stream: stream.to_string(),
                    position: v.position,
                    reason,
                })?;
            row = Some(Row {
                key: key.clone(),
                value: Bytes::from(merged),
                event_time: v.event_time,
                position: v.position,
            });
        }
        Ok(row)
    }
}
