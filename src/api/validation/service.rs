//! Services: type, ports (names, protocols, target ports, node ports), ClusterIP and ExternalName rules.

use std::collections::HashSet;

use serde_json::Value;

use super::names::{dns1123_label, port_name};
use super::{enum_field, err, get, port_in_range, str_at, FieldError, Reason};

pub(super) fn service(obj: &Value, errs: &mut Vec<FieldError>) {
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
        port_in_range(port, 1, &format!("{pp}.port"), errs);
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
