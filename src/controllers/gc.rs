//! The garbage collector: ownerReferences decide what lives. A dependent whose owners are all gone is deleted
//! (background propagation); an owner being deleted with the `orphan` finalizer first has its dependents' references
//! to it removed; one being deleted with `foregroundDeletion` waits until its dependents are gone. It runs full passes
//! over its informers' caches, woken by any change (and every 30 s), so it is level triggered like every controller.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::meta::{ObjectMeta, OwnerReference};
use crate::api::registry::{self, KindInfo};
use crate::api::MetaOnly;
use crate::api::{HasMetadata, Object};
use crate::client::informer::{Change, Informer, Shared};
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
/// Kinds that are owned (custom kinds are both, see [`run`]).
const DEPENDENTS: &[&str] = &[
    "pods",
    "replicasets",
    "jobs",
    "controllerrevisions",
    "endpointslices",
    "persistentvolumeclaims",
    "deployments",
    "statefulsets",
    "daemonsets",
    "cronjobs",
    "services",
    "configmaps",
    "secrets",
];

/// A custom kind's key among the collector's sources: `plural.group` (plurals alone may collide across groups).
fn custom_key(k: &KindInfo) -> &'static str {
    static KEYS: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, &'static str>>> =
        std::sync::OnceLock::new();
    let q = k.qualified();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    keys.entry(q.clone())
        .or_insert_with(|| Box::leak(q.into_boxed_str()))
}

fn uid(m: &ObjectMeta) -> &str {
    m.uid.as_deref().unwrap_or("")
}

fn refs(m: &ObjectMeta) -> &[OwnerReference] {
    m.owner_references.as_deref().unwrap_or(&[])
}

fn has_finalizer(m: &ObjectMeta, f: &str) -> bool {
    m.finalizers
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x == f))
}

fn deleting(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some()
}

fn ident(m: &ObjectMeta) -> (Option<String>, String) {
    (m.namespace.clone(), m.name().to_string())
}

/// What one pass decides, separated from doing it (so it can be tested without a cluster).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Dependents to delete: (kind plural, namespace, name).
    pub delete: Vec<(String, Option<String>, String)>,
    /// Dependents whose ownerReferences become this list.
    pub rewrite_refs: Vec<(String, Option<String>, String, Vec<OwnerReference>)>,
    /// Owners whose finalizer can go: (kind plural, namespace, name, finalizer).
    pub release: Vec<(String, Option<String>, String, String)>,
}

/// Objects of one kind (plural), seen through their metadata.
pub type Objects = Vec<Arc<dyn HasMetadata>>;

/// Plans one pass over owners and dependents (each as (kind plural, objects)).
pub fn plan(owners: &[(&str, Objects)], dependents: &[(&str, Objects)]) -> Plan {
    // Typed caches lend their metadata; nothing is copied per pass.
    plan_metas(&metas(owners), &metas(dependents))
}

fn metas<'a>(list: &'a [(&str, Objects)]) -> Vec<(String, Vec<Cow<'a, ObjectMeta>>)> {
    list.iter()
        .map(|(k, objs)| (k.to_string(), objs.iter().map(|o| o.metadata()).collect()))
        .collect()
}

type Metas<'a> = [(String, Vec<Cow<'a, ObjectMeta>>)];

fn plan_metas(owners: &Metas<'_>, dependents: &Metas<'_>) -> Plan {
    let mut p = Plan::default();
    let waiting = judge_dependents(owners, dependents, &mut p);
    release_finalizers(owners, dependents, &waiting, &mut p);
    p
}

