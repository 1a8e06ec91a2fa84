//! Applying a commit, all or nothing: every object is first checked by the API server (server-side apply with
//! `dryRun=All`), and only if all pass are they applied, in dependency order, with server-side apply as field manager
//! `capstan-gitops`. Objects the app applied before and the commit no longer has are pruned (unless annotated
//! `capstan.io/prune: "false"`). Drift is what the repository sets that the live object no longer has.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::render::{order_key, Desired};
use crate::api::registry::{self, KindInfo};
use crate::client::Client;

pub const MANAGER: &str = "capstan-gitops";
/// Label on every object an app applied (value: the app's name) ...
pub const APP_LABEL: &str = "capstan.io/app";
/// ... and the annotation that says which app exactly (`namespace/name`).
pub const APP_ANNOTATION: &str = "capstan.io/app-instance";

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub pruned: Vec<String>,
}

fn ssa_path(kind: &KindInfo, ns: Option<&str>, name: &str, dry: bool) -> String {
    format!(
        "{}?fieldManager={MANAGER}&fieldValidation=Strict&force=true{}",
        crate::client::resource_path(kind, ns, Some(name)),
        if dry { "&dryRun=All" } else { "" }
    )
}

async fn ssa(
    client: &Client,
    d: &Desired,
    obj: &Value,
    dry: bool,
) -> Result<Value, crate::client::Error> {
    client
        .request(
            reqwest::Method::PATCH,
            &ssa_path(d.kind, d.namespace(), d.name(), dry),
            Some(("application/apply-patch+yaml", obj.to_string().into_bytes())),
            None,
        )
        .await
}

/// The object as applied: the repository's content plus the app's label and annotation.
/// (Labels or annotations that are not a mapping are left as they are, for the server to refuse with its message.)
pub fn stamped(d: &Desired, app_ns: &str, app: &str) -> Value {
    let mut obj = d.object.clone();
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return obj;
    };
    for (field, key, value) in [
        ("labels", APP_LABEL, json!(app)),
        (
            "annotations",
            APP_ANNOTATION,
            json!(format!("{app_ns}/{app}")),
        ),
    ] {
        let slot = meta.entry(field).or_insert_with(|| json!({}));
        if slot.is_null() {
            *slot = json!({});
        }
        if let Some(m) = slot.as_object_mut() {
            m.insert(key.to_string(), value);
        }
    }
    obj
}

/// Why a commit was not applied: every problem, each naming file and line, and whether they were only the API
/// server's unavailability (worth trying again) rather than the commit's fault.
#[derive(Debug, Default)]
pub struct Refusal {
    pub errors: Vec<String>,
    pub transient: bool,
}

