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

/// One reconcile of one Job.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = job.spec.as_ref().ok_or(Error::NoSpec("Job"))?;
    let ns = job.metadata.namespace().to_string();
    let name = job.metadata.name().to_string();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let key = format!("jobs/{ns}/{name}");
    let now_t = now();
    let recorder = Recorder::new(&ctx.client, "job-controller");
    let event = |ty: &'static str, reason: &'static str, message: String| match ty {
        "Warning" => recorder.warning(job.as_ref(), reason, message),
        _ => recorder.normal(job.as_ref(), reason, message),
    };

    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_namespace(&ns)
        .into_iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .collect();
    let active: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
        })
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
    // Counts never go back (a finished pod removed by hand still happened).
    let succeeded = (succeeded_pods.len() as i64).max(i64::from(prev.succeeded.unwrap_or(0)));
    let failed = failed.max(i64::from(prev.failed.unwrap_or(0)));
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.map(i64::from);
    let parallelism = i64::from(spec.parallelism.unwrap_or(1).max(0));
    let backoff_limit = i64::from(spec.backoff_limit.unwrap_or(6));
    let done_indexes: BTreeSet<i64> = succeeded_pods.iter().filter_map(|p| index_of(p)).collect();

    let mut status = JobStatus {
        active: Some(active.len() as i32),
        ready: Some(active.iter().filter(|p| is_ready(p)).count() as i32),
        succeeded: Some(succeeded as i32),
        failed: Some(failed as i32),
        terminating: Some(terminating as i32),
        start_time: prev.start_time,
        completed_indexes: indexed.then(|| intervals(&done_indexes)),
        ..Default::default()
    };
    let mut conditions: Vec<Condition> = prev.conditions.clone().unwrap_or_default();
    let mut after: Option<Duration> = None;
    let finished = condition_true(&job, "Complete") || condition_true(&job, "Failed");

    if finished {
        // Leftovers of a failed Job are stopped; a finished Job with a TTL goes away when it runs out.
        delete_pods(&ctx, &ns, &active).await?;
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let end = prev.completion_time.or_else(|| {
                conditions
                    .iter()
                    .filter(|c| c.type_ == "Failed")
                    .find_map(|c| c.last_transition_time)
            });
            if let Some(end) = end {
                let due = end + chrono::Duration::seconds(i64::from(ttl));
                if now_t >= due {
                    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                        "propagationPolicy": "Background", "preconditions": {"uid": uid}});
                    match Api::<Job>::namespaced(&ctx.client, &ns)
                        .delete_with(&name, &options)
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(job = %key, "deleted after ttlSecondsAfterFinished")
                        }
                        Err(e) if e.code() == Some(404) || e.code() == Some(409) => {}
                        Err(e) => return Err(e.into()),
                    }
                    return Ok(Action::await_change());
                }
                after = Some((due - now_t).to_std().unwrap_or_default());
            }
        }
        // Only the counts move now.
        status.completion_time = prev.completion_time;
        status.conditions = Some(conditions);
        write_status(&ctx, &job, status).await?;
        return Ok(after.map_or(Action::await_change(), Action::requeue));
    }

    if spec.suspend == Some(true) {
        delete_pods(&ctx, &ns, &active).await?;
        status.active = Some(0);
        status.start_time = None;
        if !condition_true(&job, "Suspended") {
            conditions.retain(|c| c.type_ != "Suspended");
            conditions.push(condition(
                "Suspended",
                "JobSuspended",
                "Job suspended",
                now_t,
            ));
            event("Normal", "Suspended", "Job suspended".into());
        }
        status.conditions = Some(conditions);
        write_status(&ctx, &job, status).await?;
        return Ok(Action::await_change());
    }
    if condition_true(&job, "Suspended") {
        for c in conditions.iter_mut().filter(|c| c.type_ == "Suspended") {
            *c = Condition {
                status: "False".into(),
                ..condition("Suspended", "JobResumed", "Job resumed", now_t)
            };
        }
        event("Normal", "Resumed", "Job resumed".into());
    }
    let started = *status.start_time.get_or_insert(now_t);

    // Failure: a FailJob rule, too many failures, or past the deadline.
    let deadline = spec.active_deadline_seconds;
    let failure = if let Some(m) = fail_job {
        Some(("PodFailurePolicy", m))
    } else if failed + restarts > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_string(),
        ))
    } else if deadline.is_some_and(|d| now_t >= started + chrono::Duration::seconds(d)) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline".to_string(),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = failure {
        delete_pods(&ctx, &ns, &active).await?;
        conditions.retain(|c| c.type_ != "FailureTarget" && c.type_ != "Failed");
        conditions.push(condition("FailureTarget", reason, &message, now_t));
        conditions.push(condition("Failed", reason, &message, now_t));
        status.conditions = Some(conditions);
        status.active = Some(0);
        tracing::info!(job = %key, reason, "job failed");
        event("Warning", reason, message);
        write_status(&ctx, &job, status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // Success: every completion (every index) done; a work queue when one pod succeeded and none is left running.
    let complete = match completions {
        Some(c) if indexed => (0..c).all(|i| done_indexes.contains(&i)),
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    if complete {
        delete_pods(&ctx, &ns, &active).await?;
        let message = "Reached expected number of succeeded pods";
        conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            message,
            now_t,
        ));
        conditions.push(condition("Complete", "CompletionsReached", message, now_t));
        status.conditions = Some(conditions);
        status.completion_time = Some(now_t);
        status.active = Some(0);
        tracing::info!(job = %key, "job completed");
        event("Normal", "Completed", "Job completed".into());
        write_status(&ctx, &job, status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Some(d) = deadline {
        let due = started + chrono::Duration::seconds(d);
        after = Some((due - now_t).to_std().unwrap_or_default());
    }

    // Run more pods, or fewer.
    if ctx.expectations.satisfied(&key, &ctx.pods, &ns) {
        let wanted = match completions {
            Some(c) if indexed => {
                let running: BTreeSet<i64> = active.iter().filter_map(|p| index_of(p)).collect();
                let pending: Vec<i64> = (0..c)
                    .filter(|i| !done_indexes.contains(i) && !running.contains(i))
                    .collect();
                let room = (parallelism - active.len() as i64).max(0) as usize;
                Plan::Indexes(pending.into_iter().take(room).collect())
            }
            Some(c) => Plan::Count((parallelism.min(c - succeeded) - active.len() as i64).max(0)),
            None if succeeded > 0 => Plan::Count(0),
            None => Plan::Count((parallelism - active.len() as i64).max(0)),
        };
        let surplus = active.len() as i64 - parallelism;
        let wait = (failed + restarts > 0)
            .then(|| {
                let exp = (failed + restarts - 1).clamp(0, 16) as u32;
                let delay = ctx
                    .backoff
                    .saturating_mul(2u32.saturating_pow(exp))
                    .min(MAX_BACKOFF);
                last_failure.map(|t| {
                    let due = t + chrono::Duration::from_std(delay).unwrap_or_default();
                    (due - now_t).to_std().unwrap_or_default()
                })
            })
            .flatten()
            .filter(|d| !d.is_zero());
        if surplus > 0 {
            let doomed = super::pods::pods_to_delete(active.clone(), surplus as usize);
            Api::<Pod>::namespaced(&ctx.client, &ns)
                .delete_all(&doomed)
                .await?;
            ctx.expectations.expect(&key, Vec::new(), doomed);
        } else if !wanted.is_empty() {
            if let Some(w) = wait {
                // Wait out the backoff before replacing failed pods.
                after = Some(after.map_or(w, |a| a.min(w)));
            } else {
                let made = create_pods(&ctx, &job, &wanted).await;
                let names: Vec<String> = made
                    .iter()
                    .filter_map(|r| r.as_ref().ok().cloned())
                    .collect();
                for n in &names {
                    event("Normal", "SuccessfulCreate", format!("Created pod: {n}"));
                }
                ctx.expectations.expect(&key, names, Vec::new());
                if let Some(Err(e)) = made.into_iter().find(|r| r.is_err()) {
                    status.conditions = Some(conditions);
                    write_status(&ctx, &job, status).await?;
                    return Err(e.into());
                }
            }
        }
    }
    status.conditions = Some(conditions);
    write_status(&ctx, &job, status).await?;
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
