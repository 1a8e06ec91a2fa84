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
            persistent_volume_claim: Some(Box::new(PvcVolumeSource {
                claim_name: claim_name(vname, name, ordinal),
                read_only: None,
            })),
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

/// One pass over one StatefulSet: what it wants, the pods it has by ordinal, and its revisions.
struct Pass<'a> {
    set: &'a StatefulSet,
    spec: &'a crate::api::apps::StatefulSetSpec,
    ctx: &'a Context,
    name: String,
    pods_api: Api<Pod>,
    claims_api: Api<PersistentVolumeClaim>,
    recorder: Recorder,
    /// Ours, by ordinal (a pod of another owner with our name blocks its ordinal).
    pods: BTreeMap<i64, Arc<Pod>>,
    wanted: std::ops::Range<i64>,
    parallel: bool,
    partition: i64,
    update_hash: String,
    current_hash: String,
    current_template: PodTemplateSpec,
}

impl Pass<'_> {
    fn normal(&self, reason: &'static str, message: String) {
        self.recorder.normal(self.set, reason, message)
    }
    fn warning(&self, reason: &'static str, message: String) {
        self.recorder.warning(self.set, reason, message)
    }

    /// Whether every wanted pod that exists is Running and Ready.
    fn all_ready(&self) -> bool {
        self.pods
            .iter()
            .filter(|(o, _)| self.wanted.contains(o))
            .all(|(_, p)| running_and_ready(p))
    }

    async fn delete_pod(&self, pname: &str) -> Result<()> {
        self.pods_api.delete_all(&[pname.to_string()]).await?;
        let name = &self.name;
        self.normal(
            "SuccessfulDelete",
            format!("delete Pod {pname} in StatefulSet {name} successful"),
        );
        Ok(())
    }

    /// Creates the claims and the pod of `ordinal`.
    async fn create(&self, ordinal: i64) -> Result<()> {
        let name = &self.name;
        for claim in missing_claims(self.set, &self.ctx.claims, ordinal) {
            let cname = claim.metadata.name().to_string();
            match self.claims_api.create(&claim).await {
                Ok(_) => self.normal(
                    "SuccessfulCreate",
                    format!(
                        "create Claim {cname} Pod {name}-{ordinal} in StatefulSet {name} success"
                    ),
                ),
                Err(e) if e.code() == Some(409) => {}
                Err(e) => {
                    self.warning("FailedCreate", format!("create Claim {cname} for Pod {name}-{ordinal} in StatefulSet {name} failed error: {e}"));
                    return Err(e.into());
                }
            }
        }
        // Below the partition a new pod gets the current revision; from it up, the update revision.
        let (template, hash) = if ordinal < self.partition && self.current_hash != self.update_hash
        {
            (&self.current_template, &self.current_hash)
        } else {
            (&self.spec.template, &self.update_hash)
        };
        let pod = pod_for(self.set, template, hash, ordinal);
        match self.pods_api.create(&pod).await {
            Ok(_) => self.normal(
                "SuccessfulCreate",
                format!("create Pod {name}-{ordinal} in StatefulSet {name} successful"),
            ),
            Err(e) if e.code() == Some(409) => {}
            Err(e) => {
                self.warning(
                    "FailedCreate",
                    format!("create Pod {name}-{ordinal} in StatefulSet {name} failed error: {e}"),
                );
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Creates what is missing, in order, and replaces failed pods. Returns whether it must wait for pods to change.
    async fn fill(&self) -> Result<bool> {
        let mut waiting = false;
        for ordinal in self.wanted.clone() {
            match self.pods.get(&ordinal) {
                // Its successor waits until it is gone: never two pods with one ordinal.
                Some(p) if p.metadata.deletion_timestamp.is_some() => waiting = true,
                Some(p) if matches!(phase(p), "Failed" | "Succeeded") => {
                    self.delete_pod(p.metadata.name()).await?;
                    waiting = true;
                }
                Some(p) => {
                    if !self.parallel && !running_and_ready(p) {
                        return Ok(true);
                    }
                    continue;
                }
                None => {
                    self.create(ordinal).await?;
                    waiting = true;
                }
            }
            if !self.parallel {
                break;
            }
        }
        Ok(waiting)
    }

    /// Scale down: the highest ordinal first, one at a time unless Parallel, once the rest are Running and Ready.
    async fn scale_down(&self) -> Result<bool> {
        let condemned: Vec<&Arc<Pod>> = self
            .pods
            .iter()
            .filter(|(o, _)| !self.wanted.contains(o))
            .map(|(_, p)| p)
            .rev()
            .collect();
        let all_ready = self.all_ready();
        let delete_scaled = self
            .spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_scaled.as_deref())
            == Some("Delete");
        let mut waiting = false;
        for p in condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if !self.parallel {
                    break;
                }
                continue;
            }
            if !self.parallel && !all_ready {
                break;
            }
            let pname = p.metadata.name();
            self.delete_pod(pname).await?;
            if delete_scaled {
                let ordinal = ordinal_of(&self.name, pname).unwrap_or(-1);
                let claims: Vec<String> = claim_templates(self.set)
                    .iter()
                    .map(|v| claim_name(v.metadata.name(), &self.name, ordinal))
                    .collect();
                self.claims_api.delete_all(&claims).await?;
            }
            waiting = true;
            if !self.parallel {
                break;
            }
        }
        Ok(waiting)
    }

    /// Rolling update: from the highest ordinal down to the partition, one pod at a time, each Ready first.
    async fn roll(&self) -> Result<()> {
        if !self.all_ready() {
            return Ok(());
        }
        let stale = self
            .pods
            .iter()
            .rev()
            .filter(|(o, _)| self.wanted.contains(o) && **o >= self.partition)
            .find(|(_, p)| revision_of(p) != self.update_hash);
        if let Some((_, stale)) = stale {
            self.delete_pod(stale.metadata.name()).await?;
        }
        Ok(())
    }

    /// The status the pods add up to.
    fn status(&self, min_ready: i64) -> StatefulSetStatus {
        let live: Vec<&Arc<Pod>> = self
            .pods
            .iter()
            .filter(|(o, p)| self.wanted.contains(o) && p.metadata.deletion_timestamp.is_none())
            .map(|(_, p)| p)
            .collect();
        let now = crate::sys::clock::utc_now();
        let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
        let updated = count(&|p| revision_of(p) == self.update_hash);
        let mut current_hash = self.current_hash.clone();
        let mut current = count(&|p| revision_of(p) == current_hash);
        // Every pod updated: the update revision becomes the current one.
        let replicas = self.wanted.end - self.wanted.start;
        if i64::from(updated) == replicas && live.len() as i64 == replicas {
            current_hash = self.update_hash.clone();
            current = updated;
        }
        let name = &self.name;
        StatefulSetStatus {
            replicas: self
                .pods
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count() as i32,
            ready_replicas: Some(count(&|p| is_ready(p))),
            available_replicas: Some(count(&|p| available(p, min_ready, now))),
            current_replicas: Some(current),
            updated_replicas: Some(updated),
            current_revision: Some(format!("{name}-{current_hash}")),
            update_revision: Some(format!("{name}-{}", self.update_hash)),
            observed_generation: Some(self.set.metadata.generation.unwrap_or(0)),
            collision_count: Some(0),
            conditions: None,
        }
    }
}

