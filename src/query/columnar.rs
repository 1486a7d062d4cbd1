//! Windows answered from a field column ([`crate::column`]) and the tail of
//! the log after it.
//!
//! Each request is answered on its own, in request order (no sort): its key
//! is looked up in the column's hash table, its window's bounds found by two
//! binary searches in the key's events, and its values summed afresh, in
//! `(event_time, position)` order. The lookups of the requests a few places ahead
//! are started early, a stage at a time (slot, then events), so their cache
//! misses overlap. A key with records after the column (the tail) is
//! answered from its column events and those records merged.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use bytes::Bytes;

use super::access::{group_by_key, KeySet};
use super::field::numeric_field;
use super::join::{join_threads, Request};
use super::window::Agg;
use crate::column::Column;
use crate::db::Snapshot;
use crate::storage::sweep::SweepRange;
use crate::Result;

/// How far ahead of the request it answers a thread starts each stage of
/// a later request's lookup: its slot, then its events.
const SLOT_AHEAD: usize = 16;
const EVENTS_AHEAD: usize = 8;

/// One key's events in `(event_time, position)` order.
trait Events {
    /// The events of `events` with times in `(after, upto]`, their fields
    /// readable.
    fn between(&self, events: Range<usize>, after: i128, upto: i128) -> Result<Range<usize>>;
    fn value(&self, e: usize) -> Option<f64>;
}

impl Events for Column {
    fn between(&self, events: Range<usize>, after: i128, upto: i128) -> Result<Range<usize>> {
        Column::between(self, events, after, upto)
    }
    fn value(&self, e: usize) -> Option<f64> {
        Column::value(self, e)
    }
}

/// A key's column events that the requests' windows can reach, merged with
/// its tail records: `(event_time, field)`, NaN where the field is not a
/// number.
#[derive(Debug, Default)]
struct Merged(Vec<(i64, f64)>);

impl Events for Merged {
    fn between(&self, events: Range<usize>, after: i128, upto: i128) -> Result<Range<usize>> {
        let ev = &self.0[events.clone()];
        let a = ev.partition_point(|e| i128::from(e.0) <= after);
        let b = a + ev[a..].partition_point(|e| i128::from(e.0) <= upto);
        Ok(events.start + a..events.start + b)
    }
    fn value(&self, e: usize) -> Option<f64> {
        Some(self.0[e].1).filter(|x| !x.is_nan())
    }
}

/// What a window query asks.
pub(super) struct Windows<'a> {
    pub(super) field: &'a str,
    pub(super) agg: Agg,
    pub(super) width: i64,
    pub(super) requests: &'a [Request],
}

