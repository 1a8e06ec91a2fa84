//! The ReplicaSet controller: keeps `spec.replicas` pods of the template running. It adopts orphan pods its
//! selector matches and releases owned pods that stop matching (through the controller ownerReference), creates
//! missing pods from the template, deletes surplus ones least valuable first (unscheduled, then pending, then not
//! ready, then newest), and reports the status counts. Expectations stop it from acting twice on a stale cache.

use std::sync::Arc;
use std::time::Duration;

use super::pods::{self, controller_uid, is_active, is_ready, ready_since, Expectations};
use crate::api::apps::{ReplicaSet, ReplicaSetStatus};
use crate::api::core::{Pod, ReplicationController};
use crate::api::registry::KindInfo;
use crate::api::selector::Selector;
use crate::api::{Object, Resource};
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client};
use crate::runtime::Action;

use super::{Error, Result};

/// What the ReplicaSet controller works with.
pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub expectations: Expectations,
}

/// The ReplicaSet's status as its pods make it.
pub fn status_of(rs: &ReplicaSet, owned: &[&Pod]) -> ReplicaSetStatus {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .map(crate::api::apps::template_labels)
        .unwrap_or_default();
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0) as i64;
    let now = crate::sys::clock::utc_now();
    let active: Vec<&&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let fully = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| {
            is_ready(p)
                && ready_since(p).is_none_or(|t| now - t >= chrono::Duration::seconds(min_ready))
        })
        .count();
    let terminating = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count();
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        terminating_replicas: Some(terminating as i32),
        observed_generation: Some(rs.metadata.generation.unwrap_or(0)),
        conditions: None,
    }
}

/// Maps a pod without a controller to the ReplicaSets of its namespace whose selector matches it (candidates to
/// adopt it).
pub fn orphan_mapper<K: Resource>(
    owners: Cache<K>,
    selector: fn(&K) -> Option<Selector>,
) -> crate::runtime::controller::Mapper<Pod> {
    Arc::new(move |pod: &Pod| {
        if controller_uid(&pod.metadata).is_some() {
            return Vec::new();
        }
        let labels = pod.metadata.labels();
        owners
            .list_namespace(pod.metadata.namespace())
            .into_iter()
            .filter(|o| selector(o).is_some_and(|s| !s.is_empty() && s.matches(&labels)))
            .map(|o| o.key())
            .collect()
    })
}

/// A ReplicaSet's selector (for [`orphan_mapper`]).
pub fn rs_selector(rs: &ReplicaSet) -> Option<Selector> {
    Selector::from_label_selector(&rs.spec.as_ref()?.selector).ok()
}

/// A ReplicationController's selector, which defaults to its template's labels (for [`orphan_mapper`]).
pub fn rc_selector(rc: &ReplicationController) -> Option<Selector> {
    let spec = rc.spec.as_ref()?;
    let labels = spec.selector.clone().or_else(|| {
        spec.template
            .as_ref()
            .map(crate::api::apps::template_labels)
    })?;
    Some(Selector::from_map(&labels))
}

/// One reconcile of one ReplicaSet.
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action> {
    sync(&rs, ReplicaSet::info(), ctx).await
}

/// One reconcile of one ReplicationController: the same work, with a map selector (defaulting to the template's
/// labels).
pub async fn reconcile_rc(rc: Arc<ReplicationController>, ctx: Arc<Context>) -> Result<Action> {
    let spec = rc
        .spec
        .clone()
        .ok_or(Error::NoSpec("ReplicationController"))?;
    let labels = spec
        .template
        .as_ref()
        .map(crate::api::apps::template_labels)
        .unwrap_or_default();
    let rs = ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: Some(crate::api::apps::ReplicaSetSpec {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            selector: crate::api::meta::LabelSelector {
                match_labels: Some(spec.selector.clone().unwrap_or(labels)),
                match_expressions: None,
            },
            template: spec.template.clone(),
        }),
        status: rc
            .status
            .as_ref()
            .map(|st| crate::api::apps::ReplicaSetStatus {
                replicas: st.replicas,
                fully_labeled_replicas: st.fully_labeled_replicas,
                ready_replicas: st.ready_replicas,
                available_replicas: st.available_replicas,
                observed_generation: st.observed_generation,
                ..Default::default()
            }),
        ..Default::default()
    };
    sync(&rs, ReplicationController::info(), ctx).await
}

