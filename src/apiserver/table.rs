//! Other representations of objects a client may ask for in `Accept`: meta.k8s.io/v1 Table (what `kubectl get` asks
//! for: `application/json;as=Table;g=meta.k8s.io;v=v1`; columns come from the kind registry, rows carry
//! PartialObjectMetadata or the full object so `-A`, `--show-labels` and `-L` work), and PartialObjectMetadata /
//! PartialObjectMetadataList (`as=PartialObjectMetadata[List]`: metadata only, what controller-runtime's
//! metadata-only watches, garbage collectors and the metadata client ask for) for get, list and watch.

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

/// Whether the client asked for metadata only (`as=PartialObjectMetadata` or `as=PartialObjectMetadataList` in a
/// JSON media type anywhere in `Accept`; protobuf ones are skipped, this server answers JSON).
pub fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            let m = m.trim();
            m.starts_with("application/json")
                && m.split(';').any(|p| {
                    matches!(
                        p.trim(),
                        "as=PartialObjectMetadata" | "as=PartialObjectMetadataList"
                    )
                })
        })
}

/// An object as PartialObjectMetadata (its whole metadata, nothing else).
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A list of objects as PartialObjectMetadataList.
pub fn partial_list(items: &[Value], meta: Value) -> Value {
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "items": items.iter().map(partial).collect::<Vec<_>>()})
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
