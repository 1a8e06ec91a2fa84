//! Health of live objects, by the rules users know: a Deployment by `kubectl rollout status` (a passed progress
//! deadline is Degraded), a Job by its conditions, a PVC by its phase, a Pod by its phase; an Application is as
//! healthy as its least healthy object.

use serde_json::{json, Value};

/// Healthy < Suspended < Progressing < Missing < Degraded (worse is larger).
pub fn rank(h: &str) -> u8 {
    match h {
        "Healthy" => 0,
        "Suspended" => 1,
        "Progressing" => 2,
        "Missing" | "Unknown" => 3,
        _ => 4,
    }
}

fn condition<'a>(v: &'a Value, ty: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// The health an Application's own rule gives an object, when one of its rules names the object's kind.
pub fn by_rule(
    rules: &[crate::api::gitops::HealthRule],
    kind: &crate::api::registry::KindInfo,
    v: &Value,
) -> Option<(&'static str, String)> {
    let rule = rules
        .iter()
        .find(|r| r.kind == kind.kind && r.group.as_deref().is_none_or(|g| g == kind.group))?;
    let eval = |expr: &str| crate::api::crd::cel::eval_bool(expr, v);
    if let Some(d) = &rule.degraded {
        match eval(d) {
            Ok(true) => return Some(("Degraded", format!("health rule: {d}"))),
            Ok(false) => {}
            Err(e) => return Some(("Degraded", format!("health rule failed: {e}"))),
        }
    }
    Some(match eval(&rule.healthy) {
        Ok(true) => ("Healthy", String::new()),
        Ok(false) => ("Progressing", format!("waiting for: {}", rule.healthy)),
        Err(e) => ("Degraded", format!("health rule failed: {e}")),
    })
}

/// (health, message) of one live object of `kind`: a custom kind's by its conditions ([`custom`]).
pub fn of_kind(kind: &crate::api::registry::KindInfo, v: &Value) -> (&'static str, String) {
    if kind.is_custom() {
        custom(v)
    } else {
        of(kind.kind, v)
    }
}

/// The health of a custom object, as controllers commonly report it: its `Ready` (or `Available`) condition, current
/// when its `observedGeneration` (the condition's or the status's) has caught up with `metadata.generation`.
/// `Stalled` True, or Ready False with a reason that says it failed, is Degraded; anything else Progressing.
pub fn custom(v: &Value) -> (&'static str, String) {
    let generation = v.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = |c: &Value| {
        c["observedGeneration"].as_i64().or_else(|| {
            v.pointer("/status/observedGeneration")
                .and_then(Value::as_i64)
        })
    };
    let message = |c: &Value| c["message"].as_str().unwrap_or("").to_string();
    if let Some(c) = condition(v, "Stalled").filter(|c| c["status"] == "True") {
        return ("Degraded", message(c));
    }
    let Some(c) = condition(v, "Ready").or_else(|| condition(v, "Available")) else {
        return (
            "Progressing",
            "waiting for a controller to report a Ready condition".into(),
        );
    };
    if let (Some(g), Some(o)) = (generation, observed(c)) {
        if o < g {
            return (
                "Progressing",
                "waiting for the controller to observe the change".into(),
            );
        }
    }
    match c["status"].as_str() {
        Some("True") => ("Healthy", message(c)),
        Some("False") => {
            let reason = c["reason"].as_str().unwrap_or("");
            if ["Fail", "Error", "Invalid"]
                .iter()
                .any(|w| reason.contains(w))
            {
                ("Degraded", message(c))
            } else {
                ("Progressing", message(c))
            }
        }
        _ => ("Progressing", message(c)),
    }
}

