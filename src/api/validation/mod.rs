//! Validation, in two passes like Kubernetes: a structural pass against the kind's JSON Schema (types, unknown
//! fields, malformed quantities - "cannot be decoded", HTTP 400), then semantic rules per kind (names, required
//! values, selectors matching templates, port ranges - "Invalid", HTTP 422). Every violation names its field path.

use serde_json::Value;

use super::registry::KindInfo;

mod names;
mod pod;
mod service;
mod structural;
mod workloads;

pub use names::{
    check_cron, check_name, dns1035_label, dns1123_label, dns1123_subdomain, label_value,
    port_name, qualified_name, NameError,
};
pub use structural::{structural, Structural};

/// Why a field is wrong, with Kubernetes' cause reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
}

impl Reason {
    pub fn cause(&self) -> &'static str {
        match self {
            Reason::Required => "FieldValueRequired",
            Reason::Invalid => "FieldValueInvalid",
            Reason::NotSupported => "FieldValueNotSupported",
            Reason::Duplicate => "FieldValueDuplicate",
            Reason::TooLong => "FieldValueTooLong",
            Reason::TooMany => "FieldValueTooMany",
            Reason::Forbidden => "FieldValueForbidden",
        }
    }
    fn label(&self) -> &'static str {
        match self {
            Reason::Required => "Required value",
            Reason::Invalid => "Invalid value",
            Reason::NotSupported => "Unsupported value",
            Reason::Duplicate => "Duplicate value",
            Reason::TooLong => "Too long",
            Reason::TooMany => "Too many",
            Reason::Forbidden => "Forbidden",
        }
    }
}

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: Reason,
    pub detail: String,
}

impl FieldError {
    /// What is wrong without the field (`Required value`, `Invalid value: 3: must be ...`): a Status cause's message.
    pub fn body(&self) -> String {
        if self.detail.is_empty() {
            self.reason.label().to_string()
        } else {
            format!("{}: {}", self.reason.label(), self.detail)
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

pub(super) fn err(field: &str, reason: Reason, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason,
        detail: detail.into(),
    }
}

pub(super) fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for p in path.split('.') {
        cur = cur.get(p)?;
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

pub(super) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// The semantic pass. `obj` has passed the structural pass and has had defaults applied.
pub fn semantic(kind: &KindInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    metadata(
        kind,
        obj.get("metadata").unwrap_or(&Value::Null),
        "metadata",
        &mut errs,
    );
    let errs_ = &mut errs;
    match kind.kind {
        "Pod" => pod::pod_spec(get(obj, "spec"), "spec", "Pod", errs_),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workloads::workload(kind.kind, obj, errs_)
        }
        "ReplicationController" => workloads::replication_controller(obj, errs_),
        "Job" => workloads::job(obj.get("spec").unwrap_or(&Value::Null), "spec", errs_),
        "CronJob" => workloads::cron_job(obj, errs_),
        "Service" => service::service(obj, errs_),
        "ConfigMap" => config_map(obj, errs_),
        "APIService" => api_service(obj, errs_),
        "Application" if kind.group == "gitops.capstan.io" => {
            errs_.extend(super::gitops::check_windows(obj))
        }
        "Secret" => secret(obj, errs_),
        "PersistentVolumeClaim" => {
            access_modes(obj, errs_);
            if get(obj, "spec.resources.requests.storage").is_none() {
                errs_.push(err("spec.resources[storage]", Reason::Required, ""));
            }
        }
        "PersistentVolume" => {
            if get(obj, "spec.capacity.storage").is_none() {
                errs_.push(err(
                    "spec.capacity",
                    Reason::Required,
                    "must specify storage capacity",
                ));
            }
            access_modes(obj, errs_);
        }
        _ => {}
    }
    errs
}

/// A ConfigMap's keys (of `data` and `binaryData`).
fn config_map(obj: &Value, errs: &mut Vec<FieldError>) {
    for field in ["data", "binaryData"] {
        for k in get(obj, field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            config_key(k, &format!("{field}[{k}]"), errs);
        }
    }
}

/// A Secret's keys, and its values base64 (line breaks allowed, as Kubernetes' decoder allows them).
fn secret(obj: &Value, errs: &mut Vec<FieldError>) {
    use base64::Engine;
    for (k, v) in get(obj, "data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        config_key(k, &format!("data[{k}]"), errs);
        let text: String = v
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| *c != '\n' && *c != '\r')
            .collect();
        if base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_err()
        {
            errs.push(err(
                &format!("data[{k}]"),
                Reason::Invalid,
                "must be base64-encoded",
            ));
        }
    }
}

/// Volumes and claims need at least one access mode.
fn access_modes(obj: &Value, errs: &mut Vec<FieldError>) {
    if get(obj, "spec.accessModes")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        errs.push(err(
            "spec.accessModes",
            Reason::Required,
            "at least 1 access mode is required",
        ));
    }
}

