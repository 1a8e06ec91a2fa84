//! ControllerRevisions: the template history of DaemonSets and StatefulSets. Each template a workload has had is
//! one revision named `<owner>-<hash>`, labelled with `controller-revision-hash` (and the template's labels, so
//! `kubectl rollout history` finds them by the owner's selector), holding `{"spec": {"template": ...}}` as the
//! strategic-merge patch `kubectl rollout undo` applies.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::Resource;

use super::pods::controller_uid;
use crate::api::apps::ControllerRevision;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};

/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

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

/// Keeps an owner's ControllerRevisions: the current template's revision is the newest (created, or renumbered when an old
/// template comes back), and old ones beyond `revisionHistoryLimit` that no pod (`in_use`) runs are deleted. Returns the owner's revisions
/// (as the cache had them, oldest first).
pub async fn sync(
    client: &Client,
    cache: &Cache<ControllerRevision>,
    owner: &Value,
    owner_kind: &str,
    hash: &str,
    in_use: &[String],
) -> Result<Vec<Arc<ControllerRevision>>, crate::client::Error> {
    let ns = s(owner, "/metadata/namespace");
    let name = s(owner, "/metadata/name");
    let uid = s(owner, "/metadata/uid");
    let api = Api::<ControllerRevision>::namespaced(client, ns);
    let mut revisions: Vec<Arc<ControllerRevision>> = cache
        .list_namespace(ns)
        .into_iter()
        .filter(|r| controller_uid(&r.metadata) == Some(uid))
        .collect();
    revisions.sort_by_key(|r| r.revision);
    let newest = revisions.last().map_or(0, |r| r.revision);
    let mine = revisions.iter().find(|r| hash_of(r) == hash);
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
            let mut template = owner["spec"]["template"].clone();
            template["$patch"] = json!("replace");
            let mut labels = owner["spec"]["template"]["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[REVISION_LABEL] = json!(hash);
            let rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}]},
                "data": {"spec": {"template": template}}, "revision": newest + 1});
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
    let limit = owner["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
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
    Ok(revisions)
}
