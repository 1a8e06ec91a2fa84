//! apiextensions.k8s.io/v1 CustomResourceDefinition: the kind that adds kinds. Its types, the checks a CRD must pass
//! before it is stored (names, versions, a structural schema), and what a CRD turns into once accepted: one
//! [`CustomVersion`] per served version (schema, printer columns, subresources, selectable fields, deprecation),
//! registered in [`super::registry`] so discovery, routing and tables serve it. Validating, pruning and defaulting
//! custom objects against their schema is in [`schema`], CEL rules in [`cel`], printer-column paths in [`jsonpath`].
//! Pure data and rules, like the rest of `api`: the API server does the serving.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use serde_with::skip_serializing_none;

use super::core::{kind, object};
use super::meta::{ObjectMeta, Time};
use super::validation::{err, FieldError, Reason};

pub mod cel;
pub mod celcost;
pub mod jsonpath;
pub mod schema;

/// The finalizer the API server puts on every CRD: its custom objects are deleted before the CRD goes.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

kind!(
    /// A CustomResourceDefinition.
    CustomResourceDefinition {
        pub spec: CustomResourceDefinitionSpec,
        pub status: Option<CustomResourceDefinitionStatus>,
    }
);
object!(CustomResourceDefinitionSpec {
    pub group: String,
    pub names: CustomResourceDefinitionNames,
    pub scope: String,
    pub versions: Vec<CustomResourceDefinitionVersion>,
    pub conversion: Option<CustomResourceConversion>,
    pub preserve_unknown_fields: Option<bool>,
});
object!(CustomResourceDefinitionNames {
    pub plural: String,
    pub singular: Option<String>,
    pub kind: String,
    pub list_kind: Option<String>,
    pub short_names: Option<Vec<String>>,
    pub categories: Option<Vec<String>>,
});
object!(CustomResourceDefinitionVersion {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    pub deprecated: Option<bool>,
    pub deprecation_warning: Option<String>,
    pub schema: Option<CustomResourceValidation>,
    pub subresources: Option<CustomResourceSubresources>,
    pub additional_printer_columns: Option<Vec<CustomResourceColumnDefinition>>,
    pub selectable_fields: Option<Vec<SelectableField>>,
});
object!(CustomResourceValidation {
    #[serde(rename = "openAPIV3Schema")]
    pub open_api_v3_schema: Option<JsonSchemaProps>,
});
object!(CustomResourceSubresources {
    pub status: Option<super::Opaque>,
    pub scale: Option<CustomResourceSubresourceScale>,
});
object!(CustomResourceSubresourceScale {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
});
object!(CustomResourceColumnDefinition {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub format: Option<String>,
    pub description: Option<String>,
    pub priority: Option<i32>,
    pub json_path: String,
});
object!(SelectableField { pub json_path: String, });
object!(CustomResourceConversion {
    pub strategy: String,
    pub webhook: Option<super::Opaque>,
});
object!(CustomResourceDefinitionStatus {
    pub conditions: Option<Vec<CustomResourceDefinitionCondition>>,
    pub accepted_names: Option<CustomResourceDefinitionNames>,
    pub stored_versions: Option<Vec<String>>,
});
object!(CustomResourceDefinitionCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub last_transition_time: Option<Time>,
    pub reason: Option<String>,
    pub message: Option<String>,
});

/// An OpenAPI v3 schema as a CRD carries it: kept exactly as written (its own rules are checked by [`check`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonSchemaProps(pub Value);

impl JsonSchema for JsonSchemaProps {
    fn schema_name() -> Cow<'static, str> {
        "JSONSchemaProps".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "description": "JSONSchemaProps is a JSON-Schema following Specification Draft 4 (http://json-schema.org/)."})
    }
}

/// A printer column of a custom kind.
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    pub path: jsonpath::Path,
}

/// The scale subresource of a custom kind: where replicas live.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One served version of a custom kind: everything the API server needs to serve it beyond its names.
#[derive(Debug)]
pub struct CustomVersion {
    /// The CRD's name (`crontabs.stable.example.com`).
    pub crd: String,
    /// The version objects are stored in.
    pub storage_version: String,
    /// The compiled schema (None: anything goes, as with `x-kubernetes-preserve-unknown-fields` at the root).
    pub schema: Option<schema::Compiled>,
    pub columns: Vec<PrinterColumn>,
    pub scale: Option<ScalePaths>,
    /// Field paths usable in field selectors besides `metadata.name` and `metadata.namespace`.
    pub selectable: Vec<String>,
    /// The `Warning:` a request to this version gets.
    pub deprecation: Option<String>,
}

