//! Defaulting, as the Kubernetes API server does it on create and update: the values a user leaves out and every
//! reader (kubectl, controllers) expects to find - `restartPolicy: Always`, `strategy: RollingUpdate 25%/25%`,
//! `protocol: TCP`, `targetPort = port`, and so on. Works on JSON so it applies to every body shape the same way.

use base64::Engine;
use serde_json::{json, Map, Value};

fn obj<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
}

fn set(m: &mut Map<String, Value>, key: &str, value: Value) {
    let e = m.entry(key.to_string()).or_insert(Value::Null);
    if e.is_null() {
        *e = value;
    }
}

/// Applies defaults for `kind` to `v` in place.
pub fn apply(kind: &str, v: &mut Value) {
    let spec_defaults: fn(&mut Map<String, Value>) = match kind {
        "Pod" => {
            if let Some(spec) = v.get_mut("spec") {
                pod_spec(spec);
                default_tolerations(spec);
            }
            return;
        }
        "Secret" => return secret(v),
        "StorageClass" => {
            if let Some(m) = v.as_object_mut() {
                set(m, "reclaimPolicy", json!("Delete"));
                set(m, "volumeBindingMode", json!("Immediate"));
            }
            return;
        }
        "Namespace" => {
            if let Some(spec) = obj(v, "spec") {
                set(
                    spec,
                    "finalizers",
                    json!([super::core::NAMESPACE_FINALIZER]),
                );
            }
            status_phase(v, "Active");
            return;
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = obj(v, "spec") {
                set(spec, "volumeMode", json!("Filesystem"));
            }
            status_phase(v, "Pending");
            return;
        }
        "PersistentVolume" => {
            if let Some(spec) = obj(v, "spec") {
                set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set(spec, "volumeMode", json!("Filesystem"));
            }
            status_phase(v, "Pending");
            return;
        }
        "Deployment" => deployment,
        "ReplicaSet" => |spec| {
            set(spec, "replicas", json!(1));
            template(spec);
        },
        "ReplicationController" => replication_controller,
        "StatefulSet" => stateful_set,
        "DaemonSet" => |spec| {
            set(spec, "revisionHistoryLimit", json!(10));
            rolling_strategy(spec, json!({"maxUnavailable": 1, "maxSurge": 0}));
            template(spec);
        },
        "Job" => job_spec,
        "CronJob" => cron_job,
        "APIService" => {
            // A local APIService (no service: served by this API server) is always available, as kube-aggregator
            // reports it.
            let local = v.pointer("/spec/service").is_none_or(Value::is_null);
            if local {
                let since = v
                    .pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(json!("1970-01-01T00:00:00Z"));
                v["status"] = json!({"conditions": [{"type": "Available", "status": "True", "reason": "Local",
                    "message": "Local APIServices are always available", "lastTransitionTime": since}]});
            }
            return;
        }
        "Service" => {
            // Kubernetes' Service always has a status: `{"loadBalancer": {}}` until a load balancer is given.
            if let Some(m) = v.as_object_mut() {
                let status = m.entry("status").or_insert_with(|| json!({}));
                if status.is_null() {
                    *status = json!({});
                }
                if let Some(st) = status.as_object_mut() {
                    let lb = st.entry("loadBalancer").or_insert_with(|| json!({}));
                    if lb.is_null() {
                        *lb = json!({});
                    }
                }
            }
            service
        }
        _ => return,
    };
    if let Some(spec) = obj(v, "spec") {
        spec_defaults(spec);
    }
}

/// The ports of a Service spec or a container.
fn ports(m: &mut Map<String, Value>) -> impl Iterator<Item = &mut Map<String, Value>> {
    m.get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Kubernetes' DefaultTolerationSeconds admission: a pod that does not say how long it stays on a not-ready or
/// unreachable node stays 300 s (then the node lifecycle controller evicts it).
fn default_tolerations(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    let list = m.entry("tolerations").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let Some(list) = list.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = list.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let effect = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty() && t["operator"] == "Exists")
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}),
            );
        }
    }
}

/// `status.phase`, where there is none yet.
fn status_phase(v: &mut Value, phase: &str) {
    if let Some(status) = obj(v, "status") {
        set(status, "phase", json!(phase));
    }
}

fn deployment(spec: &mut Map<String, Value>) {
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if strategy.is_null() {
        *strategy = json!({});
    }
    if let Some(st) = strategy.as_object_mut() {
        set(st, "type", json!("RollingUpdate"));
        if st.get("type") == Some(&json!("RollingUpdate")) {
            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                set(ru, "maxSurge", json!("25%"));
                set(ru, "maxUnavailable", json!("25%"));
            }
        }
    }
    template(spec);
}

