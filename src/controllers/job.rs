//! The Job controller: runs pods of the template to completion. `completions` and `parallelism` (NonIndexed, and
//! Indexed with `JOB_COMPLETION_INDEX` and the completion-index annotation and label), failures counted against
//! `backoffLimit` (failed pods, and container restarts under `restartPolicy: OnFailure`) with an exponential delay
//! before each replacement, `activeDeadlineSeconds`, `podFailurePolicy` rules (FailJob, Ignore, Count on exit codes
//! and pod conditions), `suspend`, and `ttlSecondsAfterFinished`. Status carries what `kubectl get/describe/wait`
//! read: active, ready, succeeded, failed, terminating, startTime, completionTime, completedIndexes and the
//! Complete/SuccessCriteriaMet, Failed/FailureTarget and Suspended conditions, with Kubernetes' reasons.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::pods::{controller_uid, is_ready, phase, Expectations};
use crate::api::batch::{Job, JobStatus, PodFailurePolicy};
use crate::api::core::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use crate::api::meta::{now, Condition, Time};
use crate::api::Resource;
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

use super::{Error, Result};

/// The annotation (and label) holding an Indexed Job pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// The longest delay between a failure and its replacement pod, as in Kubernetes.
const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// What the Job controller works with.
pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub expectations: Expectations,
    /// The delay before the first replacement of a failed pod (doubling per failure; Kubernetes uses 10 s).
    pub backoff: Duration,
}

fn index_of(pod: &Pod) -> Option<i64> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .and_then(|i| i.parse().ok())
}

fn condition_true(job: &Job, ty: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == ty && c.status == "True")
}

/// When a pod ended (its last container's finish, else its last condition change).
fn finished_at(pod: &Pod) -> Option<Time> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at)
        .max()
        .or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .filter_map(|c| c.last_transition_time)
                .max()
        })
}

/// What a podFailurePolicy makes of a failed pod.
#[derive(Debug, PartialEq)]
enum Verdict {
    Count,
    Ignore,
    FailJob(String),
}

/// Applies the first matching rule of `spec.podFailurePolicy` to a failed pod (no rule: it counts).
fn judge(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::Count;
    };
    let pod_name = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name());
    let status = pod.status.clone().unwrap_or_default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut matched = None;
        if let Some(on) = &rule.on_exit_codes {
            let not_in = on.operator == "NotIn";
            for c in status.container_statuses.iter().flatten() {
                if on.container_name.as_ref().is_some_and(|n| c.name != *n) {
                    continue;
                }
                let Some(code) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code != 0 && on.values.contains(&code) != not_in {
                    matched = Some(format!(
                        "Container {} for pod {pod_name} failed with exit code {code} matching {} rule at index {i}",
                        c.name, rule.action
                    ));
                    break;
                }
            }
        }
        for p in rule.on_pod_conditions.iter().flatten() {
            let want = p.status.as_deref().unwrap_or("True");
            if status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == p.type_ && c.status == want)
            {
                matched = Some(format!(
                    "Pod {pod_name} has condition {} matching {} rule at index {i}",
                    p.type_, rule.action
                ));
            }
        }
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "Ignore" => Verdict::Ignore,
                "FailJob" => Verdict::FailJob(message),
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// Compresses sorted indexes into Kubernetes' interval form: `0-2,5,7-8`.
pub fn intervals(indexes: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    for &i in indexes {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                out.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    out.join(",")
}

fn condition(ty: &str, reason: &str, message: &str, at: Time) -> Condition {
    Condition {
        type_: ty.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(at),
        last_transition_time: Some(at),
        ..Default::default()
    }
}

/// What a Job's pods add up to.
struct Observed<'p> {
    active: Vec<&'p Pod>,
    terminating: usize,
    succeeded: i64,
    failed: i64,
    /// Container restarts of active pods (they count as failures under `restartPolicy: OnFailure`).
    restarts: i64,
    done_indexes: BTreeSet<i64>,
    /// The message of a FailJob rule of the pod failure policy that matched.
    fail_job: Option<String>,
    last_failure: Option<Time>,
}

