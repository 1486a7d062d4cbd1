//! Windows answered from a field column ([`crate::column`]) and the tail of
//! the log after it.
//!
//! Each request is answered on its own, in request order (no sort): its key
//! is looked up in the column's hash table, and its window's bounds found by
//! two binary searches in the key's events. The lookups of the requests a
//! few places ahead are started early, a stage at a time (slot, then
//! events), so their cache misses overlap. A key with records after the
//! column (the tail) is answered from its column events and those records
//! merged.

use std::collections::HashMap;
use std::ops::Range;

use super::field::numeric_field;
use super::join::{join_threads, Request};
use super::window::Agg;
use crate::column::Column;
use crate::db::Snapshot;
use crate::storage::sweep::SweepRange;
use crate::Result;

/// Windows of at most this many events are summed from their values, in
/// order (as the log paths sum them); longer ones subtract running sums.
const SUMMED: usize = 32;

/// How far ahead of the request it answers a thread starts each stage of
/// a later request's lookup: its slot, then its events.
const SLOT_AHEAD: usize = 16;
const EVENTS_AHEAD: usize = 8;

/// One key's events in `(event_time, position)` order, with running sums.
trait Events {
    fn time(&self, e: usize) -> i64;
    fn value(&self, e: usize) -> Option<f64>;
    /// Sum of the numbers up to and including `e` (from the key's first event).
    fn running_sum(&self, e: usize) -> f64;
    /// How many of the events up to and including `e` are numbers.
    fn running_numbers(&self, e: usize) -> u64;
    /// Makes the running values of `events` readable.
    fn running(&self, events: &Range<usize>) -> Result<()>;
    /// Makes the times and fields of `events` readable.
    fn ready(&self, events: &Range<usize>) -> Result<()>;
}

impl Events for Column {
    fn time(&self, e: usize) -> i64 {
        Column::time(self, e)
    }
    fn value(&self, e: usize) -> Option<f64> {
        Column::value(self, e)
    }
    fn running_sum(&self, e: usize) -> f64 {
        Column::running_sum(self, e)
    }
    fn running_numbers(&self, e: usize) -> u64 {
        Column::running_numbers(self, e)
    }
    fn running(&self, events: &Range<usize>) -> Result<()> {
        Column::running(self, events)
    }
    fn ready(&self, events: &Range<usize>) -> Result<()> {
        Column::ready(self, events)
    }
}

/// A key's column events merged with its tail records.
#[derive(Debug, Default)]
struct Merged {
    /// `(event_time, field)`, NaN where the field is not a number.
    events: Vec<(i64, f64)>,
    sums: Vec<f64>,
    numbers: Vec<u64>,
}

