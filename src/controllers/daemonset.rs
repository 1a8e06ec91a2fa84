//! The DaemonSet controller: one pod of the template on every eligible node - its taints tolerated (daemon pods also
//! tolerate not-ready, unreachable, pressure and unschedulable taints, as Kubernetes adds them), its labels matching
//! the node selector and required node affinity. A node that joins gets a pod, a node that leaves or stops being
//! eligible loses it. Each pod is pinned to its node by a `metadata.name` node-affinity term and placed by the
//! scheduler, as in Kubernetes. Templates are kept as ControllerRevisions (`kubectl rollout history|undo daemonset`);
//! pods carry `controller-revision-hash`. RollingUpdate replaces old pods within `maxUnavailable` (or, with
//! `maxSurge`, starts the new pod first and removes the old one once it is available); OnDelete replaces a pod only
//! when someone deletes it. Status has every field `kubectl rollout status daemonset` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::deployment::template_hash;
use super::pods::{available, controller_uid, is_ready, phase, Expectations};
use crate::api::core::Pod;
use crate::api::registry;
use crate::api::IntOrString;
use crate::api::Resource;
use crate::client::informer::Cache;
use crate::client::Api;
use crate::client::Client;
use crate::runtime::Action;
use crate::scheduler::{NodeInfo, PodInfo};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The label naming the ControllerRevision a pod was made from.
pub use super::revisions::REVISION_LABEL;

/// What the DaemonSet controller works with.
pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub nodes: Cache<crate::api::core::Node>,
    pub revisions: Cache<crate::api::apps::ControllerRevision>,
    pub expectations: Expectations,
}

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The tolerations Kubernetes gives every daemon pod, so it runs where ordinary pods are kept away.
pub fn daemon_tolerations(host_network: bool) -> Vec<Value> {
    let mut t = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}),
    ];
    if host_network {
        t.push(
            json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
            "effect": "NoSchedule"}),
        );
    }
    t
}

/// The template with the daemon tolerations added (those it already has kept).
fn with_tolerations(template: &Value) -> Value {
    let mut t = template.clone();
    let host = t["spec"]["hostNetwork"].as_bool() == Some(true);
    let mut list = t["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for tol in daemon_tolerations(host) {
        if !list.contains(&tol) {
            list.push(tol);
        }
    }
    if t["spec"].is_object() {
        t["spec"]["tolerations"] = json!(list);
    }
    t
}

/// The node a daemon pod is for: where it is bound, else the node its affinity pins it to.
fn node_of(pod: &Pod) -> Option<String> {
    if let Some(n) = super::pods::node_name(pod) {
        return Some(n.to_string());
    }
    let required = pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    required
        .node_selector_terms
        .first()?
        .match_fields
        .as_ref()?
        .first()?
        .values
        .as_ref()?
        .first()
        .cloned()
}

use super::revisions::pod_revision as revision_of;

