//! Resource handlers: get, list, create, update, patch, delete and deletecollection for every kind in the registry,
//! plus the status, scale and binding subresources, split by job: [`paths`] (what a URL addresses), [`codec`] (stored
//! and request bodies), [`filters`] (selectors), [`reads`], [`writes`] (every write goes through `Server::write`,
//! which validates, defaults, tracks field managers and commits with compare-and-swap - so nothing half-valid is ever
//! stored), [`deletes`] and [`subresources`]. What they share is here.

use super::error::{ApiError, Result};
use super::patch;
use super::Server;
use crate::api::meta::{format_time, now};
use crate::api::registry::{self, KindInfo};
use crate::api::selector::{FieldSelector, Selector};
use crate::api::{defaults, validation};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;

mod codec;
mod deletes;
mod filters;
mod paths;
mod reads;
mod subresources;
mod writes;

pub use codec::*;
pub use filters::*;
pub use paths::*;
pub use writes::*;

/// Query parameters of a request.
pub type Query = HashMap<String, String>;

pub fn flag(q: &Query, name: &str) -> bool {
    matches!(q.get(name).map(String::as_str), Some("true" | "1"))
}

pub(super) fn meta_str<'a>(v: &'a Value, f: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
}

pub(super) fn set_meta(v: &mut Value, f: &str, val: Value) {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if val.is_null() {
            m.remove(f);
        } else {
            m.insert(f.to_string(), val);
        }
    }
}

/// A marker manager name: the write's ownership was already computed by server-side apply.
pub(super) const APPLY_MARKER: &str = "\u{0}apply";

pub(super) fn conflict_or(e: crate::store::Error, kind: &KindInfo, name: &str) -> ApiError {
    match e {
        crate::store::Error::Conflict { .. } => ApiError::conflict(
            &kind.qualified(),
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        crate::store::Error::NotFound(_) => ApiError::not_found(&kind.qualified(), name),
        other => other.into(),
    }
}

pub(super) fn check_type(kind: &KindInfo, body: &Value) -> Result<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a {} object, got {}",
            kind.kind,
            type_of(body)
        )));
    }
    let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let k = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if (!av.is_empty() && av != kind.api_version()) || (!k.is_empty() && k != kind.kind) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) and kind ({k}) do not match the request ({} {})",
            kind.api_version(),
            kind.kind
        )));
    }
    if !body
        .get("metadata")
        .is_none_or(|m| m.is_object() || m.is_null())
    {
        return Err(ApiError::bad_request("metadata: expected object"));
    }
    Ok(())
}

pub(super) fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

/// The labels of a JSON object.
pub fn obj_labels(v: &Value) -> std::collections::BTreeMap<String, String> {
    crate::api::selector::labels_of(v)
}

/// Whether two versions of an object are the same but for resourceVersion and managedFields timestamps.
pub(super) fn unchanged(a: &Value, b: &Value) -> bool {
    if !same_fields(a, b, &["metadata"]) {
        return false;
    }
    let (ma, mb) = match (a.get("metadata"), b.get("metadata")) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => (x, y),
        (x, y) => return x == y,
    };
    if !same_entries(ma, mb, &["resourceVersion", "managedFields"]) {
        return false;
    }
    match (ma.get("managedFields"), mb.get("managedFields")) {
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|pair| match pair {
                    (Value::Object(e), Value::Object(f)) => same_entries(e, f, &["time"]),
                    (e, f) => e == f,
                })
        }
        (x, y) => x == y,
    }
}

/// Whether two objects are equal in every top-level field but those in `skip` (compared in place, not copied).
pub(super) fn same_fields(a: &Value, b: &Value, skip: &[&str]) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => same_entries(x, y, skip),
        _ => a == b,
    }
}

fn same_entries(
    x: &serde_json::Map<String, Value>,
    y: &serde_json::Map<String, Value>,
    skip: &[&str],
) -> bool {
    let kept = |m: &serde_json::Map<String, Value>| {
        m.keys().filter(|k| !skip.contains(&k.as_str())).count()
    };
    kept(x) == kept(y)
        && x.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, v)| y.get(k) == Some(v))
}

#[cfg(test)]
mod timing {
    use super::*;

    #[tokio::test]
    #[ignore]
    async fn create_handler_cost() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::embedded::Embedded::open(&dir.path().join("db")).unwrap();
        let server = Server::new(std::sync::Arc::new(store), "t");
        server
            .bootstrap(&[
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
            ])
            .await
            .unwrap();
        let kind = registry::lookup("configmaps").unwrap();
        let t = Target {
            kind,
            namespace: Some("default".into()),
            name: None,
            sub: None,
        };
        let q = Query::new();
        let start = std::time::Instant::now();
        for i in 0..2000 {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}, "data": {"k": "v"}});
            server.create(&t, body, &q, &mut Vec::new()).await.unwrap();
        }
        eprintln!("2000 creates through the handler: {:?}", start.elapsed());
        let pod = registry::lookup("pods").unwrap();
        let t = Target {
            kind: pod,
            namespace: Some("default".into()),
            name: None,
            sub: None,
        };
        let start = std::time::Instant::now();
        for i in 0..2000 {
            let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}});
            server.create(&t, body, &q, &mut Vec::new()).await.unwrap();
        }
        eprintln!(
            "2000 pod creates through the handler: {:?}",
            start.elapsed()
        );
    }
}
