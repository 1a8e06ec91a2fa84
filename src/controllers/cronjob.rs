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
use serde_json::{json, Value};

use crate::api::batch::parse_schedule as parse;
use crate::api::meta::{format_time, now};
use crate::api::registry;
use crate::api::Object;
use crate::client::informer::Cache;
use crate::client::Client;
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The annotation naming the time a Job was scheduled for.
pub const SCHEDULED_KEY: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// What the CronJob controller works with.
pub struct Context {
    pub client: Client,
    pub jobs: Cache,
}

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn time_at(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn finished(job: &Value) -> Option<&'static str> {
    let conditions = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    for c in conditions {
        if c["status"] == "True" {
            if c["type"] == "Complete" {
                return Some("Complete");
            }
            if c["type"] == "Failed" {
                return Some("Failed");
            }
        }
    }
    None
}

/// One reconcile of one CronJob.
pub async fn reconcile(cj: Arc<Value>, ctx: Arc<Context>) -> Result<Action> {
    let ns = s(&cj, "/metadata/namespace").to_string();
    let name = s(&cj, "/metadata/name").to_string();
    let uid = s(&cj, "/metadata/uid").to_string();
    let cj_kind = registry::lookup("cronjobs").expect("cronjobs kind");
    let job_kind = registry::lookup("jobs").expect("jobs kind");
    let jobs_api = crate::client::Api::<crate::api::batch::Job>::namespaced(&ctx.client, &ns);
    let spec = &cj["spec"];
    let me = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": ns, "uid": uid}});
    let event = |ty: &'static str, reason: &'static str, message: String| {
        crate::client::events::spawn_record(
            &ctx.client,
            me.clone(),
            "cronjob-controller",
            ty,
            reason,
            message,
        );
    };

    // The Jobs it owns: running ones are `active`; finished ones feed lastSuccessfulTime and the history limits.
    let mut jobs: Vec<Arc<Value>> = ctx
        .jobs
        .list_namespace(&ns)
        .into_iter()
        .filter(|j| j.object_meta().controller().is_some_and(|o| o.uid == uid))
        .collect();
    jobs.sort_by_key(|j| {
        (
            time_at(j, "/status/startTime").or_else(|| time_at(j, "/metadata/creationTimestamp")),
            s(j, "/metadata/name").to_string(),
        )
    });
    let running: Vec<&Arc<Value>> = jobs
        .iter()
        .filter(|j| finished(j).is_none() && j.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let prev = &cj["status"];
    let mut last_success = time_at(prev, "/lastSuccessfulTime");
    for j in &jobs {
        if finished(j) == Some("Complete") {
            let done = time_at(j, "/status/completionTime");
            if done > last_success {
                last_success = done;
            }
        }
    }
    for (state, field, default) in [
        ("Complete", "successfulJobsHistoryLimit", 3),
        ("Failed", "failedJobsHistoryLimit", 1),
    ] {
        let limit = spec[field].as_i64().unwrap_or(default).max(0) as usize;
        let done: Vec<&Arc<Value>> = jobs
            .iter()
            .filter(|j| {
                finished(j) == Some(state) && j.pointer("/metadata/deletionTimestamp").is_none()
            })
            .collect();
        let old = done.iter().take(done.len().saturating_sub(limit));
        let names: Vec<String> = old.map(|j| s(j, "/metadata/name").to_string()).collect();
        for jn in jobs_api.delete_all(&names).await? {
            event("Normal", "SuccessfulDelete", format!("Deleted job {jn}"));
        }
    }
    let reference = |j: &Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"],
            "namespace": ns, "uid": j["metadata"]["uid"], "resourceVersion": j["metadata"]["resourceVersion"]})
    };
    let mut active: Vec<Value> = running.iter().map(|j| reference(j)).collect();
    let mut status = json!({"active": active});
    if let Some(t) = prev.get("lastScheduleTime").filter(|t| t.is_string()) {
        status["lastScheduleTime"] = t.clone();
    }
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = json!(format_time(&t));
    }

    if cj.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(Action::await_change());
    }
    let schedule = match parse(s(spec, "/schedule"), spec["timeZone"].as_str()) {
        Ok(sc) => sc,
        Err(why) => {
            event("Warning", "UnparseableSchedule", why);
            write_status(&ctx, cj_kind, &cj, status).await?;
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
    if spec["suspend"].as_bool() == Some(true) {
        write_status(&ctx, cj_kind, &cj, status).await?;
        return Ok(Action::await_change());
    }

    let mut earliest = time_at(prev, "/lastScheduleTime")
        .or_else(|| time_at(&cj, "/metadata/creationTimestamp"))
        .unwrap_or(now_t);
    let deadline = spec["startingDeadlineSeconds"].as_i64();
    if let Some(d) = deadline {
        earliest = earliest.max(now_t - chrono::Duration::seconds(d));
    }
    let (due, missed) = schedule.latest_between(earliest, now_t, 100);
    let Some(due) = due else {
        write_status(&ctx, cj_kind, &cj, status).await?;
        return Ok(wait_next(now_t));
    };
    if missed >= 100 {
        event(
            "Warning",
            "TooManyMissedTimes",
            "too many missed start times: 100 or more; only the most recent runs. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        );
    }
    match s(spec, "/concurrencyPolicy") {
        "Forbid" if !running.is_empty() => {
            // Skipped while a Job runs; looked at again when it finishes or at the next time.
            tracing::debug!(cronjob = %name, "a job is still running; this run is skipped (Forbid)");
            write_status(&ctx, cj_kind, &cj, status).await?;
            return Ok(wait_next(now_t));
        }
        "Replace" => {
            let names: Vec<String> = running
                .iter()
                .map(|j| s(j, "/metadata/name").to_string())
                .collect();
            for jn in jobs_api.delete_all(&names).await? {
                event("Normal", "SuccessfulDelete", format!("Deleted job {jn}"));
            }
            active.clear();
        }
        _ => {}
    }
    let job_name = format!("{name}-{}", due.timestamp() / 60);
    let template = &spec["jobTemplate"];
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    meta["name"] = json!(job_name);
    meta["namespace"] = json!(ns);
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][SCHEDULED_KEY] = json!(schedule.local(due));
    meta["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true}]);
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]});
    match ctx.client.create(job_kind, Some(&ns), &job).await {
        Ok(made) => {
            event(
                "Normal",
                "SuccessfulCreate",
                format!("Created job {job_name}"),
            );
            tracing::info!(cronjob = %name, job = %job_name, scheduled = %format_time(&due), "created job");
            active.push(reference(&made));
        }
        Err(e) if e.code() == Some(409) => {}
        Err(e) => {
            event(
                "Warning",
                "FailedCreate",
                format!("Error creating job: {e}"),
            );
            return Err(e.into());
        }
    }
    status["active"] = json!(active);
    status["lastScheduleTime"] = json!(format_time(&due));
    write_status(&ctx, cj_kind, &cj, status).await?;
    Ok(wait_next(now_t))
}

/// Writes the status when it differs from what the CronJob shows.
async fn write_status(
    ctx: &Context,
    kind: &'static registry::KindInfo,
    cj: &Value,
    status: Value,
) -> Result<()> {
    let current = &cj["status"];
    let same = |k: &str| {
        let a = current.get(k).filter(|v| !v.is_null());
        let b = status.get(k).filter(|v| !v.is_null());
        match k {
            // References compare by name.
            "active" => {
                let names = |v: Option<&Value>| -> Vec<String> {
                    v.and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|r| s(r, "/name").to_string())
                        .collect()
                };
                names(a) == names(b)
            }
            _ => a == b,
        }
    };
    if ["active", "lastScheduleTime", "lastSuccessfulTime"]
        .iter()
        .all(|k| same(k))
    {
        return Ok(());
    }
    let mut patch = status;
    if patch["active"].as_array().is_some_and(Vec::is_empty) {
        patch["active"] = Value::Null;
    }
    ctx.client
        .patch_status(
            kind,
            cj["metadata"]["namespace"].as_str(),
            s(cj, "/metadata/name"),
            &patch,
        )
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
