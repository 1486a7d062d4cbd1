//! Turning one input line (a JSON object, or a CSV row with its header) into an event.

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
    let key = match obj.get(&spec.key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "key field {:?} must be a string or number, found {other}",
                spec.key
            ))
        }
        None => return Err(format!("missing key field {:?}", spec.key)),
    };
    let event_time = match obj.get(&spec.time) {
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
        Some(f) => match obj.get(f) {
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
    let v: Value = serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(format!("expected a JSON object, found {}", kind_of(&v)));
    };
    event_from_object(&obj, spec, || t.as_bytes().to_vec()).map(Some)
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
