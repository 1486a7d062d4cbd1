//! Windowed aggregates over a key's events: `(time - width, time]`.

use std::collections::VecDeque;

use super::access::{
    group_by_key, prefer_sweep, read_ahead, sweep_threads, AccessPath, KeySet, WINDOW_VERSION_NS,
};
use super::asof::KnownAt;
use super::field::numeric_field;
use super::join::{by_key_then_time, join_threads, Request};
use crate::db::Snapshot;
use crate::storage::index::VersionRef;
use crate::storage::sweep::SweepRange;
use crate::{Error, Result};

/// The aggregate a window computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// Number of events (every record of the key, whatever its field).
    Count,
    /// Sum of the numeric field over events where it is a number.
    Sum,
    /// Mean of the numeric field over events where it is a number.
    Avg,
    /// Smallest numeric value.
    Min,
    /// Largest numeric value.
    Max,
}

impl Agg {
    /// Parses `count|sum|avg|min|max`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Agg> {
        match s {
            "count" => Some(Agg::Count),
            "sum" => Some(Agg::Sum),
            "avg" => Some(Agg::Avg),
            "min" => Some(Agg::Min),
            "max" => Some(Agg::Max),
            _ => None,
        }
    }

    /// The lower-case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
        }
    }
}

/// A sliding window over events in time order: running count and sum, and
/// monotonic deques for min and max (kept only when the aggregate needs them).
#[derive(Debug, Default)]
struct Sliding {
    /// Whether the aggregate is min or max.
    extremes: bool,
    events: usize,
    numbers: usize,
    sum: f64,
    mins: VecDeque<(usize, f64)>,
    maxs: VecDeque<(usize, f64)>,
}

impl Sliding {
    fn new(agg: Agg) -> Sliding {
        Sliding {
            extremes: matches!(agg, Agg::Min | Agg::Max),
            ..Sliding::default()
        }
    }

    fn add(&mut self, i: usize, x: Option<f64>) {
        self.events += 1;
        if let Some(x) = x {
            self.numbers += 1;
            self.sum += x;
            if !self.extremes {
                return;
            }
            while self.mins.back().is_some_and(|&(_, m)| m >= x) {
                self.mins.pop_back();
            }
            self.mins.push_back((i, x));
            while self.maxs.back().is_some_and(|&(_, m)| m <= x) {
                self.maxs.pop_back();
            }
            self.maxs.push_back((i, x));
        }
    }

    fn remove(&mut self, i: usize, x: Option<f64>) {
        self.events -= 1;
        if let Some(x) = x {
            self.numbers -= 1;
            self.sum -= x;
            if self.numbers == 0 {
                self.sum = 0.0; // no drift carried into the next burst
            }
            if self.mins.front().is_some_and(|&(j, _)| j == i) {
                self.mins.pop_front();
            }
            if self.maxs.front().is_some_and(|&(j, _)| j == i) {
                self.maxs.pop_front();
            }
        }
    }

    fn value(&self, agg: Agg) -> Option<f64> {
        match agg {
            Agg::Count => Some(self.events as f64),
            _ if self.numbers == 0 => None,
            Agg::Sum => Some(self.sum),
            Agg::Avg => Some(self.sum / self.numbers as f64),
            Agg::Min => self.mins.front().map(|&(_, m)| m),
            Agg::Max => self.maxs.front().map(|&(_, m)| m),
        }
    }
}

