//! The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`, carrying
//! `deployment.kubernetes.io/revision`), rolled with RollingUpdate (`maxSurge`/`maxUnavailable`, integers or
//! percentages) or Recreate; old ReplicaSets beyond `revisionHistoryLimit` are deleted; `paused` stops rolling; the
//! status carries every field `kubectl rollout status` reads, with the Available and Progressing conditions (and
//! ProgressDeadlineExceeded).

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::api::apps::{Deployment, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use crate::api::meta::{now, Condition, ObjectMeta};
use crate::api::{IntOrString, Resource};
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";

use super::{Error, Result};

pub struct Context {
    pub client: Client,
    pub replicasets: Cache<ReplicaSet>,
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

/// `spec.replicas` of a ReplicaSet.
fn spec_replicas(rs: &ReplicaSet) -> i64 {
    i64::from(rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
}

/// `status.replicas` and `status.availableReplicas` of a ReplicaSet.
fn status_counts(rs: &ReplicaSet) -> (i64, i64, i64) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            i64::from(s.replicas),
            i64::from(s.ready_replicas.unwrap_or(0)),
            i64::from(s.available_replicas.unwrap_or(0)),
        )
    })
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
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

fn cond<'a>(conds: &'a [Condition], t: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == t)
}

/// One pass over one Deployment: its strategy's numbers and the ReplicaSets it owns.
struct Rollout<'a> {
    d: &'a Arc<Deployment>,
    spec: &'a DeploymentSpec,
    api: Api<ReplicaSet>,
    recorder: Recorder,
    desired: i64,
    surge: i64,
    unavail: i64,
    hash: String,
    max_revision: i64,
    recreate: bool,
}

