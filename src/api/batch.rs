//! batch/v1 kinds: Job and CronJob.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::core::{kind, object, PodTemplateSpec};
use super::meta::{Condition, LabelSelector, ObjectMeta, Time};
use super::Opaque;

kind!(Job { pub spec: Option<JobSpec>, pub status: Option<JobStatus>, });
object!(JobSpec {
    pub parallelism: Option<i32>,
    pub completions: Option<i32>,
    pub completion_mode: Option<String>,
    pub active_deadline_seconds: Option<i64>,
    pub backoff_limit: Option<i32>,
    pub backoff_limit_per_index: Option<i32>,
    pub max_failed_indexes: Option<i32>,
    pub selector: Option<LabelSelector>,
    pub manual_selector: Option<bool>,
    pub template: PodTemplateSpec,
    pub ttl_seconds_after_finished: Option<i32>,
    pub suspend: Option<bool>,
    pub pod_failure_policy: Option<Opaque>,
    pub success_policy: Option<Opaque>,
    pub pod_replacement_policy: Option<String>,
    pub managed_by: Option<String>,
});
object!(JobStatus {
    pub conditions: Option<Vec<Condition>>,
    pub start_time: Option<Time>,
    pub completion_time: Option<Time>,
    pub active: Option<i32>,
    pub succeeded: Option<i32>,
    pub failed: Option<i32>,
    pub terminating: Option<i32>,
    pub ready: Option<i32>,
    pub completed_indexes: Option<String>,
    pub failed_indexes: Option<String>,
    pub uncounted_terminated_pods: Option<Opaque>,
});

kind!(CronJob { pub spec: Option<CronJobSpec>, pub status: Option<CronJobStatus>, });
object!(CronJobSpec {
    pub schedule: String,
    pub time_zone: Option<String>,
    pub starting_deadline_seconds: Option<i64>,
    pub concurrency_policy: Option<String>,
    pub suspend: Option<bool>,
    pub job_template: JobTemplateSpec,
    pub successful_jobs_history_limit: Option<i32>,
    pub failed_jobs_history_limit: Option<i32>,
});
object!(JobTemplateSpec { pub metadata: Option<ObjectMeta>, pub spec: Option<JobSpec>, });
object!(CronJobStatus {
    pub active: Option<Vec<super::core::ObjectReference>>,
    pub last_schedule_time: Option<Time>,
    pub last_successful_time: Option<Time>,
});
