//! Merge operators: how a `patch` record folds into the row before it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Folds a patch into the previous row of its key.
///
/// Patches are applied at query time in `(event_time, position)` order, so a late
/// patch lands in the right place in history.
pub trait MergeOperator: Send + Sync + fmt::Debug {
    /// Returns the row after applying `patch` to `base` (`None`: no row before,
    /// either never written or deleted). An `Err` explains why the patch is invalid.
    fn merge(&self, base: Option<&[u8]>, patch: &[u8]) -> Result<Vec<u8>, String>;
}

/// JSON merge patch (RFC 7386): listed fields replace, `null` removes a field,
/// absent fields keep their value; a patch on an absent row creates it.
///
/// ```
/// use tablelog::{JsonMergePatch, MergeOperator};
/// let row = JsonMergePatch.merge(Some(br#"{"a":1,"b":2}"#), br#"{"b":null,"c":3}"#).unwrap();
/// assert_eq!(row, br#"{"a":1,"c":3}"#);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonMergePatch;

/// Applies an RFC 7386 merge patch to a JSON value in place.
pub fn json_merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        json_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl MergeOperator for JsonMergePatch {
    fn merge(&self, base: Option<&[u8]>, patch: &[u8]) -> Result<Vec<u8>, String> {
        let patch: Value =
            serde_json::from_slice(patch).map_err(|e| format!("patch is not JSON: {e}"))?;
        let mut target = match base {
            Some(b) => serde_json::from_slice(b).map_err(|e| format!("row is not JSON: {e}"))?,
            None => Value::Null,
        };
        json_merge_patch(&mut target, &patch);
        serde_json::to_vec(&target).map_err(|e| e.to_string())
    }
}

/// The merge operators registered on a database, by stream.
#[derive(Debug, Default)]
pub struct MergeRegistry {
    by_stream: HashMap<String, Arc<dyn MergeOperator>>,
    default: Option<Arc<dyn MergeOperator>>,
}

impl MergeRegistry {
    pub(crate) fn new(
        by_stream: HashMap<String, Arc<dyn MergeOperator>>,
        default: Option<Arc<dyn MergeOperator>>,
    ) -> Self {
        MergeRegistry { by_stream, default }
    }

    /// The operator for `stream`, if any.
    #[must_use]
    pub fn get(&self, stream: &str) -> Option<&Arc<dyn MergeOperator>> {
        self.by_stream.get(stream).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(base: Option<&str>, patch: &str) -> String {
        String::from_utf8(
            JsonMergePatch
                .merge(base.map(str::as_bytes), patch.as_bytes())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn rfc7386_examples() {
        assert_eq!(mp(Some(r#"{"a":"b"}"#), r#"{"a":"c"}"#), r#"{"a":"c"}"#);
        assert_eq!(
            mp(Some(r#"{"a":"b"}"#), r#"{"b":"c"}"#),
            r#"{"a":"b","b":"c"}"#
        );
        assert_eq!(mp(Some(r#"{"a":"b"}"#), r#"{"a":null}"#), r#"{}"#);
        assert_eq!(
            mp(Some(r#"{"a":{"b":"c"}}"#), r#"{"a":{"b":"d","c":null}}"#),
            r#"{"a":{"b":"d"}}"#
        );
        assert_eq!(mp(Some(r#"{"a":[1]}"#), r#"{"a":[2]}"#), r#"{"a":[2]}"#);
        assert_eq!(mp(Some(r#"["a"]"#), r#"{"a":"c"}"#), r#"{"a":"c"}"#);
        assert_eq!(mp(None, r#"{"a":1,"b":null}"#), r#"{"a":1}"#);
        assert_eq!(mp(Some(r#"{"a":1}"#), r#"[1]"#), r#"[1]"#);
    }
}
