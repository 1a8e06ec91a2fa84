//! Other representations of objects a client may ask for in `Accept`: meta.k8s.io/v1 Table (what `kubectl get` asks
//! for: `application/json;as=Table;g=meta.k8s.io;v=v1`; columns come from the kind registry, rows carry
//! PartialObjectMetadata or the full object so `-A`, `--show-labels` and `-L` work), and PartialObjectMetadata /
//! PartialObjectMetadataList (`as=PartialObjectMetadata[List]`: metadata only, what controller-runtime's
//! metadata-only watches, garbage collectors and the metadata client ask for) for get, list and watch.

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::api::crd::CustomVersion;
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

/// The column definitions of a kind: the registry's, or for a custom kind Name plus its CRD's printer columns (Age
/// when it declares none, as Kubernetes does).
fn column_defs(kind: &KindInfo, custom: Option<&CustomVersion>) -> Vec<Value> {
    let Some(c) = custom else {
        return kind
            .columns
            .defs
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description,
                    "priority": c.priority})
            })
            .collect();
    };
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    if c.columns.is_empty() {
        defs.push(json!({"name": "Age", "type": "date", "format": "", "priority": 0,
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}));
    }
    for col in &c.columns {
        defs.push(
            json!({"name": col.name, "type": col.type_, "format": col.format,
            "description": col.description, "priority": col.priority}),
        );
    }
    defs
}

/// The cells of a custom object: its name, then each printer column's value (dates as ages, like kubectl shows them).
fn custom_cells(c: &CustomVersion, obj: &Value) -> Vec<Value> {
    let mut cells = vec![obj
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null)];
    let age = |v: &Value| match v.as_str() {
        Some(_) => json!(capstan_present::columns::age_of(&json!({"t": v}), "t")),
        None => Value::Null,
    };
    if c.columns.is_empty() {
        cells.push(age(obj
            .pointer("/metadata/creationTimestamp")
            .unwrap_or(&Value::Null)));
    }
    for col in &c.columns {
        let v = col.path.cell(obj);
        cells.push(match col.type_.as_str() {
            "date" => age(&v),
            "integer" | "number" | "boolean" => v,
            _ => match v {
                Value::Null => Value::Null,
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            },
        });
    }
    cells
}

fn row(kind: &KindInfo, custom: Option<&CustomVersion>, obj: &Value, include: &str) -> Value {
    let cells = match custom {
        Some(c) => custom_cells(c, obj),
        None => (kind.columns.cells)(obj),
    };
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
    let custom = crate::api::registry::custom(kind);
    let custom = custom.as_deref();
    let columns: Vec<Value> = if with_columns {
        column_defs(kind, custom)
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": items.iter().map(|o| row(kind, custom, o, include)).collect::<Vec<_>>(),
    })
}