fn metadata(kind: &KindInfo, m: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(name) = m.get("name").and_then(Value::as_str) {
        if let Err(e) = check_name(kind.kind, name) {
            errs.push(err(
                &format!("{path}.name"),
                Reason::Invalid,
                format!("{name:?}: {e}"),
            ));
        }
    } else if m.get("generateName").is_none() {
        errs.push(err(
            &format!("{path}.name"),
            Reason::Required,
            "name or generateName is required",
        ));
    }
    if let Some(ns) = m.get("namespace").and_then(Value::as_str) {
        if let Err(e) = dns1123_label(ns) {
            errs.push(err(
                &format!("{path}.namespace"),
                Reason::Invalid,
                format!("{ns:?}: {e}"),
            ));
        }
    }
    labels(m.get("labels"), &format!("{path}.labels"), errs);
    let mut total = 0;
    for (k, v) in m
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Err(e) = qualified_name(k) {
            errs.push(err(
                &format!("{path}.annotations"),
                Reason::Invalid,
                format!("{k:?}: {e}"),
            ));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        errs.push(err(
            &format!("{path}.annotations"),
            Reason::TooLong,
            "must have at most 262144 bytes",
        ));
    }
}

pub(super) fn labels(l: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    for (k, v) in l.and_then(Value::as_object).into_iter().flatten() {
        if let Err(e) = qualified_name(k) {
            errs.push(err(path, Reason::Invalid, format!("{k:?}: {e}")));
        }
        if let Err(e) = label_value(v.as_str().unwrap_or("")) {
            errs.push(err(
                &format!("{path}[{k}]"),
                Reason::Invalid,
                format!("{v}: {e}"),
            ));
        }
    }
}

/// A port number (`low` is 0 where 0 means "none") must lie within 65535.
pub(super) fn port_in_range(n: i64, low: i64, field: &str, errs: &mut Vec<FieldError>) {
    if !(low..=65535).contains(&n) {
        errs.push(err(
            field,
            Reason::Invalid,
            format!("{n}: must be between 1 and 65535, inclusive"),
        ));
    }
}

pub(super) fn enum_field(obj: &Value, path: &str, allowed: &[&str], errs: &mut Vec<FieldError>) {
    if let Some(v) = str_at(obj, path) {
        if !allowed.contains(&v) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            errs.push(err(
                path,
                Reason::NotSupported,
                format!("{v:?}: supported values: {}", list.join(", ")),
            ));
        }
    }
}

fn config_key(k: &str, path: &str, errs: &mut Vec<FieldError>) {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !ok {
        errs.push(err(path, Reason::Invalid, format!("{k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
    }
}

#[cfg(test)]
mod tests;

/// An APIService is served here only when it is local (no `spec.service`): aggregation of API servers elsewhere does
/// not exist yet, and is refused rather than left unreachable. Its name is `VERSION.GROUP`.
fn api_service(obj: &Value, errs: &mut Vec<FieldError>) {
    let group = get(obj, "spec.group").and_then(Value::as_str).unwrap_or("");
    let version = get(obj, "spec.version")
        .and_then(Value::as_str)
        .unwrap_or("");
    if version.is_empty() {
        errs.push(err("spec.version", Reason::Required, ""));
    }
    let name = get(obj, "metadata.name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let want = if group.is_empty() {
        format!("{version}.")
    } else {
        format!("{version}.{group}")
    };
    if !version.is_empty() && name != want {
        errs.push(err(
            "metadata.name",
            Reason::Invalid,
            format!("must be spec.version + \".\" + spec.group: {want:?}"),
        ));
    }
    if get(obj, "spec.service").is_some_and(|s| !s.is_null()) {
        errs.push(err(
            "spec.service",
            Reason::Forbidden,
            "aggregated API servers are not supported by this cluster yet: only local APIServices (no service) are served",
        ));
    }
}