impl<'a> Windows<'a> {
    /// Answers every request, in request order, from `col` and the records of
    /// `stream` at positions `col.known_end..end`.
    pub(super) fn answer(
        &self,
        snap: &Snapshot,
        col: &Column,
        stream: &str,
        end: u64,
    ) -> Result<Vec<Option<f64>>> {
        let tails = self.tails(snap, col, stream, end)?;
        let n = self.requests.len();
        let per = n.div_ceil(join_threads(n)).max(1);
        let mut runs = self.requests.chunks(per);
        let Some(first) = runs.next() else {
            return Ok(Vec::new());
        };
        // A run of requests per core. The first is answered on this thread
        // straight into the result, so its allocation is not a serial step
        // before the others start; theirs are appended.
        std::thread::scope(|scope| {
            let tails = &tails;
            let others: Vec<_> = runs
                .map(|reqs| {
                    scope.spawn(move || {
                        let mut out = Vec::with_capacity(reqs.len());
                        self.run(col, tails, reqs, &mut out).map(|()| out)
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(n);
            let mine = self.run(col, tails, first, &mut out);
            for h in others {
                let theirs = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                out.extend(theirs?);
            }
            mine.map(|()| out)
        })
    }

    /// One thread's run of requests.
    fn run(
        &self,
        col: &Column,
        tails: &HashMap<&[u8], Merged>,
        reqs: &[Request],
        out: &mut Vec<Option<f64>>,
    ) -> Result<()> {
        const RING: usize = SLOT_AHEAD + 1;
        let mut homes = [0usize; RING];
        for (i, r) in reqs.iter().enumerate().take(SLOT_AHEAD) {
            homes[i % RING] = col.home(&r.key);
        }
        for (i, r) in reqs.iter().enumerate() {
            if let Some(a) = reqs.get(i + SLOT_AHEAD) {
                let h = col.home(&a.key);
                homes[(i + SLOT_AHEAD) % RING] = h;
                col.prefetch_slot(h);
            }
            if i + EVENTS_AHEAD < reqs.len() {
                col.prefetch_candidate(homes[(i + EVENTS_AHEAD) % RING]);
            }
            if !tails.is_empty() {
                if let Some(m) = tails.get(&r.key[..]) {
                    out.push(self.one(m, 0..m.0.len(), r.time)?);
                    continue;
                }
            }
            out.push(match col.find(&r.key, homes[i % RING])? {
                Some(events) => self.one(col, events, r.time)?,
                None if self.agg == Agg::Count => Some(0.0),
                None => None,
            });
        }
        Ok(())
    }

    /// The window as of `t` over one key's `events`: its values summed afresh
    /// in `(event_time, position)` order (the log paths add and subtract as
    /// their window slides over a key's requests, which can differ in the
    /// last bits; a large value leaving their window can cost them more).
    fn one(&self, ev: &impl Events, events: Range<usize>, t: i64) -> Result<Option<f64>> {
        let start = i128::from(t) - i128::from(self.width); // exclusive
        let window = ev.between(events, start, i128::from(t))?;
        if self.agg == Agg::Count {
            return Ok(Some(window.len() as f64));
        }
        let values = || window.clone().filter_map(|e| ev.value(e));
        Ok(match self.agg {
            Agg::Min => values().reduce(f64::min),
            Agg::Max => values().reduce(f64::max),
            _ => {
                let (sum, n) = values().fold((0.0, 0u64), |(s, n), x| (s + x, n + 1));
                (n > 0).then(|| {
                    if self.agg == Agg::Avg {
                        sum / n as f64
                    } else {
                        sum
                    }
                })
            }
        })
    }

    /// The requested keys with records after the column that can enter a
    /// window (event times within the requests' span), each merged with its
    /// column events in that span.
    fn tails(
        &self,
        snap: &Snapshot,
        col: &Column,
        stream: &str,
        end: u64,
    ) -> Result<HashMap<&'a [u8], Merged>> {
        let known = col.info().known_end;
        let mut merged = HashMap::new();
        if end <= known || snap.end_position() <= known {
            return Ok(merged);
        }
        let times = || self.requests.iter().map(|r| r.time);
        let (Some(first), Some(hi)) = (times().min(), times().max()) else {
            return Ok(merged);
        };
        // The lowest event time a window can hold (inclusive).
        let lo = i128::from(first) - i128::from(self.width) + 1;
        let requests = self.requests;
        let mut seen = HashSet::new();
        let keys: Vec<&'a Bytes> = requests
            .iter()
            .map(|r| &r.key)
            .filter(|k| seen.insert(&k[..]))
            .collect();
        drop(seen);
        let set = KeySet::new(keys.iter().copied());
        let range = SweepRange {
            stream,
            lo: i64::try_from(lo).unwrap_or(i64::MIN),
            hi,
            start: known,
            end,
        };
        let numeric = self.agg != Agg::Count;
        let parts = set.sweep(snap.view(), range, 1, Vec::new, |acc, id, r, v| {
            let x = if numeric {
                numeric_field(r.value, self.field)
            } else {
                None
            };
            acc.push((id as u32, (v.event_time, x.unwrap_or(f64::NAN))));
        })?;
        let (starts, tail) = group_by_key(&parts, keys.len());
        for (k, key) in keys.iter().enumerate() {
            let tail = &tail[starts[k]..starts[k + 1]];
            if tail.is_empty() {
                continue;
            }
            // Column events precede every tail record in position order, and
            // the tail is in position order: a stable sort by time leaves them
            // in `(event_time, position)` order.
            let mut m = Merged::default();
            if let Some(events) = col.find(key, col.home(key))? {
                let reach = col.between(events, lo - 1, i128::from(hi))?;
                m.0.extend(reach.map(|e| (col.time(e), col.value(e).unwrap_or(f64::NAN))));
            }
            m.0.extend_from_slice(tail);
            m.0.sort_by_key(|e| e.0);
            merged.insert(&key[..], m);
        }
        Ok(merged)
    }
}