impl Rollout<'_> {
    /// The annotations a ReplicaSet of this Deployment carries at `revision`.
    fn annotations(&self, revision: i64) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (REVISION.to_string(), revision.to_string()),
            (
                "deployment.kubernetes.io/desired-replicas".to_string(),
                self.desired.to_string(),
            ),
            (
                "deployment.kubernetes.io/max-replicas".to_string(),
                (self.desired + self.surge).to_string(),
            ),
        ]);
        let cause = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/change-cause"));
        if let Some(cause) = cause {
            a.insert("kubernetes.io/change-cause".into(), cause.clone());
        }
        a
    }

    /// A new ReplicaSet for the current template; `None` when another writer created it first (look again).
    async fn create(&self, olds: &[ReplicaSet]) -> Result<Option<ReplicaSet>> {
        let (name, hash) = (self.d.metadata.name(), &self.hash);
        let mut t = self.spec.template.clone();
        let meta = t.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let labels = meta.labels.clone();
        let mut selector = self.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let old_total: i64 = olds.iter().map(spec_replicas).sum();
        let initial = if self.recreate {
            0
        } else {
            self.desired
                .min((self.desired + self.surge - old_total).max(0))
        };
        let rs = ReplicaSet {
            api_version: ReplicaSet::api_version(),
            kind: "ReplicaSet".into(),
            metadata: ObjectMeta {
                name: Some(format!("{name}-{hash}")),
                namespace: Some(self.d.metadata.namespace().to_string()),
                labels,
                annotations: Some(self.annotations(self.max_revision + 1)),
                owner_references: Some(vec![self.d.controller_ref()]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(initial as i32),
                min_ready_seconds: Some(self.spec.min_ready_seconds.unwrap_or(0)),
                selector,
                template: Some(t),
            }),
            status: None,
        };
        tracing::info!(replicaset = %format!("{name}-{hash}"), replicas = initial, "created ReplicaSet");
        match self.api.create(&rs).await {
            Ok(v) => {
                if initial > 0 {
                    let msg = format!("Scaled up replica set {name}-{hash} from 0 to {initial}");
                    self.recorder
                        .normal(self.d.as_ref(), "ScalingReplicaSet", msg);
                }
                Ok(Some(v))
            }
            Err(e) if e.code() == Some(409) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a ReplicaSet's replicas (and refreshes its annotations), with the Event kubectl shows.
    async fn scale(&self, rs: &ReplicaSet, n: i64) -> Result<()> {
        let rs_name = rs.metadata.name();
        let anns = self.annotations(revision_of(rs));
        let from = spec_replicas(rs);
        let patch = json!({"spec": {"replicas": n}, "metadata": {"annotations": anns}});
        self.api.patch(rs_name, &Patch::Merge(patch)).await?;
        let dir = if n > from { "up" } else { "down" };
        let msg = format!("Scaled {dir} replica set {rs_name} from {from} to {n}");
        self.recorder
            .normal(self.d.as_ref(), "ScalingReplicaSet", msg);
        Ok(())
    }

    /// Recreate: every old pod goes first, then the new ReplicaSet scales up. Returns whether anything changed.
    async fn recreate(&self, new_rs: &ReplicaSet, olds: &[ReplicaSet]) -> Result<bool> {
        let mut changed = false;
        let old_active: i64 = olds
            .iter()
            .map(|r| spec_replicas(r) + status_counts(r).0)
            .sum();
        for r in olds.iter().filter(|r| spec_replicas(r) > 0) {
            self.scale(r, 0).await?;
            changed = true;
        }
        if old_active == 0 && spec_replicas(new_rs) != self.desired {
            self.scale(new_rs, self.desired).await?;
            changed = true;
        }
        Ok(changed)
    }

    /// RollingUpdate: one step within maxSurge and maxUnavailable. Returns whether anything changed.
    async fn roll(&self, new_rs: &ReplicaSet, olds: &[ReplicaSet]) -> Result<bool> {
        let mut changed = false;
        let counts: Vec<(i64, i64)> = olds
            .iter()
            .map(|r| (spec_replicas(r), status_counts(r).2))
            .collect();
        let new_counts = (spec_replicas(new_rs), status_counts(new_rs).2);
        let step = rolling_step(self.desired, self.surge, self.unavail, new_counts, &counts);
        if step.new_replicas != spec_replicas(new_rs) {
            tracing::info!(replicaset = %new_rs.metadata.name(), replicas = step.new_replicas, "scaling new ReplicaSet");
            self.scale(new_rs, step.new_replicas).await?;
            changed = true;
        }
        for (r, target) in olds.iter().zip(&step.old_replicas) {
            if *target != spec_replicas(r) {
                self.scale(r, *target).await?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Old ReplicaSets beyond the history limit, oldest first, once scaled to zero.
    async fn prune(&self, olds: &[ReplicaSet]) {
        let limit = self.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&ReplicaSet> = olds
            .iter()
            .filter(|r| spec_replicas(r) == 0 && status_counts(r).0 == 0)
            .collect();
        if idle.len() > limit {
            for r in &idle[..idle.len() - limit] {
                let _ = self.api.delete(r.metadata.name(), "Background").await;
            }
        }
    }
}

/// One reconcile of one Deployment.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = d.spec.clone().ok_or(Error::NoSpec("Deployment"))?;
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let desired = i64::from(spec.replicas.unwrap_or(1));
    let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
    let mut olds: Vec<ReplicaSet> = ctx
        .replicasets
        .list_namespace(d.metadata.namespace())
        .into_iter()
        .filter(|r| super::pods::controller_uid(&r.metadata) == Some(uid.as_str()))
        .map(|r| ReplicaSet::clone(&r))
        .collect();
    olds.sort_by_key(revision_of);
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let quarter = || IntOrString::String("25%".into());
    let rollout = Rollout {
        d: &d,
        spec: &spec,
        api: Api::namespaced(&ctx.client, d.metadata.namespace()),
        recorder: Recorder::new(&ctx.client, "deployment-controller"),
        desired,
        surge: ru
            .max_surge
            .unwrap_or_else(quarter)
            .scaled(desired, true)
            .unwrap_or(0),
        unavail: ru
            .max_unavailable
            .unwrap_or_else(quarter)
            .scaled(desired, false)
            .unwrap_or(0),
        hash: template_hash(&template),
        max_revision: olds.iter().map(revision_of).max().unwrap_or(0),
        recreate: spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate"),
    };
    let paused = spec.paused.unwrap_or(false);
    let unavail = rollout.unavail;
    let current = olds.iter().position(|r| {
        r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&rollout.hash)
    });
    let mut changed = false;
    // The ReplicaSet of the current template: create it, or make it the newest revision again (a rollback).
    let new_rs: ReplicaSet = match current {
        Some(idx) => {
            let rs = olds.remove(idx);
            if revision_of(&rs) < rollout.max_revision && !paused {
                let patch = json!({"metadata": {"annotations": rollout.annotations(rollout.max_revision + 1)}});
                changed = true;
                rollout
                    .api
                    .patch(rs.metadata.name(), &Patch::Merge(patch))
                    .await?
            } else {
                rs
            }
        }
        None if paused => return sync_status(&d, &ctx, None, &olds, desired, unavail, false).await,
        None => match rollout.create(&olds).await? {
            Some(rs) => {
                changed = true;
                rs
            }
            None => return Ok(Action::requeue(Duration::from_millis(200))),
        },
    };
    if !paused {
        changed |= if rollout.recreate {
            rollout.recreate(&new_rs, &olds).await?
        } else {
            rollout.roll(&new_rs, &olds).await?
        };
        rollout.prune(&olds).await;
    }
    sync_status(&d, &ctx, Some(&new_rs), &olds, desired, unavail, changed).await
}

/// A condition of `type_` that keeps `prev`'s transition time while its status stays the same.
fn condition(type_: &str, status: &str, reason: &str, message: String) -> Condition {
    let t = now();
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(t),
        last_transition_time: Some(t),
        ..Default::default()
    }
}
/// The Available condition, keeping its times while its status stays.
fn available_condition(conds: &[Condition], ok: bool) -> Condition {
    let mut c = if ok {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    if let Some(prev) = cond(conds, "Available").filter(|p| p.status == c.status) {
        c.last_transition_time = prev.last_transition_time;
        c.last_update_time = prev.last_update_time;
    }
    c
}

/// Where a rollout stands, for the Progressing condition.
struct Progress<'a> {
    paused: bool,
    complete: bool,
    /// This pass changed something, or more pods became available.
    moved: bool,
    new_rs_name: &'a str,
    deadline: i64,
}

/// The Progressing condition: paused, complete, progressing, or past `progressDeadlineSeconds` without progress.
/// Its update time moves only with progress (or a change of reason).
fn progressing_condition(conds: &[Condition], p: &Progress) -> Condition {
    let prev = cond(conds, "Progressing");
    let name = p.new_rs_name;
    let (status, reason, message) = if p.paused {
        (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
        )
    } else if p.complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{name}\" has successfully progressed."),
        )
    } else {
        let last = prev.and_then(|c| c.last_update_time);
        let stalled = !p.moved && last.is_some_and(|l| (now() - l).num_seconds() > p.deadline);
        let already_failed =
            prev.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        if stalled || (already_failed && !p.moved) {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{name}\" has timed out progressing."),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{name}\" is progressing."),
            )
        }
    };
    let mut c = condition("Progressing", status, reason, message);
    if let Some(prev) = prev {
        if prev.status == c.status {
            c.last_transition_time = prev.last_transition_time;
        }
        if prev.reason == c.reason && !p.moved {
            c.last_update_time = prev.last_update_time;
        }
    }
    c
}

