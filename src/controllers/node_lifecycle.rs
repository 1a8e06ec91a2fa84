//! The node lifecycle controller (kube-controller-manager's node-lifecycle, taint-eviction and pod-GC parts).
//!
//! - **Health.** A node is alive while its agent renews its Lease in `kube-node-lease` (or posts its status). When
//!   neither changes for the grace period (`--node-monitor-grace-period`, 40 s), its conditions become Unknown
//!   ("Kubelet stopped posting node status.") and its pods' Ready condition False, so Services stop sending them
//!   traffic at once. The time is this controller's own observation, not the agent's clock.
//! - **Taints.** Ready=Unknown gives `node.kubernetes.io/unreachable`, Ready=False `node.kubernetes.io/not-ready`,
//!   each as NoSchedule (no new pods) and NoExecute (eviction); Ready=True removes them.
//! - **Eviction.** A pod on a node with a NoExecute taint it does not tolerate is deleted; one that tolerates it for
//!   `tolerationSeconds` is deleted that long after the taint was added (the API server gives every pod 300 s for
//!   both taints unless it says otherwise). Deleting is graceful: on a dead node the pod stays Terminating, its
//!   ReplicaSet replaces it at once, and a StatefulSet does not (never two pods with one ordinal) until the node is
//!   deleted or the pod force-deleted.
//! - **Pod GC.** A pod bound to a node that no longer exists is force-deleted; terminated pods beyond a threshold
//!   (`--terminated-pod-gc-threshold`, 12,500) are deleted oldest first.
//!
//! It acts only through the API (node status, node taints, pod status, pod deletes), never on the node itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use serde_json::json;

use crate::api::core::{Node, Pod, Taint};
use crate::api::meta::{format_time, now, Time};
use crate::api::other::Lease;
use crate::api::Object;
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// What the controller needs and what it remembers between passes.
pub struct Context {
    pub client: Client,
    pub nodes: Cache<Node>,
    pub leases: Cache<Lease>,
    pub pods: Cache<Pod>,
    /// How long a node may go without a heartbeat before it is Unknown.
    pub grace: Duration,
    /// Terminated (Succeeded or Failed) pods kept before the oldest are deleted.
    pub terminated_threshold: usize,
    /// Per node: the last heartbeat seen (lease renewTime and Ready heartbeat) and when this controller saw it change.
    seen: Mutex<BTreeMap<String, (String, Instant)>>,
}

impl Context {
    pub fn new(
        client: Client,
        nodes: Cache<Node>,
        leases: Cache<Lease>,
        pods: Cache<Pod>,
        grace: Duration,
    ) -> Self {
        Context {
            client,
            nodes,
            leases,
            pods,
            grace,
            terminated_threshold: 12_500,
            seen: Mutex::default(),
        }
    }

    /// How often nodes are looked at: often enough to notice a dead node well within the grace period.
    fn period(&self) -> Duration {
        (self.grace / 8).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The Ready status the node should have now: Unknown when its heartbeat is older than the grace period (by this
    /// controller's clock), else what the agent reports.
    fn health(&self, node: &Node) -> String {
        let lease = self.leases.get("kube-node-lease", node.metadata.name());
        self.observe(node, lease.as_deref())
    }

    /// Records the node's heartbeat as seen in `node` and `lease`; returns its Ready status by that.
    fn observe(&self, node: &Node, lease: Option<&Lease>) -> String {
        let name = node.metadata.name();
        let ready = ready_condition(node);
        let mark = heartbeat_mark(node, lease);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .entry(name.to_string())
            .or_insert_with(|| (mark.clone(), Instant::now()));
        if entry.0 != mark {
            *entry = (mark, Instant::now());
        }
        if entry.1.elapsed() > self.grace {
            return "Unknown".into();
        }
        // A node that has not reported Ready yet (its agent is still starting) is left alone until the grace
        // period runs out.
        ready.map_or_else(String::new, |c| c.status.clone())
    }
}

/// What changes whenever the node's agent is alive: its Lease's renewTime and its Ready heartbeat.
fn heartbeat_mark(node: &Node, lease: Option<&Lease>) -> String {
    let renewed = lease
        .and_then(|l| l.spec.as_ref()?.renew_time.clone())
        .unwrap_or_default();
    let beat = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time)
        .map(|t| format_time(&t))
        .unwrap_or_default();
    format!("{renewed}|{beat}")
}

fn ready_condition(node: &Node) -> Option<&crate::api::meta::Condition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The taints this controller manages that a node with Ready status `ready` should have.
fn wanted(ready: &str) -> &'static [(&'static str, &'static str)] {
    match ready {
        "True" => &[],
        "False" => &[(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")],
        _ => &[(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")],
    }
}

/// The node's new taint list, if it must change: managed taints it should not have removed, missing ones added
/// (stamped `now`), everything else kept as it is.
pub fn retaint(current: &[Taint], ready: &str, now: Time) -> Option<Vec<Taint>> {
    let want = wanted(ready);
    let managed = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || want.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                value: None,
                effect: effect.to_string(),
                time_added: Some(now),
            });
        }
    }
    (out != current).then_some(out)
}

