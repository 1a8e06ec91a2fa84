//! Health of live objects, by the rules users know: a Deployment by `kubectl rollout status` (a passed progress
//! deadline is Degraded), a Job by its conditions, a PVC by its phase, a Pod by its phase; an Application is as
//! healthy as its least healthy object.

use serde_json::Value;

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
        _ => ("Healthy", String::new()),
    }
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
        assert!(rank("Degraded") > rank("Progressing") && rank("Progressing") > rank("Healthy"));
    }
}