fn observe<'p>(job: &Job, spec: &crate::api::batch::JobSpec, pods: &'p [Arc<Pod>]) -> Observed<'p> {
    let finished = |p: &Pod| matches!(phase(p), "Succeeded" | "Failed");
    let active: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !finished(p))
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !finished(p))
        .count();
    let succeeded_pods: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| phase(p) == "Succeeded")
        .collect();
    let mut failed = 0i64;
    let mut fail_job = None;
    let mut last_failure: Option<Time> = None;
    for p in pods.iter().filter(|p| phase(p) == "Failed") {
        match judge(spec.pod_failure_policy.as_ref(), p) {
            Verdict::Ignore => continue,
            Verdict::FailJob(m) => fail_job = fail_job.or(Some(m)),
            Verdict::Count => {}
        }
        failed += 1;
        last_failure = last_failure.max(finished_at(p));
    }
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts: i64 = if on_failure {
        active
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .map(|c| i64::from(c.restart_count))
            .sum()
    } else {
        0
    };
    let prev = job.status.clone().unwrap_or_default();
    Observed {
        // Counts never go back (a finished pod removed by hand still happened).
        succeeded: (succeeded_pods.len() as i64).max(i64::from(prev.succeeded.unwrap_or(0))),
        failed: failed.max(i64::from(prev.failed.unwrap_or(0))),
        done_indexes: succeeded_pods.iter().filter_map(|p| index_of(p)).collect(),
        active,
        terminating,
        restarts,
        fail_job,
        last_failure,
    }
}

/// One pass over one Job, with what it observed.
struct Pass<'a> {
    job: &'a Job,
    spec: &'a crate::api::batch::JobSpec,
    ctx: &'a Context,
    ns: String,
    key: String,
    now: Time,
    recorder: Recorder,
    seen: Observed<'a>,
    status: JobStatus,
    conditions: Vec<Condition>,
}

