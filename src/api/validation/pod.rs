//! Pod specs (of pods and of every workload's template): containers, volumes and their mounts, ports, env names,
//! resource requests within limits, and the restart policies each owner allows.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::names::{dns1123_label, port_name};
use super::{enum_field, err, port_in_range, FieldError, Reason};

/// The elements of the list `key` of `v` (none when absent or not a list).
fn list<'v>(v: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A pod spec at `path`; `owner` (Pod, Job, or a workload kind) decides the restart policies allowed.
pub(super) fn pod_spec(spec: Option<&Value>, path: &str, owner: &str, errs: &mut Vec<FieldError>) {
    let Some(spec) = spec.filter(|s| !s.is_null()) else {
        errs.push(err(path, Reason::Required, ""));
        return;
    };
    if spec
        .get("containers")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty())
    {
        errs.push(err(&format!("{path}.containers"), Reason::Required, ""));
    }
    let volumes = volumes(spec, path, errs);
    let mut names = HashSet::new();
    for kind in ["initContainers", "containers"] {
        for (i, c) in list(spec, kind).enumerate() {
            let cp = format!("{path}.{kind}[{i}]");
            container(c, &cp, &volumes, &mut names, errs);
        }
    }
    restart_policy(spec, path, owner, errs);
}

/// The pod's volume names: each a DNS-1123 label, none twice.
fn volumes<'v>(spec: &'v Value, path: &str, errs: &mut Vec<FieldError>) -> HashSet<&'v str> {
    let mut seen = HashSet::new();
    for (i, v) in list(spec, "volumes").enumerate() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        let p = format!("{path}.volumes[{i}].name");
        if let Err(e) = dns1123_label(name) {
            errs.push(err(&p, Reason::Invalid, format!("{name:?}: {e}")));
        }
        if !seen.insert(name) {
            errs.push(err(&p, Reason::Duplicate, format!("{name:?}")));
        }
    }
    seen
}

/// One container at `cp`: a unique name, an image, its pull policy, ports, mounts of the pod's volumes, env names
/// and resources.
fn container(
    c: &Value,
    cp: &str,
    volumes: &HashSet<&str>,
    names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
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
    container_ports(c, cp, errs);
    for (j, m) in list(c, "volumeMounts").enumerate() {
        let name = m.get("name").and_then(Value::as_str).unwrap_or("");
        if !volumes.contains(name) {
            errs.push(err(
                &format!("{cp}.volumeMounts[{j}].name"),
                Reason::NotSupported,
                format!("{name:?}: not found in the pod's volumes"),
            ));
        }
    }
    for (j, e) in list(c, "env").enumerate() {
        if e.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(err(&format!("{cp}.env[{j}].name"), Reason::Required, ""));
        }
    }
    requests_within_limits(c, cp, errs);
}

/// A container's ports: numbers in range, unique IANA names, known protocols.
fn container_ports(c: &Value, cp: &str, errs: &mut Vec<FieldError>) {
    let mut port_names = HashSet::new();
    for (j, p) in list(c, "ports").enumerate() {
        let pp = format!("{cp}.ports[{j}]");
        let n = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
        port_in_range(n, 1, &format!("{pp}.containerPort"), errs);
        if let Some(h) = p.get("hostPort").and_then(Value::as_i64) {
            port_in_range(h, 0, &format!("{pp}.hostPort"), errs);
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
}

/// Each resource request at most its limit.
fn requests_within_limits(c: &Value, cp: &str, errs: &mut Vec<FieldError>) {
    let res = |kind: &str| -> BTreeMap<String, i128> {
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
                crate::api::parse_quantity_millis(&t).map(|m| (k.clone(), m))
            })
            .collect()
    };
    let (req, lim) = (res("requests"), res("limits"));
    for (k, r) in &req {
        if lim.get(k).is_some_and(|l| r > l) {
            errs.push(err(
                &format!("{cp}.resources.requests[{k}]"),
                Reason::Invalid,
                format!("must be less than or equal to {k} limit"),
            ));
        }
    }
}

/// Pods may restart Always, OnFailure or Never; Jobs' pods OnFailure or Never (and must say which); the pods of
/// other workloads only Always.
fn restart_policy(spec: &Value, path: &str, owner: &str, errs: &mut Vec<FieldError>) {
    let allowed: &[&str] = match owner {
        "Pod" => &["Always", "OnFailure", "Never"],
        "Job" => &["OnFailure", "Never"],
        _ => &["Always"],
    };
    match spec.get("restartPolicy").and_then(Value::as_str) {
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
