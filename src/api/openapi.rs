//! OpenAPI v3 documents generated from the kinds' schemars schemas: the index at `/openapi/v3` and one document per
//! group-version. PATCH operations declare the `fieldValidation` query parameter, so kubectl leaves strict validation
//! to the server; they do not declare strategic-merge-patch bodies, so kubectl computes strategic patches from its
//! compiled-in types (which know every merge key).

use serde_json::{json, Map, Value};

use super::registry::{self, schemas, KindInfo, KINDS};

/// `api/v1` or `apis/apps/v1`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A short, stable content hash of a document, used in `serverRelativeURL`.
pub fn hash_of(doc: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    doc.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

fn gvk(k: &KindInfo) -> Value {
    json!({"group": k.group, "version": k.version, "kind": k.kind})
}

fn query(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}})
}

fn operations(k: &KindInfo, item: bool) -> Value {
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", k.kind)});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}});
    let ext = gvk(k);
    let mut ops = Map::new();
    let id = |verb: &str| format!("{verb}{}", k.kind);
    if item {
        ops.insert(
            "get".into(),
            json!({"operationId": id("read"), "x-kubernetes-action": "get",
            "x-kubernetes-group-version-kind": ext, "responses": ok}),
        );
        ops.insert("put".into(), json!({"operationId": id("replace"), "x-kubernetes-action": "put",
            "x-kubernetes-group-version-kind": ext,
            "parameters": [query("dryRun", "string"), query("fieldManager", "string"), query("fieldValidation", "string")],
            "requestBody": {"content": {"application/json": {"schema": schema_ref}}}, "responses": ok}));
        ops.insert(
            "patch".into(),
            json!({"operationId": id("patch"), "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": ext,
            "parameters": [query("dryRun", "string"), query("fieldManager", "string"),
                query("fieldValidation", "string"), query("force", "boolean")],
            "requestBody": {"content": {
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/apply-patch+yaml": {"schema": {"type": "object"}}}},
            "responses": ok}),
        );
        ops.insert(
            "delete".into(),
            json!({"operationId": id("delete"), "x-kubernetes-action": "delete",
            "x-kubernetes-group-version-kind": ext, "responses": ok}),
        );
    } else {
        ops.insert(
            "get".into(),
            json!({"operationId": id("list"), "x-kubernetes-action": "list",
            "x-kubernetes-group-version-kind": ext, "responses": ok}),
        );
        ops.insert("post".into(), json!({"operationId": id("create"), "x-kubernetes-action": "post",
            "x-kubernetes-group-version-kind": ext,
            "parameters": [query("dryRun", "string"), query("fieldManager", "string"), query("fieldValidation", "string")],
            "requestBody": {"content": {"application/json": {"schema": schema_ref}}}, "responses": ok}));
    }
    Value::Object(ops)
}

/// Rewrites schemars' `anyOf: [X, null]` (optional fields) into `allOf: [X]` with `nullable`, the shape Kubernetes
/// publishes, which `kubectl explain` walks.
fn kubernetes_shape(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(any)) = m.get("anyOf") {
                let non_null: Vec<Value> = any
                    .iter()
                    .filter(|s| {
                        !(s.get("enum")
                            .and_then(Value::as_array)
                            .is_some_and(|e| e.len() == 1 && e[0].is_null()))
                    })
                    .cloned()
                    .collect();
                if non_null.len() == 1 && non_null.len() < any.len() {
                    m.remove("anyOf");
                    m.insert("allOf".into(), Value::Array(non_null));
                    m.insert("nullable".into(), Value::Bool(true));
                }
            }
            for child in m.values_mut() {
                kubernetes_shape(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(kubernetes_shape),
        _ => {}
    }
}

/// A kind's collection, item and status paths.
fn add_paths(paths: &mut Map<String, Value>, prefix: &str, k: &KindInfo) {
    let base = if k.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
    } else {
        format!("{prefix}/{}", k.plural)
    };
    paths.insert(base.clone(), operations(k, false));
    paths.insert(format!("{base}/{{name}}"), operations(k, true));
    if k.status {
        paths.insert(format!("{base}/{{name}}/status"), operations(k, true));
    }
}

/// The OpenAPI v3 document of one group-version.
pub fn document(group: &str, version: &str) -> Value {
    let s = schemas();
    let mut paths = Map::new();
    let mut components = s.definitions.clone();
    for def in components.values_mut() {
        kubernetes_shape(def);
    }
    let prefix = format!("/{}", gv_path(group, version));
    for k in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        add_paths(&mut paths, &prefix, k);
        if let Some(Value::Object(def)) = components.get_mut(k.kind) {
            def.insert("x-kubernetes-group-version-kind".into(), json!([gvk(k)]));
        }
    }
    for k in registry::all()
        .into_iter()
        .filter(|k| k.is_custom() && k.group == group && k.version == version)
    {
        add_paths(&mut paths, &prefix, k);
        components.insert(k.kind.to_string(), custom_schema(k));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Capstan", "version": crate::VERSION},
        "paths": paths,
        "components": {"schemas": components},
    })
}

/// A custom kind's schema as OpenAPI shows it: its CRD's, with `apiVersion`, `kind` and `metadata` declared (metadata
/// as the shared ObjectMeta) and its group-version-kind.
fn custom_schema(k: &KindInfo) -> Value {
    let mut def = registry::custom(k)
        .and_then(|c| c.schema.as_ref().map(|s| s.schema().clone()))
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if !def["properties"].is_object() {
        def["properties"] = json!({});
    }
    def["properties"]["apiVersion"] = json!({"type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object."});
    def["properties"]["kind"] = json!({"type": "string",
        "description": "Kind is a string value representing the REST resource this object represents."});
    def["properties"]["metadata"] = json!({"$ref": "#/components/schemas/ObjectMeta"});
    def["x-kubernetes-group-version-kind"] = json!([gvk(k)]);
    def
}

/// The OpenAPI v2 document, protobuf-encoded as kubectl asks for it: deliberately without definitions. Every kind
/// Capstan serves is described in v3, where kubectl finds `fieldValidation` and leaves validation to the server; for
/// kinds Capstan does not serve, kubectl finds no v2 schema, skips its own validation and reports from discovery that
/// the kind is not served - naming it.
pub fn v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2); // length-delimited
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Capstan");
    field(&mut info, 2, crate::VERSION.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0"); // swagger
    field(&mut doc, 2, &info); // info
    field(&mut doc, 8, b""); // paths
    doc
}

/// The index at `/openapi/v3`.
pub fn index() -> Value {
    let mut paths = Map::new();
    for (g, v) in super::registry::group_versions() {
        let p = gv_path(g, v);
        let hash = hash_of(&document(g, v));
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_declare_field_validation() {
        let doc = document("apps", "v1");
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        assert!(op["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_none());
        assert_eq!(
            doc["components"]["schemas"]["Deployment"]["x-kubernetes-group-version-kind"][0]
                ["group"],
            "apps"
        );
    }

    #[test]
    fn v2_document_is_a_minimal_protobuf() {
        let pb = v2_protobuf();
        assert_eq!(&pb[..5], &[0x0a, 3, b'2', b'.', b'0']);
        assert_eq!(&pb[pb.len() - 2..], &[0x42, 0]);
    }

    #[test]
    fn index_lists_every_group_version() {
        let idx = index();
        assert!(idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
        assert!(idx["paths"].get("apis/apps/v1").is_some());
    }
}
