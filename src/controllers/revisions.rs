//! ControllerRevisions: the template history of DaemonSets and StatefulSets. Each template a workload has had is
//! one revision named `<owner>-<hash>`, labelled with `controller-revision-hash` (and the template's labels, so
//! `kubectl rollout history` finds them by the owner's selector), holding `{"spec": {"template": ...}}` as the
//! strategic-merge patch `kubectl rollout undo` applies.

use std::sync::Arc;

use serde_json::{json, Value};

use super::replicaset::controller_uid;
use crate::api::registry;
use crate::client::informer::Cache;
use crate::client::Client;

/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The template a revision holds.
pub fn template_of(revision: &Value) -> Value {
    let mut t = revision["data"]["spec"]["template"].clone();
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
    cache: &Cache,
    owner: &Value,
    owner_kind: &str,
    hash: &str,
    in_use: &[String],
) -> Result<Vec<Arc<Value>>, crate::client::Error> {
    let ns = s(owner, "/metadata/namespace");
    let name = s(owner, "/metadata/name");
    let uid = s(owner, "/metadata/uid");
    let kind = registry::lookup("controllerrevisions").expect("controllerrevisions kind");
    let mut revisions: Vec<Arc<Value>> = cache
        .list()
        .into_iter()
        .filter(|r| s(r, "/metadata/namespace") == ns && controller_uid(r) == Some(uid))
        .collect();
    revisions.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    let newest = revisions
        .last()
        .and_then(|r| r["revision"].as_i64())
        .unwrap_or(0);
    let mine = revisions
        .iter()
        .find(|r| s(r, &format!("/metadata/labels/{REVISION_LABEL}")) == hash);
    match mine {
        Some(r) if r["revision"].as_i64() == Some(newest) => {}
        Some(r) => {
            client
                .patch(
                    kind,
                    Some(ns),
                    s(r, "/metadata/name"),
                    "application/merge-patch+json",
                    &json!({"revision": newest + 1}),
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
            match client.create(kind, Some(ns), &rev).await {
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
            let h = s(r, &format!("/metadata/labels/{REVISION_LABEL}"));
            h != hash && !in_use.iter().any(|u| u == h)
        })
        .map(|r| s(r, "/metadata/name").to_string())
        .collect();
    let excess = old.len().saturating_sub(limit);
    super::delete_all(client, kind, ns, &old[..excess]).await?;
    revisions.retain(|r| !old[..excess].iter().any(|o| o == s(r, "/metadata/name")));
    Ok(revisions)
}