impl Snapshot {
    /// For each request `(key, time)`, `agg` of the numeric `field` over the key's
    /// events in `stream` with `time - width < event_time <= time`, known at
    /// `known_at`. `Count` counts every event (and is never `None`); the others use
    /// the events whose field is a number and are `None` when there are none.
    ///
    /// Each key's events are read once and swept with a sliding window; requests
    /// keep their order in the result. Events are gathered by probing the key
    /// indexes for each requested key, or, when the requests cover enough of
    /// the stream's keys that this costs more, by sequential passes over the
    /// stream, one per core (see [`AccessPath`]).
    ///
    /// When `field` has a column in `stream` ([`crate::Db::build_column`])
    /// built at or before the position the window is known at, the window
    /// reads it instead: a hash lookup and two binary searches per request,
    /// and only the records written after the column from the log (see
    /// [`crate::column`]). The answers are the same; each window's sum is
    /// added afresh there, where the log paths add and subtract as the window
    /// slides over a key's requests, so the last bits of a sum can differ.
    pub fn window(
        &self,
        stream: &str,
        field: &str,
        agg: Agg,
        width: i64,
        requests: &[Request],
        known_at: impl Into<KnownAt>,
    ) -> Result<Vec<Option<f64>>> {
        if width <= 0 {
            return Err(Error::InvalidInput(format!(
                "window width must be positive, got {width}µs"
            )));
        }
        let end = self.known_end(known_at)?;
        // The earliest (exclusive) window start.
        let from = requests
            .iter()
            .map(|r| r.time)
            .min()
            .map(|t| i128::from(t) - i128::from(width));
        if let Some(from) = from {
            // Events after the window's (exclusive) start must all be there.
            self.check_after(from)?;
        }
        self.check_stream(stream)?;
        if matches!(self.access, AccessPath::Auto | AccessPath::Column) {
            let from = from.unwrap_or(i128::MAX);
            match self.columns.usable(stream, field, end, from) {
                Some(col) => {
                    let windows = super::columnar::Windows {
                        field,
                        agg,
                        width,
                        requests,
                    };
                    match windows.answer(self, &col, stream, end) {
                        // Parts of a column are checked when first read: a
                        // damaged one is reported, and the log answers.
                        Err(e @ Error::Corruption { .. }) if self.access == AccessPath::Auto => {
                            log::warn!(
                                "column {} unusable, reading the log: {e}",
                                col.info().path.display()
                            );
                            self.columns.mark_bad(&col.info().path);
                        }
                        answered => return answered,
                    }
                }
                None if self.access == AccessPath::Column => {
                    return Err(Error::InvalidInput(format!(
                        "no column of field {field:?} in stream {stream:?} that a window \
                         known below position {end} can read"
                    )))
                }
                None => {}
            }
        }
        let order = by_key_then_time(requests);
        let mut sorted: Vec<Option<f64>> = vec![None; requests.len()];
        // Runs of `order` with the same key.
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        for i in 0..order.len() {
            match groups.last_mut() {
                Some(g) if requests[order[g.start]].key == requests[order[i]].key => g.end = i + 1,
                _ => groups.push(i..i + 1),
            }
        }
        let numeric = |value: &[u8]| {
            if agg == Agg::Count {
                None
            } else {
                numeric_field(value, field)
            }
        };
        if prefer_sweep(
            self.access,
            &self.view,
            stream,
            groups.len(),
            WINDOW_VERSION_NS,
        )? {
            // Sequential passes, one per core. A record of a requested key is
            // kept only if it falls in the span that key's windows cover
            // (history before its first window or after its last can change
            // no answer), and its field is parsed then, while its bytes are in
            // cache.
            let set = KeySet::new(groups.iter().map(|g| &requests[order[g.start]].key));
            // Per key, the span its windows cover (16 bytes a key: the sweep
            // looks one up for each record of a requested key).
            let spans: Vec<(i64, i64)> = groups
                .iter()
                .map(|g| span(requests, &order[g.clone()], width))
                .collect();
            let enters_a_window = |k: usize, t: i64| {
                let (from, upto) = spans[k];
                from <= t && t <= upto
            };
            let lo =
                i128::from(requests.iter().map(|r| r.time).min().unwrap_or(0)) - i128::from(width);
            let range = SweepRange {
                stream,
                lo: i64::try_from(lo + 1).unwrap_or(i64::MIN),
                hi: requests.iter().map(|r| r.time).max().unwrap_or(i64::MIN),
                start: 0,
                end,
            };
            let threads = sweep_threads(end.min(self.view.end_position()));
            // Fields are finite, so NaN marks a record without a number.
            let found = |id: usize| crate::hint::prefetch(&spans[id]);
            let parts = set.sweep_hinted(
                &self.view,
                range,
                threads,
                Vec::new,
                found,
                |acc, id, r, v| {
                    if enters_a_window(id, v.event_time) {
                        acc.push((
                            id as u32,
                            (v.event_time, numeric(r.value).unwrap_or(f64::NAN)),
                        ));
                    }
                },
            )?;
            let (starts, mut events) = group_by_key(&parts, groups.len());
            drop(parts);
            let swept = Swept {
                requests,
                order: &order,
                groups: &groups,
                starts: &starts,
            };
            swept.slide(&mut events, width, agg, &mut sorted)?;
        } else {
            // Keys probed independently: contiguous runs of them, one thread
            // each (one per core), each writing its own run of `sorted`.
            let per = groups.len().div_ceil(join_threads(requests.len())).max(1);
            let mut jobs = Vec::new();
            let mut rest = &mut sorted[..];
            for chunk in groups.chunks(per) {
                let n = chunk.last().map_or(0, |g| g.end) - chunk[0].start;
                let (o, r) = std::mem::take(&mut rest).split_at_mut(n);
                rest = r;
                jobs.push((chunk, o));
            }
            // A key's versions are read a few keys ahead of its windows, and
            // the records that can enter them prefetched, so the cache misses
            // of reading values overlap instead of following one another.
            let load = |g: &std::ops::Range<usize>| -> Result<Vec<VersionRef>> {
                let reqs = &order[g.clone()];
                let mut versions = self.view.versions(stream, &requests[reqs[0]].key)?;
                versions.retain(|v| v.position < end);
                if agg != Agg::Count {
                    let (from, upto) = span(requests, reqs, width);
                    for v in &versions {
                        if from <= v.event_time && v.event_time <= upto {
                            self.view.prefetch_record(v);
                        }
                    }
                }
                Ok(versions)
            };
            let run = |(chunk, o): (&[std::ops::Range<usize>], &mut [Option<f64>])| -> Result<()> {
                let base = chunk[0].start;
                let hint = |k: usize| {
                    let key = &requests[order[chunk[k].start]].key;
                    self.view.prefetch_key(stream, key);
                };
                read_ahead(
                    chunk.len(),
                    hint,
                    |k| load(&chunk[k]),
                    |k, versions| {
                        let g = &chunk[k];
                        let reqs = &order[g.clone()];
                        let time = |i: usize| versions[i].event_time;
                        let value = |i: usize| match agg {
                            Agg::Count => Ok(None),
                            _ => self.view.with_value(&versions[i], numeric),
                        };
                        let o = &mut o[g.start - base..g.end - base];
                        slide(requests, reqs, width, agg, versions.len(), time, value, o)
                    },
                )
            };
            super::parallel::run_jobs(jobs, run)?;
        }
        Ok(unsort(&order, sorted))
    }
}

