//! Windowed aggregates over a key's events: `(time - width, time]`.

use std::collections::VecDeque;

use super::asof::KnownAt;
use super::join::{by_key_then_time, Request};
use crate::db::Snapshot;
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

/// Reads `field` of a JSON object value as a number.
pub(crate) fn numeric_field(value: &[u8], field: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    v.get(field)?.as_f64()
}

/// A sliding window over events in time order: running count and sum, and
/// monotonic deques for min and max.
#[derive(Debug, Default)]
struct Sliding {
    events: usize,
    numbers: usize,
    sum: f64,
    mins: VecDeque<(usize, f64)>,
    maxs: VecDeque<(usize, f64)>,
}

impl Sliding {
    fn add(&mut self, i: usize, x: Option<f64>) {
        self.events += 1;
        if let Some(x) = x {
            self.numbers += 1;
            self.sum += x;
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
    /// keep their order in the result.
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
        self.check_stream(stream)?;
        let mut out = vec![None; requests.len()];
        let order = by_key_then_time(requests);
        let mut i = 0;
        while i < order.len() {
            let key = &requests[order[i]].key;
            let mut versions = self.view.versions(stream, key)?;
            versions.retain(|v| v.position < end);
            let values: Vec<Option<f64>> = if agg == Agg::Count {
                vec![None; versions.len()]
            } else {
                versions
                    .iter()
                    .map(|v| Ok(numeric_field(&self.view.value(v)?, field)))
                    .collect::<Result<_>>()?
            };
            let mut win = Sliding::default();
            let (mut lo, mut hi) = (0usize, 0usize);
            while i < order.len() && requests[order[i]].key == *key {
                let t = requests[order[i]].time;
                while hi < versions.len() && versions[hi].event_time <= t {
                    win.add(hi, values[hi]);
                    hi += 1;
                }
                while lo < hi
                    && i128::from(versions[lo].event_time) <= i128::from(t) - i128::from(width)
                {
                    win.remove(lo, values[lo]);
                    lo += 1;
                }
                out[order[i]] = win.value(agg);
                i += 1;
            }
        }
        Ok(out)
    }
}
