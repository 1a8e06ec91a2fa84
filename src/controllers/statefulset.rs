//! The StatefulSet controller: pods with stable ordinal names (`web-0`, `web-1`, ...; `spec.ordinals.start` moves the
//! first), host name = pod name and subdomain = `serviceName` for stable network identity, and one
//! PersistentVolumeClaim per ordinal and `volumeClaimTemplates` entry (`<template>-<set>-<ordinal>`) that outlives
//! its pod and is mounted again by the pod that comes back with that ordinal. OrderedReady creates in order, each pod
//! Running and Ready before the next, and removes in reverse; Parallel does all at once. A pod is never created while
//! another with its ordinal still exists. RollingUpdate replaces pods from the highest ordinal down to `partition`,
//! one at a time, each Ready before the next; OnDelete replaces a pod only when it is deleted. Templates are kept as
//! ControllerRevisions (`currentRevision`/`updateRevision`, `kubectl rollout history|undo statefulset`).
//! `persistentVolumeClaimRetentionPolicy` Delete removes claims with the set (`whenDeleted`, through an owner
//! reference) or of ordinals scaled away (`whenScaled`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::deployment::template_hash;
use super::pods::{available, controller_uid, is_ready, phase};
use super::revisions::{template_of, REVISION_LABEL};
use crate::api::core::Pod;
use crate::api::registry;
use crate::api::Resource;
use crate::client::informer::Cache;
use crate::client::Api;
use crate::client::Client;
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The label with a StatefulSet pod's name (what a per-pod Service selects).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What the StatefulSet controller works with.
pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub claims: Cache,
    pub revisions: Cache<crate::api::apps::ControllerRevision>,
}

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i64> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The claim of one volume template for one ordinal.
pub fn claim_name(template: &str, set: &str, ordinal: i64) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}

use super::revisions::pod_revision as revision_of;

/// The pod of `ordinal` from `template` (the revision it belongs to is `hash`).
fn pod_for(set: &Value, template: &Value, hash: &str, ordinal: i64) -> Value {
    let name = s(set, "/metadata/name");
    let pod_name = format!("{name}-{ordinal}");
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][REVISION_LABEL] = json!(hash);
    meta["labels"][POD_NAME_LABEL] = json!(pod_name);
    meta["labels"][POD_INDEX_LABEL] = json!(ordinal.to_string());
    meta["name"] = json!(pod_name);
    meta["namespace"] = set["metadata"]["namespace"].clone();
    meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
        "uid": set["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    let mut spec = template["spec"].clone();
    spec["hostname"] = json!(pod_name);
    if let Some(svc) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(svc);
    }
    // Each volume template becomes this ordinal's claim, replacing a template volume of the same name.
    let mut volumes: Vec<Value> = spec["volumes"].as_array().cloned().unwrap_or_default();
    for vct in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let vname = s(vct, "/metadata/name");
        volumes.retain(|v| v["name"] != vname);
        volumes.push(json!({"name": vname,
            "persistentVolumeClaim": {"claimName": claim_name(vname, name, ordinal)}}));
    }
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

/// The claims of `ordinal` that do not exist yet.
fn missing_claims(set: &Value, claims: &Cache, ordinal: i64) -> Vec<Value> {
    let name = s(set, "/metadata/name");
    let ns = s(set, "/metadata/namespace");
    let mut out = Vec::new();
    for vct in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let cname = claim_name(s(vct, "/metadata/name"), name, ordinal);
        if claims.get(ns, &cname).is_some() {
            continue;
        }
        let mut meta = vct["metadata"].clone();
        if !meta.is_object() {
            meta = json!({});
        }
        if !meta["labels"].is_object() {
            meta["labels"] = json!({});
        }
        for (k, v) in set["spec"]["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            meta["labels"][k] = v.clone();
        }
        meta["name"] = json!(cname);
        meta["namespace"] = json!(ns);
        if s(
            set,
            "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
        ) == "Delete"
        {
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                "uid": set["metadata"]["uid"], "blockOwnerDeletion": true}]);
        }
        out.push(
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": vct["spec"]}),
        );
    }
    out
}

