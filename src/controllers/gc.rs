//! The garbage collector: ownerReferences decide what lives. A dependent whose owners are all gone is deleted
//! (background propagation); an owner being deleted with the `orphan` finalizer first has its dependents' references
//! to it removed; one being deleted with `foregroundDeletion` waits until its dependents are gone. It runs full passes
//! over its informers' caches, woken by any change (and every 30 s), so it is level triggered like every controller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::registry::{self, KindInfo};
use crate::client::informer::{Cache, Shared};
use crate::client::Client;

/// Kinds that own others here.
const OWNERS: &[&str] = &[
    "replicasets",
    "deployments",
    "statefulsets",
    "daemonsets",
    "jobs",
    "cronjobs",
    "replicationcontrollers",
    "services",
];
/// Kinds that are owned.
const DEPENDENTS: &[&str] = &[
    "pods",
    "replicasets",
    "jobs",
    "controllerrevisions",
    "endpointslices",
    "persistentvolumeclaims",
];

// Passes look at every object, so these read fields by index (no allocation), not by JSON pointer.
fn uid(v: &Value) -> &str {
    v["metadata"]["uid"].as_str().unwrap_or("")
}

fn refs(v: &Value) -> &[Value] {
    v["metadata"]["ownerReferences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn has_finalizer(v: &Value, f: &str) -> bool {
    v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == f))
}

fn deleting(v: &Value) -> bool {
    !v["metadata"]["deletionTimestamp"].is_null()
}