/// A ReplicationController selects its template's labels unless told otherwise.
fn replication_controller(spec: &mut Map<String, Value>) {
    set(spec, "replicas", json!(1));
    let labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .cloned();
    if let Some(l) = labels {
        set(spec, "selector", l);
    }
    template(spec);
}

fn stateful_set(spec: &mut Map<String, Value>) {
    set(spec, "replicas", json!(1));
    set(spec, "podManagementPolicy", json!("OrderedReady"));
    set(spec, "revisionHistoryLimit", json!(10));
    rolling_strategy(spec, json!({"partition": 0}));
    set(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    for t in spec
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(s) = obj(t, "spec") {
            set(s, "volumeMode", json!("Filesystem"));
        }
    }
    template(spec);
}

fn cron_job(spec: &mut Map<String, Value>) {
    set(spec, "concurrencyPolicy", json!("Allow"));
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(jt) = spec.get_mut("jobTemplate") {
        if let Some(js) = obj(jt, "spec") {
            job_spec(js);
        }
    }
}

fn service(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    let external = spec.get("type") == Some(&json!("ExternalName"));
    if !external {
        set(spec, "sessionAffinity", json!("None"));
        set(spec, "ipFamilies", json!(["IPv4"]));
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(
        spec.get("type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    ) {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    for p in ports(spec) {
        set(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            set(p, "targetPort", port);
        }
    }
}

/// A Secret's type (Opaque), and its `stringData` moved into `data`, base64-encoded.
fn secret(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    set(m, "type", json!("Opaque"));
    let Some(Value::Object(sd)) = m.remove("stringData") else {
        return;
    };
    let data = m.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, val) in sd {
            let text = val
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| val.to_string());
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// `updateStrategy` defaulted field by field: type RollingUpdate, and under it the given `rollingUpdate` fields.
fn rolling_strategy(spec: &mut Map<String, Value>, rolling: Value) {
    let us = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    let Some(us) = us.as_object_mut() else { return };
    set(us, "type", json!("RollingUpdate"));
    if us.get("type") != Some(&json!("RollingUpdate")) {
        return;
    }
    let ru = us.entry("rollingUpdate").or_insert_with(|| json!({}));
    if let Some(ru) = ru.as_object_mut() {
        for (k, v) in rolling.as_object().into_iter().flatten() {
            set(ru, k, v.clone());
        }
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    set(spec, "parallelism", json!(1));
    let indexed = spec.get("completionMode") == Some(&json!("Indexed"));
    if spec.get("completions").is_none_or(Value::is_null) && !indexed {
        // completions stays unset only for work-queue jobs (parallelism > 1 and no completions).
        if spec.get("parallelism") == Some(&json!(1)) {
            spec.insert("completions".into(), json!(1));
        }
    }
    set(spec, "backoffLimit", json!(6));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template(spec);
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template") {
        if let Some(ps) = t.get_mut("spec") {
            pod_spec(ps);
        }
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn probe(p: &mut Value) {
    if let Some(p) = p.as_object_mut() {
        set(p, "timeoutSeconds", json!(1));
        set(p, "periodSeconds", json!(10));
        set(p, "successThreshold", json!(1));
        set(p, "failureThreshold", json!(3));
        if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
            set(h, "scheme", json!("HTTP"));
            set(h, "path", json!("/"));
        }
    }
}

/// Defaults a PodSpec (in a Pod or a template).
pub fn pod_spec(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let image = c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            set(c, "imagePullPolicy", json!(image_pull_policy(&image)));
            set(c, "terminationMessagePath", json!("/dev/termination-log"));
            set(c, "terminationMessagePolicy", json!("File"));
            set(c, "resources", json!({}));
            for p in ports(c) {
                set(p, "protocol", json!("TCP"));
            }
            for pr in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(p) = c.get_mut(pr) {
                    probe(p);
                }
            }
        }
    }
    for vol in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(cm) = vol.get_mut("configMap").and_then(Value::as_object_mut) {
            set(cm, "defaultMode", json!(420));
        }
        if let Some(s) = vol.get_mut("secret").and_then(Value::as_object_mut) {
            set(s, "defaultMode", json!(420));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_gets_kubernetes_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.25",
            "ports": [{"containerPort": 80}]}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn latest_images_are_always_pulled() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/nginx:1"), "IfNotPresent");
    }

    #[test]
    fn service_target_port_defaults_to_port() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply("Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn secret_string_data_is_encoded() {
        let mut s = json!({"stringData": {"a": "hello"}});
        apply("Secret", &mut s);
        assert_eq!(s["data"]["a"], "aGVsbG8=");
        assert!(s.get("stringData").is_none());
    }
}