/// When a pod on a node with these taints must go: None if it tolerates every NoExecute taint for ever, else the
/// earliest time one of them runs out (a taint it does not tolerate at all: its time added, i.e. at once).
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: Time) -> Option<Time> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .filter_map(|t| {
            let added = t.time_added.unwrap_or(now);
            let value = t.value.as_deref().unwrap_or("");
            let matching: Vec<_> = tolerations
                .iter()
                .filter(|tol| tol.tolerates(&t.key, value, "NoExecute"))
                .collect();
            if matching.is_empty() {
                return Some(added);
            }
            // The longest toleration that applies wins; one without seconds tolerates for ever.
            if matching.iter().any(|tol| tol.toleration_seconds.is_none()) {
                return None;
            }
            let secs = matching
                .iter()
                .filter_map(|tol| tol.toleration_seconds)
                .max()
                .unwrap_or(0)
                .max(0);
            Some(added + chrono::Duration::seconds(secs))
        })
        .min()
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl std::future::Future<Output = ()> + Send) {
    ctx.nodes.wait_synced().await;
    ctx.leases.wait_synced().await;
    ctx.pods.wait_synced().await;
    let work = async {
        loop {
            pass(&ctx).await;
            tokio::time::sleep(ctx.period()).await;
        }
    };
    tokio::select! {
        biased;
        _ = stop => {}
        _ = work => {}
    }
}

/// One look at every node and pod.
async fn pass(ctx: &Context) {
    let nodes = ctx.nodes.list();
    let mut by_node: BTreeMap<&str, Vec<Arc<Pod>>> = BTreeMap::new();
    let pods = ctx.pods.list();
    for p in &pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            by_node.entry(n).or_default().push(p.clone());
        }
    }
    let now_t = now();
    for node in &nodes {
        let name = node.metadata.name();
        let ready = ctx.health(node);
        if ready.is_empty() {
            by_node.remove(name);
            continue;
        }
        let on_node = by_node.remove(name).unwrap_or_default();
        if let Err(e) = tend(ctx, node, &ready, &on_node, now_t).await {
            tracing::debug!(node = name, error = %e, "node lifecycle: will retry");
        }
    }
    // What is left is bound to nodes that do not exist.
    for (node, pods) in by_node {
        collect_orphans(ctx, node, &pods).await;
    }
    collect_terminated(ctx, &pods).await;
}

/// Brings one node's conditions and taints in line with its health, and evicts the pods its taints no longer allow.
async fn tend(
    ctx: &Context,
    node: &Node,
    ready: &str,
    pods: &[Arc<Pod>],
    now_t: Time,
) -> crate::client::Result<()> {
    let name = node.metadata.name();
    let nodes = Api::<Node>::all(&ctx.client);
    let reported = ready_condition(node).map(|c| c.status.as_str());
    if ready == "Unknown" && reported != Some("Unknown") {
        tracing::warn!(
            node = name,
            "no heartbeat within the grace period: node is Unknown"
        );
        mark_unknown(ctx, node, now_t).await?;
        mark_pods_not_ready(ctx, pods, now_t).await;
    }
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let taints = match retaint(&current, ready, now_t) {
        Some(new) => {
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": new}});
            nodes.patch(name, &Patch::Merge(patch)).await?;
            new
        }
        None => current,
    };
    evict(ctx, &taints, pods, now_t).await;
    Ok(())
}

