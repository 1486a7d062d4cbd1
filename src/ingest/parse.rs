//! Turning one input line (a JSON object, or a CSV row with its header) into an event.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::time::{parse_time, TimeUnit};
use crate::storage::record::Op;

/// Which fields of an input object carry the key, the event time and the op.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    /// The key field (string or number).
    pub key: String,
    /// The event-time field (a time string, or an integer in `unit`).
    pub time: String,
    /// Optional field whose value `put|patch|delete` sets the op (default put).
    pub op: Option<String>,
    /// Unit of integer times.
    pub unit: TimeUnit,
}

/// One parsed input event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The key, as a string.
    pub key: String,
    /// Put, patch or delete.
    pub op: Op,
    /// Event time (µs).
    pub event_time: i64,
    /// The stored value: the whole object (empty for a delete).
    pub value: Vec<u8>,
}

fn event_from_object(
    obj: &Map<String, Value>,
    spec: &FieldSpec,
    value: impl FnOnce() -> Vec<u8>,
) -> Result<Event, String> {
    let fields = Fields {
        key: obj.get(&spec.key).cloned(),
        time: obj.get(&spec.time).cloned(),
        op: spec.op.as_ref().and_then(|f| obj.get(f)).cloned(),
    };
    event_from_fields(fields, spec, value)
}

/// The top-level fields of an object that make an event.
#[derive(Debug, Default)]
struct Fields<V> {
    key: Option<V>,
    time: Option<V>,
    op: Option<V>,
}

fn event_from_fields(
    fields: Fields<Value>,
    spec: &FieldSpec,
    value: impl FnOnce() -> Vec<u8>,
) -> Result<Event, String> {
    let key = match fields.key {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "key field {:?} must be a string or number, found {other}",
                spec.key
            ))
        }
        None => return Err(format!("missing key field {:?}", spec.key)),
    };
    let event_time = match &fields.time {
        Some(Value::String(s)) => {
            parse_time(s, spec.unit).map_err(|e| format!("time field {:?}: {e}", spec.time))?
        }
        Some(Value::Number(n)) => {
            let v = n
                .as_i64()
                .ok_or_else(|| format!("time field {:?}: {n} is not an integer", spec.time))?;
            spec.unit
                .to_micros(v)
                .ok_or_else(|| format!("time field {:?}: {n} is out of range", spec.time))?
        }
        Some(other) => {
            return Err(format!(
                "time field {:?} must be a string or integer, found {other}",
                spec.time
            ))
        }
        None => return Err(format!("missing time field {:?}", spec.time)),
    };
    let op = match &spec.op {
        None => Op::Put,
        Some(f) => match &fields.op {
            None | Some(Value::Null) => Op::Put,
            Some(Value::String(s)) => Op::parse(s).ok_or_else(|| {
                format!("unknown op {s:?} in field {f:?}: expected put, patch or delete")
            })?,
            Some(other) => {
                return Err(format!(
                    "op field {f:?} must be put, patch or delete, found {other}"
                ))
            }
        },
    };
    let value = if op == Op::Delete {
        Vec::new()
    } else {
        value()
    };
    Ok(Event {
        key,
        op,
        event_time,
        value,
    })
}

/// Parses one JSONL line. `Ok(None)` for a blank line.
pub fn parse_json_line(line: &str, spec: &FieldSpec) -> Result<Option<Event>, String> {
    let t = line.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Some(fields) = top_fields(t, spec) {
        return event_from_fields(fields, spec, || t.as_bytes().to_vec()).map(Some);
    }
    // Not a valid object: parsed again as a value, for the message.
    parse_json_line_by_value(line, spec)
}

/// [`parse_json_line`] by parsing the whole line into a [`Value`]: the
/// reference its faster path is tested and fuzzed against.
#[doc(hidden)]
pub fn parse_json_line_by_value(line: &str, spec: &FieldSpec) -> Result<Option<Event>, String> {
    let t = line.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(format!("expected a JSON object, found {}", kind_of(&v)));
    };
    event_from_object(&obj, spec, || t.as_bytes().to_vec()).map(Some)
}