impl Pass<'_> {
    fn normal(&self, reason: &'static str, message: String) {
        self.recorder.normal(self.job, reason, message)
    }

    /// Writes the status with the conditions so far.
    async fn write(mut self) -> Result<()> {
        self.status.conditions = Some(self.conditions);
        write_status(self.ctx, self.job, self.status).await
    }

    /// A finished Job: leftovers stop, and a Job with a TTL goes away when it runs out.
    async fn finished(mut self) -> Result<Action> {
        delete_pods(self.ctx, &self.ns, &self.seen.active).await?;
        let prev = self.job.status.clone().unwrap_or_default();
        let mut after = None;
        if let Some(ttl) = self.spec.ttl_seconds_after_finished {
            let end = prev.completion_time.or_else(|| {
                self.conditions
                    .iter()
                    .filter(|c| c.type_ == "Failed")
                    .find_map(|c| c.last_transition_time)
            });
            if let Some(end) = end {
                let due = end + chrono::Duration::seconds(i64::from(ttl));
                if self.now >= due {
                    self.expire().await?;
                    return Ok(Action::await_change());
                }
                after = Some((due - self.now).to_std().unwrap_or_default());
            }
        }
        // Only the counts move now.
        self.status.completion_time = prev.completion_time;
        self.write().await?;
        Ok(after.map_or(Action::await_change(), Action::requeue))
    }

    /// Deletes the Job whose `ttlSecondsAfterFinished` ran out (only if it is still this Job).
    async fn expire(&self) -> Result<()> {
        let uid = self.job.metadata.uid.clone().unwrap_or_default();
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
            "propagationPolicy": "Background", "preconditions": {"uid": uid}});
        match Api::<Job>::namespaced(&self.ctx.client, &self.ns)
            .delete_with(self.job.metadata.name(), &options)
            .await
        {
            Ok(_) => tracing::info!(job = %self.key, "deleted after ttlSecondsAfterFinished"),
            Err(e) if e.code() == Some(404) || e.code() == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// A suspended Job runs nothing.
    async fn suspended(mut self) -> Result<Action> {
        delete_pods(self.ctx, &self.ns, &self.seen.active).await?;
        self.status.active = Some(0);
        self.status.start_time = None;
        if !condition_true(self.job, "Suspended") {
            self.conditions.retain(|c| c.type_ != "Suspended");
            self.conditions.push(condition(
                "Suspended",
                "JobSuspended",
                "Job suspended",
                self.now,
            ));
            self.normal("Suspended", "Job suspended".into());
        }
        self.write().await?;
        Ok(Action::await_change())
    }

    /// Why the Job fails now, if it does: a FailJob rule, too many failures, or past the deadline.
    fn failure(&self, started: Time) -> Option<(&'static str, String)> {
        let backoff_limit = i64::from(self.spec.backoff_limit.unwrap_or(6));
        let deadline = self.spec.active_deadline_seconds;
        if let Some(m) = &self.seen.fail_job {
            Some(("PodFailurePolicy", m.clone()))
        } else if self.seen.failed + self.seen.restarts > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if deadline.is_some_and(|d| self.now >= started + chrono::Duration::seconds(d)) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".to_string(),
            ))
        } else {
            None
        }
    }

    async fn fail(mut self, reason: &'static str, message: String) -> Result<Action> {
        delete_pods(self.ctx, &self.ns, &self.seen.active).await?;
        self.conditions
            .retain(|c| c.type_ != "FailureTarget" && c.type_ != "Failed");
        self.conditions
            .push(condition("FailureTarget", reason, &message, self.now));
        self.conditions
            .push(condition("Failed", reason, &message, self.now));
        self.status.active = Some(0);
        tracing::info!(job = %self.key, reason, "job failed");
        self.recorder.warning(self.job, reason, message);
        self.write().await?;
        Ok(Action::requeue(Duration::from_secs(1)))
    }

    /// Every completion (every index) done; for a work queue, one pod succeeded and none is left running.
    fn complete(&self) -> bool {
        let indexed = self.spec.completion_mode.as_deref() == Some("Indexed");
        match self.spec.completions.map(i64::from) {
            Some(c) if indexed => (0..c).all(|i| self.seen.done_indexes.contains(&i)),
            Some(c) => self.seen.succeeded >= c,
            None => self.seen.succeeded > 0 && self.seen.active.is_empty(),
        }
    }

    async fn completed(mut self) -> Result<Action> {
        delete_pods(self.ctx, &self.ns, &self.seen.active).await?;
        let message = "Reached expected number of succeeded pods";
        self.conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            message,
            self.now,
        ));
        self.conditions.push(condition(
            "Complete",
            "CompletionsReached",
            message,
            self.now,
        ));
        self.status.completion_time = Some(self.now);
        self.status.active = Some(0);
        tracing::info!(job = %self.key, "job completed");
        self.normal("Completed", "Job completed".into());
        self.write().await?;
        Ok(Action::requeue(Duration::from_secs(1)))
    }

    /// Which pods to start now.
    fn plan(&self) -> Plan {
        let parallelism = i64::from(self.spec.parallelism.unwrap_or(1).max(0));
        let active = self.seen.active.len() as i64;
        let indexed = self.spec.completion_mode.as_deref() == Some("Indexed");
        match self.spec.completions.map(i64::from) {
            Some(c) if indexed => {
                let running: BTreeSet<i64> = self
                    .seen
                    .active
                    .iter()
                    .filter_map(|p| index_of(p))
                    .collect();
                let pending =
                    (0..c).filter(|i| !self.seen.done_indexes.contains(i) && !running.contains(i));
                let room = (parallelism - active).max(0) as usize;
                Plan::Indexes(pending.take(room).collect())
            }
            Some(c) => Plan::Count((parallelism.min(c - self.seen.succeeded) - active).max(0)),
            None if self.seen.succeeded > 0 => Plan::Count(0),
            None => Plan::Count((parallelism - active).max(0)),
        }
    }

    /// How long failed pods still wait before they are replaced (exponential backoff from the last failure).
    fn backoff_left(&self) -> Option<Duration> {
        let failures = self.seen.failed + self.seen.restarts;
        if failures == 0 {
            return None;
        }
        let exp = (failures - 1).clamp(0, 16) as u32;
        let delay = self
            .ctx
            .backoff
            .saturating_mul(2u32.saturating_pow(exp))
            .min(MAX_BACKOFF);
        let t = self.seen.last_failure?;
        let due = t + chrono::Duration::from_std(delay).unwrap_or_default();
        Some((due - self.now).to_std().unwrap_or_default()).filter(|d| !d.is_zero())
    }

    /// Runs more pods, or fewer; returns how long to wait before looking again (backoff), if at all.
    async fn scale(&mut self) -> Result<Option<Duration>> {
        if !self
            .ctx
            .expectations
            .satisfied(&self.key, &self.ctx.pods, &self.ns)
        {
            return Ok(None);
        }
        let parallelism = i64::from(self.spec.parallelism.unwrap_or(1).max(0));
        let surplus = self.seen.active.len() as i64 - parallelism;
        let wanted = self.plan();
        if surplus > 0 {
            let doomed = super::pods::pods_to_delete(self.seen.active.clone(), surplus as usize);
            Api::<Pod>::namespaced(&self.ctx.client, &self.ns)
                .delete_all(&doomed)
                .await?;
            self.ctx.expectations.expect(&self.key, Vec::new(), doomed);
            return Ok(None);
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        if let Some(w) = self.backoff_left() {
            // Wait out the backoff before replacing failed pods.
            return Ok(Some(w));
        }
        let made = create_pods(self.ctx, self.job, &wanted).await;
        let names: Vec<String> = made
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        for n in &names {
            self.normal("SuccessfulCreate", format!("Created pod: {n}"));
        }
        self.ctx.expectations.expect(&self.key, names, Vec::new());
        match made.into_iter().find_map(|r| r.err()) {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
    }
}

/// One reconcile of one Job.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = job.spec.as_ref().ok_or(Error::NoSpec("Job"))?;
    let ns = job.metadata.namespace().to_string();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_namespace(&ns)
        .into_iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .collect();
    let seen = observe(&job, spec, &pods);
    let prev = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let status = JobStatus {
        active: Some(seen.active.len() as i32),
        ready: Some(seen.active.iter().filter(|p| is_ready(p)).count() as i32),
        succeeded: Some(seen.succeeded as i32),
        failed: Some(seen.failed as i32),
        terminating: Some(seen.terminating as i32),
        start_time: prev.start_time,
        completed_indexes: indexed.then(|| intervals(&seen.done_indexes)),
        ..Default::default()
    };
    let mut pass = Pass {
        job: &job,
        spec,
        ctx: &ctx,
        key: format!("jobs/{ns}/{}", job.metadata.name()),
        ns,
        now: now(),
        recorder: Recorder::new(&ctx.client, "job-controller"),
        seen,
        status,
        conditions: prev.conditions.clone().unwrap_or_default(),
    };
    if condition_true(&job, "Complete") || condition_true(&job, "Failed") {
        return pass.finished().await;
    }
    if spec.suspend == Some(true) {
        return pass.suspended().await;
    }
    if condition_true(&job, "Suspended") {
        for c in pass
            .conditions
            .iter_mut()
            .filter(|c| c.type_ == "Suspended")
        {
            *c = Condition {
                status: "False".into(),
                ..condition("Suspended", "JobResumed", "Job resumed", pass.now)
            };
        }
        pass.normal("Resumed", "Job resumed".into());
    }
    let started = *pass.status.start_time.get_or_insert(pass.now);
    if let Some((reason, message)) = pass.failure(started) {
        return pass.fail(reason, message).await;
    }
    if pass.complete() {
        return pass.completed().await;
    }
    let mut after = spec.active_deadline_seconds.map(|d| {
        let due = started + chrono::Duration::seconds(d);
        (due - pass.now).to_std().unwrap_or_default()
    });
    let scaled = pass.scale().await;
    let backoff = match scaled {
        Ok(b) => b,
        Err(e) => {
            pass.write().await?;
            return Err(e);
        }
    };
    if let Some(w) = backoff {
        after = Some(after.map_or(w, |a| a.min(w)));
    }
    pass.write().await?;
    Ok(after.map_or(Action::await_change(), |a| {
        Action::requeue(a.max(Duration::from_millis(100)))
    }))
}