/// What one version of an accepted CRD turns into.
pub struct Served {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status: bool,
    pub custom: CustomVersion,
}

impl CustomResourceDefinition {
    /// The served versions of this CRD (storage version first), each compiled.
    pub fn served(&self) -> Result<Vec<Served>, Vec<FieldError>> {
        let spec = &self.spec;
        let names = &spec.names;
        let storage = spec
            .versions
            .iter()
            .find(|v| v.storage)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for (i, v) in spec.versions.iter().enumerate().filter(|(_, v)| v.served) {
            let root = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(|s| &s.0);
            let compiled = match root {
                Some(r) => match schema::Compiled::new(r) {
                    Ok(c) => {
                        // Rules Kubernetes would find too costly to run are refused as it refuses them.
                        for e in celcost::check(r) {
                            errs.push(err(
                                &format!("spec.versions[{i}].schema.openAPIV3Schema{}", e.path),
                                Reason::Forbidden,
                                e.message,
                            ));
                        }
                        Some(c)
                    }
                    Err(e) => {
                        errs.push(err(
                            &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                            Reason::Invalid,
                            e,
                        ));
                        None
                    }
                },
                None => None,
            };
            let mut columns = Vec::new();
            for (j, c) in v.additional_printer_columns.iter().flatten().enumerate() {
                match jsonpath::Path::parse(&c.json_path) {
                    Ok(path) => columns.push(PrinterColumn {
                        name: c.name.clone(),
                        type_: c.type_.clone(),
                        format: c.format.clone().unwrap_or_default(),
                        description: c.description.clone().unwrap_or_default(),
                        priority: c.priority.unwrap_or(0),
                        path,
                    }),
                    Err(e) => errs.push(err(
                        &format!("spec.versions[{i}].additionalPrinterColumns[{j}].jsonPath"),
                        Reason::Invalid,
                        e,
                    )),
                }
            }
            let sub = v.subresources.as_ref();
            let scale = sub.and_then(|s| s.scale.as_ref()).map(|s| ScalePaths {
                spec_replicas: s.spec_replicas_path.trim_start_matches('.').to_string(),
                status_replicas: s.status_replicas_path.trim_start_matches('.').to_string(),
                label_selector: s
                    .label_selector_path
                    .as_ref()
                    .map(|p| p.trim_start_matches('.').to_string()),
            });
            let deprecation = v.deprecated.unwrap_or(false).then(|| {
                v.deprecation_warning.clone().unwrap_or_else(|| {
                    format!("{}/{} {} is deprecated", spec.group, v.name, names.kind)
                })
            });
            out.push(Served {
                group: spec.group.clone(),
                version: v.name.clone(),
                kind: names.kind.clone(),
                plural: names.plural.clone(),
                singular: names
                    .singular
                    .clone()
                    .unwrap_or_else(|| names.kind.to_ascii_lowercase()),
                short_names: names.short_names.clone().unwrap_or_default(),
                categories: names.categories.clone().unwrap_or_default(),
                namespaced: spec.scope == "Namespaced",
                status: sub.is_some_and(|s| s.status.is_some()),
                custom: CustomVersion {
                    crd: self.metadata.name().to_string(),
                    storage_version: storage.clone(),
                    schema: compiled,
                    columns,
                    scale,
                    selectable: v
                        .selectable_fields
                        .iter()
                        .flatten()
                        .map(|f| f.json_path.trim_start_matches('.').to_string())
                        .collect(),
                    deprecation,
                },
            });
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }
}

/// Checks a CRD as kube-apiserver does before storing it: names, scope, versions (exactly one storage version,
/// unique names), conversion, schemas that compile, subresource paths. `old` is the stored CRD on update.
pub fn check(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let crd: CustomResourceDefinition = match serde_json::from_value(obj.clone()) {
        Ok(c) => c,
        Err(e) => {
            errs.push(err("spec", Reason::Invalid, e.to_string()));
            return errs;
        }
    };
    let spec = &crd.spec;
    let names = &spec.names;
    let name = crd.metadata.name();
    let want = format!("{}.{}", names.plural, spec.group);
    if name != want {
        errs.push(err(
            "metadata.name",
            Reason::Invalid,
            "must be spec.names.plural+\".\"+spec.group".to_string(),
        ));
    }
    if spec.group.is_empty() {
        errs.push(err("spec.group", Reason::Required, ""));
    } else if !spec.group.contains('.') {
        errs.push(err(
            "spec.group",
            Reason::Invalid,
            format!("{:?}: should be a domain with at least one dot", spec.group),
        ));
    } else if let Err(e) = super::validation::dns1123_subdomain(&spec.group) {
        errs.push(err("spec.group", Reason::Invalid, e.to_string()));
    }
    if !matches!(spec.scope.as_str(), "Namespaced" | "Cluster") {
        errs.push(err(
            "spec.scope",
            Reason::NotSupported,
            format!(
                "{:?}: supported values: \"Cluster\", \"Namespaced\"",
                spec.scope
            ),
        ));
    }
    let lower = |field: &str, v: &str, errs: &mut Vec<FieldError>| {
        if let Err(e) = super::validation::dns1035_label(v) {
            errs.push(err(field, Reason::Invalid, format!("{v:?}: {e}")));
        }
    };
    lower("spec.names.plural", &names.plural, &mut errs);
    if let Some(s) = &names.singular {
        lower("spec.names.singular", s, &mut errs);
    }
    for (i, s) in names.short_names.iter().flatten().enumerate() {
        lower(&format!("spec.names.shortNames[{i}]"), s, &mut errs);
    }
    if names.kind.is_empty() {
        errs.push(err("spec.names.kind", Reason::Required, ""));
    } else if names
        .kind
        .contains(|c: char| !c.is_ascii_alphanumeric() && c != '_')
    {
        errs.push(err(
            "spec.names.kind",
            Reason::Invalid,
            format!("{:?}: may have only alphanumeric characters", names.kind),
        ));
    }
    if spec.versions.is_empty() {
        errs.push(err(
            "spec.versions",
            Reason::Required,
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = spec.versions.iter().filter(|v| v.storage).count();
    if !spec.versions.is_empty() && storage != 1 {
        errs.push(err(
            "spec.versions",
            Reason::Invalid,
            format!("must have exactly one version marked as storage version, found {storage}"),
        ));
    }
    if !spec.versions.is_empty() && !spec.versions.iter().any(|v| v.served) {
        errs.push(err(
            "spec.versions",
            Reason::Invalid,
            "must have at least one version marked as served",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in spec.versions.iter().enumerate() {
        if !seen.insert(v.name.as_str()) {
            errs.push(err(
                &format!("spec.versions[{i}].name"),
                Reason::Duplicate,
                format!("{:?}", v.name),
            ));
        }
        if let Err(e) = super::validation::dns1035_label(&v.name) {
            errs.push(err(
                &format!("spec.versions[{i}].name"),
                Reason::Invalid,
                format!("{:?}: {e}", v.name),
            ));
        }
        let has_schema = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .is_some();
        if !has_schema {
            errs.push(err(
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                Reason::Required,
                "schemas are required",
            ));
        }
        if let Some(scale) = v.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
            for (f, p) in [
                ("specReplicasPath", Some(&scale.spec_replicas_path)),
                ("statusReplicasPath", Some(&scale.status_replicas_path)),
                ("labelSelectorPath", scale.label_selector_path.as_ref()),
            ] {
                if let Some(p) = p {
                    if !p.starts_with('.') || p.contains('[') {
                        errs.push(err(
                            &format!("spec.versions[{i}].subresources.scale.{f}"),
                            Reason::Invalid,
                            format!("{p:?}: should be a JSON path under .spec or .status"),
                        ));
                    }
                }
            }
        }
    }
    if let Some(c) = &spec.conversion {
        if !matches!(c.strategy.as_str(), "None" | "Webhook") {
            errs.push(err(
                "spec.conversion.strategy",
                Reason::NotSupported,
                format!("{:?}: supported values: \"None\", \"Webhook\"", c.strategy),
            ));
        } else if c.strategy == "Webhook" {
            errs.push(err(
                "spec.conversion.strategy",
                Reason::Forbidden,
                "conversion webhooks are not supported by Capstan yet: use strategy None",
            ));
        }
    }
    if spec.preserve_unknown_fields == Some(true) {
        errs.push(err(
            "spec.preserveUnknownFields",
            Reason::Invalid,
            "true: must be false in order to use defaults in the schema",
        ));
    }
    if let Err(mut e) = crd.served() {
        errs.append(&mut e);
    }
    if let Some(old) = old {
        let old_spec = |f: &str| old.pointer(f).cloned();
        for f in ["/spec/group", "/spec/names/plural", "/spec/scope"] {
            if old_spec(f).as_ref() != obj.pointer(f) {
                let field = f.trim_start_matches('/').replace('/', ".");
                errs.push(err(&field, Reason::Invalid, "field is immutable"));
            }
        }
    }
    errs
}

/// The condition list of a CRD with `type` set to `status` (and its transition time moved only on a change).
pub fn set_condition(
    status: &mut Value,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    if !status.is_object() {
        *status = json!({});
    }
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let s = if value { "True" } else { "False" };
    let list = status["conditions"].as_array_mut().expect("an array");
    match list.iter_mut().find(|c| c["type"] == type_) {
        Some(c) => {
            if c["status"] != s {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(s);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => list.push(
            json!({"type": type_, "status": s, "lastTransitionTime": now,
            "reason": reason, "message": message}),
        ),
    }
}

/// Whether a CRD's condition `type_` is True.
pub fn condition_true(obj: &Value, type_: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
}

/// Whether a group is protected (`*.k8s.io`, `*.kubernetes.io`) and needs the `api-approved.kubernetes.io`
/// annotation; Some(approved) when protected.
pub fn api_approval(obj: &Value) -> Option<bool> {
    let group = obj.pointer("/spec/group").and_then(Value::as_str)?;
    let protected = group == "k8s.io"
        || group.ends_with(".k8s.io")
        || group == "kubernetes.io"
        || group.ends_with(".kubernetes.io");
    if !protected {
        return None;
    }
    let ann = obj
        .pointer("/metadata/annotations/api-approved.kubernetes.io")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(!ann.is_empty() && !ann.starts_with("unapproved"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontab() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {"group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {
                            "cronSpec": {"type": "string"}, "replicas": {"type": "integer"}}}}}},
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas"}},
                    "additionalPrinterColumns": [{"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"}]}]}})
    }