/// The counts a status write must change.
fn counts(s: &DeploymentStatus) -> impl PartialEq {
    (
        s.observed_generation.unwrap_or(0),
        s.replicas.unwrap_or(0),
        s.updated_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
        s.unavailable_replicas.unwrap_or(0),
    )
}

async fn sync_status(
    d: &Deployment,
    ctx: &Context,
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    desired: i64,
    unavail: i64,
    progressed: bool,
) -> Result<Action> {
    let all: Vec<&ReplicaSet> = new_rs.into_iter().chain(old.iter()).collect();
    let sum =
        |f: fn((i64, i64, i64)) -> i64| -> i64 { all.iter().map(|r| f(status_counts(r))).sum() };
    let (replicas, ready, available) = (sum(|c| c.0), sum(|c| c.1), sum(|c| c.2));
    let updated = new_rs.map(|r| status_counts(r).0).unwrap_or(0);
    let current = d.status.clone().unwrap_or_default();
    let conds: Vec<Condition> = current.conditions.clone().unwrap_or_default();
    let spec = d.spec.as_ref();
    let progress = Progress {
        paused: spec.and_then(|s| s.paused).unwrap_or(false),
        complete: updated == desired
            && replicas == desired
            && available >= desired
            && new_rs.is_some(),
        moved: progressed || i64::from(current.available_replicas.unwrap_or(0)) < available,
        new_rs_name: new_rs.map(|r| r.metadata.name()).unwrap_or(""),
        deadline: spec
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600) as i64,
    };
    let prog = progressing_condition(&conds, &progress);
    let timed_out = prog.reason.as_deref() == Some("ProgressDeadlineExceeded");
    let status = DeploymentStatus {
        observed_generation: Some(d.metadata.generation.unwrap_or(0)),
        replicas: Some(replicas as i32),
        updated_replicas: Some(updated as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        unavailable_replicas: Some((desired - available).max(0) as i32),
        conditions: Some(vec![
            available_condition(&conds, available >= desired - unavail),
            prog,
        ]),
        ..Default::default()
    };
    let same = counts(&current) == counts(&status) && Some(&conds) == status.conditions.as_ref();
    if !same {
        Api::<Deployment>::beside(&ctx.client, d)
            .patch_status(
                d.metadata.name(),
                &Patch::Strategic(json!({"status": status})),
            )
            .await?;
    }
    if !progress.complete && !progress.paused && !timed_out {
        // Look again when the deadline could pass.
        return Ok(Action::requeue(Duration::from_secs(
            (progress.deadline as u64 / 4).clamp(1, 30),
        )));
    }
    Ok(Action::await_change())
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