/// Which pods to start.
enum Plan {
    Count(i64),
    Indexes(Vec<i64>),
}

impl Plan {
    fn is_empty(&self) -> bool {
        match self {
            Plan::Count(n) => *n <= 0,
            Plan::Indexes(v) => v.is_empty(),
        }
    }
}

/// The pod for one run of the Job (for Indexed Jobs: of one index).
fn pod_for(job: &Job, index: Option<i64>) -> Pod {
    let name = job.metadata.name();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    meta.namespace = job.metadata.namespace.clone();
    meta.generate_name = Some(match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    });
    meta.owner_references = Some(vec![job.controller_ref()]);
    if let Some(i) = index {
        for map in [&mut meta.annotations, &mut meta.labels] {
            map.get_or_insert_with(Default::default)
                .insert(INDEX_KEY.into(), i.to_string());
        }
        spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
        let index_env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                }),
                ..Default::default()
            }),
        };
        let containers = spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(spec.containers.iter_mut());
        for c in containers {
            let env = c.env.get_or_insert_with(Vec::new);
            env.retain(|e| e.name != "JOB_COMPLETION_INDEX");
            env.insert(0, index_env.clone());
        }
    }
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

async fn create_pods(ctx: &Context, job: &Job, plan: &Plan) -> Vec<crate::client::Result<String>> {
    let api = Api::<Pod>::beside(&ctx.client, job);
    let pods: Vec<Pod> = match plan {
        Plan::Count(n) => (0..*n).map(|_| pod_for(job, None)).collect(),
        Plan::Indexes(v) => v.iter().map(|i| pod_for(job, Some(*i))).collect(),
    };
    futures::future::join_all(pods.iter().map(|p| {
        let api = api.clone();
        async move {
            api.create(p)
                .await
                .map(|made| made.metadata.name().to_string())
        }
    }))
    .await
}