/// (health, message) of one live object.
pub fn of(kind: &str, v: &Value) -> (&'static str, String) {
    let i = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
            if let Some(c) = condition(v, "Progressing") {
                if c["reason"] == "ProgressDeadlineExceeded" {
                    return (
                        "Degraded",
                        c["message"]
                            .as_str()
                            .unwrap_or("progress deadline exceeded")
                            .into(),
                    );
                }
            }
            if v["spec"]["paused"] == true {
                return ("Suspended", "rollout paused".into());
            }
            if i("/status/observedGeneration") < i("/metadata/generation") {
                return (
                    "Progressing",
                    "waiting for the controller to observe the change".into(),
                );
            }
            let want = if kind == "DaemonSet" {
                i("/status/desiredNumberScheduled")
            } else {
                v["spec"]["replicas"].as_i64().unwrap_or(1)
            };
            let (updated, available) = if kind == "DaemonSet" {
                (
                    i("/status/updatedNumberScheduled"),
                    i("/status/numberAvailable"),
                )
            } else {
                (i("/status/updatedReplicas"), i("/status/availableReplicas"))
            };
            // A StatefulSet updates only ordinals from its partition up (and nothing by itself with OnDelete).
            let want_updated = match kind {
                "ReplicaSet" => 0,
                "StatefulSet" if v["spec"]["updateStrategy"]["type"] == "OnDelete" => 0,
                "StatefulSet" => want - i("/spec/updateStrategy/rollingUpdate/partition"),
                _ => want,
            };
            if updated < want_updated {
                return (
                    "Progressing",
                    format!("{updated} of {want} replicas updated"),
                );
            }
            if available < want {
                return (
                    "Progressing",
                    format!("{available} of {want} replicas available"),
                );
            }
            ("Healthy", String::new())
        }
        "Job" => {
            if condition(v, "Failed").is_some_and(|c| c["status"] == "True") {
                ("Degraded", "job failed".into())
            } else if condition(v, "Complete").is_some_and(|c| c["status"] == "True") {
                ("Healthy", String::new())
            } else if v["spec"]["suspend"] == true {
                ("Suspended", "job suspended".into())
            } else {
                ("Progressing", "job running".into())
            }
        }
        "CronJob" if v["spec"]["suspend"] == true => ("Suspended", "cron job suspended".into()),
        "PersistentVolumeClaim" => match v["status"]["phase"].as_str() {
            Some("Bound") => ("Healthy", String::new()),
            Some("Lost") => ("Degraded", "claim lost".into()),
            _ => ("Progressing", "waiting to be bound".into()),
        },
        "Pod" => match v["status"]["phase"].as_str() {
            Some("Running") | Some("Succeeded") => ("Healthy", String::new()),
            Some("Failed") => ("Degraded", "pod failed".into()),
            _ => ("Progressing", "pod pending".into()),
        },
        "Service" if v["spec"]["type"] == "LoadBalancer" => {
            if v["status"]["loadBalancer"]["ingress"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                ("Healthy", String::new())
            } else {
                ("Progressing", "waiting for a load balancer address".into())
            }
        }
        "CustomResourceDefinition" => {
            if condition(v, "Established").is_some_and(|c| c["status"] == "True") {
                ("Healthy", String::new())
            } else {
                ("Progressing", "waiting to be established".into())
            }
        }
        _ => ("Healthy", String::new()),
    }
}

