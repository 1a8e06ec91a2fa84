//! Validation, in two passes like Kubernetes: a structural pass against the kind's JSON Schema (types, unknown
//! fields, malformed quantities - "cannot be decoded", HTTP 400), then semantic rules per kind (names, required
//! values, selectors matching templates, port ranges - "Invalid", HTTP 422). Every violation names its field path.

use std::collections::HashSet;

use serde_json::Value;

use super::registry::{resolve, KindInfo};

/// Why a field is wrong, with Kubernetes' cause reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
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

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.field,
            self.reason.label(),
            self.detail
        )
    }
}

fn err(field: &str, reason: Reason, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason,
        detail: detail.into(),
    }
}

/// The result of the structural pass.
#[derive(Debug, Default)]
pub struct Structural {
    /// Wrong types and malformed values: the object cannot be decoded.
    pub errors: Vec<String>,
    /// Fields the schema does not declare (an error under Strict, a warning under Warn).
    pub unknown: Vec<String>,
    /// Fields Capstan stores but does not act on (returned as warnings).
    pub opaque: Vec<String>,
}

/// Walks `obj` against the kind's schema.
pub fn structural(kind: &KindInfo, obj: &Value) -> Structural {
    let mut out = Structural::default();
    walk(kind.schema(), obj, "", &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        _ => true,
    }
}

fn is_null_schema(s: &Value) -> bool {
    s.get("enum")
        .and_then(Value::as_array)
        .is_some_and(|e| e.len() == 1 && e[0].is_null())
        || s.get("type").and_then(Value::as_str) == Some("null")
}

fn walk(schema: &Value, v: &Value, path: &str, out: &mut Structural) {
    if v.is_null() {
        return; // null means "unset" for every optional field
    }
    let schema = resolve(schema);
    if schema.get("x-capstan-opaque").is_some() {
        out.opaque.push(path.to_string());
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            walk(s, v, path, out);
        }
        return;
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<&Value> = any.iter().filter(|s| !is_null_schema(s)).collect();
        if non_null.len() == 1 && schema.get("x-kubernetes-int-or-string").is_none() {
            walk(non_null[0], v, path, out);
            return;
        }
        let ok = any.iter().any(|s| {
            let s = resolve(s);
            s.get("type")
                .and_then(Value::as_str)
                .is_none_or(|t| type_matches(t, v))
        });
        if !ok {
            let wanted: Vec<&str> = any
                .iter()
                .filter_map(|s| resolve(s).get("type").and_then(Value::as_str))
                .collect();
            out.errors.push(format!(
                "{path}: expected {}, got {}",
                wanted.join(" or "),
                type_name(v)
            ));
            return;
        }
        if schema.get("x-capstan-quantity").is_some() {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if super::parse_quantity_millis(&text).is_none() {
                out.errors.push(format!(
                    "{path}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {text:?}"
                ));
            }
        }
        return;
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    if let Some(t) = ty {
        if !type_matches(t, v) {
            out.errors.push(format!(
                "{}: expected {t}, got {}",
                if path.is_empty() { "<root>" } else { path },
                type_name(v)
            ));
            return;
        }
        if t == "integer" {
            let fmt = schema.get("format").and_then(Value::as_str).unwrap_or("");
            if let Some(n) = v.as_i64() {
                if fmt == "int32" && (n < i32::MIN as i64 || n > i32::MAX as i64) {
                    out.errors
                        .push(format!("{path}: {n} does not fit in a 32-bit integer"));
                }
                if fmt.starts_with("uint") && n < 0 {
                    out.errors.push(format!("{path}: must not be negative"));
                }
            }
        }
        if t == "string" {
            if let (Some("date-time"), Some(s)) =
                (schema.get("format").and_then(Value::as_str), v.as_str())
            {
                if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                    out.errors
                        .push(format!("{path}: {s:?} is not an RFC 3339 time"));
                }
            }
        }
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        out.errors
                            .push(format!("{}: required field is missing", join(path, r)));
                    }
                }
            }
            for (k, child) in map {
                let p = join(path, k);
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    walk(s, child, &p, out);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    walk(a, child, &p, out);
                } else if props.is_some()
                    && schema.get("x-kubernetes-preserve-unknown-fields").is_none()
                {
                    out.unknown.push(p);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    walk(s, child, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
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

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, at most 63 characters.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !ok {
        return Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into());
    }
    Ok(())
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    let ok = s.split('.').all(|l| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if !ok {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    Ok(())
}

/// DNS-1035 label (Service names): like a DNS-1123 label but starting with a letter.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns1123_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into());
    }
    Ok(())
}

