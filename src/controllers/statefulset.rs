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

use serde_json::json;

use super::pods::{available, controller_uid, is_ready, phase};
use super::revisions::{template_of, REVISION_LABEL};
use crate::api::apps::{StatefulSet, StatefulSetStatus};
use crate::api::core::{PersistentVolumeClaim, Pod, PodTemplateSpec, PvcVolumeSource, Volume};
use crate::api::meta::ObjectMeta;
use crate::api::Resource;
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

use super::{Error, Result};

/// The label with a StatefulSet pod's name (what a per-pod Service selects).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What the StatefulSet controller works with.
pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub claims: Cache<PersistentVolumeClaim>,
    pub revisions: Cache<crate::api::apps::ControllerRevision>,
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

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or(&[])
}

/// The pod of `ordinal` from `template` (the revision it belongs to is `hash`).
fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, hash: &str, ordinal: i64) -> Pod {
    let name = set.metadata.name();
    let pod_name = format!("{name}-{ordinal}");
    let mut meta = template.metadata.clone().unwrap_or_default();
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    meta.name = Some(pod_name.clone());
    meta.namespace = set.metadata.namespace.clone();
    meta.owner_references = Some(vec![set.controller_ref()]);
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(pod_name);
    if let Some(svc) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(svc.to_string());
    }
    // Each volume template becomes this ordinal's claim, replacing a template volume of the same name.
    let mut volumes = spec.volumes.take().unwrap_or_default();
    for vct in claim_templates(set) {
        let vname = vct.metadata.name();
        volumes.retain(|v| v.name != vname);
        volumes.push(Volume {
            name: vname.to_string(),
            persistent_volume_claim: Some(PvcVolumeSource {
                claim_name: claim_name(vname, name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if !volumes.is_empty() {
        spec.volumes = Some(volumes);
    }
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

/// The claims of `ordinal` that do not exist yet.
fn missing_claims(
    set: &StatefulSet,
    claims: &Cache<PersistentVolumeClaim>,
    ordinal: i64,
) -> Vec<PersistentVolumeClaim> {
    let name = set.metadata.name();
    let ns = set.metadata.namespace();
    let spec = set.spec.as_ref();
    let delete_with_set = spec
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let mut out = Vec::new();
    for vct in claim_templates(set) {
        let cname = claim_name(vct.metadata.name(), name, ordinal);
        if claims.get(ns, &cname).is_some() {
            continue;
        }
        let mut labels = vct.metadata.labels.clone().unwrap_or_default();
        labels.extend(
            spec.and_then(|s| s.selector.match_labels.clone())
                .unwrap_or_default(),
        );
        let owner = crate::api::meta::OwnerReference {
            controller: None,
            ..set.controller_ref()
        };
        out.push(PersistentVolumeClaim {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            metadata: ObjectMeta {
                name: Some(cname),
                namespace: Some(ns.to_string()),
                labels: Some(labels),
                owner_references: delete_with_set.then(|| vec![owner]),
                ..vct.metadata.clone()
            },
            spec: vct.spec.clone(),
            status: None,
        });
    }
    out
}

/// One reconcile of one StatefulSet.
pub async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = set.spec.as_ref().ok_or(Error::NoSpec("StatefulSet"))?;
    let ns = set.metadata.namespace().to_string();
    let name = set.metadata.name().to_string();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let pods_api = Api::<Pod>::namespaced(&ctx.client, &ns);
    let claims_api = Api::<PersistentVolumeClaim>::namespaced(&ctx.client, &ns);
    let recorder = Recorder::new(&ctx.client, "statefulset-controller");
    let event = |ty: &'static str, reason: &'static str, message: String| match ty {
        "Warning" => recorder.warning(set.as_ref(), reason, message),
        _ => recorder.normal(set.as_ref(), reason, message),
    };
    let replicas = i64::from(spec.replicas.unwrap_or(1).max(0));
    let start = i64::from(
        spec.ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0),
    );
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let partition = i64::from(
        strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0),
    );
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));

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
    let in_use: Vec<String> = pods.values().map(|p| revision_of(p).to_string()).collect();
    let owner = super::revisions::Owner {
        kind: StatefulSet::info(),
        meta: &set.metadata,
        template: &spec.template,
        history_limit: spec.revision_history_limit,
    };
    let (update_hash, revisions) =
        super::revisions::sync(&ctx.client, &ctx.revisions, owner, &in_use).await?;
    // The current revision: what status says, while pods still run it; else the update revision.
    let mut current_hash = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .and_then(|r| r.strip_prefix(&format!("{name}-")))
        .unwrap_or("")
        .to_string();
    if current_hash.is_empty()
        || !revisions
            .iter()
            .any(|r| super::revisions::hash_of(r) == current_hash)
    {
        current_hash = update_hash.clone();
    }
    let current_template: PodTemplateSpec = revisions
        .iter()
        .find(|r| super::revisions::hash_of(r) == current_hash)
        .and_then(|r| serde_json::from_value(template_of(r)).ok())
        .unwrap_or_else(|| spec.template.clone());
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
                    let cname = claim.metadata.name().to_string();
                    match claims_api.create(&claim).await {
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
                    (&spec.template, &update_hash)
                };
                let pod = pod_for(&set, template, hash, ordinal);
                match pods_api.create(&pod).await {
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
        let delete_scaled = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_scaled.as_deref())
            == Some("Delete");
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
            if delete_scaled {
                let ordinal = ordinal_of(&name, &pname).unwrap_or(-1);
                let claims: Vec<String> = claim_templates(&set)
                    .iter()
                    .map(|v| claim_name(v.metadata.name(), &name, ordinal))
                    .collect();
                claims_api.delete_all(&claims).await?;
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
    let ready = live.iter().filter(|p| is_ready(p)).count() as i32;
    let available = live.iter().filter(|p| available(p, min_ready, now)).count() as i32;
    let updated = live
        .iter()
        .filter(|p| revision_of(p) == update_hash)
        .count() as i32;
    let mut current = live
        .iter()
        .filter(|p| revision_of(p) == current_hash)
        .count() as i32;
    // Every pod updated: the update revision becomes the current one.
    if i64::from(updated) == replicas && live.len() as i64 == replicas {
        current_hash = update_hash.clone();
        current = updated;
    }
    let status = StatefulSetStatus {
        replicas: pods
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count() as i32,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(format!("{name}-{current_hash}")),
        update_revision: Some(format!("{name}-{update_hash}")),
        observed_generation: Some(set.metadata.generation.unwrap_or(0)),
        collision_count: Some(0),
        conditions: None,
    };
    let prev = set.status.clone().unwrap_or_default();
    let comparable = |s: &StatefulSetStatus| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.current_replicas.unwrap_or(0),
            s.updated_replicas.unwrap_or(0),
            s.current_revision.clone(),
            s.update_revision.clone(),
            s.observed_generation.unwrap_or(0),
            s.collision_count.unwrap_or(0),
        )
    };
    if comparable(&prev) != comparable(&status) {
        Api::<StatefulSet>::beside(&ctx.client, set.as_ref())
            .patch_status(&name, &Patch::Strategic(json!({"status": status})))
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
        let set: StatefulSet = serde_json::from_value(set).unwrap();
        let p = serde_json::to_value(pod_for(&set, &set.spec.as_ref().unwrap().template, "h1", 2))
            .unwrap();
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
