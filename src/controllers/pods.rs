//! What the workload controllers (ReplicaSet, Job, DaemonSet, StatefulSet, endpoints) share about pods: readiness
//! and availability as Kubernetes defines them, which pods to delete first, pods made from a template, adoption and
//! release through ownerReferences, and expectations - the creates and deletes a controller made but has not yet
//! seen in its cache, so it never acts twice on a stale picture. Reads only typed objects; writes through the client.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::api::core::{Pod, PodTemplateSpec};
use crate::api::meta::{ObjectMeta, OwnerReference};
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};

/// The uid of the pod's controller (its ownerReference with `controller: true`).
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.controller().map(|o| o.uid.as_str())
}

fn ready_condition(pod: &Pod) -> Option<&crate::api::meta::Condition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became Ready (if it is).
pub fn ready_since(pod: &Pod) -> Option<DateTime<Utc>> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time)
}

/// Whether a pod is available: Ready (and not being deleted) for at least `min_ready` seconds.
pub fn available(pod: &Pod, min_ready: i64, now: DateTime<Utc>) -> bool {
    if !is_ready(pod) || pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    ready_since(pod).is_none_or(|t| now - t >= chrono::Duration::seconds(min_ready))
}

/// The pod's phase (`Pending` when it has none yet).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The node the pod is bound to, if any.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Not being deleted and not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// Deletion preference, lower first: unscheduled, pending, not ready, then the newest.
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<DateTime<Utc>>>) {
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    (
        u8::from(node_name(pod).is_some()),
        phase,
        u8::from(is_ready(pod)),
        std::cmp::Reverse(pod.metadata.creation_timestamp),
    )
}

/// Picks the pods to delete to go down by `n`.
pub fn pods_to_delete(mut pods: Vec<&Pod>, n: usize) -> Vec<String> {
    pods.sort_by_key(|p| deletion_rank(p));
    pods.into_iter()
        .take(n)
        .map(|p| p.metadata.name().to_string())
        .collect()
}

/// A pod to create from `template`, named `<prefix>-<random>`, controlled by `owner`.
pub fn from_template(
    template: &PodTemplateSpec,
    generate_name: &str,
    ns: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            namespace: Some(ns.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Replaces a pod's ownerReferences (guarded by its resourceVersion) and returns the updated pod.
pub async fn set_owners(
    client: &Client,
    pod: &Pod,
    refs: Vec<OwnerReference>,
) -> Result<Pod, crate::client::Error> {
    let patch = json!({"metadata": {"ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version}});
    Api::<Pod>::beside(client, pod)
        .patch(pod.metadata.name(), &Patch::Merge(patch))
        .await
}

/// Pods created or deleted but not yet seen (or seen gone) in the cache, per controller.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    adds: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
    /// A create whose answer was lost (the connection cut) may have made a pod whose name nobody knows: until then
    /// the controller waits for the informer to show it rather than create another.
    uncertain_until: Option<Instant>,
}

impl Pending {
    fn new() -> Self {
        Pending {
            adds: HashSet::new(),
            deletes: HashSet::new(),
            since: Instant::now(),
            uncertain_until: None,
        }
    }
}

/// How long a lost create answer holds a controller back.
const UNCERTAIN_FOR: Duration = Duration::from_secs(5);

/// Expectations older than this are given up on (a missed watch event must not stall a controller forever).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(60);

impl Expectations {
    /// Whether the cache has caught up with every create and delete expected for `key` in namespace `ns`.
    pub fn satisfied(&self, key: &str, pods: &Cache<Pod>, ns: &str) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = m.get_mut(key) else { return true };
        if p.uncertain_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        p.adds.retain(|n| pods.get(ns, n).is_none());
        p.deletes.retain(|n| {
            pods.get(ns, n)
                .is_some_and(|pod| pod.metadata.deletion_timestamp.is_none())
        });
        if (p.adds.is_empty() && p.deletes.is_empty()) || p.since.elapsed() > EXPECTATIONS_TIMEOUT {
            m.remove(key);
            return true;
        }
        false
    }

    /// Records that creates for `key` failed in a way that may have made pods anyway (the answer was lost): the
    /// next pass waits a while for the informer to show them.
    pub fn expect_unknown_adds(&self, key: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let p = m.entry(key.to_string()).or_insert_with(Pending::new);
        p.uncertain_until = Some(Instant::now() + UNCERTAIN_FOR);
        p.since = Instant::now();
    }

    /// Records creates (`adds`) and deletes the controller just made for `key`.
    pub fn expect(&self, key: &str, adds: Vec<String>, deletes: Vec<String>) {
        if adds.is_empty() && deletes.is_empty() {
            return;
        }
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let p = m.entry(key.to_string()).or_insert_with(Pending::new);
        p.adds.extend(adds);
        p.deletes.extend(deletes);
        p.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        let mut p = json!({"metadata": {"name": name, "creationTimestamp": created}, "spec": {"containers": []},
            "status": {"phase": phase}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        if ready {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn surplus_pods_go_unscheduled_first_then_pending_then_unready_then_newest() {
        let t1 = "2024-01-01T00:00:00Z";
        let a = pod("ready-old", Some("n"), "Running", true, t1);
        let b = pod(
            "ready-new",
            Some("n"),
            "Running",
            true,
            "2024-01-02T00:00:00Z",
        );
        let c = pod("unready", Some("n"), "Running", false, t1);
        let d = pod("pending", Some("n"), "Pending", false, t1);
        let e = pod("unscheduled", None, "Pending", false, t1);
        let all = vec![&a, &b, &c, &d, &e];
        assert_eq!(
            pods_to_delete(all.clone(), 5),
            [
                "unscheduled",
                "pending",
                "unready",
                "ready-new",
                "ready-old"
            ]
        );
        assert_eq!(pods_to_delete(all, 1), ["unscheduled"]);
    }

    #[test]
    fn available_waits_min_ready_seconds_after_ready() {
        let mut p = pod("p", Some("n"), "Running", true, "2024-01-01T00:00:00Z");
        let now = crate::api::meta::now();
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(now - chrono::Duration::seconds(5));
        assert!(available(&p, 3, now));
        assert!(!available(&p, 10, now));
        p.metadata.deletion_timestamp = Some(now);
        assert!(
            !available(&p, 0, now),
            "a pod being deleted is not available"
        );
    }

    #[test]
    fn expectations_wait_for_the_cache() {
        let e = Expectations::default();
        let empty = Cache::<Pod>::of([]);
        e.expect("rs/ns/a", vec!["a-1".into()], vec![]);
        assert!(
            !e.satisfied("rs/ns/a", &empty, "ns"),
            "the create is not seen yet"
        );
        let mut seen = pod("a-1", None, "Pending", false, "2024-01-01T00:00:00Z");
        seen.metadata.namespace = Some("ns".into());
        assert!(e.satisfied("rs/ns/a", &Cache::of([seen]), "ns"));
        assert!(e.satisfied("rs/ns/b", &empty, "ns"), "nothing expected");
    }

    #[test]
    fn template_pods_are_owned_and_labelled() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "w"}},
            "spec": {"containers": [{"name": "c"}]}}))
            .unwrap();
        let owner = OwnerReference {
            kind: "ReplicaSet".into(),
            name: "w-1".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let p = from_template(&t, "w-1-", "demo", owner);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("w-1-"));
        assert_eq!(p.metadata.namespace(), "demo");
        assert_eq!(p.metadata.labels()["app"], "w");
        assert_eq!(controller_uid(&p.metadata), Some("u"));
    }
}