fn ident(v: &Value) -> (Option<String>, String) {
    (
        v["metadata"]["namespace"].as_str().map(String::from),
        v["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

/// What one pass decides, separated from doing it (so it can be tested without a cluster).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Dependents to delete: (kind plural, namespace, name).
    pub delete: Vec<(String, Option<String>, String)>,
    /// Dependents whose ownerReferences become this list.
    pub rewrite_refs: Vec<(String, Option<String>, String, Vec<Value>)>,
    /// Owners whose finalizer can go: (kind plural, namespace, name, finalizer).
    pub release: Vec<(String, Option<String>, String, String)>,
}

/// Plans one pass over owners and dependents (each as (kind plural, objects)).
pub fn plan(owners: &[(&str, Vec<Arc<Value>>)], dependents: &[(&str, Vec<Arc<Value>>)]) -> Plan {
    let mut by_uid: HashMap<&str, (&str, &Value)> = HashMap::new();
    for (kind, objs) in owners.iter().chain(dependents.iter()) {
        for o in objs {
            by_uid.insert(uid(o), (kind, o));
        }
    }
    // Only owners of kinds the collector watches can be judged gone; references to other kinds are left alone.
    let tracked: HashSet<&str> = owners
        .iter()
        .chain(dependents.iter())
        .filter_map(|(plural, _)| crate::api::registry::lookup(plural).map(|k| k.kind))
        .collect();
    let mut p = Plan::default();
    let mut waiting: HashMap<String, usize> = HashMap::new();
    for (kind, objs) in dependents {
        for d in objs {
            let all_refs = refs(d);
            let rs: Vec<&Value> = all_refs
                .iter()
                .filter(|r| tracked.contains(r["kind"].as_str().unwrap_or("")))
                .collect();
            let untracked: Vec<Value> = all_refs
                .iter()
                .filter(|r| !tracked.contains(r["kind"].as_str().unwrap_or("")))
                .cloned()
                .collect();
            if rs.is_empty() {
                continue;
            }
            let live = rs
                .iter()
                .filter(|r| by_uid.contains_key(r["uid"].as_str().unwrap_or("")))
                .count();
            // The common case: every owner is there and none is being deleted - nothing to do.
            if live == rs.len()
                && rs.iter().all(|r| {
                    by_uid
                        .get(r["uid"].as_str().unwrap_or(""))
                        .is_some_and(|(_, o)| !deleting(o))
                })
            {
                continue;
            }
            let (ns, name) = ident(d);
            if live == 0 && untracked.is_empty() {
                if !deleting(d) {
                    p.delete.push((kind.to_string(), ns, name));
                }
                continue;
            }
            let mut kept = untracked;
            let mut changed = live != rs.len();
            for r in rs {
                let r = r.clone();
                let Some((_, owner)) = by_uid.get(r["uid"].as_str().unwrap_or("")) else {
                    continue;
                };
                let owner_deleting = deleting(owner);
                if owner_deleting && has_finalizer(owner, "orphan") {
                    changed = true;
                    continue;
                }
                if owner_deleting && has_finalizer(owner, "foregroundDeletion") {
                    *waiting.entry(uid(owner).to_string()).or_default() += 1;
                    if !deleting(d) {
                        p.delete.push((kind.to_string(), ns.clone(), name.clone()));
                    }
                }
                kept.push(r.clone());
            }
            if changed && !kept.is_empty() {
                p.rewrite_refs
                    .push((kind.to_string(), ns.clone(), name.clone(), kept));
            } else if changed {
                // Only orphaning owners were left: the dependent stays, with no owner.
                p.rewrite_refs
                    .push((kind.to_string(), ns, name, Vec::new()));
            }
        }
    }
    p.delete.dedup();
    for (kind, objs) in owners.iter().chain(dependents.iter()) {
        for o in objs {
            if !deleting(o) {
                continue;
            }
            let (ns, name) = ident(o);
            if has_finalizer(o, "orphan") {
                // Released once every dependent that points at it has its reference removed in this pass (or none
                // points at it any more).
                let all_rewritten = dependents.iter().all(|(k, ds)| {
                    ds.iter()
                        .filter(|d| refs(d).iter().any(|r| r["uid"] == uid(o)))
                        .all(|d| {
                            let (dns, dname) = ident(d);
                            p.rewrite_refs
                                .iter()
                                .any(|(rk, rns, rn, _)| rk == k && *rns == dns && *rn == dname)
                        })
                });
                if all_rewritten {
                    p.release
                        .push((kind.to_string(), ns.clone(), name.clone(), "orphan".into()));
                }
            }
            if has_finalizer(o, "foregroundDeletion") && !waiting.contains_key(uid(o)) {
                p.release
                    .push((kind.to_string(), ns, name, "foregroundDeletion".into()));
            }
        }
    }
    p
}

fn kind(plural: &str) -> &'static KindInfo {
    registry::KINDS
        .iter()
        .find(|k| k.plural == plural)
        .expect("registered kind")
}

/// A merge patch whose failure is only logged: the next pass looks again.
async fn merge_patch(
    client: &Client,
    plural: &str,
    ns: Option<&str>,
    name: &str,
    patch: &Value,
    what: &str,
) {
    if let Err(e) = client
        .patch(
            kind(plural),
            ns,
            name,
            "application/merge-patch+json",
            patch,
        )
        .await
    {
        tracing::debug!(error = %e, kind = %plural, %name, "{what}");
    }
}

async fn execute(client: &Client, caches: &HashMap<&'static str, Cache>, p: Plan) {
    for (k, ns, name, new_refs) in p.rewrite_refs {
        let cur = caches
            .get(k.as_str())
            .and_then(|c| c.get(ns.as_deref().unwrap_or(""), &name));
        let rv = cur
            .as_ref()
            .and_then(|c| c.pointer("/metadata/resourceVersion").cloned());
        let patch = json!({"metadata": {"ownerReferences": new_refs, "resourceVersion": rv}});
        merge_patch(
            client,
            &k,
            ns.as_deref(),
            &name,
            &patch,
            "gc: rewriting ownerReferences failed",
        )
        .await;
    }
    for (k, ns, name) in p.delete {
        match client
            .delete(kind(&k), ns.as_deref(), &name, "Background")
            .await
        {
            Ok(_) => {
                tracing::info!(kind = %k, %name, "gc: deleted a dependent whose owners are gone")
            }
            Err(e) if e.code() == Some(404) => {}
            Err(e) => tracing::debug!(error = %e, kind = %k, %name, "gc: delete failed"),
        }
    }
    for (k, ns, name, finalizer) in p.release {
        let cur = caches
            .get(k.as_str())
            .and_then(|c| c.get(ns.as_deref().unwrap_or(""), &name));
        let Some(cur) = cur else { continue };
        let kept: Vec<Value> = cur
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|f| **f != finalizer.as_str())
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": cur.pointer("/metadata/resourceVersion")}});
        merge_patch(
            client,
            &k,
            ns.as_deref(),
            &name,
            &patch,
            "gc: removing a finalizer failed",
        )
        .await;
    }
}

