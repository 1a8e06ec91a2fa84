//! The CronJob controller: creates a Job from `jobTemplate` at each time of the five-field cron `schedule` (or a
//! macro such as `@hourly`; parsed by the croner crate, Vixie-cron rules) in `timeZone` (an IANA name; default UTC).
//! After downtime only the most recent missed time runs - never a stampede - and not at all once it is more than
//! `startingDeadlineSeconds` late. `concurrencyPolicy` Allow, Forbid (skip while a Job runs) or Replace (delete the
//! running Jobs first); `suspend`; finished Jobs beyond `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` are
//! deleted oldest first. Status: `active`, `lastScheduleTime`, `lastSuccessfulTime`. Job names are
//! `<cronjob>-<minutes since the epoch>`, so one scheduled time can never make two Jobs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::api::batch::{
    parse_schedule as parse, CronJob, CronJobSpec, CronJobStatus, Job, Schedule,
};
use crate::api::core::ObjectReference;
use crate::api::meta::{now, ObjectMeta};
use crate::api::Resource;
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

use super::{Error, Result};

/// The annotation naming the time a Job was scheduled for.
pub const SCHEDULED_KEY: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// What the CronJob controller works with.
pub struct Context {
    pub client: Client,
    pub jobs: Cache<Job>,
}

/// `Complete` or `Failed` once the Job has finished.
fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some("Complete"),
            "Failed" => Some("Failed"),
            _ => None,
        })
}

fn reference(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some(Job::api_version()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The Jobs `cj` owns, oldest first.
fn owned_jobs(cj: &CronJob, ctx: &Context) -> Vec<Arc<Job>> {
    let uid = cj.metadata.uid.as_deref().unwrap_or("");
    let mut jobs: Vec<Arc<Job>> = ctx
        .jobs
        .list_namespace(cj.metadata.namespace())
        .into_iter()
        .filter(|j| super::pods::controller_uid(&j.metadata) == Some(uid))
        .collect();
    jobs.sort_by_key(|j| {
        let started = j.status.as_ref().and_then(|s| s.start_time);
        (
            started.or(j.metadata.creation_timestamp),
            j.metadata.name().to_string(),
        )
    });
    jobs
}

/// Deletes finished Jobs beyond the history limits (oldest first).
async fn prune_history(
    cj: &CronJob,
    spec: &CronJobSpec,
    jobs: &[Arc<Job>],
    api: &Api<Job>,
    recorder: &Recorder,
) -> Result<()> {
    let limits = [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ];
    for (state, limit) in limits {
        let done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j) == Some(state) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        let names: Vec<String> = done
            .iter()
            .take(excess)
            .map(|j| j.metadata.name().to_string())
            .collect();
        for jn in api.delete_all(&names).await? {
            recorder.normal(cj, "SuccessfulDelete", format!("Deleted job {jn}"));
        }
    }
    Ok(())
}

/// The Job of the run scheduled at `due`, named `<cronjob>-<minutes since the epoch>` as Kubernetes names it.
fn job_for(cj: &CronJob, spec: &CronJobSpec, schedule: &Schedule, due: DateTime<Utc>) -> Job {
    let template = &spec.job_template;
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(SCHEDULED_KEY.into(), schedule.local(due));
    Job {
        api_version: Job::api_version(),
        kind: "Job".into(),
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cj.metadata.name(), due.timestamp() / 60)),
            namespace: Some(cj.metadata.namespace().to_string()),
            owner_references: Some(vec![cj.controller_ref()]),
            ..meta
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// One reconcile of one CronJob.
pub async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action> {
    let spec = cj.spec.as_ref().ok_or(Error::NoSpec("CronJob"))?;
    let jobs_api = Api::<Job>::namespaced(&ctx.client, cj.metadata.namespace());
    let recorder = Recorder::new(&ctx.client, "cronjob-controller");
    // The Jobs it owns: running ones are `active`; finished ones feed lastSuccessfulTime and the history limits.
    let jobs = owned_jobs(&cj, &ctx);
    let running: Vec<&Arc<Job>> = jobs
        .iter()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .collect();
    let prev = cj.status.clone().unwrap_or_default();
    let completions = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .map(|j| j.status.as_ref().and_then(|s| s.completion_time));
    let last_success = completions.fold(prev.last_successful_time, |a, b| a.max(b));
    prune_history(&cj, spec, &jobs, &jobs_api, &recorder).await?;
    let mut status = CronJobStatus {
        active: Some(running.iter().map(|j| reference(j)).collect()),
        last_schedule_time: prev.last_schedule_time,
        last_successful_time: last_success,
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let schedule = match parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(sc) => sc,
        Err(why) => {
            recorder.warning(cj.as_ref(), "UnparseableSchedule", why.to_string());
            write_status(&ctx, &cj, status).await?;
            return Ok(Action::await_change());
        }
    };
    let now_t = now();
    let wait_next = |from: DateTime<Utc>| {
        let next = schedule
            .next_after(from)
            .unwrap_or(from + chrono::Duration::hours(1));
        // A little past the minute, so the next reconcile finds it due.
        Action::requeue((next - now_t).to_std().unwrap_or_default() + Duration::from_millis(100))
    };
    if spec.suspend == Some(true) {
        write_status(&ctx, &cj, status).await?;
        return Ok(Action::await_change());
    }
    let Some(due) = due_run(&cj, &schedule, now_t, &recorder) else {
        write_status(&ctx, &cj, status).await?;
        return Ok(wait_next(now_t));
    };
    let run = Run {
        cj: &cj,
        jobs_api: &jobs_api,
        recorder: &recorder,
    };
    if run.start(&schedule, due, &running, &mut status).await? {
        status.last_schedule_time = Some(due);
    }
    write_status(&ctx, &cj, status).await?;
    Ok(wait_next(now_t))
}

/// The latest scheduled time not yet run, within `startingDeadlineSeconds` (warning when 100 or more were missed).
fn due_run(
    cj: &CronJob,
    schedule: &Schedule,
    now_t: DateTime<Utc>,
    recorder: &Recorder,
) -> Option<DateTime<Utc>> {
    let spec = cj.spec.as_ref()?;
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time)
        .or(cj.metadata.creation_timestamp)
        .unwrap_or(now_t);
    if let Some(d) = spec.starting_deadline_seconds {
        earliest = earliest.max(now_t - chrono::Duration::seconds(d));
    }
    let (due, missed) = schedule.latest_between(earliest, now_t, 100);
    if due.is_some() && missed >= 100 {
        recorder.warning(
            cj,
            "TooManyMissedTimes",
            "too many missed start times: 100 or more; only the most recent runs. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        );
    }
    due
}

/// Starting one scheduled run of a CronJob.
struct Run<'a> {
    cj: &'a CronJob,
    jobs_api: &'a Api<Job>,
    recorder: &'a Recorder,
}