/// The event's fields of a line that is one valid JSON object, or `None` when
/// it is not. Validates exactly what parsing it into a [`Value`] does (syntax,
/// escapes, number ranges, nesting depth) but keeps only the key, time and op
/// fields: the rest of the object is visited without being built. As with a
/// map, a repeated field's last value counts.
fn top_fields(line: &str, spec: &FieldSpec) -> Option<Fields<Value>> {
    let mut de = serde_json::Deserializer::from_str(line);
    let fields = de.deserialize_map(TopLevel { spec }).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// Visits a top-level object for [`top_fields`].
struct TopLevel<'a> {
    spec: &'a FieldSpec,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Fields<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(which) = map.next_key_seed(Which { spec: self.spec })? {
            if which == [false; 3] {
                map.next_value_seed(Valid)?;
                continue;
            }
            let v: Value = map.next_value()?;
            let slots = [&mut fields.key, &mut fields.time, &mut fields.op];
            let mut wanted = which.into_iter().zip(slots).filter(|(w, _)| *w);
            // The last slot takes the value; any other (one field named as
            // two of them) a copy.
            let mut last = wanted.next().map(|(_, slot)| slot);
            for (_, slot) in wanted {
                if let Some(prev) = last.replace(slot) {
                    *prev = Some(v.clone());
                }
            }
            if let Some(slot) = last {
                *slot = Some(v);
            }
        }
        Ok(fields)
    }
}

/// Which of the key, time and op fields a field name is (one name may be
/// several).
struct Which<'a> {
    spec: &'a FieldSpec,
}

impl<'de> DeserializeSeed<'de> for Which<'_> {
    type Value = [bool; 3];

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<[bool; 3], D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Which<'_> {
    type Value = [bool; 3];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<[bool; 3], E> {
        Ok([
            name == self.spec.key,
            name == self.spec.time,
            self.spec.op.as_deref() == Some(name),
        ])
    }
}

/// Any JSON value, checked as [`Value`] would be and then dropped: strings are
/// decoded (escapes, surrogates) and numbers parsed (ranges), without
/// allocating. This matches `Value` as serde_json is built here; its
/// `arbitrary_precision` and `raw_value` features give `Value` special map
/// keys this does not know, so enabling either calls for another look (the
/// agreement test and the `import_line` fuzz target compare the two).
struct Valid;

impl<'de> DeserializeSeed<'de> for Valid {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Valid)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Valid)?.is_some() {
            map.next_value_seed(Valid)?;
        }
        Ok(())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Converts a CSV cell to JSON: integers and finite decimals become numbers,
/// an empty cell becomes `null`, anything else stays a string.
#[must_use]
pub fn csv_cell(cell: &str) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = cell.parse::<i64>() {
        return Value::from(i);
    }
    if cell.bytes().any(|b| b.is_ascii_digit())
        && cell
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        if let Ok(f) = cell.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(cell.to_string())
}

