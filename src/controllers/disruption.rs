//! The disruption controller (kube-controller-manager's): keeps each PodDisruptionBudget's status - how many of its
//! pods are expected (the scale of their controllers: a Deployment's, StatefulSet's, ReplicaSet's or
//! ReplicationController's replicas; bare pods count themselves), how many are healthy (Ready, not terminating, not
//! just evicted), how many must stay healthy (`minAvailable`, or expected minus `maxUnavailable`; percentages round
//! up) and so how many disruptions are allowed now. The `pods/eviction` subresource spends those disruptions and
//! records the pods in `disruptedPods`; this controller forgets them once they are gone (or after two minutes, if
//! the delete never happened).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::pods::is_ready;
use super::Result;
use crate::api::apps::{Deployment, ReplicaSet, StatefulSet};
use crate::api::core::{Pod, ReplicationController};
use crate::api::meta::{now, Condition, Time};
use crate::api::other::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use crate::api::selector::Selector;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

/// How long an eviction's entry in `disruptedPods` holds a disruption if the pod is never deleted.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub replicasets: Cache<ReplicaSet>,
    pub deployments: Cache<Deployment>,
    pub statefulsets: Cache<StatefulSet>,
    pub rcs: Cache<ReplicationController>,
}

impl Context {
    /// The replicas the controller of `pod` wants, with that controller's uid (a ReplicaSet of a Deployment answers
    /// for the Deployment, so a rollout's two ReplicaSets count once).
    fn scale_of(&self, pod: &Pod) -> Option<(String, i64)> {
        let ns = pod.metadata.namespace();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))?;
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = self.replicasets.get(ns, &owner.name)?;
                let deployment = rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .and_then(|o| self.deployments.get(ns, &o.name));
                match deployment {
                    Some(d) => Some((
                        d.metadata.uid.clone().unwrap_or_default(),
                        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as i64,
                    )),
                    None => Some((
                        owner.uid.clone(),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as i64,
                    )),
                }
            }
            "StatefulSet" => {
                let sts = self.statefulsets.get(ns, &owner.name)?;
                let n = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Some((owner.uid.clone(), n as i64))
            }
            "ReplicationController" => {
                let rc = self.rcs.get(ns, &owner.name)?;
                let n = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Some((owner.uid.clone(), n as i64))
            }
            _ => None,
        }
    }
}

/// The budget's numbers for its pods, given the scales of their controllers.
pub fn compute(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    expected: i64,
    disrupted: &BTreeMap<String, Time>,
) -> PodDisruptionBudgetStatus {
    let spec = pdb.spec.clone().unwrap_or_default();
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter(|p| !disrupted.contains_key(p.metadata.name()))
        .count() as i64;
    let desired = match (&spec.min_available, &spec.max_unavailable) {
        (Some(min), _) => min.scaled(expected, true).unwrap_or(0),
        (None, Some(max)) => expected - max.scaled(expected, true).unwrap_or(0),
        (None, None) => 0,
    }
    .max(0);
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let condition = Condition {
        type_: "DisruptionAllowed".into(),
        status: if allowed > 0 { "True" } else { "False" }.into(),
        reason: Some(
            if allowed > 0 {
                "SufficientPods"
            } else {
                "InsufficientPods"
            }
            .into(),
        ),
        message: Some(String::new()),
        observed_generation: pdb.metadata.generation,
        ..Default::default()
    };
    PodDisruptionBudgetStatus {
        observed_generation: pdb.metadata.generation,
        disrupted_pods: (!disrupted.is_empty()).then(|| disrupted.clone()),
        disruptions_allowed: allowed as i32,
        current_healthy: healthy as i32,
        desired_healthy: desired as i32,
        expected_pods: expected as i32,
        conditions: Some(vec![condition]),
    }
}

