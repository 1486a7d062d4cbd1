//! Point-in-time (as-of) joins of requests to stream rows.

use std::borrow::Cow;

use bytes::Bytes;

use super::access::{prefer_sweep, read_ahead, KeySet, JOIN_VERSION_NS};
use super::asof::{GetResult, KnownAt, Row};
use crate::db::Snapshot;
use crate::storage::index::VersionRef;
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
    crate::storage::keytable::sort_by_key_then(
        requests.len(),
        |i| &requests[i].key,
        |i| requests[i].time,
    )
}

/// One thread's share of a join: the index of its first key, its keys' runs
/// of the sorted requests, and its run of the answers.
type JoinJob<'a> = (usize, &'a [std::ops::Range<usize>], &'a mut [Option<Row>]);

/// A probed key with at most this many requests is answered by a `get` a
/// request (one probe a key index for the newest visible version), not by
/// gathering all its versions (every key index's rows, and the active
/// segment's whole chain of them) and sweeping them. Measured with 100k
/// requests on 2M events over 100k keys (a scratch program, 2 threads):
/// requests over 100k keys 130–148 → 86–96 ms; over 25k keys (4 a key)
/// 84–90 → 72–82 ms; over 10k keys (10 a key) 64–69 → 61–66 ms, where
/// answering every key by gets took 74–80 ms.
const GETS_UP_TO: usize = 3;

/// Whether `row`, the answer to `r`, changed at most `ttl` µs before `r`'s
/// time (always, without a `ttl`).
fn within_ttl(row: &Row, r: &Request, ttl: Option<i64>) -> bool {
    ttl.is_none_or(|t| i128::from(r.time) - i128::from(row.event_time) <= i128::from(t))
}

/// Threads answering a join's (or a probed window's) keys: one per available
/// core (up to 8), each with at least 4,096 requests, so a thread's start is
/// worth it.
pub(crate) fn join_threads(requests: usize) -> usize {
    super::access::cores().min(8).min(requests / 4096).max(1)
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
    /// A key probed for only a few requests is answered as [`Snapshot::get`]
    /// answers each of them, which reads less than all of its versions.
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
            // Keys are answered independently: contiguous runs of them, one
            // thread each (one per core), each writing its own run of `sorted`.
            let mut sorted: Vec<Option<Row>> = vec![None; order.len()];
            let threads = join_threads(requests.len());
            let per = groups.len().div_ceil(threads).max(1);
            let mut jobs = Vec::new();
            let mut rest = &mut sorted[..];
            for (c, chunk) in groups.chunks(per).enumerate() {
                let n = chunk.last().map_or(0, |g| g.end) - chunk[0].start;
                let (o, r) = std::mem::take(&mut rest).split_at_mut(n);
                rest = r;
                jobs.push((c * per, chunk, o));
            }
            // Key `k` of a job: its versions (gathered from the sweep, or
            // read through the key indexes), with the record each of its
            // requests will read started loading; `None` for a probed key
            // with few requests, answered by gets ([`GETS_UP_TO`]).
            let load =
                |k: usize, g: &std::ops::Range<usize>| -> Result<Option<Cow<'_, [VersionRef]>>> {
                    let versions = match &swept {
                        Some((starts, all)) => Cow::Borrowed(&all[starts[k]..starts[k + 1]]),
                        None if g.len() <= GETS_UP_TO => return Ok(None),
                        None => {
                            let key = &requests[order[g.start]].key;
                            let mut v = self.view.versions(stream, key)?;
                            v.retain(|v| v.position < end);
                            Cow::Owned(v)
                        }
                    };
                    for &ri in &order[g.clone()] {
                        let n = versions.partition_point(|v| v.event_time <= requests[ri].time);
                        if let Some(v) = n.checked_sub(1).map(|i| &versions[i]) {
                            self.view.prefetch_record(v);
                        }
                    }
                    Ok(Some(versions))
                };
            // Keys are read a few ahead of the one answered, and probed
            // keys' lookups started further ahead ([`read_ahead`]).
            let run = |(k0, chunk, o): JoinJob<'_>| -> Result<()> {
                let base = chunk[0].start;
                let hint = |k: usize| {
                    if swept.is_none() {
                        let key = &requests[order[chunk[k].start]].key;
                        self.view.prefetch_key(stream, key);
                    }
                };
                read_ahead(
                    chunk.len(),
                    hint,
                    |k| load(k0 + k, &chunk[k]),
                    |k, loaded| {
                        let g = &chunk[k];
                        let o = &mut o[g.start - base..g.end - base];
                        match loaded {
                            Some(versions) => self.join_key(
                                stream,
                                merge,
                                requests,
                                &order[g.clone()],
                                &versions,
                                ttl,
                                o,
                            ),
                            None => {
                                for (o, &ri) in o.iter_mut().zip(&order[g.clone()]) {
                                    let r = &requests[ri];
                                    *o = match self.get_below(stream, &r.key, r.time, end)? {
                                        GetResult::Present(row) => {
                                            Some(row).filter(|row| within_ttl(row, r, ttl))
                                        }
                                        _ => None,
                                    };
                                }
                                Ok(())
                            }
                        }
                    },
                )
            };
            super::parallel::run_jobs(jobs, run)?;
            for (&i, row) in order.iter().zip(sorted) {
                out[i][j] = row;
            }
        }
        Ok(out)
    }

    /// Answers the requests `reqs` (indices into `requests`, one key, ascending
    /// time) of one stream from that key's versions (sorted by `(event_time,
    /// position)`, below the snapshot's end): `out[i]` receives request
    /// `reqs[i]`'s row.
    #[allow(clippy::too_many_arguments)]
    fn join_key(
        &self,
        stream: &str,
        merge: Option<&std::sync::Arc<dyn crate::query::merge::MergeOperator>>,
        requests: &[Request],
        reqs: &[usize],
        versions: &[VersionRef],
        ttl: Option<i64>,
        out: &mut [Option<Row>],
    ) -> Result<()> {
        let key = &requests[reqs[0]].key;
        // `row` is the fold of `versions[..applied]`; a request folds in
        // what its time adds, reading values from the last put or delete
        // on only (most versions are never read).
        let (mut next, mut applied) = (0usize, 0usize);
        let mut row: Option<Row> = None;
        for (&ri, o) in reqs.iter().zip(out) {
            let r = &requests[ri];
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
            *o = row.as_ref().filter(|row| within_ttl(row, r, ttl)).cloned();
        }
        Ok(())
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