/// Answers aligned with `order` put back in request order.
fn unsort(order: &[usize], sorted: Vec<Option<f64>>) -> Vec<Option<f64>> {
    let mut out = vec![None; order.len()];
    for (i, x) in order.iter().zip(sorted) {
        out[*i] = x;
    }
    out
}

/// The events the windows of `reqs` (indices into `requests`, one key,
/// ascending time) can hold: `first - width < t <= last`, as the inclusive
/// `(first - width + 1, last)`. The start saturates at `i64::MIN`, where every
/// time is inside, as it is for the true start below it.
fn span(requests: &[Request], reqs: &[usize], width: i64) -> (i64, i64) {
    let first = requests[reqs[0]].time;
    let last = requests[reqs[reqs.len() - 1]].time;
    let start = i128::from(first) - i128::from(width) + 1;
    (i64::try_from(start).unwrap_or(i64::MIN), last)
}

/// The swept path's events grouped by key, ready to answer requests.
struct Swept<'a> {
    requests: &'a [Request],
    /// Request indices sorted by key and time.
    order: &'a [usize],
    /// Runs of `order` with the same key; key `k` is `groups[k]`.
    groups: &'a [std::ops::Range<usize>],
    /// Key `k`'s events are `events[starts[k]..starts[k + 1]]`.
    starts: &'a [usize],
}