pub async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.metadata.namespace();
    let selector = match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(ls) => Some(Selector::from_label_selector(ls)?),
        None => None,
    };
    let all = ctx.pods.list_namespace(ns);
    let pods: Vec<&Pod> = all
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            selector
                .as_ref()
                .is_some_and(|s| s.matches(&p.metadata.labels()))
        })
        .collect();
    // Expected pods: the scales of their controllers, each once; a pod without one counts itself.
    let mut counted = HashSet::new();
    let mut expected = 0;
    for p in &pods {
        match ctx.scale_of(p) {
            Some((uid, n)) => {
                if counted.insert(uid) {
                    expected += n;
                }
            }
            None => expected += 1,
        }
    }
    // Evictions still in flight: the pod exists, is not being deleted yet, and the grant is recent.
    let now_t = now();
    let live: HashSet<&str> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.metadata.name())
        .collect();
    let disrupted: BTreeMap<String, Time> = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            live.contains(name.as_str())
                && (now_t - *at).to_std().unwrap_or_default() < DELETION_TIMEOUT
        })
        .collect();
    let status = compute(&pdb, &pods, expected, &disrupted);
    let current = pdb.status.clone().unwrap_or_default();
    let same = |a: &PodDisruptionBudgetStatus, b: &PodDisruptionBudgetStatus| {
        (
            a.observed_generation,
            a.disruptions_allowed,
            a.current_healthy,
            a.desired_healthy,
            a.expected_pods,
            &a.disrupted_pods,
        ) == (
            b.observed_generation,
            b.disruptions_allowed,
            b.current_healthy,
            b.desired_healthy,
            b.expected_pods,
            &b.disrupted_pods,
        )
    };
    if !same(&current, &status) {
        let api = Api::<PodDisruptionBudget>::namespaced(&ctx.client, ns);
        // The whole status, replacing disruptedPods (a merge patch would keep entries this pass dropped).
        let mut body = json!({"metadata": {"resourceVersion": pdb.metadata.resource_version},
            "status": status});
        if status.disrupted_pods.is_none() {
            body["status"]["disruptedPods"] = serde_json::Value::Null;
        }
        api.patch_status(pdb.metadata.name(), &Patch::Merge(body))
            .await?;
    }
    // Grants that time out need a look then.
    if disrupted.is_empty() {
        Ok(Action::await_change())
    } else {
        Ok(Action::requeue(Duration::from_secs(10)))
    }
}

/// Maps a pod to the budgets in its namespace whose selectors cover it.
pub fn pod_mapper(budgets: Cache<PodDisruptionBudget>) -> crate::runtime::controller::Mapper<Pod> {
    Arc::new(move |pod: &Pod| {
        let labels = pod.metadata.labels();
        budgets
            .list_namespace(pod.metadata.namespace())
            .iter()
            .filter(|b| {
                b.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|ls| Selector::from_label_selector(ls).ok())
                    .is_some_and(|s| s.matches(&labels))
            })
            .map(|b| crate::runtime::key_of(b.as_ref()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(
            json!({"metadata": {"name": "b", "namespace": "d", "generation": 2},
            "spec": spec}),
        )
        .unwrap()
    }

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
            "spec": {"containers": []},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    #[test]
    fn allowed_disruptions_from_min_available_and_max_unavailable() {
        let pods = [
            pod("a", true),
            pod("b", true),
            pod("c", true),
            pod("d", false),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let none = BTreeMap::new();
        let s = compute(&pdb(json!({"minAvailable": 2})), &refs, 4, &none);
        assert_eq!(
            (s.current_healthy, s.desired_healthy, s.disruptions_allowed),
            (3, 2, 1)
        );
        assert_eq!(s.observed_generation, Some(2));
        // maxUnavailable 25% of 4 = 1 -> 3 must stay healthy.
        let s = compute(&pdb(json!({"maxUnavailable": "25%"})), &refs, 4, &none);
        assert_eq!((s.desired_healthy, s.disruptions_allowed), (3, 0));
        // minAvailable 50% of 3 rounds up to 2.
        let s = compute(&pdb(json!({"minAvailable": "50%"})), &refs, 3, &none);
        assert_eq!(s.desired_healthy, 2);
        // A pod being evicted no longer counts as healthy.
        let taken: BTreeMap<String, Time> = [("a".to_string(), now())].into();
        let s = compute(&pdb(json!({"minAvailable": 2})), &refs, 4, &taken);
        assert_eq!((s.current_healthy, s.disruptions_allowed), (2, 0));
        assert!(s.disrupted_pods.is_some());
        // Nothing expected: nothing allowed.
        let s = compute(&pdb(json!({"maxUnavailable": 1})), &[], 0, &none);
        assert_eq!(s.disruptions_allowed, 0);
    }
}
