//! The ReplicaSet controller: keeps `spec.replicas` pods of the template running. It adopts orphan pods its
//! selector matches and releases owned pods that stop matching (through the controller ownerReference), creates
//! missing pods from the template, deletes surplus ones least valuable first (unscheduled, then pending, then not
//! ready, then newest), and reports the status counts. Expectations stop it from acting twice on a stale cache.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::apps::ReplicaSet;
use crate::api::registry;
use crate::api::selector::{labels_of, Selector};
use crate::client::informer::Cache;
use crate::client::Client;
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ReplicaSet has no spec")]
    NoSpec,
    #[error("invalid selector: {0}")]
    Selector(#[from] crate::api::selector::Error),
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Pods created or deleted but not yet seen (or seen gone) in the cache, per ReplicaSet.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    adds: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(60);

impl Expectations {
    pub(crate) fn satisfied(&self, key: &str, pods: &Cache, ns: &str) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = m.get_mut(key) else { return true };
        p.adds.retain(|n| pods.get(ns, n).is_none());
        p.deletes.retain(|n| {
            pods.get(ns, n)
                .is_some_and(|pod| pod.pointer("/metadata/deletionTimestamp").is_none())
        });
        if (p.adds.is_empty() && p.deletes.is_empty()) || p.since.elapsed() > EXPECTATIONS_TIMEOUT {
            m.remove(key);
            return true;
        }
        false
    }

    pub(crate) fn expect(&self, key: &str, adds: Vec<String>, deletes: Vec<String>) {
        if adds.is_empty() && deletes.is_empty() {
            return;
        }
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let p = m.entry(key.to_string()).or_insert_with(|| Pending {
            adds: HashSet::new(),
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        p.adds.extend(adds);
        p.deletes.extend(deletes);
        p.since = Instant::now();
    }
}

/// What the ReplicaSet controller works with.
pub struct Context {
    pub client: Client,
    pub pods: Cache,
    pub expectations: Expectations,
}

pub(crate) fn controller_uid(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .and_then(|o| o["uid"].as_str())
}

pub(crate) fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a pod is available: Ready (and not being deleted) for at least `min_ready` seconds.
pub(crate) fn available(pod: &Value, min_ready: i64, now: chrono::DateTime<chrono::Utc>) -> bool {
    if !is_ready(pod) || pod["metadata"]["deletionTimestamp"].is_string() {
        return false;
    }
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_none_or(|t| now - t.with_timezone(&chrono::Utc) >= chrono::Duration::seconds(min_ready))
}

fn ready_since(pod: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?
        .get("lastTransitionTime")?
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// Deletion preference, lower first: unscheduled, pending, not ready, then the newest.
fn deletion_rank(pod: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let created = pod
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (
        u8::from(scheduled),
        phase,
        u8::from(is_ready(pod)),
        std::cmp::Reverse(created),
    )
}

/// Picks the pods to delete to go down by `n`.
pub fn pods_to_delete(mut pods: Vec<&Value>, n: usize) -> Vec<String> {
    pods.sort_by_key(|p| deletion_rank(p));
    pods.into_iter()
        .take(n)
        .filter_map(|p| {
            p.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect()
}

/// The ReplicaSet's status as its pods make it.
pub fn status_of(rs: &ReplicaSet, owned: &[&Value]) -> Value {
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
    let now = chrono::Utc::now();
    let active: Vec<&&Value> = owned.iter().filter(|p| is_active(p)).collect();
    let fully = active
        .iter()
        .filter(|p| {
            template_labels
                .iter()
                .all(|(k, v)| labels_of(p).get(k) == Some(v))
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
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_some())
        .count();
    json!({
        "replicas": active.len(), "fullyLabeledReplicas": fully, "readyReplicas": ready,
        "availableReplicas": available, "terminatingReplicas": terminating,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
    })
}

/// Maps a pod without a controller to the ReplicaSets of its namespace whose selector matches it (candidates to
/// adopt it).
pub fn orphan_mapper(replicasets: Cache) -> crate::runtime::controller::Mapper {
    Arc::new(move |pod: &Value| {
        if controller_uid(pod).is_some() {
            return Vec::new();
        }
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let labels = labels_of(pod);
        replicasets
            .list()
            .into_iter()
            .filter(|rs| rs.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            .filter(|rs| {
                rs.pointer("/spec/selector")
                    .and_then(|s| {
                        serde_json::from_value::<crate::api::meta::LabelSelector>(s.clone()).ok()
                    })
                    .and_then(|s| Selector::from_label_selector(&s).ok())
                    .is_some_and(|s| !s.is_empty() && s.matches(&labels))
            })
            .map(|rs| crate::runtime::key_of(&rs))
            .collect()
    })
}

/// Replaces a pod's ownerReferences (guarded by its resourceVersion) and returns the updated pod.
async fn set_owners(client: &Client, pod: &Value, refs: Vec<Value>) -> Result<Value> {
    let pod_kind = registry::lookup("pods").expect("pods kind");
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let rv = pod.pointer("/metadata/resourceVersion");
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rv}});
    Ok(client
        .patch(pod_kind, ns, name, "application/merge-patch+json", &patch)
        .await?)
}

/// One reconcile of one ReplicaSet.
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action> {
    sync(&rs, "replicasets", ctx).await
}

/// One reconcile of one ReplicationController: the same work, with a map selector (defaulting to the template's
/// labels).
pub async fn reconcile_rc(
    rc: Arc<crate::api::core::ReplicationController>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let spec = rc.spec.clone().ok_or(Error::NoSpec)?;
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
    sync(&rs, "replicationcontrollers", ctx).await
}

/// Keeps the pods of a ReplicaSet - or of a ReplicationController in ReplicaSet form - at the desired count.
async fn sync(rs: &ReplicaSet, owner_plural: &str, ctx: Arc<Context>) -> Result<Action> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = rs.spec.as_ref().ok_or(Error::NoSpec)?;
    let ns = rs.metadata.namespace().to_string();
    let name = rs.metadata.name().to_string();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let key = format!("{owner_plural}/{ns}/{name}");
    let selector = Selector::from_label_selector(&spec.selector)?;
    let pod_kind = registry::lookup("pods").expect("pods kind");
    let rs_kind = registry::lookup(owner_plural).expect("owner kind");
    let all: Vec<Arc<Value>> = ctx
        .pods
        .list()
        .into_iter()
        .filter(|p| p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(&ns))
        .collect();

    // Adopt orphans the selector matches; release owned pods it no longer matches.
    let owner_ref = json!({"apiVersion": rs_kind.api_version(), "kind": rs_kind.kind, "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true});
    let mut owned: Vec<Arc<Value>> = Vec::new();
    for pod in &all {
        let matches = selector.matches(&labels_of(pod));
        let refs: Vec<Value> = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        match controller_uid(pod) {
            Some(u) if u == uid && matches => owned.push(pod.clone()),
            Some(u) if u == uid => {
                let kept: Vec<Value> = refs
                    .into_iter()
                    .filter(|r| r["uid"] != uid.as_str())
                    .collect();
                set_owners(&ctx.client, pod, kept).await?;
            }
            None if matches && is_active(pod) => {
                let mut refs = refs;
                refs.push(owner_ref.clone());
                owned.push(Arc::new(set_owners(&ctx.client, pod, refs).await?));
            }
            _ => {}
        }
    }

    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let active: Vec<&Value> = owned
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| is_active(p))
        .collect();
    if ctx.expectations.satisfied(&key, &ctx.pods, &ns) {
        if active.len() < replicas {
            let template = spec.template.clone().unwrap_or_default();
            let meta = template.metadata.clone().unwrap_or_default();
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": meta.labels,
                    "annotations": meta.annotations, "ownerReferences": [owner_ref]},
                "spec": template.spec});
            let creates = (replicas - active.len()).min(500);
            let results = futures::future::join_all(
                (0..creates).map(|_| ctx.client.create(pod_kind, Some(&ns), &pod)),
            )
            .await;
            let mut made = Vec::new();
            let mut failure = None;
            for r in results {
                match r {
                    Ok(p) => made.extend(
                        p.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .map(String::from),
                    ),
                    Err(e) => failure = Some(e),
                }
            }
            tracing::info!(created = made.len(), "created pods");
            pod_events(
                &ctx.client,
                &owner_ref,
                &ns,
                "SuccessfulCreate",
                "Created",
                &made,
            );
            ctx.expectations.expect(&key, made, Vec::new());
            if let Some(e) = failure {
                return Err(e.into());
            }
        } else if active.len() > replicas {
            let doomed = pods_to_delete(active.clone(), active.len() - replicas);
            super::delete_all(&ctx.client, pod_kind, &ns, &doomed).await?;
            tracing::info!(deleted = doomed.len(), "deleted pods");
            pod_events(
                &ctx.client,
                &owner_ref,
                &ns,
                "SuccessfulDelete",
                "Deleted",
                &doomed,
            );
            ctx.expectations.expect(&key, Vec::new(), doomed);
        }
    }

    let refs: Vec<&Value> = owned.iter().map(|p| p.as_ref()).collect();
    let status = status_of(rs, &refs);
    let current = serde_json::to_value(&rs.status).unwrap_or(Value::Null);
    let mut status = status;
    if owner_plural == "replicationcontrollers" {
        if let Some(m) = status.as_object_mut() {
            m.remove("terminatingReplicas");
        }
    }
    let differs = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .any(|f| {
        current.get(*f).and_then(Value::as_i64).unwrap_or(0) != status[*f].as_i64().unwrap_or(0)
    });
    if differs {
        ctx.client
            .patch_status(rs_kind, Some(&ns), &name, &status)
            .await?;
    }
    // Pods that become available after minReadySeconds change no object: look again then.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && status["availableReplicas"] != status["readyReplicas"] {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// Records "Created pod: NAME" / "Deleted pod: NAME" events on the controller, in the background.
fn pod_events(
    client: &Client,
    owner_ref: &Value,
    ns: &str,
    reason: &'static str,
    verb: &'static str,
    names: &[String],
) {
    let me = json!({"apiVersion": owner_ref["apiVersion"], "kind": owner_ref["kind"],
        "metadata": {"name": owner_ref["name"], "namespace": ns, "uid": owner_ref["uid"]}});
    let component = if owner_ref["kind"] == "ReplicaSet" {
        "replicaset-controller"
    } else {
        "replication-controller"
    };
    for n in names {
        crate::client::events::spawn_record(
            client,
            me.clone(),
            component,
            "Normal",
            reason,
            format!("{verb} pod: {n}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Value {
        let mut p = json!({"metadata": {"name": name, "creationTimestamp": created}, "spec": {}, "status": {"phase": phase}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        if ready {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        }
        p
    }

    #[test]
    fn surplus_pods_go_unscheduled_first_then_pending_then_unready_then_newest() {
        let a = pod(
            "ready-old",
            Some("n"),
            "Running",
            true,
            "2024-01-01T00:00:00Z",
        );
        let b = pod(
            "ready-new",
            Some("n"),
            "Running",
            true,
            "2024-01-02T00:00:00Z",
        );
        let c = pod(
            "unready",
            Some("n"),
            "Running",
            false,
            "2024-01-01T00:00:00Z",
        );
        let d = pod(
            "pending",
            Some("n"),
            "Pending",
            false,
            "2024-01-01T00:00:00Z",
        );
        let e = pod(
            "unscheduled",
            None,
            "Pending",
            false,
            "2024-01-01T00:00:00Z",
        );
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
    fn status_counts_ready_available_and_labels() {
        let rs: ReplicaSet =
            serde_json::from_value(json!({"metadata": {"name": "r", "generation": 3},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "minReadySeconds": 3600,
                     "template": {"metadata": {"labels": {"a": "b", "v": "1"}}}}}))
            .unwrap();
        let mut p1 = pod("p1", Some("n"), "Running", true, "2024-01-01T00:00:00Z");
        p1["metadata"]["labels"] = json!({"a": "b", "v": "1"});
        p1["status"]["conditions"][0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        let mut p2 = pod("p2", Some("n"), "Running", true, "2024-01-01T00:00:00Z");
        p2["metadata"]["labels"] = json!({"a": "b"});
        p2["status"]["conditions"][0]["lastTransitionTime"] =
            json!(crate::api::meta::format_time(&crate::api::meta::now()));
        let mut gone = pod("p3", Some("n"), "Running", true, "2024-01-01T00:00:00Z");
        gone["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let s = status_of(&rs, &[&p1, &p2, &gone]);
        assert_eq!(
            s,
            json!({"replicas": 2, "fullyLabeledReplicas": 1, "readyReplicas": 2, "availableReplicas": 1,
            "terminatingReplicas": 1, "observedGeneration": 3})
        );
    }
}