/// The node's conditions become Unknown: the agent stopped posting its status.
async fn mark_unknown(ctx: &Context, node: &Node, now_t: Time) -> crate::client::Result<()> {
    let unknown = |mut c: crate::api::meta::Condition| {
        if c.status != "Unknown" {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c.last_transition_time = Some(now_t);
        }
        c
    };
    let mut conditions: Vec<_> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(unknown)
        .collect();
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(unknown(crate::api::meta::Condition {
            type_: "Ready".into(),
            ..Default::default()
        }));
    }
    Api::<Node>::all(&ctx.client)
        .patch_status(
            node.metadata.name(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await?;
    Recorder::new(&ctx.client, "node-controller").normal(
        node,
        "NodeNotReady",
        format!("Node {} status is now: NodeNotReady", node.metadata.name()),
    );
    Ok(())
}

/// Pods of a node that stopped reporting are not Ready: endpoints drop them at once.
async fn mark_pods_not_ready(ctx: &Context, pods: &[Arc<Pod>], now_t: Time) {
    for p in pods.iter().filter(|p| !terminating(p)) {
        let api = Api::<Pod>::namespaced(&ctx.client, p.metadata.namespace());
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
            "reason": "NodeNotReady", "lastTransitionTime": format_time(&now_t)}]}});
        if let Err(e) = api
            .patch_status(p.metadata.name(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(pod = %p.key(), error = %e, "marking a pod not ready");
        }
    }
}

/// Deletes the pods whose tolerations of the node's NoExecute taints have run out.
async fn evict(ctx: &Context, taints: &[Taint], pods: &[Arc<Pod>], now_t: Time) {
    if !taints.iter().any(|t| t.effect == "NoExecute") {
        return;
    }
    let recorder = Recorder::new(&ctx.client, "taint-eviction-controller");
    for p in pods.iter().filter(|p| !terminating(p)) {
        if eviction_time(p, taints, now_t).is_none_or(|t| t > now_t) {
            continue;
        }
        let api = Api::<Pod>::namespaced(&ctx.client, p.metadata.namespace());
        match api.delete(p.metadata.name(), "Background").await {
            Ok(()) => {
                tracing::info!(pod = %p.key(), "evicted: the node's NoExecute taint is not tolerated any more");
                recorder.normal(
                    p.as_ref(),
                    "TaintManagerEviction",
                    format!("Marking for deletion Pod {}", p.key()),
                );
            }
            Err(e) => tracing::debug!(pod = %p.key(), error = %e, "eviction failed"),
        }
    }
}

/// Force-deletes pods bound to a node that does not exist (asked of the API server, not only the cache, so a node
/// that was just created is never mistaken for a missing one).
async fn collect_orphans(ctx: &Context, node: &str, pods: &[Arc<Pod>]) {
    match Api::<Node>::all(&ctx.client).get_opt(node).await {
        Ok(None) => {}
        Ok(Some(_)) | Err(_) => return,
    }
    for p in pods {
        let api = Api::<Pod>::namespaced(&ctx.client, p.metadata.namespace());
        let force = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
        match api.delete_with(p.metadata.name(), &force).await {
            Ok(()) => tracing::info!(pod = %p.key(), node, "deleted: its node is gone"),
            Err(e) => tracing::debug!(pod = %p.key(), error = %e, "pod GC failed"),
        }
    }
}