/// Runs the garbage collector until `stop` resolves.
/// The kinds the garbage collector reads.
pub fn kinds() -> Vec<&'static str> {
    let mut plurals: Vec<&'static str> = OWNERS.iter().chain(DEPENDENTS.iter()).copied().collect();
    plurals.sort();
    plurals.dedup();
    plurals
}

/// Runs the garbage collector on shared informers (one per plural of [`kinds`]) until `stop` resolves.
pub async fn run(
    client: Client,
    informers: HashMap<&'static str, Shared>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let caches: HashMap<&'static str, Cache> = informers
        .iter()
        .map(|(p, i)| (*p, i.cache.clone()))
        .collect();
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut forwarders = Vec::new();
    for inf in informers.values() {
        forwarders.push(inf.notify_on_change(wake.clone()));
    }
    for c in caches.values() {
        c.wait_synced().await;
    }
    let work = async {
        loop {
            let owners: Vec<(&str, Vec<Arc<Value>>)> =
                OWNERS.iter().map(|p| (*p, caches[p].list())).collect();
            let dependents: Vec<(&str, Vec<Arc<Value>>)> =
                DEPENDENTS.iter().map(|p| (*p, caches[p].list())).collect();
            let p = plan(&owners, &dependents);
            if p != Plan::default() {
                execute(&client, &caches, p).await;
            }
            tokio::select! {
                _ = wake.notified() => tokio::time::sleep(Duration::from_millis(200)).await,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = work => {}
    }
    for f in forwarders {
        f.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, uid: &str, owners: &[&str]) -> Value {
        let refs: Vec<Value> = owners
            .iter()
            .map(|u| json!({"uid": u, "kind": "ReplicaSet", "name": "o", "controller": true}))
            .collect();
        json!({"metadata": {"name": name, "namespace": "ns", "uid": uid, "ownerReferences": refs}})
    }

    #[test]
    fn owners_of_kinds_not_watched_are_never_judged_gone() {
        let mut d = obj("p", "d1", &[]);
        d["metadata"]["ownerReferences"] =
            json!([{"uid": "w1", "kind": "Widget", "name": "w", "controller": true}]);
        let p = plan(&[("replicasets", vec![])], &[("pods", vec![Arc::new(d)])]);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn dependents_of_gone_owners_are_deleted() {
        let p = plan(
            &[("replicasets", vec![])],
            &[("pods", vec![Arc::new(obj("p", "p1", &["gone"]))])],
        );
        assert_eq!(
            p.delete,
            vec![("pods".to_string(), Some("ns".to_string()), "p".to_string())]
        );
    }

    #[test]
    fn live_owners_keep_their_dependents() {
        let p = plan(
            &[("replicasets", vec![Arc::new(obj("o", "o1", &[]))])],
            &[("pods", vec![Arc::new(obj("p", "p1", &["o1"]))])],
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn orphan_finalizer_strips_references_then_releases_the_owner() {
        let mut owner = obj("o", "o1", &[]);
        owner["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        owner["metadata"]["finalizers"] = json!(["orphan"]);
        let p = plan(
            &[("replicasets", vec![Arc::new(owner.clone())])],
            &[("pods", vec![Arc::new(obj("p", "p1", &["o1"]))])],
        );
        assert!(p.delete.is_empty());
        assert_eq!(p.rewrite_refs.len(), 1);
        assert!(p.rewrite_refs[0].3.is_empty());
        assert_eq!(p.release[0].3, "orphan");
    }

    #[test]
    fn foreground_deletion_waits_for_dependents() {
        let mut owner = obj("o", "o1", &[]);
        owner["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        owner["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
        let p = plan(
            &[("replicasets", vec![Arc::new(owner.clone())])],
            &[("pods", vec![Arc::new(obj("p", "p1", &["o1"]))])],
        );
        assert_eq!(p.delete.len(), 1, "the dependent is deleted");
        assert!(p.release.is_empty(), "the owner waits");
        let p = plan(
            &[("replicasets", vec![Arc::new(owner)])],
            &[("pods", vec![])],
        );
        assert_eq!(p.release[0].3, "foregroundDeletion");
    }
}
