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

use serde_json::json;

use super::pods::{available, controller_uid, is_ready, phase, Expectations};
use crate::api::apps::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
use crate::api::core::{
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodTemplateSpec,
    Toleration,
};
use crate::api::Resource;
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;
use crate::scheduler::{NodeInfo, PodInfo};

use super::{Error, Result};

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

/// The tolerations Kubernetes gives every daemon pod, so it runs where ordinary pods are kept away.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut t = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/not-ready", "NoSchedule"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(exists(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    t
}

/// The template with the daemon tolerations added (those it already has kept).
fn with_tolerations(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(spec) = t.spec.as_mut() {
        let host = spec.host_network == Some(true);
        let list = spec.tolerations.get_or_insert_with(Vec::new);
        for tol in daemon_tolerations(host) {
            if !list.contains(&tol) {
                list.push(tol);
            }
        }
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
fn pod_for(ds: &DaemonSet, template: &PodTemplateSpec, hash: &str, node: &str) -> Pod {
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(REVISION_LABEL.into(), hash.into());
    meta.generate_name = Some(format!("{}-", ds.metadata.name()));
    meta.namespace = ds.metadata.namespace.clone();
    meta.owner_references = Some(vec![ds.controller_ref()]);
    let mut spec = template.spec.clone().unwrap_or_default();
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Default::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(pin);
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

/// Where a DaemonSet's pods run: which nodes should run one, and its live pods by node (oldest first).
struct Placement {
    eligible: BTreeMap<String, bool>,
    by_node: BTreeMap<String, Vec<Arc<Pod>>>,
    /// Pods on nodes that should not run one.
    orphaned: Vec<String>,
    /// Finished pods (replaced).
    finished: Vec<String>,
}

impl Placement {
    fn desired(&self) -> i64 {
        self.eligible.values().filter(|e| **e).count() as i64
    }

    /// Nodes with at least one pod that satisfies `f`.
    fn nodes_with(&self, f: impl Fn(&Pod) -> bool) -> i64 {
        self.by_node
            .values()
            .filter(|pods| pods.iter().any(|p| f(p)))
            .count() as i64
    }
}

fn place(ds: &DaemonSet, template: &PodTemplateSpec, ctx: &Context) -> Placement {
    let uid = ds.metadata.uid.as_deref().unwrap_or("");
    let probe = PodInfo::new(&Pod {
        spec: template.spec.clone(),
        ..Default::default()
    });
    let mut eligible: BTreeMap<String, bool> = BTreeMap::new();
    for n in ctx.nodes.list() {
        let info = NodeInfo::new(&n);
        eligible.insert(info.name.clone(), probe.daemon_fits(&info).is_ok());
    }
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut orphaned: Vec<String> = Vec::new();
    let mut finished = Vec::new();
    for p in ctx.pods.list_namespace(ds.metadata.namespace()) {
        if controller_uid(&p.metadata) != Some(uid) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if matches!(phase(&p), "Succeeded" | "Failed") {
            finished.push(p.metadata.name().to_string());
            continue;
        }
        match node_of(&p) {
            Some(n) if eligible.get(&n) == Some(&true) => by_node.entry(n).or_default().push(p),
            _ => orphaned.push(p.metadata.name().to_string()),
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(|p| p.metadata.creation_timestamp);
    }
    Placement {
        eligible,
        by_node,
        orphaned,
        finished,
    }
}

/// What to change: nodes to create a pod on, and pods to delete. Finished pods are replaced; a node with two (a
/// surge aside) keeps the oldest; a rolling update replaces old pods within maxUnavailable or maxSurge.
fn plan(spec: &DaemonSetSpec, place: &Placement, hash: &str) -> (Vec<String>, Vec<String>) {
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let now = crate::sys::clock::utc_now();
    let desired = place.desired();
    let mut delete: Vec<String> = place
        .orphaned
        .iter()
        .chain(&place.finished)
        .cloned()
        .collect();
    let mut create: Vec<String> = place
        .eligible
        .iter()
        .filter(|(node, ok)| **ok && place.by_node.get(*node).is_none_or(Vec::is_empty))
        .map(|(node, _)| node.clone())
        .collect();
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
    let rolling_update = strategy.and_then(|s| s.rolling_update.as_ref());
    let max_surge = rolling_update
        .and_then(|r| r.max_surge.as_ref())
        .and_then(|v| v.scaled(desired, false))
        .unwrap_or(0);
    let unavailable_or = |default: i64| {
        rolling_update
            .and_then(|r| r.max_unavailable.as_ref())
            .and_then(|v| v.scaled(desired, true))
            .unwrap_or(default)
    };
    let max_unavailable = if max_surge > 0 {
        unavailable_or(0)
    } else {
        unavailable_or(1).max(1)
    };
    let is_new = |p: &Pod| revision_of(p) == hash;
    let avail = |p: &Pod| available(p, min_ready, now);
    let mut unavailable = desired - place.nodes_with(avail);
    let mut surging = place.by_node.values().filter(|pods| pods.len() > 1).count() as i64;
    for (node, pods) in &place.by_node {
        let news: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_new(p)).collect();
        let olds: Vec<&Arc<Pod>> = pods.iter().filter(|p| !is_new(p)).collect();
        // Duplicates of one revision: keep the oldest.
        for extra in news.iter().skip(1).chain(olds.iter().skip(1)) {
            delete.push(extra.metadata.name().to_string());
        }
        let Some(old) = olds.first() else { continue };
        if !rolling {
            continue;
        }
        let old_name = old.metadata.name().to_string();
        match news.first() {
            // Surge: the new pod is up; the old one goes once the new one is available.
            Some(new) => {
                if avail(new) || !avail(old) {
                    delete.push(old_name);
                }
            }
            None if !avail(old) => delete.push(old_name),
            None if max_surge > 0 => {
                if surging < max_surge {
                    surging += 1;
                    create.push(node.clone());
                }
            }
            // Available old pods go within maxUnavailable.
            None => {
                if unavailable < max_unavailable {
                    unavailable += 1;
                    delete.push(old_name);
                }
            }
        }
    }
    delete.sort();
    delete.dedup();
    (create, delete)
}

/// Creates and deletes what the plan says, recording what it expects to see.
async fn carry_out(
    ds: &DaemonSet,
    ctx: &Context,
    template: &PodTemplateSpec,
    hash: &str,
    (create, delete): (Vec<String>, Vec<String>),
) -> Result<()> {
    let ns = ds.metadata.namespace();
    let key = format!("daemonsets/{ns}/{}", ds.metadata.name());
    if !ctx.expectations.satisfied(&key, &ctx.pods, ns) {
        return Ok(());
    }
    let recorder = Recorder::new(&ctx.client, "daemonset-controller");
    let api = Api::<Pod>::namespaced(&ctx.client, ns);
    let made = futures::future::join_all(create.iter().map(|node| {
        let pod = pod_for(ds, template, hash, node);
        let api = api.clone();
        async move {
            api.create(&pod)
                .await
                .map(|p| p.metadata.name().to_string())
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
        recorder.normal(ds, "SuccessfulCreate", format!("Created pod: {n}"));
    }
    let gone = api.delete_all(&delete).await?;
    for n in &gone {
        recorder.normal(ds, "SuccessfulDelete", format!("Deleted pod: {n}"));
    }
    ctx.expectations.expect(&key, names, gone);
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The status, from what the nodes run now.
fn status_of(ds: &DaemonSet, ctx: &Context, place: &Placement, hash: &str) -> DaemonSetStatus {
    let min_ready = i64::from(
        ds.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    );
    let now = crate::sys::clock::utc_now();
    let uid = ds.metadata.uid.as_deref().unwrap_or("");
    let desired = place.desired();
    let misscheduled = ctx
        .pods
        .list_namespace(ds.metadata.namespace())
        .iter()
        .filter(|p| {
            controller_uid(&p.metadata) == Some(uid)
                && super::pods::node_name(p).is_some_and(|n| place.eligible.get(n) != Some(&true))
        })
        .count();
    let available_n = place.nodes_with(|p| available(p, min_ready, now));
    DaemonSetStatus {
        current_number_scheduled: place
            .by_node
            .values()
            .filter(|pods| !pods.is_empty())
            .count() as i32,
        number_misscheduled: misscheduled as i32,
        desired_number_scheduled: desired as i32,
        number_ready: place.nodes_with(is_ready) as i32,
        updated_number_scheduled: Some(place.nodes_with(|p| revision_of(p) == hash) as i32),
        number_available: Some(available_n as i32),
        number_unavailable: Some((desired - available_n).max(0) as i32),
        observed_generation: Some(ds.metadata.generation.unwrap_or(0)),
        collision_count: None,
        conditions: None,
    }
}

/// The counts a status write must change.
fn counts(s: &DaemonSetStatus) -> impl PartialEq {
    (
        s.current_number_scheduled,
        s.number_misscheduled,
        s.desired_number_scheduled,
        s.number_ready,
        s.updated_number_scheduled.unwrap_or(0),
        s.number_available.unwrap_or(0),
        s.number_unavailable.unwrap_or(0),
        s.observed_generation.unwrap_or(0),
    )
}

/// One reconcile of one DaemonSet.
pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = ds.spec.as_ref().ok_or(Error::NoSpec("DaemonSet"))?;
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let template = with_tolerations(&spec.template);
    let in_use: Vec<String> = ctx
        .pods
        .list_namespace(ds.metadata.namespace())
        .iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .map(|p| revision_of(p).to_string())
        .collect();
    let owner = super::revisions::Owner {
        kind: DaemonSet::info(),
        meta: &ds.metadata,
        template: &spec.template,
        history_limit: spec.revision_history_limit,
    };
    let (hash, _) = super::revisions::sync(&ctx.client, &ctx.revisions, owner, &in_use).await?;
    let placement = place(&ds, &template, &ctx);
    let changes = plan(spec, &placement, &hash);
    carry_out(&ds, &ctx, &template, &hash, changes).await?;
    let status = status_of(&ds, &ctx, &placement, &hash);
    if counts(&ds.status.clone().unwrap_or_default()) != counts(&status) {
        Api::<DaemonSet>::beside(&ctx.client, ds.as_ref())
            .patch_status(
                ds.metadata.name(),
                &Patch::Strategic(json!({"status": status})),
            )
            .await?;
    }
    // Pods becoming available after minReadySeconds change nothing by themselves.
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    if min_ready > 0 && status.number_available.unwrap_or(0) < status.number_ready {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// Maps any node change to every DaemonSet (a node joining, leaving or changing labels or taints concerns them all).
pub fn node_mapper(
    daemonsets: Cache<DaemonSet>,
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
        let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}], "containers": [{"name": "c"}]}}}}))
        .unwrap();
        let t = with_tolerations(&ds.spec.as_ref().unwrap().template);
        let typed = pod_for(&ds, &t, "abc", "node-b");
        assert_eq!(node_of(&typed).as_deref(), Some("node-b"));
        let p = serde_json::to_value(&typed).unwrap();
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

        let info = PodInfo::new(&Pod {
            spec: t.spec.clone(),
            ..Default::default()
        });
        let node = |taints: serde_json::Value, labels: serde_json::Value| {
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
            .to_string()
            .contains("dedicated"));
    }
}