    #[test]
    fn a_good_crd_passes_and_serves_its_version() {
        assert_eq!(check(&crontab(), None), vec![]);
        let crd: CustomResourceDefinition = serde_json::from_value(crontab()).unwrap();
        let served = crd.served().unwrap();
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].kind, "CronTab");
        assert!(served[0].status);
        assert_eq!(
            served[0].custom.scale.as_ref().unwrap().spec_replicas,
            "spec.replicas"
        );
        assert_eq!(served[0].custom.columns[0].name, "Spec");
    }

    #[test]
    fn bad_crds_name_the_field() {
        let mut c = crontab();
        c["metadata"]["name"] = json!("crontabs.other.com");
        c["spec"]["versions"][0]["storage"] = json!(false);
        let fields: Vec<String> = check(&c, None).into_iter().map(|e| e.field).collect();
        assert!(fields.contains(&"metadata.name".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec.versions".to_string()), "{fields:?}");
        let mut c = crontab();
        c["spec"]["scope"] = json!("Global");
        assert_eq!(check(&c, None)[0].field, "spec.scope");
        let mut changed = crontab();
        changed["spec"]["scope"] = json!("Cluster");
        assert!(check(&changed, Some(&crontab()))
            .iter()
            .any(|e| e.field == "spec.scope" && e.detail == "field is immutable"));
    }

    #[test]
    fn protected_groups_need_approval() {
        let mut c = crontab();
        assert_eq!(api_approval(&c), None);
        c["spec"]["group"] = json!("samplecontroller.k8s.io");
        assert_eq!(api_approval(&c), Some(false));
        c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/1"});
        assert_eq!(api_approval(&c), Some(true));
    }
}

/// A built-in kind described as a CRD would describe it (a structural schema: `$ref`s inlined, optional fields
/// `nullable`, int-or-string and open objects marked as Kubernetes marks them), so tools can validate its objects
/// offline - `capstan app crd` prints the one of Application.
pub fn describe_kind(kind: &super::registry::KindInfo) -> Value {
    let mut schema = structural(kind.schema(), 0);
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("metadata".into(), json!({"type": "object"}));
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
    }
    let mut version = json!({"name": kind.version, "served": true, "storage": true,
        "schema": {"openAPIV3Schema": schema}});
    if kind.status {
        version["subresources"] = json!({"status": {}});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.qualified()},
        "spec": {
            "group": kind.group,
            "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
            "names": {"plural": kind.plural, "singular": kind.singular, "kind": kind.kind,
                "listKind": format!("{}List", kind.kind), "shortNames": kind.short_names,
                "categories": kind.categories},
            "versions": [version],
        }
    })
}

