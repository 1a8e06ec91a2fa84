//! The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`, carrying
//! `deployment.kubernetes.io/revision`), rolled with RollingUpdate (`maxSurge`/`maxUnavailable`, integers or
//! percentages) or Recreate; old ReplicaSets beyond `revisionHistoryLimit` are deleted; `paused` stops rolling; the
//! status carries every field `kubectl rollout status` reads, with the Available and Progressing conditions (and
//! ProgressDeadlineExceeded).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::apps::Deployment;
use crate::api::meta::{format_time, now};
use crate::api::registry;
use crate::api::IntOrString;
use crate::client::informer::Cache;
use crate::client::Client;
use crate::runtime::Action;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Deployment has no spec")]
    NoSpec,
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Context {
    pub client: Client,
    pub replicasets: Cache,
}

/// A stable short hash of a pod template (FNV-1a over its JSON), spelled with Kubernetes' safe alphabet.
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    let mut h: u32 = 0x811c9dc5;
    for b in serde_json::to_vec(&t).unwrap_or_default() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut n = h as u64;
    while out.len() < 10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
        if n == 0 {
            break;
        }
    }
    out
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn revision_of(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The replica counts a RollingUpdate step wants: new target, and per old ReplicaSet (by index) its target.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub new_replicas: i64,
    pub old_replicas: Vec<i64>,
}

/// One RollingUpdate step, Kubernetes' arithmetic: scale the new ReplicaSet up within `desired + maxSurge` pods, and
/// old ones down while keeping `desired - maxUnavailable` available (unhealthy old replicas go first).
/// `old` holds (spec.replicas, availableReplicas) per old ReplicaSet, oldest first.
pub fn rolling_step(
    desired: i64,
    max_surge: i64,
    max_unavailable: i64,
    new: (i64, i64),
    old: &[(i64, i64)],
) -> Step {
    let (mut surge, mut unavail) = (max_surge, max_unavailable);
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    if desired == 0 {
        surge = 0;
    }
    let total: i64 = new.0 + old.iter().map(|o| o.0).sum::<i64>();
    // Scale up.
    let mut new_replicas = new.0;
    let allowed = desired + surge;
    if total < allowed && new.0 < desired {
        new_replicas = (new.0 + (allowed - total)).min(desired);
    } else if new.0 > desired {
        new_replicas = desired;
    }
    // Scale down.
    let mut olds: Vec<i64> = old.iter().map(|o| o.0).collect();
    let min_available = desired - unavail;
    let new_unavailable = (new.0 - new.1).max(0);
    let all_pods = total;
    let mut max_down = all_pods - min_available - new_unavailable;
    // Unhealthy old replicas first: they count against nothing.
    for (idx, (replicas, available)) in old.iter().enumerate() {
        if max_down <= 0 {
            break;
        }
        let unhealthy = (replicas - available).max(0).min(max_down);
        olds[idx] -= unhealthy;
        max_down -= unhealthy;
    }
    // Then healthy ones, as far as availability allows.
    let available: i64 = new.1
        + old
            .iter()
            .zip(&olds)
            .map(|((_, a), r)| (*a).min(*r))
            .sum::<i64>();
    let mut down = (available - min_available).min(max_down.max(0)).max(0);
    for r in olds.iter_mut() {
        if down <= 0 {
            break;
        }
        let d = (*r).min(down);
        *r -= d;
        down -= d;
    }
    Step {
        new_replicas,
        old_replicas: olds,
    }
}

fn cond(conds: &[Value], t: &str) -> Option<Value> {
    conds.iter().find(|c| c["type"] == t).cloned()
}