/// The fields of a status that a write must change (a patch of identical numbers is skipped).
fn comparable(s: &StatefulSetStatus) -> impl PartialEq {
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
}

/// The current revision: what status says, while pods still run it; else the update revision.
fn current_revision(
    set: &StatefulSet,
    revisions: &[Arc<crate::api::apps::ControllerRevision>],
    update_hash: &str,
) -> (String, Option<PodTemplateSpec>) {
    let name = set.metadata.name();
    let said = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .and_then(|r| r.strip_prefix(&format!("{name}-")))
        .unwrap_or("");
    let found = revisions
        .iter()
        .find(|r| !said.is_empty() && super::revisions::hash_of(r) == said);
    match found {
        Some(r) => (
            said.to_string(),
            serde_json::from_value(template_of(r)).ok(),
        ),
        None => (update_hash.to_string(), None),
    }
}

/// One reconcile of one StatefulSet.
pub async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = set.spec.as_ref().ok_or(Error::NoSpec("StatefulSet"))?;
    let ns = set.metadata.namespace();
    let name = set.metadata.name().to_string();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let replicas = i64::from(spec.replicas.unwrap_or(1).max(0));
    let start = i64::from(
        spec.ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0),
    );
    let strategy = spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let mut pods: BTreeMap<i64, Arc<Pod>> = BTreeMap::new();
    for p in ctx.pods.list_namespace(ns) {
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
    let (current_hash, current_template) = current_revision(&set, &revisions, &update_hash);
    let pass = Pass {
        set: &set,
        spec,
        ctx: &ctx,
        pods_api: Api::namespaced(&ctx.client, ns),
        claims_api: Api::namespaced(&ctx.client, ns),
        recorder: Recorder::new(&ctx.client, "statefulset-controller"),
        pods,
        wanted: start..start + replicas,
        parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
        partition: i64::from(partition),
        current_template: current_template.unwrap_or_else(|| spec.template.clone()),
        current_hash,
        update_hash,
        name,
    };
    let mut waiting = pass.fill().await?;
    if pass.parallel || !waiting {
        waiting |= pass.scale_down().await?;
    }
    if !on_delete && !waiting {
        pass.roll().await?;
    }
    let status = pass.status(min_ready);
    let prev = set.status.clone().unwrap_or_default();
    if comparable(&prev) != comparable(&status) {
        Api::<StatefulSet>::beside(&ctx.client, set.as_ref())
            .patch_status(&pass.name, &Patch::Strategic(json!({"status": status})))
            .await?;
    }
    let (ready, available) = (
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    );
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