async fn delete_pods(ctx: &Context, ns: &str, pods: &[&Pod]) -> Result<()> {
    let names: Vec<String> = pods.iter().map(|p| p.metadata.name().to_string()).collect();
    Api::<Pod>::namespaced(&ctx.client, ns)
        .delete_all(&names)
        .await?;
    Ok(())
}

/// Writes the status when it differs from what the Job shows (a removed `startTime` is written as null).
async fn write_status(ctx: &Context, job: &Job, status: JobStatus) -> Result<()> {
    let current = serde_json::to_value(job.status.clone().unwrap_or_default()).unwrap_or_default();
    let mut patch = serde_json::to_value(&status).unwrap_or_default();
    let drops_start = current.get("startTime").is_some() && patch.get("startTime").is_none();
    let changed = patch
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| current.get(k) != Some(v))
        || drops_start;
    if !changed {
        return Ok(());
    }
    if drops_start {
        patch["startTime"] = Value::Null;
    }
    Api::<Job>::beside(&ctx.client, job)
        .patch_status(
            job.metadata.name(),
            &Patch::Strategic(json!({"status": patch})),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_compress_into_intervals() {
        let set: BTreeSet<i64> = [0, 1, 2, 5, 7, 8].into_iter().collect();
        assert_eq!(intervals(&set), "0-2,5,7-8");
        assert_eq!(intervals(&BTreeSet::new()), "");
        assert_eq!(intervals(&[4].into_iter().collect()), "4");
    }

    #[test]
    fn pod_failure_policy_rules_match_exit_codes_and_conditions_in_order() {
        let pod = |code: i64, cond: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": []},
                "status": {"phase": "Failed",
                "containerStatuses": [{"name": "main", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code}}}],
                "conditions": cond.map(|c| vec![json!({"type": c, "status": "True"})]).unwrap_or_default()}}))
            .unwrap()
        };
        let policy = json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}}]});
        let policy: PodFailurePolicy = serde_json::from_value(policy).unwrap();
        let policy = Some(&policy);
        match judge(policy, &pod(42, None)) {
            Verdict::FailJob(m) => assert_eq!(
                m,
                "Container main for pod n/p failed with exit code 42 matching FailJob rule at index 0"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            judge(policy, &pod(1, Some("DisruptionTarget"))),
            Verdict::Ignore
        );
        assert_eq!(judge(policy, &pod(3, None)), Verdict::Count);
        assert_eq!(judge(None, &pod(42, None)), Verdict::Count);
    }

    #[test]
    fn an_indexed_pod_carries_its_index() {
        let job = json!({"metadata": {"name": "work", "namespace": "n", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"job-name": "work"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}}}});
        let job: Job = serde_json::from_value(job).unwrap();
        let p = serde_json::to_value(pod_for(&job, Some(3))).unwrap();
        assert_eq!(p["metadata"]["generateName"], "work-3-");
        assert_eq!(p["metadata"]["annotations"][INDEX_KEY], "3");
        assert_eq!(p["metadata"]["labels"][INDEX_KEY], "3");
        assert_eq!(p["metadata"]["labels"]["job-name"], "work");
        assert_eq!(p["spec"]["hostname"], "work-3");
        assert_eq!(
            p["spec"]["containers"][0]["env"][0]["name"],
            "JOB_COMPLETION_INDEX"
        );
        assert_eq!(p["spec"]["containers"][0]["env"][1]["name"], "A");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u");
        let plain = serde_json::to_value(pod_for(&job, None)).unwrap();
        assert_eq!(plain["metadata"]["generateName"], "work-");
        assert!(plain["metadata"]["annotations"].get(INDEX_KEY).is_none());
    }
}