/// One reconcile of one Deployment.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = d.spec.clone().ok_or(Error::NoSpec)?;
    let ns = d.metadata.namespace().to_string();
    let name = d.metadata.name().to_string();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let rs_kind = registry::lookup("replicasets").expect("replicasets");
    let desired = i64::from(spec.replicas.unwrap_or(1));
    let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
    let hash = template_hash(&template);

    let mut rss: Vec<Value> = ctx
        .replicasets
        .list()
        .into_iter()
        .filter(|r| r.pointer("/metadata/namespace").and_then(Value::as_str) == Some(&ns))
        .filter(|r| {
            r.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|o| {
                    o.iter()
                        .any(|o| o["uid"] == uid.as_str() && o["controller"] == true)
                })
        })
        .map(|r| Value::clone(&r))
        .collect();
    rss.sort_by_key(revision_of);
    let max_revision = rss.iter().map(revision_of).max().unwrap_or(0);
    let new_idx = rss.iter().position(|r| {
        r.pointer(&format!("/metadata/labels/{HASH_LABEL}"))
            .and_then(Value::as_str)
            == Some(&hash)
    });
    let paused = spec.paused.unwrap_or(false);
    let mut changed = false;

    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let surge = ru
        .max_surge
        .unwrap_or(IntOrString::String("25%".into()))
        .scaled(desired, true)
        .unwrap_or(0);
    let unavail = ru
        .max_unavailable
        .unwrap_or(IntOrString::String("25%".into()))
        .scaled(desired, false)
        .unwrap_or(0);
    let annotations = |revision: i64| -> Value {
        let mut a = json!({REVISION: revision.to_string(),
            "deployment.kubernetes.io/desired-replicas": desired.to_string(),
            "deployment.kubernetes.io/max-replicas": (desired + surge).to_string()});
        if let Some(cause) = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/change-cause"))
        {
            a["kubernetes.io/change-cause"] = json!(cause);
        }
        a
    };

    // The ReplicaSet of the current template: create it, or make it the newest revision again (a rollback).
    let new_rs: Value = match new_idx {
        Some(idx) => {
            let rs = rss.remove(idx);
            if revision_of(&rs) < max_revision && !paused {
                let patch = json!({"metadata": {"annotations": annotations(max_revision + 1)}});
                changed = true;
                ctx.client
                    .patch(
                        rs_kind,
                        Some(&ns),
                        rs.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        "application/merge-patch+json",
                        &patch,
                    )
                    .await?
            } else {
                rs
            }
        }
        None if paused => return sync_status(&d, &ctx, None, &rss, desired, unavail, false).await,
        None => {
            let mut t = template.clone();
            t["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut selector = serde_json::to_value(&spec.selector).unwrap_or(json!({}));
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let old_total: i64 = rss.iter().map(|r| i(r, "/spec/replicas")).sum();
            let initial = if recreate {
                0
            } else {
                desired.min((desired + surge - old_total).max(0))
            };
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": t["metadata"]["labels"],
                    "annotations": annotations(max_revision + 1),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": initial, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
                    "selector": selector, "template": t}});
            changed = true;
            tracing::info!(replicaset = %format!("{name}-{hash}"), replicas = initial, "created ReplicaSet");
            match ctx.client.create(rs_kind, Some(&ns), &rs).await {
                Ok(v) => {
                    if initial > 0 {
                        scaling_event(
                            &ctx.client,
                            &name,
                            &ns,
                            &uid,
                            format!("Scaled up replica set {name}-{hash} from 0 to {initial}"),
                        );
                    }
                    v
                }
                Err(e) if e.code() == Some(409) => {
                    return Ok(Action::requeue(Duration::from_millis(200)))
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let new_name = new_rs
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();

    if !paused {
        let scale = |rs: &Value, n: i64| {
            let rs_name = rs
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let client = ctx.client.clone();
            let ns = ns.clone();
            let mut anns = annotations(revision_of(rs));
            anns[REVISION] = json!(revision_of(rs).to_string());
            let from = i(rs, "/spec/replicas");
            let (name, uid) = (name.clone(), uid.clone());
            async move {
                let patch = json!({"spec": {"replicas": n}, "metadata": {"annotations": anns}});
                let r = client
                    .patch(
                        rs_kind,
                        Some(&ns),
                        &rs_name,
                        "application/merge-patch+json",
                        &patch,
                    )
                    .await;
                if r.is_ok() {
                    let dir = if n > from { "up" } else { "down" };
                    scaling_event(
                        &client,
                        &name,
                        &ns,
                        &uid,
                        format!("Scaled {dir} replica set {rs_name} from {from} to {n}"),
                    );
                }
                r
            }
        };
        if recreate {
            let old_active: i64 = rss
                .iter()
                .map(|r| i(r, "/spec/replicas") + i(r, "/status/replicas"))
                .sum();
            for r in rss.iter().filter(|r| i(r, "/spec/replicas") > 0) {
                scale(r, 0).await?;
                changed = true;
            }
            if old_active == 0 && i(&new_rs, "/spec/replicas") != desired {
                scale(&new_rs, desired).await?;
                changed = true;
            }
        } else {
            let olds: Vec<(i64, i64)> = rss
                .iter()
                .map(|r| (i(r, "/spec/replicas"), i(r, "/status/availableReplicas")))
                .collect();
            let step = rolling_step(
                desired,
                surge,
                unavail,
                (
                    i(&new_rs, "/spec/replicas"),
                    i(&new_rs, "/status/availableReplicas"),
                ),
                &olds,
            );
            if step.new_replicas != i(&new_rs, "/spec/replicas") {
                tracing::info!(replicaset = %new_name, replicas = step.new_replicas, "scaling new ReplicaSet");
                scale(&new_rs, step.new_replicas).await?;
                changed = true;
            }
            for (r, target) in rss.iter().zip(&step.old_replicas) {
                if *target != i(r, "/spec/replicas") {
                    scale(r, *target).await?;
                    changed = true;
                }
            }
        }
        // Old ReplicaSets beyond the history limit, oldest first, once scaled to zero.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&Value> = rss
            .iter()
            .filter(|r| i(r, "/spec/replicas") == 0 && i(r, "/status/replicas") == 0)
            .collect();
        if idle.len() > limit {
            for r in &idle[..idle.len() - limit] {
                let n = r
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let _ = ctx.client.delete(rs_kind, Some(&ns), n, "Background").await;
            }
        }
    }
    sync_status(&d, &ctx, Some(&new_rs), &rss, desired, unavail, changed).await
}

async fn sync_status(
    d: &Deployment,
    ctx: &Context,
    new_rs: Option<&Value>,
    old: &[Value],
    desired: i64,
    unavail: i64,
    progressed: bool,
) -> Result<Action> {
    let dep_kind = registry::lookup("deployments").expect("deployments");
    let ns = d.metadata.namespace();
    let name = d.metadata.name();
    let all: Vec<&Value> = new_rs.into_iter().chain(old.iter()).collect();
    let replicas: i64 = all.iter().map(|r| i(r, "/status/replicas")).sum();
    let ready: i64 = all.iter().map(|r| i(r, "/status/readyReplicas")).sum();
    let available: i64 = all.iter().map(|r| i(r, "/status/availableReplicas")).sum();
    let updated = new_rs.map(|r| i(r, "/status/replicas")).unwrap_or(0);
    let new_available = new_rs
        .map(|r| i(r, "/status/availableReplicas"))
        .unwrap_or(0);
    let current = serde_json::to_value(&d.status).unwrap_or(Value::Null);
    let conds: Vec<Value> = current
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let t = format_time(&now());
    let complete =
        updated == desired && replicas == desired && available >= desired && new_rs.is_some();
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let avail_ok = available >= desired - unavail;
    let mut available_cond = json!({"type": "Available", "status": if avail_ok { "True" } else { "False" },
        "reason": if avail_ok { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
        "message": if avail_ok { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
        "lastUpdateTime": t, "lastTransitionTime": t});
    if let Some(prev) = cond(&conds, "Available") {
        if prev["status"] == available_cond["status"] {
            available_cond["lastTransitionTime"] = prev["lastTransitionTime"].clone();
            available_cond["lastUpdateTime"] = prev["lastUpdateTime"].clone();
        }
    }
    let prev_prog = cond(&conds, "Progressing");
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600) as i64;
    let new_rs_name = new_rs
        .and_then(|r| r.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let _ = new_available;
    let more_available = current
        .get("availableReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        < available;
    let (status, reason, message) = if paused {
        (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
        )
    } else if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_rs_name}\" has successfully progressed."),
        )
    } else {
        let last = prev_prog
            .as_ref()
            .and_then(|p| p["lastUpdateTime"].as_str())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let stalled = !progressed
            && !more_available
            && last.is_some_and(|l| (now() - l).num_seconds() > deadline);
        let already_failed = prev_prog
            .as_ref()
            .is_some_and(|p| p["reason"] == "ProgressDeadlineExceeded");
        if stalled || (already_failed && !progressed && !more_available) {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_rs_name}\" has timed out progressing."),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_rs_name}\" is progressing."),
            )
        }
    };
    let mut prog = json!({"type": "Progressing", "status": status, "reason": reason, "message": message,
        "lastUpdateTime": t, "lastTransitionTime": t});
    if let Some(prev) = &prev_prog {
        if prev["status"] == prog["status"] {
            prog["lastTransitionTime"] = prev["lastTransitionTime"].clone();
        }
        // The update time moves only with progress (or a change of reason).
        if prev["reason"] == prog["reason"] && !progressed && !more_available {
            prog["lastUpdateTime"] = prev["lastUpdateTime"].clone();
        }
    }
    let status = json!({"observedGeneration": d.metadata.generation.unwrap_or(0), "replicas": replicas,
        "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0), "conditions": [available_cond, prog]});
    let same = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .all(|f| {
        current.get(*f).and_then(Value::as_i64).unwrap_or(0) == status[*f].as_i64().unwrap_or(0)
    }) && conds.len() == 2
        && conds
            .iter()
            .zip(status["conditions"].as_array().into_iter().flatten())
            .all(|(a, b)| a == b);
    if !same {
        ctx.client
            .patch_status(dep_kind, Some(ns), name, &status)
            .await?;
    }
    if !complete && !paused && reason != "ProgressDeadlineExceeded" {
        // Look again when the deadline could pass.
        return Ok(Action::requeue(Duration::from_secs(
            (deadline as u64 / 4).clamp(1, 30),
        )));
    }
    Ok(Action::await_change())
}

/// A ScalingReplicaSet Event on the Deployment, in the background.
fn scaling_event(client: &Client, name: &str, ns: &str, uid: &str, message: String) {
    let me = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "uid": uid}});
    crate::client::events::spawn_record(
        client,
        me,
        "deployment-controller",
        "Normal",
        "ScalingReplicaSet",
        message,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_ignores_its_own_label() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let mut b = a.clone();
        b["metadata"]["labels"][HASH_LABEL] = json!("zzz");
        assert_eq!(template_hash(&a), template_hash(&b));
        let mut c = a.clone();
        c["spec"]["containers"][0]["image"] = json!("i:2");
        assert_ne!(template_hash(&a), template_hash(&c));
        assert!(template_hash(&a)
            .chars()
            .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)));
    }

    #[test]
    fn rolling_step_respects_surge_and_unavailability() {
        // 4 desired, surge 1, unavailable 1; all 4 old available, new has none.
        let s = rolling_step(4, 1, 1, (0, 0), &[(4, 4)]);
        assert_eq!(
            s,
            Step {
                new_replicas: 1,
                old_replicas: vec![3]
            }
        );
        // New pod not yet available: no further scale down beyond min availability (3).
        let s = rolling_step(4, 1, 1, (1, 0), &[(3, 3)]);
        assert_eq!(
            s,
            Step {
                new_replicas: 2,
                old_replicas: vec![3]
            }
        );
        // Two new available: old may go down to keep 3 available.
        let s = rolling_step(4, 1, 1, (2, 2), &[(3, 3)]);
        assert_eq!(s.old_replicas, vec![1]);
        // Done: new has all.
        let s = rolling_step(4, 1, 1, (4, 4), &[(0, 0)]);
        assert_eq!(
            s,
            Step {
                new_replicas: 4,
                old_replicas: vec![0]
            }
        );
    }

    #[test]
    fn unhealthy_old_replicas_go_first_and_zero_zero_means_one_unavailable() {
        let s = rolling_step(3, 0, 0, (0, 0), &[(3, 1)]);
        // Two old replicas are unavailable: they can go without hurting availability; max_down = 3 - 2 - 0 = 1.
        assert_eq!(s.old_replicas, vec![2]);
        assert_eq!(
            s.new_replicas, 0,
            "no surge: the new ReplicaSet waits for room"
        );
    }
}
