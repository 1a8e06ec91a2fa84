//! batch/v1 kinds: Job and CronJob.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::core::{kind, object, PodTemplateSpec};
use super::meta::{Condition, LabelSelector, ObjectMeta, Time};
use super::Opaque;
use chrono::{DateTime, TimeZone, Utc};

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
    pub pod_failure_policy: Option<PodFailurePolicy>,
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

object!(PodFailurePolicy { pub rules: Vec<PodFailurePolicyRule>, });
object!(PodFailurePolicyRule {
    /// FailJob, FailIndex, Ignore or Count.
    pub action: String,
    pub on_exit_codes: Option<PodFailurePolicyOnExitCodesRequirement>,
    pub on_pod_conditions: Option<Vec<PodFailurePolicyOnPodConditionsPattern>>,
});
object!(PodFailurePolicyOnExitCodesRequirement {
    pub container_name: Option<String>,
    /// In or NotIn.
    pub operator: String,
    pub values: Vec<i32>,
});
object!(PodFailurePolicyOnPodConditionsPattern {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: Option<String>,
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

/// A parsed schedule in its time zone.
#[derive(Debug)]
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

/// Why a CronJob's schedule or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
    #[error("TZ and CRON_TZ are not supported in the schedule; use spec.timeZone")]
    TzInSchedule,
    #[error("{0:?}: expected exactly 5 fields (minute hour day-of-month month day-of-week) or a macro like @hourly")]
    Fields(String),
    #[error("{schedule:?}: {reason}")]
    Invalid { schedule: String, reason: String },
}

/// Parses a CronJob's `schedule` (five fields or a macro) and `timeZone`; the error says which is wrong and why.
pub fn parse_schedule(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
    let tz = match time_zone {
        None | Some("") => chrono_tz::UTC,
        Some(name) => name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| ScheduleError::TimeZone(name.to_string()))?,
    };
    let trimmed = schedule.trim();
    if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
        return Err(ScheduleError::TzInSchedule);
    }
    if !trimmed.starts_with('@') && trimmed.split_whitespace().count() != 5 {
        return Err(ScheduleError::Fields(schedule.to_string()));
    }
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| ScheduleError::Invalid {
            schedule: schedule.to_string(),
            reason: e.to_string(),
        })?;
    Ok(Schedule { cron, tz })
}

impl Schedule {
    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest scheduled time in `(after, until]` and how many there are (counting stops at `cap`).
    pub fn latest_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        cap: usize,
    ) -> (Option<DateTime<Utc>>, usize) {
        let mut count = 0;
        let mut latest = None;
        let mut t = after;
        while let Some(n) = self.next_after(t) {
            if n > until {
                break;
            }
            count += 1;
            latest = Some(n);
            t = n;
            if count >= cap {
                // Too many to walk: the latest is the last one at or before `until`.
                latest = self
                    .cron
                    .find_previous_occurrence(&until.with_timezone(&self.tz), true)
                    .ok()
                    .map(|t| t.with_timezone(&Utc));
                break;
            }
        }
        (latest, count)
    }

    /// The latest scheduled time at or before `t`.
    pub fn previous_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// `t` as RFC 3339 in the schedule's time zone.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        self.tz
            .from_utc_datetime(&t.naive_utc())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{parse_schedule as parse, ScheduleError};

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedules_parse_like_cron_and_errors_say_why() {
        let every5 = parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            every5.next_after(at("2026-01-01T10:02:30Z")),
            Some(at("2026-01-01T10:05:00Z"))
        );
        let hourly = parse("@hourly", None).unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T10:02:30Z")),
            Some(at("2026-01-01T11:00:00Z"))
        );
        // Day of month OR day of week, as Vixie cron: the 13th, and every Friday.
        let either = parse("0 0 13 * 5", None).unwrap();
        assert_eq!(
            either.next_after(at("2026-02-01T00:00:00Z")),
            Some(at("2026-02-06T00:00:00Z"))
        );
        assert_eq!(
            either.next_after(at("2026-02-12T00:00:00Z")),
            Some(at("2026-02-13T00:00:00Z"))
        );
        assert!(matches!(
            parse("* * * *", None),
            Err(ScheduleError::Fields(_))
        ));
        assert!(parse("0 * * * * *", None)
            .unwrap_err()
            .to_string()
            .contains("exactly 5 fields"));
        assert!(parse("61 * * * *", None).is_err());
        assert!(parse("TZ=UTC 0 * * * *", None)
            .unwrap_err()
            .to_string()
            .contains("spec.timeZone"));
        assert_eq!(
            parse("0 * * * *", Some("Mars/Olympus")).unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn time_zones_move_the_hour() {
        // 09:00 in New York is 14:00 UTC in winter.
        let ny = parse("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            ny.next_after(at("2026-01-05T00:00:00Z")),
            Some(at("2026-01-05T14:00:00Z"))
        );
        assert_eq!(
            ny.local(at("2026-01-05T14:00:00Z")),
            "2026-01-05T09:00:00-05:00"
        );
    }
}
