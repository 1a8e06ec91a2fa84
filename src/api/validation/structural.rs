//! The structural pass: an object against its kind's JSON Schema - types, integer ranges, times, quantities,
//! required fields - collecting what cannot be decoded, the fields the schema does not declare (errors under
//! `fieldValidation=Strict`) and the fields Capstan stores without acting on them.

use serde_json::Value;

use super::super::crd::schema::type_name;
use super::super::registry::{resolve, KindInfo};

/// The result of the structural pass.
#[derive(Debug, Default)]
pub struct Structural {
    /// Wrong types and malformed values: the object cannot be decoded.
    pub errors: Vec<String>,
    /// Fields the schema does not declare (an error under Strict, a warning under Warn).
    pub unknown: Vec<String>,
    /// Fields Capstan stores but does not act on (returned as warnings).
    pub opaque: Vec<String>,
}

/// Walks `obj` against the kind's schema.
pub fn structural(kind: &KindInfo, obj: &Value) -> Structural {
    let mut out = Structural::default();
    walk(kind.schema(), obj, &mut String::new(), &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        _ => true,
    }
}

fn is_null_schema(s: &Value) -> bool {
    s.get("enum")
        .and_then(Value::as_array)
        .is_some_and(|e| e.len() == 1 && e[0].is_null())
        || s.get("type").and_then(Value::as_str) == Some("null")
}

/// `path` is the field's path, grown and cut back as the walk goes (no string built per field).
fn walk(schema: &Value, v: &Value, path: &mut String, out: &mut Structural) {
    if v.is_null() {
        return; // null means "unset" for every optional field
    }
    let schema = resolve(schema);
    if schema.get("x-capstan-opaque").is_some() {
        out.opaque.push(path.clone());
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            walk(s, v, path, out);
        }
        return;
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        return any_of(schema, any, v, path, out);
    }
    let at = path.len();
    let ty = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    if let Some(t) = ty {
        if !type_matches(t, v) {
            out.errors.push(format!(
                "{}: expected {t}, got {}",
                if path.is_empty() {
                    "<root>"
                } else {
                    path.as_str()
                },
                type_name(v)
            ));
            return;
        }
        scalar_format(schema, t, v, path, out);
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        out.errors
                            .push(format!("{}: required field is missing", join(path, r)));
                    }
                }
            }
            for (k, child) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    walk(s, child, path, out);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    walk(a, child, path, out);
                } else if props.is_some()
                    && schema.get("x-kubernetes-preserve-unknown-fields").is_none()
                {
                    out.unknown.push(path.clone());
                }
                path.truncate(at);
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    use std::fmt::Write;
                    let _ = write!(path, "[{i}]");
                    walk(s, child, path, out);
                    path.truncate(at);
                }
            }
        }
        _ => {}
    }
}

/// `anyOf`: an optional field (one schema and null) is walked as that schema; otherwise the value must have one of
/// the types (int-or-string, quantities - which must also parse).
fn any_of(schema: &Value, any: &[Value], v: &Value, path: &mut String, out: &mut Structural) {
    let non_null: Vec<&Value> = any.iter().filter(|s| !is_null_schema(s)).collect();
    if non_null.len() == 1 && schema.get("x-kubernetes-int-or-string").is_none() {
        return walk(non_null[0], v, path, out);
    }
    let ok = any.iter().any(|s| {
        let s = resolve(s);
        s.get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| type_matches(t, v))
    });
    if !ok {
        let wanted: Vec<&str> = any
            .iter()
            .filter_map(|s| resolve(s).get("type").and_then(Value::as_str))
            .collect();
        out.errors.push(format!(
            "{path}: expected {}, got {}",
            wanted.join(" or "),
            type_name(v)
        ));
        return;
    }
    if schema.get("x-capstan-quantity").is_some() {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if crate::api::parse_quantity_millis(&text).is_none() {
            out.errors.push(format!(
                "{path}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {text:?}"
            ));
        }
    }
}

/// The `format` of an integer (int32 range, unsigned) or a string (RFC 3339 date-time).
fn scalar_format(schema: &Value, t: &str, v: &Value, path: &str, out: &mut Structural) {
    let fmt = schema.get("format").and_then(Value::as_str).unwrap_or("");
    if t == "integer" {
        if let Some(n) = v.as_i64() {
            if fmt == "int32" && (n < i32::MIN as i64 || n > i32::MAX as i64) {
                out.errors
                    .push(format!("{path}: {n} does not fit in a 32-bit integer"));
            }
            if fmt.starts_with("uint") && n < 0 {
                out.errors.push(format!("{path}: must not be negative"));
            }
        }
    }
    if t == "string" && fmt == "date-time" {
        if let Some(s) = v.as_str() {
            if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                out.errors
                    .push(format!("{path}: {s:?} is not an RFC 3339 time"));
            }
        }
    }
}