/// One reconcile of one StatefulSet.
pub async fn reconcile(set: Arc<Value>, ctx: Arc<Context>) -> Result<Action> {
    if set["metadata"]["deletionTimestamp"].is_string() {
        return Ok(Action::await_change());
    }
    let ns = s(&set, "/metadata/namespace").to_string();
    let name = s(&set, "/metadata/name").to_string();
    let uid = s(&set, "/metadata/uid").to_string();
    let sts_kind = registry::lookup("statefulsets").expect("statefulsets kind");
    let pvc_kind = registry::lookup("persistentvolumeclaims").expect("pvc kind");
    let pods_api = Api::<Pod>::namespaced(&ctx.client, &ns);
    let me = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "uid": uid}});
    let event = |ty: &'static str, reason: &'static str, message: String| {
        crate::client::events::spawn_record(
            &ctx.client,
            me.clone(),
            "statefulset-controller",
            ty,
            reason,
            message,
        );
    };
    let spec = &set["spec"];
    let replicas = spec["replicas"].as_i64().unwrap_or(1).max(0);
    let start = spec["ordinals"]["start"].as_i64().unwrap_or(0).max(0);
    let parallel = s(spec, "/podManagementPolicy") == "Parallel";
    let on_delete = s(spec, "/updateStrategy/type") == "OnDelete";
    let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .unwrap_or(0);
    let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);

    // Pods by ordinal (ours by controller reference; a pod of another owner with our name blocks its ordinal).
    let mut pods: BTreeMap<i64, Arc<Pod>> = BTreeMap::new();
    for p in ctx.pods.list_namespace(&ns) {
        if controller_uid(&p.metadata) != Some(uid.as_str()) {
            continue;
        }
        if let Some(o) = ordinal_of(&name, p.metadata.name()) {
            pods.insert(o, p);
        }
    }
    let update_hash = template_hash(&spec["template"]);
    let in_use: Vec<String> = pods.values().map(|p| revision_of(p).to_string()).collect();
    let revisions = super::revisions::sync(
        &ctx.client,
        &ctx.revisions,
        &set,
        "StatefulSet",
        &update_hash,
        &in_use,
    )
    .await?;
    // The current revision: what status says, while pods still run it; else the update revision.
    let mut current_hash = s(&set, "/status/currentRevision")
        .strip_prefix(&format!("{name}-"))
        .unwrap_or("")
        .to_string();
    if current_hash.is_empty()
        || !revisions
            .iter()
            .any(|r| super::revisions::hash_of(r) == current_hash)
    {
        current_hash = update_hash.clone();
    }
    let current_template = revisions
        .iter()
        .find(|r| super::revisions::hash_of(r) == current_hash)
        .map(|r| template_of(r))
        .unwrap_or_else(|| spec["template"].clone());
    let wanted = start..start + replicas;
    let mut waiting = false;

    // Create what is missing, in order; replace failed pods.
    for ordinal in wanted.clone() {
        match pods.get(&ordinal) {
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                // Its successor waits until it is gone: never two pods with one ordinal.
                waiting = true;
                if !parallel {
                    break;
                }
            }
            Some(p) if matches!(phase(p), "Failed" | "Succeeded") => {
                pods_api
                    .delete_all(&[p.metadata.name().to_string()])
                    .await?;
                event(
                    "Normal",
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {} in StatefulSet {name} successful",
                        p.metadata.name()
                    ),
                );
                waiting = true;
                if !parallel {
                    break;
                }
            }
            Some(p) => {
                if !parallel && !running_and_ready(p) {
                    waiting = true;
                    break;
                }
            }
            None => {
                for claim in missing_claims(&set, &ctx.claims, ordinal) {
                    let cname = s(&claim, "/metadata/name").to_string();
                    match ctx.client.create(pvc_kind, Some(&ns), &claim).await {
                        Ok(_) => event("Normal", "SuccessfulCreate", format!("create Claim {cname} Pod {name}-{ordinal} in StatefulSet {name} success")),
                        Err(e) if e.code() == Some(409) => {}
                        Err(e) => {
                            event("Warning", "FailedCreate", format!("create Claim {cname} for Pod {name}-{ordinal} in StatefulSet {name} failed error: {e}"));
                            return Err(e.into());
                        }
                    }
                }
                // Below the partition a new pod gets the current revision; from it up, the update revision.
                let (template, hash) = if ordinal < partition && current_hash != update_hash {
                    (&current_template, &current_hash)
                } else {
                    (&spec["template"], &update_hash)
                };
                let pod = pod_for(&set, template, hash, ordinal);
                match ctx.client.create(Pod::info(), Some(&ns), &pod).await {
                    Ok(_) => event(
                        "Normal",
                        "SuccessfulCreate",
                        format!("create Pod {name}-{ordinal} in StatefulSet {name} successful"),
                    ),
                    Err(e) if e.code() == Some(409) => {}
                    Err(e) => {
                        event("Warning", "FailedCreate", format!("create Pod {name}-{ordinal} in StatefulSet {name} failed error: {e}"));
                        return Err(e.into());
                    }
                }
                waiting = true;
                if !parallel {
                    break;
                }
            }
        }
    }

    // Scale down: the highest ordinal first, one at a time unless Parallel, once the rest are Running and Ready.
    let condemned: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|(o, _)| !wanted.contains(o))
        .map(|(_, p)| p)
        .rev()
        .collect();
    if !condemned.is_empty() && (parallel || !waiting) {
        let all_ready = pods
            .iter()
            .filter(|(o, _)| wanted.contains(o))
            .all(|(_, p)| running_and_ready(p));
        for p in condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    break;
                }
                continue;
            }
            if !parallel && !all_ready {
                break;
            }
            let pname = p.metadata.name().to_string();
            pods_api.delete_all(std::slice::from_ref(&pname)).await?;
            event(
                "Normal",
                "SuccessfulDelete",
                format!("delete Pod {pname} in StatefulSet {name} successful"),
            );
            if s(spec, "/persistentVolumeClaimRetentionPolicy/whenScaled") == "Delete" {
                let ordinal = ordinal_of(&name, &pname).unwrap_or(-1);
                let claims: Vec<String> = spec["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| claim_name(s(v, "/metadata/name"), &name, ordinal))
                    .collect();
                Api::<crate::api::core::PersistentVolumeClaim>::namespaced(&ctx.client, &ns)
                    .delete_all(&claims)
                    .await?;
            }
            waiting = true;
            if !parallel {
                break;
            }
        }
    }

    // Rolling update: from the highest ordinal down to the partition, one pod at a time, each Ready first.
    if !on_delete && !waiting {
        let all_ready = pods
            .iter()
            .filter(|(o, _)| wanted.contains(o))
            .all(|(_, p)| running_and_ready(p));
        if all_ready {
            if let Some((_, stale)) = pods
                .iter()
                .rev()
                .filter(|(o, _)| wanted.contains(o) && **o >= partition)
                .find(|(_, p)| revision_of(p) != update_hash)
            {
                let pname = stale.metadata.name().to_string();
                pods_api.delete_all(std::slice::from_ref(&pname)).await?;
                event(
                    "Normal",
                    "SuccessfulDelete",
                    format!("delete Pod {pname} in StatefulSet {name} successful"),
                );
            }
        }
    }

    // Status.
    let live: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|(o, p)| wanted.contains(o) && p.metadata.deletion_timestamp.is_none())
        .map(|(_, p)| p)
        .collect();
    let now = chrono::Utc::now();
    let ready = live.iter().filter(|p| is_ready(p)).count();
    let available = live.iter().filter(|p| available(p, min_ready, now)).count();
    let updated = live
        .iter()
        .filter(|p| revision_of(p) == update_hash)
        .count();
    let mut current = live
        .iter()
        .filter(|p| revision_of(p) == current_hash)
        .count();
    // Every pod updated: the update revision becomes the current one.
    if updated as i64 == replicas && live.len() as i64 == replicas {
        current_hash = update_hash.clone();
        current = updated;
    }
    let status = json!({
        "replicas": pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).count(),
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": format!("{name}-{current_hash}"),
        "updateRevision": format!("{name}-{update_hash}"),
        "observedGeneration": set["metadata"]["generation"],
        "collisionCount": 0,
    });
    let prev = &set["status"];
    if status
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| prev.get(k).unwrap_or(&json!(0)) != v)
    {
        ctx.client
            .patch_status(sts_kind, Some(&ns), &name, &status)
            .await?;
    }
    if min_ready > 0 && available < ready {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_claims_and_identity() {
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(claim_name("data", "web", 2), "data-web-2");
        let set = json!({"metadata": {"name": "web", "namespace": "n", "uid": "u"},
            "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
                    "containers": [{"name": "c"}]}}}});
        let p = pod_for(&set, &set["spec"]["template"], "h1", 2);
        assert_eq!(p["metadata"]["name"], "web-2");
        assert_eq!(p["spec"]["hostname"], "web-2");
        assert_eq!(p["spec"]["subdomain"], "web");
        assert_eq!(p["metadata"]["labels"][POD_NAME_LABEL], "web-2");
        assert_eq!(p["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(p["metadata"]["labels"][REVISION_LABEL], "h1");
        let vols = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        assert_eq!(
            vols[1],
            json!({"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}})
        );
        assert_eq!(vols[0]["name"], "cfg");
    }
}