/// Parses one CSV record given the header. The stored value is the row as a JSON
/// object (see [`csv_cell`]).
pub fn parse_csv_record(
    header: &[String],
    cells: &[&str],
    spec: &FieldSpec,
) -> Result<Event, String> {
    if cells.len() != header.len() {
        return Err(format!(
            "expected {} fields as in the header, found {}",
            header.len(),
            cells.len()
        ));
    }
    let mut obj = Map::new();
    for (h, c) in header.iter().zip(cells) {
        obj.insert(h.clone(), csv_cell(c));
    }
    // A time column holding an integer is read in the time unit; keep it a string
    // for the time parser only when it is not a number.
    let mut for_fields = obj.clone();
    if let Some(Value::Number(n)) = for_fields.get(&spec.time) {
        if n.as_i64().is_none() {
            let s = n.to_string();
            for_fields.insert(spec.time.clone(), Value::String(s));
        }
    }
    event_from_object(&for_fields, spec, || {
        serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FieldSpec {
        FieldSpec {
            key: "id".into(),
            time: "ts".into(),
            op: Some("op".into()),
            unit: TimeUnit::Millis,
        }
    }

    #[test]
    fn json_lines() {
        let e = parse_json_line(r#"{"id":"a","ts":"2013-01-01","x":1}"#, &spec())
            .unwrap()
            .unwrap();
        assert_eq!(e.key, "a");
        assert_eq!(e.op, Op::Put);
        assert_eq!(e.event_time, 1_356_998_400_000_000);
        let e = parse_json_line(r#"{"id":7,"ts":1000,"op":"delete"}"#, &spec())
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.key.as_str(), e.op, e.event_time, e.value.len()),
            ("7", Op::Delete, 1_000_000, 0)
        );
        assert_eq!(parse_json_line("   ", &spec()), Ok(None));
        for (line, why) in [
            ("[1]", "expected a JSON object"),
            ("{", "invalid JSON"),
            (r#"{"ts":1}"#, "missing key field"),
            (r#"{"id":"a"}"#, "missing time field"),
            (r#"{"id":"a","ts":"soon"}"#, "unparsable time"),
            (r#"{"id":"a","ts":1,"op":"upsert"}"#, "unknown op"),
            (r#"{"id":null,"ts":1}"#, "must be a string or number"),
        ] {
            let e = parse_json_line(line, &spec()).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    /// The fast path accepts exactly the lines a full parse does, and reads
    /// the same event from them: handwritten edge cases, then seeded random
    /// byte mutations of valid lines.
    #[test]
    fn fields_only_parse_agrees_with_a_full_parse() {
        let spec = spec();
        let same_name = FieldSpec {
            key: "id".into(),
            time: "id".into(),
            op: Some("id".into()),
            unit: TimeUnit::Millis,
        };
        let seeds = [
            r#"{"id":"a","ts":"2013-01-01","x":1}"#,
            r#"{"id":7,"ts":1000,"op":"delete"}"#,
            r#"{"id":"a","ts":1,"id":"b","ts":2}"#,
            r#"{"id":"a","ts":1,"op":"patch","op":null}"#,
            r#"{"id":1.50,"ts":1e3,"n":[1,-2.5e-3,{"a":[true,false,null]}]}"#,
            r#"{"id":"\u00e9\n","ts":"2013-01-01T00:00:00Z","s":"\ud83d\ude00"}"#,
            r#"{"id":"a","ts":1,"big":1e400}"#,
            r#"{"id":"a","ts":1,"s":"\ud800"}"#,
            r#"{"id":"a","ts":1,"\u0069d":"b"}"#,
            r#"{"id":"a","ts":1} x"#,
            r#"{"id":"a","ts":1,}"#,
            r#"{"id":"a","ts":18446744073709551616}"#,
            r#"{"id":"a","ts":-9223372036854775808}"#,
            r#"[{"id":"a","ts":1}]"#,
            r#""{}""#,
            "{\"id\":\"a\",\"ts\":1,\"c\":\"\u{1}\"}",
        ];
        let deep = format!(
            r#"{{"id":"a","ts":1,"d":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let mut lines: Vec<String> = seeds.iter().map(|s| (*s).to_string()).collect();
        lines.push(deep);
        let mut rng = crate::rng::Rng(41);
        let alphabet = br#"{}[]",:\0123456789eE+-.aiduntsfl "#;
        for _ in 0..20_000 {
            let mut b = seeds[rng.below(seeds.len() as u64) as usize]
                .as_bytes()
                .to_vec();
            let edits = 1 + rng.below(3);
            rng.mutate(&mut b, alphabet, edits);
            if let Ok(s) = String::from_utf8(b) {
                lines.push(s);
            }
        }
        let mut accepted = 0;
        for line in &lines {
            for spec in [&spec, &same_name] {
                let want = parse_json_line_by_value(line, spec);
                accepted += usize::from(matches!(want, Ok(Some(_))));
                assert_eq!(parse_json_line(line, spec), want, "{line}");
            }
        }
        assert!(accepted > 500, "only {accepted} lines were valid events");
    }

    #[test]
    fn csv_rows() {
        let h: Vec<String> = ["id", "ts", "price", "name", "note"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        let e =
            parse_csv_record(&h, &["a", "2013-01-01 10:00:00", "1.5", "x", ""], &spec()).unwrap();
        assert_eq!(
            String::from_utf8(e.value).unwrap(),
            r#"{"id":"a","ts":"2013-01-01 10:00:00","price":1.5,"name":"x","note":null}"#
        );
        let e = parse_csv_record(&h, &["9", "5", "2", "y", "z"], &spec()).unwrap();
        assert_eq!((e.key.as_str(), e.event_time), ("9", 5_000));
        assert!(parse_csv_record(&h, &["a"], &spec())
            .unwrap_err()
            .contains("expected 5 fields"));
    }
}