/// Keeps the pods of a ReplicaSet - or of a ReplicationController in ReplicaSet form - at the desired count.
async fn sync(rs: &ReplicaSet, owner: &'static KindInfo, ctx: Arc<Context>) -> Result<Action> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = rs.spec.as_ref().ok_or(Error::NoSpec("ReplicaSet"))?;
    let ns = rs.metadata.namespace().to_string();
    let name = rs.metadata.name().to_string();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let key = format!("{}/{ns}/{name}", owner.plural);
    let selector = Selector::from_label_selector(&spec.selector)?;
    let owner_ref = crate::api::meta::OwnerReference {
        api_version: owner.api_version(),
        kind: owner.kind.to_string(),
        ..rs.controller_ref()
    };

    let owned = claim_pods(&ctx, &ns, &uid, &selector, &owner_ref).await?;
    // Waiting for the informer to show what was just created or deleted: the events that will show it wake this
    // key, and a look a second later covers a wait that no event ends (a lost create answer, a missed event).
    let waiting = !ctx.expectations.satisfied(&key, &ctx.pods, &ns);
    if !waiting {
        let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
        scale(&ctx, rs, owner, &key, &owned, replicas, owner_ref).await?;
    }

    let refs: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();
    let mut status = status_of(rs, &refs);
    if owner.kind != "ReplicaSet" {
        status.terminating_replicas = None;
    }
    let current = rs.status.clone().unwrap_or_default();
    let counts = |s: &ReplicaSetStatus| {
        (
            s.replicas,
            s.fully_labeled_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.observed_generation.unwrap_or(0),
        )
    };
    if counts(&current) != counts(&status) {
        let status = serde_json::to_value(&status).unwrap_or_default();
        ctx.client
            .patch_status(owner, Some(&ns), &name, &status)
            .await?;
    }
    if waiting {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Pods that become available after minReadySeconds change no object: look again then.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && status.available_replicas != status.ready_replicas {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// Adopts the orphans `selector` matches and releases owned pods it no longer matches; returns the pods owned.
async fn claim_pods(
    ctx: &Context,
    ns: &str,
    uid: &str,
    selector: &Selector,
    owner_ref: &crate::api::meta::OwnerReference,
) -> Result<Vec<Arc<Pod>>> {
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in ctx.pods.list_namespace(ns) {
        let matches = selector.matches(&pod.metadata.labels());
        let refs = pod.metadata.owner_references.clone().unwrap_or_default();
        match controller_uid(&pod.metadata) {
            Some(u) if u == uid && matches => owned.push(pod),
            Some(u) if u == uid => {
                let kept = refs.into_iter().filter(|r| r.uid != uid).collect();
                pods::set_owners(&ctx.client, &pod, kept).await?;
            }
            None if matches && is_active(&pod) => {
                let mut refs = refs;
                refs.push(owner_ref.clone());
                owned.push(Arc::new(pods::set_owners(&ctx.client, &pod, refs).await?));
            }
            _ => {}
        }
    }
    Ok(owned)
}

/// Creates (at most 500 at once) or deletes active pods toward `replicas`, with an event per pod and the
/// expectations that keep the next pass from acting before the informer has seen them.
async fn scale(
    ctx: &Context,
    rs: &ReplicaSet,
    owner: &'static KindInfo,
    key: &str,
    owned: &[Arc<Pod>],
    replicas: usize,
    owner_ref: crate::api::meta::OwnerReference,
) -> Result<()> {
    let ns = rs.metadata.namespace();
    let recorder = Recorder::new(
        &ctx.client,
        if owner.kind == "ReplicaSet" {
            "replicaset-controller"
        } else {
            "replication-controller"
        },
    );
    let events = |reason: &'static str, verb: &str, names: &[String]| {
        for n in names {
            // Events name the real owner kind (a ReplicationController shows as itself).
            let message = format!("{verb} pod: {n}");
            recorder.publish(owner, &rs.metadata, "Normal", reason, message);
        }
    };
    let active: Vec<&Pod> = owned
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| is_active(p))
        .collect();
    let pods_api = Api::<Pod>::namespaced(&ctx.client, ns);
    if active.len() < replicas {
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        let name = rs.metadata.name();
        let pod = pods::from_template(&template, &format!("{name}-"), ns, owner_ref);
        let creates = (replicas - active.len()).min(500);
        let results = futures::future::join_all((0..creates).map(|_| pods_api.create(&pod))).await;
        let mut made = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => made.push(p.metadata.name().to_string()),
                Err(e) => failure = Some(e),
            }
        }
        tracing::info!(created = made.len(), "created pods");
        events("SuccessfulCreate", "Created", &made);
        ctx.expectations.expect(key, made, Vec::new());
        if let Some(e) = failure {
            if e.transient() {
                ctx.expectations.expect_unknown_adds(key);
            }
            return Err(e.into());
        }
    } else if active.len() > replicas {
        let doomed = pods::pods_to_delete(active.clone(), active.len() - replicas);
        // Each delete is expected unless the server refused it: one whose answer was lost may well have happened,
        // and a pass on a cache that has not seen it yet would delete another pod in its place.
        let mut expected = Vec::new();
        let mut failure = None;
        for name in &doomed {
            match pods_api.delete(name, "Background").await {
                Ok(()) => expected.push(name.clone()),
                Err(e) if e.code() == Some(404) => {}
                Err(e) => {
                    if e.transient() {
                        expected.push(name.clone());
                    }
                    failure = Some(e);
                    break;
                }
            }
        }
        tracing::info!(deleted = expected.len(), "deleted pods");
        events("SuccessfulDelete", "Deleted", &expected);
        ctx.expectations.expect(key, Vec::new(), expected);
        if let Some(e) = failure {
            return Err(e.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, labels: serde_json::Value, ready_at: Option<String>, deleting: bool) -> Pod {
        let mut p = json!({"metadata": {"name": name, "labels": labels}, "spec": {"containers": []},
            "status": {"phase": "Running"}});
        if let Some(t) = ready_at {
            p["status"]["conditions"] =
                json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
        }
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn status_counts_ready_available_and_labels() {
        let rs: ReplicaSet =
            serde_json::from_value(json!({"metadata": {"name": "r", "generation": 3},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "minReadySeconds": 3600,
                     "template": {"metadata": {"labels": {"a": "b", "v": "1"}}}}}))
            .unwrap();
        let long_ago = Some("2020-01-01T00:00:00Z".to_string());
        let just_now = Some(crate::api::meta::format_time(&crate::api::meta::now()));
        let p1 = pod("p1", json!({"a": "b", "v": "1"}), long_ago.clone(), false);
        let p2 = pod("p2", json!({"a": "b"}), just_now, false);
        let gone = pod("p3", json!({"a": "b"}), long_ago, true);
        let s = status_of(&rs, &[&p1, &p2, &gone]);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"replicas": 2, "fullyLabeledReplicas": 1, "readyReplicas": 2, "availableReplicas": 1,
            "terminatingReplicas": 1, "observedGeneration": 3})
        );
    }

    #[test]
    fn orphans_map_to_the_matching_owner_in_their_namespace() {
        let rs = |name: &str, ns: &str, app: &str| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}}}))
            .unwrap()
        };
        let owners = Cache::of([
            rs("web", "a", "web"),
            rs("db", "a", "db"),
            rs("web", "b", "web"),
        ]);
        let map = orphan_mapper(owners, rs_selector);
        let mut orphan = pod("p", json!({"app": "web"}), None, false);
        orphan.metadata.namespace = Some("a".into());
        assert_eq!(map(&orphan), ["a/web"]);
        orphan.metadata.owner_references = Some(vec![crate::api::meta::OwnerReference {
            controller: Some(true),
            uid: "x".into(),
            ..Default::default()
        }]);
        assert!(
            map(&orphan).is_empty(),
            "a pod with a controller is nobody's orphan"
        );
    }
}
