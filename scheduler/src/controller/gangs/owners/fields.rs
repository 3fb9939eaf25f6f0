//! Reading counts out of an owner's raw spec, with errors that name the field.
//!
//! Owner objects of operators are watched as untyped JSON (their Go types are
//! not ours to vendor), so every number a rule needs is read here: present and
//! a non-negative integer, absent and defaulted as the CRD defaults it, or an
//! error that the pods' events will quote.

use serde_json::Value;

/// A non-negative integer at `pointer` (JSON pointer below `spec`), `default`
/// when absent or null. `field` names it in the error (`spec.x.y`).
pub(super) fn count(spec: &Value, pointer: &str, field: &str, default: u32) -> Result<u32, String> {
    match spec.pointer(pointer) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{field} is {value}; it must be a non-negative integer")),
    }
}

/// An optional count: `None` when absent or null.
pub(super) fn optional_count(
    spec: &Value,
    pointer: &str,
    field: &str,
) -> Result<Option<u32>, String> {
    match spec.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => count(spec, pointer, field, 0).map(Some),
    }
}

/// An optional boolean: absent or null is `false`.
pub(super) fn flag(spec: &Value, pointer: &str, field: &str) -> Result<bool, String> {
    match spec.pointer(pointer) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(value) => Err(format!("{field} is {value}; it must be true or false")),
    }
}

/// An optional string.
pub(super) fn text<'a>(
    spec: &'a Value,
    pointer: &str,
    field: &str,
) -> Result<Option<&'a str>, String> {
    match spec.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(value) => Err(format!("{field} is {value}; it must be a string")),
    }
}

/// An array that may be absent (empty).
pub(super) fn list<'a>(spec: &'a Value, pointer: &str, field: &str) -> Result<&'a [Value], String> {
    match spec.pointer(pointer) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(value) => Err(format!("{field} is {value}; it must be a list")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counts_default_when_absent_and_name_the_field_when_wrong() {
        let spec = json!({ "a": 3, "b": null, "c": -1, "d": "2", "e": 1.5 });
        assert_eq!(count(&spec, "/a", "spec.a", 1), Ok(3));
        assert_eq!(count(&spec, "/b", "spec.b", 1), Ok(1));
        assert_eq!(count(&spec, "/missing", "spec.missing", 7), Ok(7));
        for field in ["c", "d", "e"] {
            let error =
                count(&spec, &format!("/{field}"), &format!("spec.{field}"), 1).unwrap_err();
            assert!(error.starts_with(&format!("spec.{field} is ")), "{error}");
        }
        assert_eq!(optional_count(&spec, "/b", "spec.b"), Ok(None));
        assert_eq!(optional_count(&spec, "/a", "spec.a"), Ok(Some(3)));
    }

    #[test]
    fn flags_texts_and_lists() {
        let spec = json!({ "t": true, "s": "x", "l": [1], "n": 3 });
        assert_eq!(flag(&spec, "/t", "t"), Ok(true));
        assert_eq!(flag(&spec, "/none", "none"), Ok(false));
        assert!(flag(&spec, "/s", "s").is_err());
        assert_eq!(text(&spec, "/s", "s"), Ok(Some("x")));
        assert!(text(&spec, "/n", "n").is_err());
        assert_eq!(list(&spec, "/l", "l").map(<[Value]>::len), Ok(1));
        assert_eq!(list(&spec, "/none", "none").map(<[Value]>::len), Ok(0));
        assert!(list(&spec, "/n", "n").is_err());
    }
}
