//! ControllerRevisions: the template history of DaemonSets and StatefulSets. Each template a workload has had is
//! one revision named `<owner>-<hash>`, labelled with `controller-revision-hash` (and the template's labels, so
//! `kubectl rollout history` finds them by the owner's selector), holding `{"spec": {"template": ...}}` as the
//! strategic-merge patch `kubectl rollout undo` applies.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::Resource;

use super::pods::controller_uid;
use crate::api::apps::ControllerRevision;
use crate::api::core::PodTemplateSpec;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};

/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The ControllerRevision hash a pod was made from (its `controller-revision-hash` label).
pub fn pod_revision(pod: &crate::api::core::Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

/// The revision's `controller-revision-hash` label.
pub fn hash_of(revision: &ControllerRevision) -> &str {
    revision
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

/// The template a revision holds.
pub fn template_of(revision: &ControllerRevision) -> Value {
    let data = revision.data.as_ref().map(|d| &d.0);
    let mut t = data.map_or(Value::Null, |d| d["spec"]["template"].clone());
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// What [`sync`] keeps revisions for: the owning object (its kind and metadata), its current template and its
/// `revisionHistoryLimit`.
pub struct Owner<'a> {
    pub kind: &'static crate::api::registry::KindInfo,
    pub meta: &'a crate::api::meta::ObjectMeta,
    pub template: &'a PodTemplateSpec,
    pub history_limit: Option<i32>,
}

/// Keeps an owner's ControllerRevisions: the current template's revision is the newest (created, or renumbered when
/// an old template comes back), and old ones beyond `revisionHistoryLimit` that no pod (`in_use`) runs are deleted.
/// A revision holding the same template (compared as content, whatever its key order) is the current one, so its
/// hash stays the pods' hash. Returns that hash and the owner's revisions (as the cache had them, oldest first).
pub async fn sync(
    client: &Client,
    cache: &Cache<ControllerRevision>,
    owner: Owner<'_>,
    in_use: &[String],
) -> Result<(String, Vec<Arc<ControllerRevision>>), crate::client::Error> {
    let ns = owner.meta.namespace();
    let name = owner.meta.name();
    let uid = owner.meta.uid.as_deref().unwrap_or("");
    let template = serde_json::to_value(owner.template).unwrap_or(Value::Null);
    let api = Api::<ControllerRevision>::namespaced(client, ns);
    let mut revisions: Vec<Arc<ControllerRevision>> = cache
        .list_namespace(ns)
        .into_iter()
        .filter(|r| controller_uid(&r.metadata) == Some(uid))
        .collect();
    revisions.sort_by_key(|r| r.revision);
    let newest = revisions.last().map_or(0, |r| r.revision);
    let mine = revisions.iter().find(|r| template_of(r) == template);
    let hash = match mine {
        Some(r) => hash_of(r).to_string(),
        None => super::deployment::template_hash(&template),
    };
    match mine {
        Some(r) if r.revision == newest => {}
        Some(r) => {
            api.patch(
                r.metadata.name(),
                &Patch::Merge(json!({"revision": newest + 1})),
            )
            .await?;
        }
        None => {
            let mut stored = template.clone();
            stored["$patch"] = json!("replace");
            let mut labels = owner
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_LABEL.into(), hash.clone());
            let rev = json!({"apiVersion": ControllerRevision::api_version(), "kind": "ControllerRevision",
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                    "ownerReferences": [{"apiVersion": owner.kind.api_version(), "kind": owner.kind.kind,
                        "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                "data": {"spec": {"template": stored}}, "revision": newest + 1});
            match client
                .create(ControllerRevision::info(), Some(ns), &rev)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(409) => {}
                Err(e) => return Err(e),
            }
        }
    }
    // History beyond the limit, oldest first, never the current one nor one that pods still run.
    let limit = owner.history_limit.unwrap_or(10).max(0) as usize;
    let old: Vec<String> = revisions
        .iter()
        .filter(|r| {
            let h = hash_of(r);
            h != hash && !in_use.iter().any(|u| u == h)
        })
        .map(|r| r.metadata.name().to_string())
        .collect();
    let excess = old.len().saturating_sub(limit);
    api.delete_all(&old[..excess]).await?;
    revisions.retain(|r| !old[..excess].iter().any(|o| o == r.metadata.name()));
    Ok((hash, revisions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_matches_its_template_whatever_the_key_order_it_was_stored_in() {
        // Stored by an earlier version straight from the client's JSON: keys in the client's order.
        let rev: ControllerRevision = serde_json::from_str(
            r#"{"metadata": {"name": "web-abc", "labels": {"controller-revision-hash": "abc"}}, "revision": 1,
                "data": {"spec": {"template": {"$patch": "replace",
                    "spec": {"containers": [{"image": "nginx", "name": "c"}]},
                    "metadata": {"labels": {"app": "web"}}}}}}"#,
        )
        .unwrap();
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
        .unwrap();
        let typed = serde_json::to_value(&template).unwrap();
        assert_eq!(template_of(&rev), typed);
        assert_eq!(hash_of(&rev), "abc");
        let other: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}))
        .unwrap();
        assert_ne!(template_of(&rev), serde_json::to_value(&other).unwrap());
    }
}