/// Plans what happens to each dependent whose owners are gone or going: deleted (no owner left, or a foreground
/// owner), or its references rewritten (orphaning or vanished owners dropped). Returns, per foreground-deleting
/// owner's uid, how many dependents it still waits for.
fn judge_dependents(
    owners: &Metas<'_>,
    dependents: &Metas<'_>,
    p: &mut Plan,
) -> BTreeMap<String, usize> {
    // Only the objects some dependent names are ever looked up: most objects own nothing and are owned by nothing,
    // so index just those (a pass over a large cluster then hashes a handful of uids, not every object).
    let named: BTreeSet<&str> = dependents
        .iter()
        .flat_map(|(_, objs)| objs.iter())
        .flat_map(|d| d.owner_references.iter().flatten())
        .map(|r| r.uid.as_str())
        .collect();
    let mut by_uid: BTreeMap<&str, (&str, &ObjectMeta)> = BTreeMap::new();
    if !named.is_empty() {
        for (kind, objs) in owners.iter().chain(dependents.iter()) {
            for o in objs {
                if named.contains(uid(o)) {
                    by_uid.insert(uid(o), (kind, o.as_ref()));
                }
            }
        }
    }
    // Only owners of kinds the collector watches can be judged gone; references to other kinds are left alone.
    // (By group and kind: a custom kind may share its kind name with a built-in one of another group.)
    let tracked: BTreeSet<(&str, &str)> = owners
        .iter()
        .chain(dependents.iter())
        .filter_map(|(key, _)| kind(key).map(|k| (k.group, k.kind)))
        .collect();
    let is_tracked = |r: &OwnerReference| {
        let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        tracked.contains(&(group, r.kind.as_str()))
    };
    let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, objs) in dependents {
        for d in objs {
            let all_refs = refs(d);
            let rs: Vec<&OwnerReference> = all_refs.iter().filter(|r| is_tracked(r)).collect();
            let untracked: Vec<OwnerReference> = all_refs
                .iter()
                .filter(|r| !is_tracked(r))
                .cloned()
                .collect();
            if rs.is_empty() {
                continue;
            }
            let live = rs
                .iter()
                .filter(|r| by_uid.contains_key(r.uid.as_str()))
                .count();
            // The common case: every owner is there and none is being deleted - nothing to do.
            if live == rs.len()
                && rs.iter().all(|r| {
                    by_uid
                        .get(r.uid.as_str())
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
                let Some((_, owner)) = by_uid.get(r.uid.as_str()) else {
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
    waiting
}

/// Plans which deleting owners' finalizers come off: `orphan` once every dependent's reference is rewritten,
/// `foregroundDeletion` once no dependent is left to wait for.
fn release_finalizers(
    owners: &Metas<'_>,
    dependents: &Metas<'_>,
    waiting: &BTreeMap<String, usize>,
    p: &mut Plan,
) {
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
                        .filter(|d| refs(d).iter().any(|r| r.uid == uid(o)))
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
}

/// The kind of a source key: a built-in plural, or a custom kind's `plural.group`.
fn kind(key: &str) -> Option<&'static KindInfo> {
    registry::KINDS
        .iter()
        .find(|k| k.plural == key)
        .or_else(|| registry::lookup(key))
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
    let Some(kind) = kind(plural) else {
        return;
    };
    if let Err(e) = client
        .patch(kind, ns, name, "application/merge-patch+json", patch)
        .await
    {
        tracing::debug!(error = %e, kind = %plural, %name, "{what}");
    }
}

/// Looks an object up by namespace and name.
type Lookup = dyn Fn(&str, &str) -> Option<Arc<dyn HasMetadata>> + Send + Sync;

/// One kind's cache, seen through metadata: what the collector reads (of any informer, typed or not).
#[derive(Clone)]
pub struct Source {
    list: Arc<dyn Fn() -> Objects + Send + Sync>,
    get: Arc<Lookup>,
    synced: Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
    wake: Arc<dyn Fn(Arc<tokio::sync::Notify>) -> tokio::task::JoinHandle<()> + Send + Sync>,
}

impl<K: Object> From<Shared<K>> for Source {
    fn from(shared: Shared<K>) -> Self {
        let (c1, c2, c3) = (
            shared.cache.clone(),
            shared.cache.clone(),
            shared.cache.clone(),
        );
        Source {
            list: Arc::new(move || {
                c1.list()
                    .into_iter()
                    .map(|o| o as Arc<dyn HasMetadata>)
                    .collect()
            }),
            get: Arc::new(move |ns, name| c2.get(ns, name).map(|o| o as Arc<dyn HasMetadata>)),
            synced: Arc::new(move || {
                let c = c3.clone();
                Box::pin(async move { c.wait_synced().await })
            }),
            wake: Arc::new(move |n| shared.notify_on_change(n, concerns_the_collector)),
        }
    }
}

/// Whether a change can give the collector work: an object going away (its dependents may be orphaned), or one that
/// names owners or is being deleted. Updates of objects that own nothing and stay (status writes, most of a
/// cluster's traffic) cannot, and do not wake it.
fn concerns_the_collector<K: Object>(change: &Change<K>) -> bool {
    match change {
        Change::Applied(o) => {
            let m = o.object_meta();
            m.owner_references.as_ref().is_some_and(|r| !r.is_empty())
                || m.deletion_timestamp.is_some()
        }
        Change::Deleted(_) | Change::Resynced => true,
    }
}

async fn execute(client: &Client, sources: &BTreeMap<&'static str, Source>, p: Plan) {
    let current = |k: &str, ns: &Option<String>, name: &str| {
        sources
            .get(k)
            .and_then(|s| (s.get)(ns.as_deref().unwrap_or(""), name))
    };
    for (k, ns, name, new_refs) in p.rewrite_refs {
        let rv = current(&k, &ns, &name).and_then(|c| c.metadata().resource_version.clone());
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
        let Some(kind) = kind(&k) else { continue };
        match client
            .delete(kind, ns.as_deref(), &name, "Background")
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
        let Some(cur) = current(&k, &ns, &name) else {
            continue;
        };
        let meta = cur.metadata();
        let kept: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|f| **f != finalizer)
            .collect();
        let patch =
            json!({"metadata": {"finalizers": kept, "resourceVersion": meta.resource_version}});
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
    sources: BTreeMap<&'static str, Source>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut forwarders = Vec::new();
    for s in sources.values() {
        forwarders.push((s.wake)(wake.clone()));
    }
    for s in sources.values() {
        (s.synced)().await;
    }
    let mut sources = sources;
    // Custom kinds come and go with their CRDs: each gets a metadata-only informer while it is served.
    let mut custom: BTreeMap<&'static str, (Informer<MetaOnly>, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    let work = async {
        loop {
            let served: Vec<&'static KindInfo> = registry::custom_storage_kinds();
            let keys: BTreeSet<&'static str> = served.iter().map(|k| custom_key(k)).collect();
            custom.retain(|key, (_, forwarder)| {
                let keep = keys.contains(key);
                if !keep {
                    forwarder.abort();
                    sources.remove(key);
                }
                keep
            });
            for k in served {
                let key = custom_key(k);
                if custom.contains_key(key) {
                    continue;
                }
                let informer = Informer::<MetaOnly>::for_kind(&client, k, None, "");
                let source: Source = informer.shared().into();
                let forwarder = (source.wake)(wake.clone());
                (source.synced)().await;
                sources.insert(key, source);
                custom.insert(key, (informer, forwarder));
            }
            let custom_keys: Vec<&'static str> = custom.keys().copied().collect();
            let owners: Vec<&'static str> = OWNERS
                .iter()
                .copied()
                .chain(custom_keys.iter().copied())
                .collect();
            let dependents: Vec<&'static str> = DEPENDENTS
                .iter()
                .copied()
                .chain(custom_keys.iter().copied())
                .collect();
            let snapshot = |plurals: &[&'static str]| -> Vec<(&'static str, Objects)> {
                plurals
                    .iter()
                    .map(|p| (*p, sources.get(p).map(|s| (s.list)()).unwrap_or_default()))
                    .collect()
            };
            let p = plan(&snapshot(&owners), &snapshot(&dependents));
            if p != Plan::default() {
                execute(&client, &sources, p).await;
            }
            tokio::select! {
                biased;
                _ = wake.notified() => tokio::time::sleep(Duration::from_millis(200)).await,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    };
    tokio::select! {
        biased;
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

    fn a(v: Value) -> Arc<dyn HasMetadata> {
        Arc::new(v)
    }

    fn obj(name: &str, uid: &str, owners: &[&str]) -> Value {
        let refs: Vec<Value> = owners
            .iter()
            .map(|u| json!({"apiVersion": "apps/v1", "uid": u, "kind": "ReplicaSet", "name": "o", "controller": true}))
            .collect();
        json!({"metadata": {"name": name, "namespace": "ns", "uid": uid, "ownerReferences": refs}})
    }

    #[test]
    fn owners_of_kinds_not_watched_are_never_judged_gone() {
        let mut d = obj("p", "d1", &[]);
        d["metadata"]["ownerReferences"] =
            json!([{"uid": "w1", "kind": "Widget", "name": "w", "controller": true}]);
        let p = plan(&[("replicasets", vec![])], &[("pods", vec![a(d)])]);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn dependents_of_gone_owners_are_deleted() {
        let p = plan(
            &[("replicasets", vec![])],
            &[("pods", vec![a(obj("p", "p1", &["gone"]))])],
        );
        assert_eq!(
            p.delete,
            vec![("pods".to_string(), Some("ns".to_string()), "p".to_string())]
        );
    }

    #[test]
    fn live_owners_keep_their_dependents() {
        let p = plan(
            &[("replicasets", vec![a(obj("o", "o1", &[]))])],
            &[("pods", vec![a(obj("p", "p1", &["o1"]))])],
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn orphan_finalizer_strips_references_then_releases_the_owner() {
        let mut owner = obj("o", "o1", &[]);
        owner["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        owner["metadata"]["finalizers"] = json!(["orphan"]);
        let p = plan(
            &[("replicasets", vec![a(owner.clone())])],
            &[("pods", vec![a(obj("p", "p1", &["o1"]))])],
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
            &[("replicasets", vec![a(owner.clone())])],
            &[("pods", vec![a(obj("p", "p1", &["o1"]))])],
        );
        assert_eq!(p.delete.len(), 1, "the dependent is deleted");
        assert!(p.release.is_empty(), "the owner waits");
        let p = plan(&[("replicasets", vec![a(owner)])], &[("pods", vec![])]);
        assert_eq!(p.release[0].3, "foregroundDeletion");
    }
}