impl Swept<'_> {
    /// Sorts each key's events by `(event_time, position)` and slides its
    /// requests' windows over them, writing answers into `sorted` (aligned
    /// with `order`). Keys are split into contiguous chunks, one thread each
    /// (one per core, at least 64k events each); a chunk owns its run of
    /// `events` and of `sorted`, so no thread shares a mutable slice.
    fn slide(
        &self,
        events: &mut [(i64, f64)],
        width: i64,
        agg: Agg,
        sorted: &mut [Option<f64>],
    ) -> Result<()> {
        let (groups, starts) = (self.groups, self.starts);
        let threads = sweep_threads(events.len() as u64 * 4);
        let per = groups.len().div_ceil(threads).max(1);
        let mut jobs = Vec::new();
        let (mut ev_rest, mut out_rest) = (events, sorted);
        for (c, chunk) in groups.chunks(per).enumerate() {
            let k0 = c * per;
            let n_ev = starts[k0 + chunk.len()] - starts[k0];
            let n_out = chunk.last().map_or(0, |g| g.end) - chunk[0].start;
            let (ev, e) = std::mem::take(&mut ev_rest).split_at_mut(n_ev);
            let (o, r) = std::mem::take(&mut out_rest).split_at_mut(n_out);
            (ev_rest, out_rest) = (e, r);
            jobs.push((chunk, &starts[k0..=k0 + chunk.len()], ev, o));
        }
        let run = |(chunk, starts, ev, o): Job<'_>| -> Result<()> {
            let (base_ev, base_out) = (starts[0], chunk[0].start);
            for (k, g) in chunk.iter().enumerate() {
                let ev = &mut ev[starts[k] - base_ev..starts[k + 1] - base_ev];
                // Stable: ties keep position order, so this is (event_time, position).
                ev.sort_by_key(|e| e.0);
                let time = |i: usize| ev[i].0;
                // Fields are finite, so NaN marks an event without a number.
                let value = |i: usize| Ok(Some(ev[i].1).filter(|x| !x.is_nan()));
                let o = &mut o[g.start - base_out..g.end - base_out];
                let reqs = &self.order[g.clone()];
                slide(self.requests, reqs, width, agg, ev.len(), time, value, o)?;
            }
            Ok(())
        };
        super::parallel::run_jobs(jobs, run)
    }
}

/// One thread's share of the swept keys: their request runs in `order`, their
/// `starts` (one more than keys), their events, and their answers' run of
/// `sorted`.
type Job<'a> = (
    &'a [std::ops::Range<usize>],
    &'a [usize],
    &'a mut [(i64, f64)],
    &'a mut [Option<f64>],
);

/// Answers the requests `reqs` (indices into `requests`, one key, ascending
/// time) from that key's `n` events sorted by `(event_time, position)`:
/// `time(i)` is event `i`'s time and `value(i)` its numeric field, asked only
/// for events that enter some window. `out[j]` receives request `reqs[j]`'s
/// answer.
#[allow(clippy::too_many_arguments)]
fn slide(
    requests: &[Request],
    reqs: &[usize],
    width: i64,
    agg: Agg,
    n: usize,
    time: impl Fn(usize) -> i64,
    mut value: impl FnMut(usize) -> Result<Option<f64>>,
    out: &mut [Option<f64>],
) -> Result<()> {
    let mut values: Vec<Option<f64>> = vec![None; n];
    let mut win = Sliding::new(agg);
    let (mut lo, mut hi) = (0usize, 0usize);
    for (&r, o) in reqs.iter().zip(out) {
        let t = requests[r].time;
        let start = i128::from(t) - i128::from(width); // exclusive
        while lo < hi && i128::from(time(lo)) <= start {
            win.remove(lo, values[lo]);
            lo += 1;
        }
        if lo == hi {
            // Events already behind this window never enter it.
            while hi < n && i128::from(time(hi)) <= start {
                hi += 1;
            }
            lo = hi;
        }
        while hi < n && time(hi) <= t {
            values[hi] = value(hi)?;
            win.add(hi, values[hi]);
            hi += 1;
        }
        *o = win.value(agg);
    }
    Ok(())
}