/// Health and per-object state of what the last good sync applied.
pub async fn observe(
    client: &crate::client::Client,
    desired: &[super::render::Desired],
    rules: &[crate::api::gitops::HealthRule],
    ignore: &[crate::api::gitops::IgnoreDifference],
) -> Result<(String, String, Vec<Value>, Vec<String>), crate::client::Error> {
    let mut worst = "Healthy";
    let mut message = String::new();
    let mut resources = Vec::new();
    let mut drifted = Vec::new();
    for d in desired {
        let (health, msg, state) = match client.get(d.kind, d.namespace(), d.name()).await {
            Ok(live) => {
                let (h, m) =
                    by_rule(rules, d.kind, &live).unwrap_or_else(|| of_kind(d.kind, &live));
                let fields = super::sync::ignore_differences(
                    ignore,
                    d.kind,
                    &live,
                    super::sync::drift(&d.object, &live),
                );
                let state = if fields.is_empty() {
                    "Synced"
                } else {
                    "OutOfSync"
                };
                if !fields.is_empty() {
                    drifted.push(format!("{}: {}", d.id(), fields.join(", ")));
                }
                (h, m, state)
            }
            Err(e) if e.code() == Some(404) => {
                drifted.push(format!("{}: missing", d.id()));
                ("Missing", "not found".to_string(), "OutOfSync")
            }
            // Not knowing is not drift: no self-heal on an unreachable or failing API server.
            Err(e) => return Err(e),
        };
        if rank(health) > rank(worst) {
            worst = health;
            message = format!("{}: {msg}", d.id());
        }
        let (group, version) = (d.kind.group, d.kind.version);
        resources.push(
            json!({"group": group, "version": version, "kind": d.kind.kind,
            "namespace": d.namespace(), "name": d.name(), "status": state,
            "health": {"status": health, "message": msg}}),
        );
    }
    Ok((worst.to_string(), message, resources, drifted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployments_follow_rollout_status_rules() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3}});
        assert_eq!(of("Deployment", &d).0, "Healthy");
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(of("Deployment", &d).0, "Progressing");
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"x\" has timed out progressing."}]);
        assert_eq!(
            of("Deployment", &d),
            (
                "Degraded",
                "ReplicaSet \"x\" has timed out progressing.".into()
            )
        );
        assert_eq!(
            of(
                "Job",
                &json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
            )
            .0,
            "Healthy"
        );
        assert_eq!(of("ConfigMap", &json!({})).0, "Healthy");
        let cr = |status: Value| json!({"metadata": {"generation": 2}, "status": status});
        assert_eq!(custom(&cr(json!({}))).0, "Progressing");
        assert_eq!(
            custom(&cr(json!({"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2}]}))).0,
            "Healthy"
        );
        assert_eq!(
            custom(&cr(json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}))).0,
            "Progressing",
            "an old generation's readiness does not count"
        );
        assert_eq!(
            custom(&cr(json!({"conditions": [{"type": "Ready", "status": "False", "reason": "BuildFailed"}]}))).0,
            "Degraded"
        );
        assert!(rank("Degraded") > rank("Progressing") && rank("Progressing") > rank("Healthy"));
    }

    #[test]
    fn an_applications_rules_judge_the_kinds_they_name() {
        let rules: Vec<crate::api::gitops::HealthRule> = serde_json::from_value(json!([
            {"group": "example.com", "kind": "Widget", "healthy": "self.status.phase == 'Ready'",
             "degraded": "self.status.phase == 'Broken'"}]))
        .unwrap();
        let kind = crate::api::registry::lookup("configmaps").unwrap();
        assert!(
            by_rule(&rules, kind, &json!({})).is_none(),
            "other kinds keep their rules"
        );
        let served = crate::api::crd::Served {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            singular: "widget".into(),
            short_names: vec![],
            categories: vec![],
            namespaced: true,
            status: true,
            custom: crate::api::crd::CustomVersion {
                crd: "widgets.example.com".into(),
                storage_version: "v1".into(),
                schema: None,
                columns: vec![],
                scale: None,
                selectable: vec![],
                deprecation: None,
            },
        };
        let widget = crate::api::registry::provisional(&served);
        let judge = |phase: &str| {
            by_rule(&rules, widget, &json!({"status": {"phase": phase}}))
                .unwrap()
                .0
        };
        assert_eq!(judge("Ready"), "Healthy");
        assert_eq!(judge("Broken"), "Degraded");
        assert_eq!(judge("Starting"), "Progressing");
        let bad: Vec<crate::api::gitops::HealthRule> =
            serde_json::from_value(json!([{"kind": "Widget", "healthy": "self.status.phase =="}]))
                .unwrap();
        assert_eq!(by_rule(&bad, widget, &json!({})).unwrap().0, "Degraded");
    }
}