impl Events for Merged {
    fn time(&self, e: usize) -> i64 {
        self.events[e].0
    }
    fn value(&self, e: usize) -> Option<f64> {
        Some(self.events[e].1).filter(|x| !x.is_nan())
    }
    fn running_sum(&self, e: usize) -> f64 {
        self.sums[e]
    }
    fn running_numbers(&self, e: usize) -> u64 {
        self.numbers[e]
    }
    fn running(&self, _: &Range<usize>) -> Result<()> {
        Ok(())
    }
    fn ready(&self, _: &Range<usize>) -> Result<()> {
        Ok(())
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
                    out.push(self.one(m, 0..m.events.len(), r.time)?);
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

    /// The window as of `t` over one key's `events`.
    fn one(&self, ev: &impl Events, events: Range<usize>, t: i64) -> Result<Option<f64>> {
        ev.ready(&events)?;
        let first = events.start;
        let start = i128::from(t) - i128::from(self.width); // exclusive
        let a = first_where(events.clone(), |e| i128::from(ev.time(e)) > start);
        let b = first_where(a..events.end, |e| ev.time(e) > t);
        // Running values of the key's events before `e` (0 before the first).
        let sum_below = |e: usize| {
            if e > first {
                ev.running_sum(e - 1)
            } else {
                0.0
            }
        };
        let numbers_below = |e: usize| {
            if e > first {
                ev.running_numbers(e - 1)
            } else {
                0
            }
        };
        let values = || (a..b).filter_map(|e| ev.value(e));
        Ok(match self.agg {
            Agg::Count => Some((b - a) as f64),
            Agg::Sum | Agg::Avg => {
                // A short window is summed from its values, which are at
                // hand; a long one from the running sums, two more reads.
                let (sum, n) = if b - a <= SUMMED {
                    values().fold((0.0, 0u64), |(s, n), x| (s + x, n + 1))
                } else {
                    ev.running(&events)?;
                    (
                        sum_below(b) - sum_below(a),
                        numbers_below(b) - numbers_below(a),
                    )
                };
                (n > 0).then(|| {
                    if self.agg == Agg::Sum {
                        sum
                    } else {
                        sum / n as f64
                    }
                })
            }
            Agg::Min => values().reduce(f64::min),
            Agg::Max => values().reduce(f64::max),
        })
    }

    /// The keys with records after the column that can enter a window (event
    /// times within the requests' span), each merged with its column events.
    fn tails(
        &self,
        snap: &Snapshot,
        col: &Column,
        stream: &str,
        end: u64,
    ) -> Result<HashMap<&'a [u8], Merged>> {
        let known = col.info().known_end;
        let mut tails: HashMap<Box<[u8]>, Vec<(i64, f64)>> = HashMap::new();
        let mut merged = HashMap::new();
        if end > known && snap.end_position() > known {
            let times = || self.requests.iter().map(|r| r.time);
            let lo = i128::from(times().min().unwrap_or(0)) - i128::from(self.width) + 1;
            let range = SweepRange {
                stream,
                lo: i64::try_from(lo).unwrap_or(i64::MIN),
                hi: times().max().unwrap_or(i64::MIN),
                start: known,
                end,
            };
            let numeric = self.agg != Agg::Count;
            snap.view().sweep(range, |r, v| {
                let x = if numeric {
                    numeric_field(r.value, self.field)
                } else {
                    None
                };
                let e = (v.event_time, x.unwrap_or(f64::NAN));
                match tails.get_mut(r.key) {
                    Some(list) => list.push(e),
                    None => {
                        tails.insert(r.key.into(), vec![e]);
                    }
                }
            })?;
        }
        if tails.is_empty() {
            return Ok(merged);
        }
        for r in self.requests {
            let Some(tail) = tails.remove(&r.key[..]) else {
                continue;
            };
            // Column events precede every tail record in position order, and
            // the tail is in position order: a stable sort by time leaves them
            // in `(event_time, position)` order.
            let mut m = Merged::default();
            if let Some(events) = col.find(&r.key, col.home(&r.key))? {
                col.ready(&events)?;
                m.events
                    .extend(events.map(|e| (col.time(e), col.value(e).unwrap_or(f64::NAN))));
            }
            m.events.extend_from_slice(&tail);
            m.events.sort_by_key(|e| e.0);
            let (mut sum, mut n) = (0.0, 0u64);
            for &(_, x) in &m.events {
                if !x.is_nan() {
                    sum += x;
                    n += 1;
                }
                m.sums.push(sum);
                m.numbers.push(n);
            }
            merged.insert(&r.key[..], m);
        }
        Ok(merged)
    }
}

/// The first index of `range` where `pred` holds (`range.end` if none); `pred`
/// must be false then true along the range. Branch-free: the halving does not
/// depend on the comparisons, whose outcomes (on times a request's key makes
/// unpredictable) select with a conditional move instead of a jump.
fn first_where(range: Range<usize>, pred: impl Fn(usize) -> bool) -> usize {
    let (mut base, mut size) = (range.start, range.len());
    if size == 0 {
        return base;
    }
    while size > 1 {
        let half = size / 2;
        let mid = base + half;
        base = if pred(mid) { base } else { mid };
        size -= half;
    }
    base + usize::from(!pred(base))
}