/// A schemars schema made structural.
fn structural(s: &Value, depth: usize) -> Value {
    let s = super::registry::resolve(s);
    let Some(m) = s.as_object() else {
        return json!({});
    };
    if depth > 24 || m.contains_key("x-capstan-opaque") {
        return json!({"x-kubernetes-preserve-unknown-fields": true});
    }
    // `anyOf: [X, null]` (an optional field) is X, nullable; `anyOf` of integer and string is int-or-string.
    if let Some(any) = m.get("anyOf").and_then(Value::as_array) {
        let is_null = |v: &Value| {
            v.get("type") == Some(&json!("null"))
                || v.get("enum").is_some_and(|e| e == &json!([null]))
        };
        let rest: Vec<&Value> = any.iter().filter(|v| !is_null(v)).collect();
        let types: Vec<&str> = rest
            .iter()
            .filter_map(|v| {
                super::registry::resolve(v)
                    .get("type")
                    .and_then(Value::as_str)
            })
            .collect();
        let mut out = if rest.len() == 1 {
            structural(rest[0], depth + 1)
        } else if types.contains(&"integer") && types.contains(&"string") {
            json!({"x-kubernetes-int-or-string": true})
        } else {
            json!({"x-kubernetes-preserve-unknown-fields": true})
        };
        if rest.len() < any.len() {
            out["nullable"] = json!(true);
        }
        copy_docs(m, &mut out);
        return out;
    }
    if let Some(all) = m.get("allOf").and_then(Value::as_array) {
        if all.len() == 1 {
            let mut out = structural(&all[0], depth + 1);
            copy_docs(m, &mut out);
            return out;
        }
    }
    let mut out = serde_json::Map::new();
    match m.get("type") {
        Some(Value::Array(ts)) => {
            let real: Vec<&Value> = ts.iter().filter(|t| *t != "null").collect();
            if let [t] = real.as_slice() {
                out.insert("type".into(), (*t).clone());
            }
            if real.len() < ts.len() {
                out.insert("nullable".into(), json!(true));
            }
        }
        Some(t) => {
            out.insert("type".into(), t.clone());
        }
        None => {}
    }
    for key in [
        "format",
        "enum",
        "minimum",
        "maximum",
        "description",
        "default",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
    ] {
        if let Some(v) = m.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(f) = m.get("format").and_then(Value::as_str) {
        if f.starts_with("uint") || f == "double" || f == "float" {
            out.remove("format"); // not a Kubernetes format
        }
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        let p: serde_json::Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), structural(v, depth + 1)))
            .collect();
        out.insert("properties".into(), Value::Object(p));
        out.insert("type".into(), json!("object"));
    }
    if let Some(req) = m.get("required") {
        out.insert("required".into(), req.clone());
    }
    if let Some(items) = m.get("items") {
        out.insert("items".into(), structural(items, depth + 1));
    }
    if let Some(a) = m.get("additionalProperties").filter(|a| a.is_object()) {
        out.insert("additionalProperties".into(), structural(a, depth + 1));
    }
    Value::Object(out)
}

fn copy_docs(from: &serde_json::Map<String, Value>, to: &mut Value) {
    if let (Some(d), Some(o)) = (from.get("description"), to.as_object_mut()) {
        o.entry("description").or_insert_with(|| d.clone());
    }
}

#[cfg(test)]
mod described {
    use super::*;

    #[test]
    fn the_application_crd_is_accepted_and_validates_applications_offline() {
        let kind = crate::api::registry::lookup("applications.gitops.capstan.io").unwrap();
        let doc = describe_kind(kind);
        assert_eq!(check(&doc, None), vec![], "{doc}");
        let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
        let served = crd.served().unwrap();
        let schema = served[0].custom.schema.as_ref().unwrap();
        let good = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application", "metadata": {"name": "a"},
            "spec": {"source": {"repoURL": "https://example.com/r.git", "path": "app"},
                "syncPolicy": {"autoRollback": true}}});
        assert_eq!(schema.validate(&good, None), vec![]);
        let bad = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application", "metadata": {"name": "a"},
            "spec": {"source": {"path": 3}}});
        let errs: Vec<String> = schema
            .validate(&bad, None)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.source.repoURL: Required value")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.source.path: Invalid value")),
            "{errs:?}"
        );
    }
}