fn qualified_name(s: &str) -> Result<(), String> {
    let name = match s.rsplit_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
            name
        }
        None => s,
    };
    if name.is_empty() || name.len() > 63 {
        return Err("name part must be non-empty and no more than 63 characters".into());
    }
    let ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

/// Checks an object name for a kind, as Kubernetes does.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    match kind {
        "Namespace" => dns1123_label(name),
        "Service" => dns1035_label(name),
        _ => dns1123_subdomain(name),
    }
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
    match kind.kind {
        "Pod" => pod_spec(get(obj, "spec"), "spec", "Pod", &mut errs),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workload(kind.kind, obj, &mut errs)
        }
        "ReplicationController" => {
            replicas(obj, &mut errs);
            template(obj, "spec.template", "ReplicationController", &mut errs);
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
        "Job" => job(obj.get("spec").unwrap_or(&Value::Null), "spec", &mut errs),
        "CronJob" => {
            match str_at(obj, "spec.schedule") {
                Some(s) => {
                    if let Err(e) = check_cron(s) {
                        errs.push(err("spec.schedule", Reason::Invalid, e));
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
                &mut errs,
            );
            job(
                get(obj, "spec.jobTemplate.spec").unwrap_or(&Value::Null),
                "spec.jobTemplate.spec",
                &mut errs,
            );
        }
        "Service" => service(obj, &mut errs),
        "ConfigMap" => {
            for field in ["data", "binaryData"] {
                for k in get(obj, field)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                {
                    config_key(k, &format!("{field}[{k}]"), &mut errs);
                }
            }
        }
        "Secret" => {
            for (k, v) in get(obj, "data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                config_key(k, &format!("data[{k}]"), &mut errs);
                use base64::Engine;
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
        "PersistentVolumeClaim" => {
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
            if get(obj, "spec.resources.requests.storage").is_none() {
                errs.push(err("spec.resources[storage]", Reason::Required, ""));
            }
        }
        "PersistentVolume" => {
            if get(obj, "spec.capacity.storage").is_none() {
                errs.push(err(
                    "spec.capacity",
                    Reason::Required,
                    "must specify storage capacity",
                ));
            }
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
        _ => {}
    }
    errs
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

fn labels(l: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
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

fn enum_field(obj: &Value, path: &str, allowed: &[&str], errs: &mut Vec<FieldError>) {
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

fn workload(kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
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
                match serde_json::from_value::<super::meta::LabelSelector>(sel.clone())
                    .ok()
                    .map(|ls| super::selector::Selector::from_label_selector(&ls))
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

fn job(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
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

/// Checks a cron schedule: five fields or an `@` macro.
pub fn check_cron(s: &str) -> Result<(), String> {
    super::batch::parse_schedule(s, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err("must be no more than 15 characters, contain only lower case alphanumerics and '-', and contain at least one letter".into())
    }
}

fn pod_spec(spec: Option<&Value>, path: &str, owner: &str, errs: &mut Vec<FieldError>) {
    let Some(spec) = spec.filter(|s| !s.is_null()) else {
        errs.push(err(path, Reason::Required, ""));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errs.push(err(&format!("{path}.containers"), Reason::Required, ""));
    }
    let volumes: HashSet<&str> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    let mut vol_seen = HashSet::new();
    for (i, v) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        let p = format!("{path}.volumes[{i}].name");
        if let Err(e) = dns1123_label(name) {
            errs.push(err(&p, Reason::Invalid, format!("{name:?}: {e}")));
        }
        if !vol_seen.insert(name) {
            errs.push(err(&p, Reason::Duplicate, format!("{name:?}")));
        }
    }
    let mut names = HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if let Err(e) = dns1123_label(name) {
                errs.push(err(
                    &format!("{cp}.name"),
                    Reason::Invalid,
                    format!("{name:?}: {e}"),
                ));
            } else if !names.insert(name.to_string()) {
                errs.push(err(
                    &format!("{cp}.name"),
                    Reason::Duplicate,
                    format!("{name:?}"),
                ));
            }
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
            {
                errs.push(err(&format!("{cp}.image"), Reason::Required, ""));
            }
            enum_field(
                c,
                "imagePullPolicy",
                &["Always", "IfNotPresent", "Never"],
                errs,
            );
            if let Some(e) = errs.last_mut().filter(|e| e.field == "imagePullPolicy") {
                e.field = format!("{cp}.imagePullPolicy");
            }
            let mut port_names = HashSet::new();
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let pp = format!("{cp}.ports[{j}]");
                let n = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    errs.push(err(
                        &format!("{pp}.containerPort"),
                        Reason::Invalid,
                        format!("{n}: must be between 1 and 65535, inclusive"),
                    ));
                }
                if let Some(h) = p.get("hostPort").and_then(Value::as_i64) {
                    if !(0..=65535).contains(&h) {
                        errs.push(err(
                            &format!("{pp}.hostPort"),
                            Reason::Invalid,
                            format!("{h}: must be between 1 and 65535, inclusive"),
                        ));
                    }
                }
                if let Some(pn) = p.get("name").and_then(Value::as_str) {
                    if let Err(e) = port_name(pn) {
                        errs.push(err(
                            &format!("{pp}.name"),
                            Reason::Invalid,
                            format!("{pn:?}: {e}"),
                        ));
                    } else if !port_names.insert(pn) {
                        errs.push(err(
                            &format!("{pp}.name"),
                            Reason::Duplicate,
                            format!("{pn:?}"),
                        ));
                    }
                }
                if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
                    if !["TCP", "UDP", "SCTP"].contains(&proto) {
                        errs.push(err(
                            &format!("{pp}.protocol"),
                            Reason::NotSupported,
                            format!("{proto:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""),
                        ));
                    }
                }
            }
            for (j, m) in c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let name = m.get("name").and_then(Value::as_str).unwrap_or("");
                if !volumes.contains(name) {
                    errs.push(err(
                        &format!("{cp}.volumeMounts[{j}].name"),
                        Reason::NotSupported,
                        format!("{name:?}: not found in the pod's volumes"),
                    ));
                }
            }
            for (j, e) in c
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if e.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errs.push(err(&format!("{cp}.env[{j}].name"), Reason::Required, ""));
                }
            }
            let res = |kind: &str| -> std::collections::BTreeMap<String, i128> {
                c.get("resources")
                    .and_then(|r| r.get(kind))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| {
                        let t = match v {
                            Value::String(s) => s.clone(),
                            o => o.to_string(),
                        };
                        super::parse_quantity_millis(&t).map(|m| (k.clone(), m))
                    })
                    .collect()
            };
            let (req, lim) = (res("requests"), res("limits"));
            for (k, r) in &req {
                if let Some(l) = lim.get(k) {
                    if r > l {
                        errs.push(err(
                            &format!("{cp}.resources.requests[{k}]"),
                            Reason::Invalid,
                            format!("must be less than or equal to {k} limit"),
                        ));
                    }
                }
            }
        }
    }
    let allowed: &[&str] = match owner {
        "Pod" => &["Always", "OnFailure", "Never"],
        "Job" => &["OnFailure", "Never"],
        _ => &["Always"],
    };
    let rp = spec.get("restartPolicy").and_then(Value::as_str);
    match rp {
        Some(r) if !allowed.contains(&r) => {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            errs.push(err(
                &format!("{path}.restartPolicy"),
                Reason::NotSupported,
                format!("{r:?}: supported values: {}", list.join(", ")),
            ));
        }
        None if owner == "Job" => errs.push(err(
            &format!("{path}.restartPolicy"),
            Reason::Required,
            "supported values: \"OnFailure\", \"Never\"",
        )),
        _ => {}
    }
}

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let ty = str_at(obj, "spec.type").unwrap_or("ClusterIP");
    enum_field(
        obj,
        "spec.type",
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        errs,
    );
    enum_field(obj, "spec.sessionAffinity", &["None", "ClientIP"], errs);
    let ports = get(obj, "spec.ports").and_then(Value::as_array);
    let headless = str_at(obj, "spec.clusterIP") == Some("None");
    if ty == "ExternalName" {
        if str_at(obj, "spec.externalName").is_none_or(str::is_empty) {
            errs.push(err("spec.externalName", Reason::Required, ""));
        }
    } else if ports.is_none_or(|p| p.is_empty()) && !headless {
        errs.push(err("spec.ports", Reason::Required, ""));
    }
    let ports = ports.cloned().unwrap_or_default();
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(err(
                &format!("{pp}.port"),
                Reason::Invalid,
                format!("{port}: must be between 1 and 65535, inclusive"),
            ));
        }
        match p.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => {
                if let Err(e) = dns1123_label(n) {
                    errs.push(err(
                        &format!("{pp}.name"),
                        Reason::Invalid,
                        format!("{n:?}: {e}"),
                    ));
                }
                if !names.insert(n.to_string()) {
                    errs.push(err(
                        &format!("{pp}.name"),
                        Reason::Duplicate,
                        format!("{n:?}"),
                    ));
                }
            }
            _ if ports.len() > 1 => errs.push(err(&format!("{pp}.name"), Reason::Required, "")),
            _ => {}
        }
        if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
            if !["TCP", "UDP", "SCTP"].contains(&proto) {
                errs.push(err(
                    &format!("{pp}.protocol"),
                    Reason::NotSupported,
                    format!("{proto:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""),
                ));
            }
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) => {
                let n = n.as_i64().unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    errs.push(err(
                        &format!("{pp}.targetPort"),
                        Reason::Invalid,
                        format!("{n}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
            Some(Value::String(s)) => {
                if let Err(e) = port_name(s) {
                    errs.push(err(
                        &format!("{pp}.targetPort"),
                        Reason::Invalid,
                        format!("{s:?}: {e}"),
                    ));
                }
            }
            _ => {}
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if ty == "ClusterIP" {
                errs.push(err(
                    &format!("{pp}.nodePort"),
                    Reason::Forbidden,
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(30000..=32767).contains(&np) {
                errs.push(err(&format!("{pp}.nodePort"), Reason::Invalid, format!("{np}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::lookup;
    use serde_json::json;

    #[test]
    fn structural_pass_names_wrong_types_and_unknown_fields() {
        let k = lookup("deployment").unwrap();
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": "three", "selector": {"matchLabels": {"a": "b"}}, "bogus": 1,
              "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolice": "x",
                 "lifecycle": {"anything": true}, "securityContext": {"runAsUser": "root"},
                 "resources": {"limits": {"cpu": "lots"}}}]}}}});
        let s = structural(k, &obj);
        assert!(
            s.errors
                .iter()
                .any(|e| e.starts_with("spec.replicas: expected integer")),
            "{:?}",
            s.errors
        );
        assert!(
            s.errors
                .iter()
                .any(|e| e.starts_with("spec.template.spec.containers[0].resources.limits.cpu")),
            "{:?}",
            s.errors
        );
        assert!(s.unknown.contains(&"spec.bogus".to_string()));
        assert!(s
            .unknown
            .contains(&"spec.template.spec.containers[0].imagePullPolice".to_string()));
        assert_eq!(
            s.opaque,
            vec!["spec.template.spec.containers[0].lifecycle".to_string()]
        );
        assert!(
            s.errors.iter().any(|e| e.starts_with(
                "spec.template.spec.containers[0].securityContext.runAsUser: expected integer"
            )),
            "{:?}",
            s.errors
        );
    }

    #[test]
    fn semantic_pass_checks_names_selectors_and_images() {
        let k = lookup("deployment").unwrap();
        let obj = json!({"metadata": {"name": "Bad_Name"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
              "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let errs = semantic(k, &obj);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"metadata.name"), "{fields:?}");
        assert!(
            fields.contains(&"spec.template.metadata.labels"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.template.spec.containers[0].image"),
            "{fields:?}"
        );
    }

    #[test]
    fn service_needs_named_ports_when_several() {
        let k = lookup("svc").unwrap();
        let obj =
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 70000}]}});
        let errs = semantic(k, &obj);
        assert!(errs.iter().any(|e| e.field == "spec.ports[1].port"));
        assert!(errs
            .iter()
            .any(|e| e.field == "spec.ports[0].name" && e.reason == Reason::Required));
    }

    #[test]
    fn cron_schedules() {
        assert!(check_cron("*/5 * * * *").is_ok());
        assert!(check_cron("0 0 1 jan-mar mon").is_ok());
        assert!(check_cron("@hourly").is_ok());
        assert!(check_cron("61 * * * *").is_err());
        assert!(check_cron("* * *").is_err());
    }

    #[test]
    fn name_rules() {
        assert!(dns1123_subdomain("a.b-c").is_ok());
        assert!(dns1123_subdomain("A").is_err());
        assert!(dns1035_label("1abc").is_err());
        assert!(dns1123_label("1abc").is_ok());
    }
}