impl Run<'_> {
    /// Starts the Job of the run due at `due`, as the concurrency policy allows (Forbid skips it while a Job runs;
    /// Replace deletes the running ones first). Returns whether the run counts as scheduled.
    async fn start(
        &self,
        schedule: &Schedule,
        due: DateTime<Utc>,
        running: &[&Arc<Job>],
        status: &mut CronJobStatus,
    ) -> Result<bool> {
        let (cj, recorder) = (self.cj, self.recorder);
        let spec = cj.spec.as_ref().ok_or(Error::NoSpec("CronJob"))?;
        let name = cj.metadata.name();
        let active = status.active.get_or_insert_with(Vec::new);
        match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
            "Forbid" if !running.is_empty() => {
                // Skipped while a Job runs; looked at again when it finishes or at the next time.
                tracing::debug!(cronjob = %name, "a job is still running; this run is skipped (Forbid)");
                return Ok(false);
            }
            "Replace" => {
                let names: Vec<String> = running
                    .iter()
                    .map(|j| j.metadata.name().to_string())
                    .collect();
                for jn in self.jobs_api.delete_all(&names).await? {
                    recorder.normal(cj, "SuccessfulDelete", format!("Deleted job {jn}"));
                }
                active.clear();
            }
            _ => {}
        }
        let job = job_for(cj, spec, schedule, due);
        let job_name = job.metadata.name().to_string();
        match self.jobs_api.create(&job).await {
            Ok(made) => {
                recorder.normal(cj, "SuccessfulCreate", format!("Created job {job_name}"));
                tracing::info!(cronjob = %name, job = %job_name, scheduled = %crate::api::meta::format_time(&due), "created job");
                active.push(reference(&made));
            }
            Err(e) if e.code() == Some(409) => {}
            Err(e) => {
                recorder.warning(cj, "FailedCreate", format!("Error creating job: {e}"));
                return Err(e.into());
            }
        }
        Ok(true)
    }
}

/// Writes the status when it differs from what the CronJob shows (active Jobs compare by name).
async fn write_status(ctx: &Context, cj: &CronJob, status: CronJobStatus) -> Result<()> {
    let current = cj.status.clone().unwrap_or_default();
    let names = |s: &CronJobStatus| -> Vec<Option<String>> {
        s.active.iter().flatten().map(|r| r.name.clone()).collect()
    };
    if names(&current) == names(&status)
        && current.last_schedule_time == status.last_schedule_time
        && current.last_successful_time == status.last_successful_time
    {
        return Ok(());
    }
    // An empty list is written as null, which clears `active`.
    let active = status.active.as_ref().filter(|a| !a.is_empty());
    let patch = json!({"status": {"active": active, "lastScheduleTime": status.last_schedule_time,
        "lastSuccessfulTime": status.last_successful_time}});
    Api::<CronJob>::beside(&ctx.client, cj)
        .patch_status(cj.metadata.name(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::batch::parse_schedule as parse;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn after_downtime_only_the_latest_missed_time_runs() {
        let every_minute = parse("* * * * *", None).unwrap();
        let (latest, count) = every_minute.latest_between(
            at("2026-01-01T10:00:00Z"),
            at("2026-01-01T10:30:30Z"),
            100,
        );
        assert_eq!(latest, Some(at("2026-01-01T10:30:00Z")));
        assert_eq!(count, 30);
        let (latest, count) = every_minute.latest_between(
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T00:00:30Z"),
            100,
        );
        assert_eq!(latest, Some(at("2026-01-02T00:00:00Z")));
        assert_eq!(count, 100);
        let (none, zero) = every_minute.latest_between(
            at("2026-01-01T10:00:00Z"),
            at("2026-01-01T10:00:59Z"),
            100,
        );
        assert_eq!((none, zero), (None, 0));
    }
}