/// Checks every object with the API server without changing anything; all problems, each naming file and line.
pub async fn validate(
    client: &Client,
    desired: &[Desired],
    app_ns: &str,
    app: &str,
) -> Result<(), Refusal> {
    let new_namespaces: BTreeSet<&str> = desired
        .iter()
        .filter(|d| d.kind.kind == "Namespace")
        .map(|d| d.name())
        .collect();
    let mut errors = Vec::new();
    let mut transient = false;
    for d in desired {
        // Objects in a namespace this same commit creates cannot be checked before it exists.
        if d.namespace().is_some_and(|ns| new_namespaces.contains(ns)) {
            let exists = match registry::lookup("namespaces") {
                Some(k) => client
                    .get(k, None, d.namespace().unwrap_or(""))
                    .await
                    .is_ok(),
                None => false,
            };
            if !exists {
                continue;
            }
        }
        if let Err(e) = ssa(client, d, &stamped(d, app_ns, app), true).await {
            // A custom object whose CRD comes in this same commit: checked here against that CRD's schema, as the
            // server will check it once the CRD is established.
            if e.code() == Some(404) {
                if let Some(problems) = check_against_commit_crd(d, desired) {
                    errors.extend(
                        problems
                            .into_iter()
                            .map(|p| format!("{}: {}: {p}", d.at(), d.id())),
                    );
                    continue;
                }
            }
            transient |= e.transient();
            errors.push(format!("{}: {}: {e}", d.at(), d.id()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Refusal { errors, transient })
    }
}

/// Checks a custom object against the CRD of the commit that defines its kind (None: no CRD of the commit does):
/// the schema's pruning (unknown fields are errors, as under Strict), defaults, validation and CEL rules.
fn check_against_commit_crd(d: &Desired, desired: &[Desired]) -> Option<Vec<String>> {
    let crd = desired.iter().find(|c| {
        c.kind.kind == "CustomResourceDefinition"
            && c.object["spec"]["group"] == d.kind.group
            && c.object["spec"]["names"]["plural"] == d.kind.plural
    })?;
    let crd: crate::api::crd::CustomResourceDefinition =
        serde_json::from_value(crd.object.clone()).ok()?;
    let served = crd.served().ok()?;
    let version = served.iter().find(|s| s.version == d.kind.version)?;
    let Some(schema) = &version.custom.schema else {
        return Some(Vec::new());
    };
    let mut obj = d.object.clone();
    let mut problems: Vec<String> = schema
        .prune(&mut obj)
        .into_iter()
        .map(|u| format!("strict decoding error: unknown field \"{u}\""))
        .collect();
    schema.default(&mut obj);
    problems.extend(schema.validate(&obj, None).iter().map(|e| {
        format!(
            "{}.{} {:?} is invalid: {e}",
            d.kind.kind,
            d.kind.group,
            d.name()
        )
    }));
    Some(problems)
}

/// Waits (up to 30 s) until the API server has established the CRD `name`.
async fn established(client: &Client, name: &str) -> Result<(), crate::client::Error> {
    let kind = registry::by_resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("the CRD kind is built in");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let crd = client.get(kind, None, name).await?;
        if crate::api::crd::condition_true(&crd, "Established")
            || tokio::time::Instant::now() > deadline
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Kinds an app may own (everything served but the cluster's own bookkeeping), custom kinds included - and
/// Applications: an app of apps owns the Applications its repository defines, and pruning one prunes it.
pub fn kinds() -> impl Iterator<Item = &'static KindInfo> {
    registry::KINDS
        .iter()
        .chain(registry::custom_storage_kinds())
        .filter(|k| {
            !k.is_custom() && k.kind == "Application"
                || !matches!(
                    k.kind,
                    "Event"
                        | "Lease"
                        | "SyncRecord"
                        | "Application"
                        | "Node"
                        | "EndpointSlice"
                        | "Endpoints"
                )
        })
}

fn id_of(kind: &KindInfo, v: &Value) -> String {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    match v["metadata"]["namespace"]
        .as_str()
        .filter(|_| kind.namespaced)
    {
        Some(ns) => format!("{}/{ns}/{name}", kind.kind),
        None => format!("{}/{name}", kind.kind),
    }
}

/// Every live object the app applied: id -> (kind, object).
pub async fn inventory(
    client: &Client,
    app_ns: &str,
    app: &str,
) -> Result<HashMap<String, (&'static KindInfo, Value)>, crate::client::Error> {
    let mut out = HashMap::new();
    let instance = format!("{app_ns}/{app}");
    for k in kinds() {
        let list = client
            .list(k, None, &format!("labelSelector={APP_LABEL}%3D{app}"))
            .await?;
        for item in list["items"].as_array().into_iter().flatten() {
            if item["metadata"]["annotations"][APP_ANNOTATION] == instance.as_str() {
                out.insert(id_of(k, item), (k, item.clone()));
            }
        }
    }
    Ok(out)
}

/// Why applying a commit stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("listing what the app owns: {0}")]
    Inventory(#[source] crate::client::Error),
    /// An object of the commit (`at` is its file and line, `id` the object) was refused.
    #[error("{at}: {id}: {source}")]
    Object {
        at: String,
        id: String,
        source: crate::client::Error,
    },
    #[error("pruning {id}: {source}")]
    Prune {
        id: String,
        source: crate::client::Error,
    },
}

impl ApplyError {
    /// Whether the API server's unavailability stopped it (worth trying again), not the object.
    pub fn transient(&self) -> bool {
        match self {
            ApplyError::Inventory(e) => e.transient(),
            ApplyError::Object { source, .. } | ApplyError::Prune { source, .. } => {
                source.transient()
            }
        }
    }
}

/// Applies a validated commit in order, then prunes. Stops at the first failure (already validated, so this is rare).
/// `reader` finds what the app owns now (the controller's own client: an app's ServiceAccount need not list every
/// kind); `client` writes and prunes (the app's ServiceAccount, when it names one).
pub async fn apply(
    reader: &Client,
    client: &Client,
    desired: &[Desired],
    app_ns: &str,
    app: &str,
    prune: bool,
) -> Result<Outcome, ApplyError> {
    let before = inventory(reader, app_ns, app)
        .await
        .map_err(ApplyError::Inventory)?;
    let mut ordered: Vec<&Desired> = desired.iter().collect();
    ordered.sort_by_key(|d| order_key(d));
    let mut outcome = Outcome::default();
    let mut crds: Vec<&str> = Vec::new();
    for d in ordered {
        let id = d.id();
        // Custom objects wait until the CRDs applied before them are established (served).
        if d.kind.kind != "CustomResourceDefinition" {
            for name in crds.drain(..) {
                established(client, name)
                    .await
                    .map_err(|source| ApplyError::Object {
                        at: d.at(),
                        id: format!("CustomResourceDefinition/{name}"),
                        source,
                    })?;
            }
        } else {
            crds.push(d.name());
        }
        let old_rv = before
            .get(&id)
            .map(|(_, v)| v["metadata"]["resourceVersion"].clone());
        let live = ssa(client, d, &stamped(d, app_ns, app), false)
            .await
            .map_err(|source| ApplyError::Object {
                at: d.at(),
                id: id.clone(),
                source,
            })?;
        match old_rv {
            None => outcome.created.push(id),
            Some(rv) if rv != live["metadata"]["resourceVersion"] => outcome.updated.push(id),
            Some(_) => {}
        }
    }
    if prune {
        let wanted: BTreeSet<String> = desired.iter().map(Desired::id).collect();
        let mut doomed: Vec<(&String, &(&'static KindInfo, Value))> = before
            .iter()
            .filter(|(id, _)| !wanted.contains(*id))
            .collect();
        // Objects before the CRDs that define their kinds, and everything before its namespace.
        doomed.sort_by_key(|(_, (k, _))| match k.kind {
            "Namespace" => 2,
            "CustomResourceDefinition" => 1,
            _ => 0,
        });
        for (id, (kind, v)) in doomed {
            if v["metadata"]["annotations"]["capstan.io/prune"] == "false" {
                continue;
            }
            let ns = v["metadata"]["namespace"]
                .as_str()
                .filter(|_| kind.namespaced);
            let name = v["metadata"]["name"].as_str().unwrap_or("");
            match client.delete(kind, ns, name, "Background").await {
                Ok(_) => outcome.pruned.push(id.clone()),
                Err(e) if e.code() == Some(404) => {}
                Err(source) => {
                    return Err(ApplyError::Prune {
                        id: id.clone(),
                        source,
                    })
                }
            }
        }
    }
    Ok(outcome)
}

/// The finalizer `capstan app delete --cascade` puts on an Application: its objects are deleted before it goes.
pub const CASCADE_FINALIZER: &str = "capstan.io/cascade";

/// Deletes every object the app applied (objects before the CRDs that define them, namespaces last); returns how
/// many are still there (being deleted, or failing).
pub async fn delete_all(
    client: &Client,
    app_ns: &str,
    app: &str,
) -> Result<usize, crate::client::Error> {
    let owned = inventory(client, app_ns, app).await?;
    let mut doomed: Vec<&(&'static KindInfo, Value)> = owned.values().collect();
    doomed.sort_by_key(|(k, _)| match k.kind {
        "Namespace" => 2,
        "CustomResourceDefinition" => 1,
        _ => 0,
    });
    for (kind, v) in &doomed {
        let ns = v["metadata"]["namespace"]
            .as_str()
            .filter(|_| kind.namespaced);
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        match client.delete(kind, ns, name, "Background").await {
            Ok(_) => {}
            Err(e) if e.code() == Some(404) => {}
            Err(e) => tracing::warn!(%app, %name, "cascading delete: {e}"),
        }
    }
    Ok(doomed.len())
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            n.to_string() == *s
        }
        _ => a == b,
    }
}

fn subset(want: &Value, have: &Value, path: &str, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Null, _) => {}
        (Value::Object(w), Value::Object(h)) => {
            for (k, v) in w {
                subset(
                    v,
                    h.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        (Value::Object(w), _) if w.is_empty() => {}
        (Value::Array(w), Value::Array(h)) if w.len() == h.len() => {
            for (i, (a, b)) in w.iter().zip(h).enumerate() {
                subset(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (w, h) => {
            if !same_scalar(w, h) {
                out.push(path.trim_start_matches('.').to_string());
            }
        }
    }
}

/// A JSON pointer as a drift path (`/spec/containers/0/image` -> `spec.containers[0].image`).
fn pointer_path(ptr: &str) -> String {
    let mut out = String::new();
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// The drift paths of the fields a field manager owns in `live` (from its managedFields' `fieldsV1`).
fn managed_paths(live: &Value, managers: &[String]) -> Vec<String> {
    fn walk(fields: &Value, at: &Value, path: &str, out: &mut Vec<String>) {
        let Some(m) = fields.as_object() else { return };
        for (k, sub) in m {
            if k == "." {
                out.push(path.to_string());
            } else if let Some(name) = k.strip_prefix("f:") {
                let p = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                if sub.as_object().is_none_or(|s| s.is_empty()) {
                    out.push(p.clone());
                }
                walk(sub, at.get(name).unwrap_or(&Value::Null), &p, out);
            } else if let Some(key) = k.strip_prefix("k:") {
                let Ok(want) = serde_json::from_str::<Value>(key) else {
                    continue;
                };
                let Some(items) = at.as_array() else { continue };
                let found = items.iter().position(|item| {
                    want.as_object()
                        .is_some_and(|w| w.iter().all(|(wk, wv)| item.get(wk) == Some(wv)))
                });
                if let Some(i) = found {
                    let p = format!("{path}[{i}]");
                    out.push(p.clone());
                    walk(sub, &items[i], &p, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for entry in live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if managers.iter().any(|m| entry["manager"] == m.as_str()) {
            walk(&entry["fieldsV1"], live, "", &mut out);
        }
    }
    out
}

/// Drops from `fields` (drift paths of `live`, of kind `kind`) the differences an app's rules ignore.
pub fn ignore_differences(
    rules: &[crate::api::gitops::IgnoreDifference],
    kind: &KindInfo,
    live: &Value,
    fields: Vec<String>,
) -> Vec<String> {
    let name = live["metadata"]["name"].as_str().unwrap_or("");
    let ns = live["metadata"]["namespace"].as_str().unwrap_or("");
    let mut ignored: Vec<String> = Vec::new();
    for r in rules.iter().filter(|r| {
        r.kind == kind.kind
            && r.group.as_deref().is_none_or(|g| g == kind.group)
            && r.name.as_deref().is_none_or(|n| n == name)
            && r.namespace.as_deref().is_none_or(|n| n == ns)
    }) {
        ignored.extend(r.json_pointers.iter().flatten().map(|p| pointer_path(p)));
        ignored.extend(managed_paths(
            live,
            r.managed_fields_managers.as_deref().unwrap_or_default(),
        ));
    }
    fields
        .into_iter()
        .filter(|f| {
            !ignored.iter().any(|i| {
                f == i
                    || (f.starts_with(i.as_str())
                        && matches!(f.as_bytes().get(i.len()), Some(b'.') | Some(b'[')))
            })
        })
        .collect()
}

/// Fields the repository sets that the live object does not have (as the repository has them): empty when in sync.
/// What the server adds (status, defaults, uid, managedFields, ...) is not drift.
pub fn drift(desired: &Value, live: &Value) -> Vec<String> {
    let mut want = desired.clone();
    if let Some(m) = want.as_object_mut() {
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    if let Some(meta) = want.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| k == "labels" || k == "annotations");
    }
    let mut out = Vec::new();
    subset(&want, live, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_differences_are_not_drift() {
        let kind = registry::lookup("deployments").unwrap();
        let live = json!({"metadata": {"name": "web", "namespace": "shop", "managedFields": [
            {"manager": "autoscaler", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {
                "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}}}}}}]},
            "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "c", "image": "y"}]}}}});
        let fields = vec![
            "spec.replicas".to_string(),
            "spec.template.spec.containers[0].image".to_string(),
            "metadata.labels.app".to_string(),
        ];
        let rules: Vec<crate::api::gitops::IgnoreDifference> = serde_json::from_value(json!([
            {"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["autoscaler"]},
            {"group": "apps", "kind": "Deployment", "name": "web",
             "jsonPointers": ["/spec/template/spec/containers/0"]}]))
        .unwrap();
        assert_eq!(
            ignore_differences(&rules, kind, &live, fields.clone()),
            vec!["metadata.labels.app"]
        );
        let only_kubectl: Vec<crate::api::gitops::IgnoreDifference> =
            serde_json::from_value(json!([
            {"kind": "Deployment", "managedFieldsManagers": ["kubectl"]}]))
            .unwrap();
        assert_eq!(
            ignore_differences(&only_kubectl, kind, &live, fields.clone()),
            vec!["spec.replicas", "metadata.labels.app"]
        );
        let other: Vec<crate::api::gitops::IgnoreDifference> = serde_json::from_value(
            json!([{"kind": "Deployment", "name": "db", "jsonPointers": ["/spec"]}]),
        )
        .unwrap();
        assert_eq!(
            ignore_differences(&other, kind, &live, fields.clone()),
            fields
        );
    }

    #[test]
    fn drift_ignores_what_the_server_adds() {
        let desired = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "d"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "x",
                "ports": [{"containerPort": 8080}]}]}}}});
        let mut live = desired.clone();
        live["metadata"]["uid"] = json!("u");
        live["metadata"]["resourceVersion"] = json!("7");
        live["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        live["status"] = json!({"replicas": 2});
        assert!(drift(&desired, &live).is_empty());
        live["spec"]["replicas"] = json!(5);
        live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("y");
        assert_eq!(
            drift(&desired, &live),
            vec!["spec.replicas", "spec.template.spec.containers[0].image"]
        );
    }
}