/// Deletes the oldest terminated pods beyond the threshold.
async fn collect_terminated(ctx: &Context, pods: &[Arc<Pod>]) {
    let mut done: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| !terminating(p) && matches!(phase(p), "Succeeded" | "Failed"))
        .collect();
    if done.len() <= ctx.terminated_threshold {
        return;
    }
    done.sort_by_key(|p| p.metadata.creation_timestamp);
    let excess = done.len() - ctx.terminated_threshold;
    for p in done.into_iter().take(excess) {
        let api = Api::<Pod>::namespaced(&ctx.client, p.metadata.namespace());
        if let Err(e) = api.delete(p.metadata.name(), "Background").await {
            tracing::debug!(pod = %p.key(), error = %e, "terminated-pod GC failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::core::Toleration;

    fn at(secs: i64) -> Time {
        chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn taint(key: &str, effect: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: Some(at(added)),
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [], "tolerations": tolerations}}))
        .unwrap()
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            value: None,
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
        }
    }

    fn node(ready: Option<&str>) -> Node {
        let conditions: Vec<serde_json::Value> = ready
            .map(|r| vec![json!({"type": "Ready", "status": r, "lastHeartbeatTime": "2026-01-01T00:00:00Z"})])
            .unwrap_or_default();
        serde_json::from_value(
            json!({"metadata": {"name": "n"}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    #[test]
    fn health_waits_the_grace_period_and_never_judges_a_node_that_has_not_reported() {
        let client = Client::new("https://127.0.0.1:9", "t", None).unwrap();
        let ctx = Context::new(
            client,
            Cache::of(Vec::<Node>::new()),
            Cache::of(Vec::<Lease>::new()),
            Cache::of(Vec::<Pod>::new()),
            Duration::from_millis(30),
        );
        // Registered but not reported Ready yet: no opinion (no taints, no Unknown) within the grace period.
        assert_eq!(ctx.observe(&node(None), None), "");
        // What the agent reports, while its heartbeat is fresh.
        let reported = node(Some("False"));
        let fresh = ctx.observe(&reported, None);
        assert_eq!(fresh, "False");
        // No change of heartbeat for longer than the grace period: Unknown, whatever it last said.
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(ctx.observe(&reported, None), "Unknown");
        // A renewed Lease is a heartbeat: alive again.
        let lease: Lease = serde_json::from_value(
            json!({"metadata": {"name": "n", "namespace": "kube-node-lease"},
            "spec": {"renewTime": "2026-01-01T00:00:05.000000Z"}}),
        )
        .unwrap();
        assert_eq!(ctx.observe(&reported, Some(&lease)), "False");
    }

    #[test]
    fn taints_follow_readiness_and_keep_the_others() {
        let cordon = taint("node.kubernetes.io/unschedulable", "NoSchedule", 0);
        let unknown = retaint(std::slice::from_ref(&cordon), "Unknown", at(5)).unwrap();
        assert_eq!(unknown.len(), 3);
        assert!(unknown.contains(&cordon));
        assert!(unknown.iter().any(|t| t.key == UNREACHABLE
            && t.effect == "NoExecute"
            && t.time_added == Some(at(5))));
        // Nothing changes on a second look.
        assert_eq!(retaint(&unknown, "Unknown", at(9)), None);
        // NotReady swaps unreachable for not-ready; Ready removes them and keeps the cordon.
        let not_ready = retaint(&unknown, "False", at(10)).unwrap();
        assert!(not_ready.iter().all(|t| t.key != UNREACHABLE));
        assert_eq!(not_ready.iter().filter(|t| t.key == NOT_READY).count(), 2);
        assert_eq!(retaint(&not_ready, "True", at(11)).unwrap(), vec![cordon]);
        assert_eq!(retaint(&[], "True", at(11)), None);
    }

    #[test]
    fn eviction_waits_for_the_longest_matching_toleration() {
        let taints = [
            taint(UNREACHABLE, "NoSchedule", 100),
            taint(UNREACHABLE, "NoExecute", 100),
        ];
        // No toleration: at once (the taint's time).
        assert_eq!(eviction_time(&pod(vec![]), &taints, at(200)), Some(at(100)));
        // tolerationSeconds counts from when the taint was added.
        let p = pod(vec![tol(UNREACHABLE, Some(10)), tol(UNREACHABLE, Some(30))]);
        assert_eq!(eviction_time(&p, &taints, at(200)), Some(at(130)));
        // Without seconds: never.
        assert_eq!(
            eviction_time(&pod(vec![tol(UNREACHABLE, None)]), &taints, at(200)),
            None
        );
        // A toleration of another taint does not help; NoSchedule taints never evict.
        assert_eq!(
            eviction_time(&pod(vec![tol(NOT_READY, None)]), &taints, at(200)),
            Some(at(100))
        );
        assert_eq!(eviction_time(&pod(vec![]), &taints[..1], at(200)), None);
    }
}
