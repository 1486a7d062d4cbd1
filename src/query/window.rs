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

/// Reads `field` of a JSON object value as a number (`None` if the value is not
/// an object, lacks the field, or the field is not a number).
///
/// A scanner walks the top-level object without building it; anything it does
/// not fully understand (escapes in keys, malformed input) falls back to
/// `serde_json`, so answers are always those of a full parse.
pub(crate) fn numeric_field(value: &[u8], field: &str) -> Option<f64> {
    match scan_field(value, field.as_bytes()) {
        Scan::Number(x) => Some(x),
        Scan::Absent => None,
        Scan::Unsure => {
            let v: serde_json::Value = serde_json::from_slice(value).ok()?;
            v.get(field)?.as_f64()
        }
    }
}

enum Scan {
    Number(f64),
    Absent,
    Unsure,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End of the string starting at the quote `b[i]`, and whether it had escapes.
/// `None` for an unterminated string or a raw control character (invalid JSON).
fn skip_string(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    i += 1;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    None
}

/// Whether `t` is a JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(t: &[u8]) -> bool {
    let mut i = usize::from(t.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < t.len() && t[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == t.len()
}

/// Whether a scalar token is valid JSON (number, true, false, null).
fn valid_scalar(t: &[u8]) -> bool {
    matches!(t, b"true" | b"false" | b"null") || is_json_number(t)
}

/// End of the value starting at `b[i]` (strings, objects and arrays skipped with
/// string-aware depth counting; scalars up to the next delimiter).
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i).map(|(e, _)| e),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

fn scan_field(b: &[u8], field: &[u8]) -> Scan {
    // Non-ASCII bytes need UTF-8 validation: leave those documents to serde_json.
    if !b.is_ascii() {
        return Scan::Unsure;
    }
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Scan::Unsure;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Scan::Absent;
    }
    let mut found: Option<(usize, usize)> = None;
    loop {
        if b.get(i) != Some(&b'"') {
            return Scan::Unsure;
        }
        let Some((kend, escaped)) = skip_string(b, i) else {
            return Scan::Unsure;
        };
        if escaped {
            return Scan::Unsure;
        }
        let key = &b[i + 1..kend - 1];
        i = skip_ws(b, kend);
        if b.get(i) != Some(&b':') {
            return Scan::Unsure;
        }
        let vstart = skip_ws(b, i + 1);
        let Some(vend) = skip_value(b, vstart) else {
            return Scan::Unsure;
        };
        let first = b.get(vstart).copied().unwrap_or(b'}');
        if first == b'{' || first == b'[' {
            // Nested values are only skipped, not validated: let serde_json judge.
            if key == field || !nested_ok(&b[vstart..vend]) {
                return Scan::Unsure;
            }
        } else if first != b'"' && !valid_scalar(&b[vstart..vend]) {
            return Scan::Unsure;
        }
        if key == field {
            // The last duplicate wins, as in serde_json.
            found = Some((vstart, vend));
        }
        i = skip_ws(b, vend);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => break,
            _ => return Scan::Unsure,
        }
    }
    if skip_ws(b, i + 1) != b.len() {
        return Scan::Unsure;
    }
    let Some((s, e)) = found else {
        return Scan::Absent;
    };
    let tok = &b[s..e];
    if is_json_number(tok) {
        match std::str::from_utf8(tok)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
        {
            Some(x) if x.is_finite() => Scan::Number(x),
            _ => Scan::Unsure,
        }
    } else {
        Scan::Absent // a string, bool or null (validated above): not a number
    }
}

/// A cheap validity check of a nested object or array: every scalar inside is
/// valid. Structure (colons, commas) is left to the fallback when in doubt.
fn nested_ok(v: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok()
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
        if let Some(t) = requests.iter().map(|r| r.time).min() {
            // Events after the window's (exclusive) start must all be there.
            self.check_after(i128::from(t) - i128::from(width))?;
        }
        self.check_stream(stream)?;
        let mut out = vec![None; requests.len()];
        let order = by_key_then_time(requests);
        let mut i = 0;
        while i < order.len() {
            let key = &requests[order[i]].key;
            let mut versions = self.view.versions(stream, key)?;
            versions.retain(|v| v.position < end);
            // Values are read only for versions that enter some request's
            // window; `values[i]` is set when version `i` enters.
            let mut values: Vec<Option<f64>> = vec![None; versions.len()];
            let mut win = Sliding::default();
            let (mut lo, mut hi) = (0usize, 0usize);
            while i < order.len() && requests[order[i]].key == *key {
                let t = requests[order[i]].time;
                let start = i128::from(t) - i128::from(width); // exclusive
                while lo < hi && i128::from(versions[lo].event_time) <= start {
                    win.remove(lo, values[lo]);
                    lo += 1;
                }
                if lo == hi {
                    // Versions already behind this window never enter it.
                    while hi < versions.len() && i128::from(versions[hi].event_time) <= start {
                        hi += 1;
                    }
                    lo = hi;
                }
                while hi < versions.len() && versions[hi].event_time <= t {
                    if agg != Agg::Count {
                        values[hi] = numeric_field(&self.view.value(&versions[hi])?, field);
                    }
                    win.add(hi, values[hi]);
                    hi += 1;
                }
                out[order[i]] = win.value(agg);
                i += 1;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::numeric_field;

    #[test]
    fn field_scanner_agrees_with_a_full_parse() {
        let cases: &[&[u8]] = &[
            br#"{"price":1.5}"#,
            br#" { "a" : {"price": 9, "x":[1,{"price":3}]}, "price" : -2e3 } "#,
            br#"{"price":"7"}"#,
            br#"{"price":null}"#,
            br#"{"price":true}"#,
            br#"{"pri\u0063e":4}"#,
            br#"{"s":"a \" } , \\","price":12}"#,
            br#"{"price":1,"price":2}"#,
            br#"{}"#,
            br#"[1,2]"#,
            br#"{"price":1"#,
            br#"{"price":01}"#,
            br#"{"price":1} x"#,
            b"not json",
            br#"{"a":1}"#,
            br#"{"price":12345678901234567890}"#,
            br#"{"price":1,"x":tru}"#,
            br#"{"price":1,"x":[1,}"#,
            br#"{"price":1.}"#,
            br#"{"price":-}"#,
            b"{\"price\":1,\"x\":\"a\x01b\"}",
            br#"{"price":1e400}"#,
            br#"{"price":2,"n":{"price":"x"}}"#,
            "{\"price\":3,\"é\":1}".as_bytes(),
        ];
        for c in cases {
            let full = serde_json::from_slice::<serde_json::Value>(c)
                .ok()
                .and_then(|v| v.get("price").and_then(serde_json::Value::as_f64));
            assert_eq!(
                numeric_field(c, "price"),
                full,
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }
}
