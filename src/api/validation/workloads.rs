//! Workloads: replica counts, selectors that match their templates, pod templates (a StatefulSet's claim templates
//! count as volumes), rollout strategies, Jobs and CronJobs.

use serde_json::Value;

use super::names::check_cron;
use super::pod::pod_spec;
use super::{enum_field, err, get, labels, str_at, FieldError, Reason};

/// A ReplicationController: its selector is a plain map that the template's labels must contain.
pub(super) fn replication_controller(obj: &Value, errs: &mut Vec<FieldError>) {
    replicas(obj, errs);
    template(obj, "spec.template", "ReplicationController", errs);
    if let (Some(sel), Some(labels)) = (
        get(obj, "spec.selector"),
        get(obj, "spec.template.metadata.labels"),
    ) {
        if !sel
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            errs.push(err(
                "spec.template.metadata.labels",
                Reason::Invalid,
                "`selector` does not match template `labels`",
            ));
        }
    }
}

/// A CronJob: its schedule, time zone, concurrency policy and job template.
pub(super) fn cron_job(obj: &Value, errs: &mut Vec<FieldError>) {
    match str_at(obj, "spec.schedule") {
        Some(s) => {
            if let Err(e) = check_cron(s) {
                errs.push(err("spec.schedule", Reason::Invalid, e.to_string()));
            }
        }
        None => errs.push(err("spec.schedule", Reason::Required, "")),
    }
    if let Some(tz) = str_at(obj, "spec.timeZone") {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            errs.push(err(
                "spec.timeZone",
                Reason::Invalid,
                format!("{tz:?}: unknown time zone"),
            ));
        }
    }
    enum_field(
        obj,
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        errs,
    );
    job(
        get(obj, "spec.jobTemplate.spec").unwrap_or(&Value::Null),
        "spec.jobTemplate.spec",
        errs,
    );
}

fn replicas(obj: &Value, errs: &mut Vec<FieldError>) {
    if let Some(r) = get(obj, "spec.replicas").and_then(Value::as_i64) {
        if r < 0 {
            errs.push(err(
                "spec.replicas",
                Reason::Invalid,
                format!("{r}: must be greater than or equal to 0"),
            ));
        }
    }
}

fn template(obj: &Value, path: &str, owner: &str, errs: &mut Vec<FieldError>) {
    let Some(t) = get(obj, path) else {
        errs.push(err(path, Reason::Required, ""));
        return;
    };
    labels(
        get(t, "metadata.labels"),
        &format!("{path}.metadata.labels"),
        errs,
    );
    // A StatefulSet's claim templates are volumes of its pods.
    let claims: Vec<String> = get(obj, "spec.volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| str_at(c, "metadata.name").map(String::from))
        .collect();
    if claims.is_empty() {
        pod_spec(t.get("spec"), &format!("{path}.spec"), owner, errs);
    } else {
        let mut spec = t.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = spec.as_object_mut() {
            let vols = m
                .entry("volumes")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(a) = vols.as_array_mut() {
                for c in claims {
                    a.push(
                        serde_json::json!({"name": c, "persistentVolumeClaim": {"claimName": c}}),
                    );
                }
            }
        }
        pod_spec(Some(&spec), &format!("{path}.spec"), owner, errs);
    }
}

pub(super) fn workload(kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    replicas(obj, errs);
    let sel = get(obj, "spec.selector");
    match sel {
        None => errs.push(err("spec.selector", Reason::Required, "")),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|m| m.is_empty());
            if empty {
                errs.push(err(
                    "spec.selector",
                    Reason::Invalid,
                    "empty selector is invalid for deployment",
                ));
            } else {
                match serde_json::from_value::<crate::api::meta::LabelSelector>(sel.clone())
                    .ok()
                    .map(|ls| crate::api::selector::Selector::from_label_selector(&ls))
                {
                    Some(Ok(s)) => {
                        let tl: std::collections::BTreeMap<String, String> =
                            get(obj, "spec.template.metadata.labels")
                                .and_then(|l| serde_json::from_value(l.clone()).ok())
                                .unwrap_or_default();
                        if !s.matches(&tl) {
                            errs.push(err(
                                "spec.template.metadata.labels",
                                Reason::Invalid,
                                format!("{tl:?}: `selector` does not match template `labels`"),
                            ));
                        }
                    }
                    Some(Err(e)) => errs.push(err("spec.selector", Reason::Invalid, e.to_string())),
                    None => errs.push(err("spec.selector", Reason::Invalid, "malformed selector")),
                }
            }
        }
    }
    template(obj, "spec.template", kind, errs);
    if kind == "Deployment" {
        enum_field(
            obj,
            "spec.strategy.type",
            &["Recreate", "RollingUpdate"],
            errs,
        );
        if str_at(obj, "spec.strategy.type") == Some("RollingUpdate") {
            let zero = |p: &str| match get(obj, p) {
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s == "0%" || s == "0",
                _ => false,
            };
            if zero("spec.strategy.rollingUpdate.maxSurge")
                && zero("spec.strategy.rollingUpdate.maxUnavailable")
            {
                errs.push(err(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    Reason::Invalid,
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
    }
    if kind == "StatefulSet" {
        enum_field(
            obj,
            "spec.podManagementPolicy",
            &["OrderedReady", "Parallel"],
            errs,
        );
        enum_field(
            obj,
            "spec.updateStrategy.type",
            &["RollingUpdate", "OnDelete"],
            errs,
        );
    }
    if kind == "DaemonSet" {
        enum_field(
            obj,
            "spec.updateStrategy.type",
            &["RollingUpdate", "OnDelete"],
            errs,
        );
    }
}

pub(super) fn job(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        if let Some(n) = spec.get(f).and_then(Value::as_i64) {
            if n < 0 || (f == "activeDeadlineSeconds" && n == 0) {
                errs.push(err(
                    &format!("{path}.{f}"),
                    Reason::Invalid,
                    format!("{n}: must be greater than or equal to 0"),
                ));
            }
        }
    }
    let tpath = format!("{path}.template");
    match spec.get("template") {
        Some(t) if !t.is_null() => {
            labels(
                get(t, "metadata.labels"),
                &format!("{tpath}.metadata.labels"),
                errs,
            );
            pod_spec(t.get("spec"), &format!("{tpath}.spec"), "Job", errs);
        }
        _ => errs.push(err(&tpath, Reason::Required, "")),
    }
    if let Some(mode) = spec.get("completionMode").and_then(Value::as_str) {
        if !["NonIndexed", "Indexed"].contains(&mode) {
            errs.push(err(
                &format!("{path}.completionMode"),
                Reason::NotSupported,
                format!("{mode:?}: supported values: \"NonIndexed\", \"Indexed\""),
            ));
        }
    }
}