/// The pod for `node`.
fn pod_for(ds: &Value, template: &Value, hash: &str, node: &str) -> Value {
    let name = s(ds, "/metadata/name");
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][REVISION_LABEL] = json!(hash);
    meta["generateName"] = json!(format!("{name}-"));
    meta["namespace"] = ds["metadata"]["namespace"].clone();
    meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name,
        "uid": ds["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    let mut spec = template["spec"].clone();
    if !spec["affinity"].is_object() {
        spec["affinity"] = json!({});
    }
    if !spec["affinity"]["nodeAffinity"].is_object() {
        spec["affinity"]["nodeAffinity"] = json!({});
    }
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

/// One reconcile of one DaemonSet.
pub async fn reconcile(ds: Arc<Value>, ctx: Arc<Context>) -> Result<Action> {
    if ds["metadata"]["deletionTimestamp"].is_string() {
        return Ok(Action::await_change());
    }
    let ns = s(&ds, "/metadata/namespace").to_string();
    let name = s(&ds, "/metadata/name").to_string();
    let uid = s(&ds, "/metadata/uid").to_string();
    let key = format!("daemonsets/{ns}/{name}");
    let ds_kind = registry::lookup("daemonsets").expect("daemonsets kind");
    let me = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns, "uid": uid}});
    let event = |reason: &'static str, message: String| {
        crate::client::events::spawn_record(
            &ctx.client,
            me.clone(),
            "daemonset-controller",
            "Normal",
            reason,
            message,
        );
    };
    let spec = &ds["spec"];
    let template = with_tolerations(&spec["template"]);
    let hash = template_hash(&spec["template"]);
    let in_use: Vec<String> = ctx
        .pods
        .list_namespace(&ns)
        .iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .map(|p| revision_of(p).to_string())
        .collect();
    super::revisions::sync(
        &ctx.client,
        &ctx.revisions,
        &ds,
        "DaemonSet",
        &hash,
        &in_use,
    )
    .await?;

    // Which nodes should run it.
    let probe = PodInfo::new(&Pod {
        spec: serde_json::from_value(template["spec"].clone()).ok(),
        ..Default::default()
    });
    let mut eligible: BTreeMap<String, bool> = BTreeMap::new();
    for n in ctx.nodes.list() {
        let info = NodeInfo::new(&n);
        eligible.insert(info.name.clone(), probe.daemon_fits(&info).is_ok());
    }
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut orphaned: Vec<String> = Vec::new();
    for p in ctx.pods.list_namespace(&ns) {
        if controller_uid(&p.metadata) != Some(uid.as_str()) {
            continue;
        }
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match node_of(&p) {
            Some(n) if eligible.get(&n) == Some(&true) => by_node.entry(n).or_default().push(p),
            _ => orphaned.push(p.metadata.name().to_string()),
        }
    }
    let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
    let now = chrono::Utc::now();
    let desired = eligible.values().filter(|e| **e).count() as i64;
    let mut create: Vec<String> = Vec::new();
    let mut delete: Vec<String> = orphaned.clone();

    // Finished pods are replaced; a node with two (a surge aside) keeps the oldest.
    for pods in by_node.values_mut() {
        pods.retain(|p| {
            let done = matches!(phase(p), "Succeeded" | "Failed");
            if done {
                delete.push(p.metadata.name().to_string());
            }
            !done
        });
        pods.sort_by_key(|p| p.metadata.creation_timestamp);
    }
    for (node, ok) in &eligible {
        if *ok && by_node.get(node).is_none_or(Vec::is_empty) {
            create.push(node.clone());
        }
    }
    let rolling = s(spec, "/updateStrategy/type") != "OnDelete";
    let intstr = |field: &str, default: i64| -> i64 {
        spec.pointer(&format!("/updateStrategy/rollingUpdate/{field}"))
            .and_then(|v| serde_json::from_value::<IntOrString>(v.clone()).ok())
            .and_then(|v| v.scaled(desired, field == "maxUnavailable"))
            .unwrap_or(default)
    };
    let max_surge = intstr("maxSurge", 0);
    let max_unavailable = if max_surge > 0 {
        intstr("maxUnavailable", 0)
    } else {
        intstr("maxUnavailable", 1).max(1)
    };
    let is_new = |p: &Pod| revision_of(p) == hash;
    let mut unavailable = desired
        - by_node
            .values()
            .filter(|pods| pods.iter().any(|p| available(p, min_ready, now)))
            .count() as i64;
    let mut surging = by_node.values().filter(|pods| pods.len() > 1).count() as i64;
    for (node, pods) in &by_node {
        let news: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_new(p)).collect();
        let olds: Vec<&Arc<Pod>> = pods.iter().filter(|p| !is_new(p)).collect();
        // Duplicates of one revision: keep the oldest.
        for extra in news.iter().skip(1) {
            delete.push(extra.metadata.name().to_string());
        }
        if olds.len() > 1 {
            for extra in olds.iter().skip(1) {
                delete.push(extra.metadata.name().to_string());
            }
        }
        let Some(old) = olds.first() else { continue };
        if !rolling {
            continue;
        }
        let old_name = old.metadata.name().to_string();
        match news.first() {
            // Surge: the new pod is up; the old one goes once the new one is available.
            Some(new) => {
                if available(new, min_ready, now) || !available(old, min_ready, now) {
                    delete.push(old_name);
                }
            }
            None if max_surge > 0 => {
                if !available(old, min_ready, now) {
                    delete.push(old_name);
                } else if surging < max_surge {
                    surging += 1;
                    create.push(node.clone());
                }
            }
            None => {
                // Unavailable old pods go freely; available ones within maxUnavailable.
                if !available(old, min_ready, now) {
                    delete.push(old_name);
                } else if unavailable < max_unavailable {
                    unavailable += 1;
                    delete.push(old_name);
                }
            }
        }
    }
    delete.sort();
    delete.dedup();

    if ctx.expectations.satisfied(&key, &ctx.pods, &ns) {
        let made = futures::future::join_all(create.iter().map(|node| {
            let pod = pod_for(&ds, &template, &hash, node);
            let client = ctx.client.clone();
            let ns = ns.clone();
            async move {
                client
                    .create(Pod::info(), Some(&ns), &pod)
                    .await
                    .map(|p| s(&p, "/metadata/name").to_string())
            }
        }))
        .await;
        let mut names = Vec::new();
        let mut failure = None;
        for r in made {
            match r {
                Ok(n) => names.push(n),
                Err(e) => failure = Some(e),
            }
        }
        for n in &names {
            event("SuccessfulCreate", format!("Created pod: {n}"));
        }
        let gone = Api::<Pod>::namespaced(&ctx.client, &ns)
            .delete_all(&delete)
            .await?;
        for n in &gone {
            event("SuccessfulDelete", format!("Deleted pod: {n}"));
        }
        ctx.expectations.expect(&key, names, gone);
        if let Some(e) = failure {
            return Err(e.into());
        }
    }

    // Status, from what the nodes run now.
    let scheduled: Vec<&Arc<Pod>> = by_node.values().filter_map(|pods| pods.first()).collect();
    let misscheduled = ctx
        .pods
        .list_namespace(&ns)
        .iter()
        .filter(|p| {
            controller_uid(&p.metadata) == Some(uid.as_str())
                && super::pods::node_name(p).is_some_and(|n| eligible.get(n) != Some(&true))
        })
        .count();
    let ready = by_node
        .values()
        .filter(|pods| pods.iter().any(|p| is_ready(p)))
        .count() as i64;
    let available_n = by_node
        .values()
        .filter(|pods| pods.iter().any(|p| available(p, min_ready, now)))
        .count() as i64;
    let updated = by_node
        .values()
        .filter(|pods| pods.iter().any(|p| is_new(p)))
        .count();
    let status = json!({
        "currentNumberScheduled": scheduled.len(),
        "numberMisscheduled": misscheduled,
        "desiredNumberScheduled": desired,
        "numberReady": ready,
        "updatedNumberScheduled": updated,
        "numberAvailable": available_n,
        "numberUnavailable": (desired - available_n).max(0),
        "observedGeneration": ds["metadata"]["generation"],
    });
    let current = &ds["status"];
    let changed = status
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| current.get(k).unwrap_or(&json!(0)) != v);
    if changed {
        ctx.client
            .patch_status(ds_kind, Some(&ns), &name, &status)
            .await?;
    }
    // Pods becoming available after minReadySeconds change nothing by themselves.
    if min_ready > 0 && available_n < ready {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// Maps any node change to every DaemonSet (a node joining, leaving or changing labels or taints concerns them all).
pub fn node_mapper(
    daemonsets: Cache,
) -> crate::runtime::controller::Mapper<crate::api::core::Node> {
    Arc::new(move |_node| {
        daemonsets
            .list()
            .iter()
            .map(|d| crate::runtime::key_of(d.as_ref()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_pod_is_pinned_to_its_node_and_tolerates_what_kubernetes_daemons_do() {
        let ds = json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}], "containers": [{"name": "c"}]}}}});
        let t = with_tolerations(&ds["spec"]["template"]);
        let p = pod_for(&ds, &t, "abc", "node-b");
        let typed: Pod = serde_json::from_value(p.clone()).unwrap();
        assert_eq!(node_of(&typed).as_deref(), Some("node-b"));
        assert_eq!(p["metadata"]["labels"][REVISION_LABEL], "abc");
        assert_eq!(p["metadata"]["labels"]["app"], "agent");
        let tols = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols[0]["key"], "gpu");
        assert!(tols
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unschedulable"));
        assert!(!tols
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/network-unavailable"));

        let info = PodInfo::new(&serde_json::from_value(json!({"spec": t["spec"]})).unwrap());
        let node = |taints: Value, labels: Value| {
            NodeInfo::new(
                &serde_json::from_value(
                    json!({"metadata": {"name": "n", "labels": labels}, "spec": {"taints": taints},
                "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                )
                .unwrap(),
            )
        };
        assert!(info.daemon_fits(&node(json!([]), json!({}))).is_ok());
        assert!(info
            .daemon_fits(&node(
                json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
                json!({})
            ))
            .is_ok());
        assert!(info
            .daemon_fits(&node(
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
                json!({})
            ))
            .unwrap_err()
            .contains("dedicated"));
    }
}
