//! meta.k8s.io/v1 Table responses: what `kubectl get` asks for (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`).
//! Columns come from the kind registry; rows carry PartialObjectMetadata (or the full object) so `-A`,
//! `--show-labels` and `-L` work.

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::api::registry::KindInfo;

/// Whether the client asked for a Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

fn row(kind: &KindInfo, obj: &Value, include: &str) -> Value {
    let cells = (kind.columns.cells)(obj);
    let object = match include {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => {
            let mut meta = obj.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
        }
    };
    let mut r = json!({"cells": cells});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A Table of objects. `include` is the `includeObject` parameter (None, Metadata (default) or Object).
pub fn table(
    kind: &KindInfo,
    items: &[Value],
    list_meta: Value,
    include: &str,
    with_columns: bool,
) -> Value {
    let columns: Vec<Value> = if with_columns {
        kind.columns
            .defs
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description,
                    "priority": c.priority})
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": items.iter().map(|o| row(kind, o, include)).collect::<Vec<_>>(),
    })
}
