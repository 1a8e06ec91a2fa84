//! Pod Security Admission, as Kubernetes' built-in admission controller does it: a namespace's labels
//! `pod-security.kubernetes.io/enforce|warn|audit: privileged|baseline|restricted` choose a Pod Security Standard.
//! A new pod that violates the `enforce` level is refused (403) naming every violation in Kubernetes' words; the
//! `warn` level answers with a warning; workloads with pod templates (Deployments, Jobs, ...) get warnings for both
//! levels but are never refused (their pods are); `audit` violations are annotated in the audit log.

use serde_json::Value;

use super::error::{ApiError, Result};
use super::Server;
use crate::api::registry;

/// A Pod Security Standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Capabilities baseline allows a container to add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Volume types restricted allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
/// Sysctls baseline allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec[k].as_array().into_iter().flatten())
}

fn quoted(names: &[String]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    q.join(", ")
}

/// "container "a"" or "containers "a", "b"".
fn which(names: &[String]) -> String {
    if names.len() == 1 {
        format!("container {:?}", names[0])
    } else {
        format!("containers {}", quoted(names))
    }
}

/// The violations of `level` by a pod's spec (and metadata), each as Kubernetes words it, in the order of its check
/// ids.
pub fn violations(level: Level, spec: &Value) -> Vec<String> {
    let mut out: Vec<(&str, String)> = Vec::new();
    if level == Level::Privileged {
        return vec![];
    }
    privileges(level, spec, &mut out);
    host_access(spec, &mut out);
    users_and_volumes(level, spec, &mut out);
    profiles(level, spec, &mut out);
    out.sort_by_key(|(id, _)| *id);
    out.into_iter().map(|(_, m)| m).collect()
}

/// The checks of allowPrivilegeEscalation, AppArmor and capabilities.
fn privileges(level: Level, spec: &Value, out: &mut Vec<(&'static str, String)>) {
    let name = |c: &Value| c["name"].as_str().unwrap_or("").to_string();
    let psc = &spec["securityContext"];
    // allowPrivilegeEscalation (restricted)
    if level == Level::Restricted {
        let bad: Vec<String> = containers(spec)
            .filter(|c| c["securityContext"]["allowPrivilegeEscalation"] != false)
            .map(name)
            .collect();
        if !bad.is_empty() {
            out.push(("allowPrivilegeEscalation", format!(
                "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
                which(&bad))));
        }
    }
    // appArmorProfile (baseline)
    let unconfined = |v: &Value| v["appArmorProfile"]["type"] == "Unconfined";
    if unconfined(psc) || containers(spec).any(|c| unconfined(&c["securityContext"])) {
        out.push((
            "appArmorProfile",
            "forbidden AppArmor profile (appArmorProfile.type=\"Unconfined\")".into(),
        ));
    }
    // capabilities (baseline, restricted)
    let adds = |c: &Value| -> Vec<String> {
        c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    let mut non_default: Vec<(String, String)> = Vec::new();
    for c in containers(spec) {
        for a in adds(c) {
            if !BASELINE_CAPABILITIES.contains(&a.as_str()) {
                non_default.push((name(c), a));
            }
        }
    }
    if !non_default.is_empty() {
        let parts: Vec<String> = non_default
            .iter()
            .map(|(c, a)| {
                format!(
                    "container {c:?} must not include {a:?} in securityContext.capabilities.add"
                )
            })
            .collect();
        out.push((
            "capabilities_baseline",
            format!("non-default capabilities ({})", parts.join(", ")),
        ));
    }
    if level == Level::Restricted {
        let no_drop: Vec<String> = containers(spec)
            .filter(|c| {
                !c["securityContext"]["capabilities"]["drop"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|d| d == "ALL")
            })
            .map(name)
            .collect();
        let extra: Vec<(String, String)> = containers(spec)
            .flat_map(|c| {
                adds(c)
                    .into_iter()
                    .filter(|a| a != "NET_BIND_SERVICE")
                    .map(move |a| (name(c), a))
            })
            .collect();
        if !no_drop.is_empty() || !extra.is_empty() {
            let mut parts = Vec::new();
            if !no_drop.is_empty() {
                parts.push(format!(
                    "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                    which(&no_drop)
                ));
            }
            for (c, a) in &extra {
                parts.push(format!(
                    "container {c:?} must not include {a:?} in securityContext.capabilities.add"
                ));
            }
            out.push((
                "capabilities_restricted",
                format!("unrestricted capabilities ({})", parts.join("; ")),
            ));
        }
    }
}

/// The checks of host namespaces, hostPath volumes, host ports, privileged containers and /proc (baseline).
fn host_access(spec: &Value, out: &mut Vec<(&'static str, String)>) {
    let name = |c: &Value| c["name"].as_str().unwrap_or("").to_string();
    // hostNamespaces
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        out.push((
            "hostNamespaces",
            format!("host namespaces ({})", host.join(", ")),
        ));
    }
    // hostPathVolumes
    let volumes: Vec<&Value> = spec["volumes"].as_array().into_iter().flatten().collect();
    let host_paths: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(|v| v["name"].as_str().unwrap_or("").to_string())
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push((
            "hostPathVolumes",
            format!("hostPath volumes ({noun} {})", quoted(&host_paths)),
        ));
    }
    // hostPorts
    let mut ports: Vec<String> = Vec::new();
    for c in containers(spec) {
        let used: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["hostPort"].as_i64().filter(|p| *p != 0))
            .map(|p| p.to_string())
            .collect();
        if !used.is_empty() {
            let noun = if used.len() == 1 {
                "hostPort"
            } else {
                "hostPorts"
            };
            ports.push(format!(
                "container {:?} uses {noun} {}",
                name(c),
                used.join(", ")
            ));
        }
    }
    if !ports.is_empty() {
        out.push(("hostPorts", format!("hostPort ({})", ports.join(", "))));
    }
    // privileged
    let privileged: Vec<String> = containers(spec)
        .filter(|c| c["securityContext"]["privileged"] == true)
        .map(name)
        .collect();
    if !privileged.is_empty() {
        out.push((
            "privileged",
            format!(
                "privileged ({} must not set securityContext.privileged=true)",
                which(&privileged)
            ),
        ));
    }
    // procMount
    let unmasked: Vec<String> = containers(spec)
        .filter(|c| {
            c["securityContext"]["procMount"]
                .as_str()
                .is_some_and(|m| m != "Default")
        })
        .map(name)
        .collect();
    if !unmasked.is_empty() {
        out.push((
            "procMount",
            format!(
                "procMount ({} must not set securityContext.procMount=\"Unmasked\")",
                which(&unmasked)
            ),
        ));
    }
}

/// The checks of volume types, runAsNonRoot and runAsUser (restricted).
fn users_and_volumes(level: Level, spec: &Value, out: &mut Vec<(&'static str, String)>) {
    let name = |c: &Value| c["name"].as_str().unwrap_or("").to_string();
    let psc = &spec["securityContext"];
    let volumes: Vec<&Value> = spec["volumes"].as_array().into_iter().flatten().collect();
    if level == Level::Restricted {
        // restrictedVolumes
        let bad: Vec<String> = volumes
            .iter()
            .filter_map(|v| {
                let ty = v
                    .as_object()?
                    .iter()
                    .find(|(k, val)| *k != "name" && !val.is_null())
                    .map(|(k, _)| k.clone())?;
                (!RESTRICTED_VOLUMES.contains(&ty.as_str())).then(|| {
                    format!(
                        "volume {:?} uses restricted volume type {ty:?}",
                        v["name"].as_str().unwrap_or("")
                    )
                })
            })
            .collect();
        if !bad.is_empty() {
            out.push((
                "restrictedVolumes",
                format!("restricted volume types ({})", bad.join(", ")),
            ));
        }
        // runAsNonRoot
        let pod_says = psc["runAsNonRoot"].as_bool();
        let explicit_false: Vec<String> = containers(spec)
            .filter(|c| c["securityContext"]["runAsNonRoot"] == false)
            .map(name)
            .collect();
        let unset: Vec<String> = containers(spec)
            .filter(|c| c["securityContext"]["runAsNonRoot"].is_null())
            .map(name)
            .collect();
        if pod_says == Some(false) || !explicit_false.is_empty() {
            let mut parts = Vec::new();
            if pod_says == Some(false) {
                parts.push("pod must not set securityContext.runAsNonRoot=false".to_string());
            }
            if !explicit_false.is_empty() {
                parts.push(format!(
                    "{} must not set securityContext.runAsNonRoot=false",
                    which(&explicit_false)
                ));
            }
            out.push((
                "runAsNonRoot",
                format!("runAsNonRoot != true ({})", parts.join("; ")),
            ));
        } else if pod_says != Some(true) && !unset.is_empty() {
            out.push((
                "runAsNonRoot",
                format!(
                    "runAsNonRoot != true (pod or {} must set securityContext.runAsNonRoot=true)",
                    which(&unset)
                ),
            ));
        }
        // runAsUser
        let root_users: Vec<String> = containers(spec)
            .filter(|c| c["securityContext"]["runAsUser"] == 0)
            .map(name)
            .collect();
        if psc["runAsUser"] == 0 || !root_users.is_empty() {
            let mut parts = Vec::new();
            if psc["runAsUser"] == 0 {
                parts.push("pod must not set runAsUser=0".to_string());
            }
            if !root_users.is_empty() {
                parts.push(format!("{} must not set runAsUser=0", which(&root_users)));
            }
            out.push(("runAsUser", format!("runAsUser=0 ({})", parts.join("; "))));
        }
    }
}

/// The checks of seccomp, SELinux and sysctls.
fn profiles(level: Level, spec: &Value, out: &mut Vec<(&'static str, String)>) {
    let name = |c: &Value| c["name"].as_str().unwrap_or("").to_string();
    let psc = &spec["securityContext"];
    // seccompProfile
    let seccomp = |v: &Value| v["seccompProfile"]["type"].as_str().map(String::from);
    let unconfined: Vec<String> = containers(spec)
        .filter(|c| seccomp(&c["securityContext"]).as_deref() == Some("Unconfined"))
        .map(name)
        .collect();
    if seccomp(psc).as_deref() == Some("Unconfined") || !unconfined.is_empty() {
        let what = if unconfined.is_empty() {
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string()
        } else {
            format!(
                "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                which(&unconfined)
            )
        };
        out.push((
            "seccompProfile_baseline",
            format!("seccompProfile ({what})"),
        ));
    } else if level == Level::Restricted {
        let ok = |t: Option<String>| matches!(t.as_deref(), Some("RuntimeDefault" | "Localhost"));
        let missing: Vec<String> = containers(spec)
            .filter(|c| !ok(seccomp(&c["securityContext"])) && !ok(seccomp(psc)))
            .map(name)
            .collect();
        if !missing.is_empty() {
            out.push(("seccompProfile_restricted", format!(
                "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                which(&missing))));
        }
    }
    // seLinuxOptions
    let selinux_bad = |v: &Value| {
        let o = &v["seLinuxOptions"];
        let ty = o["type"].as_str().unwrap_or("");
        !(ty.is_empty()
            || [
                "container_t",
                "container_init_t",
                "container_kvm_t",
                "container_engine_t",
            ]
            .contains(&ty))
            || !o["user"].is_null()
            || !o["role"].is_null()
    };
    if selinux_bad(psc) || containers(spec).any(|c| selinux_bad(&c["securityContext"])) {
        out.push((
            "seLinuxOptions",
            "seLinuxOptions (forbidden securityContext.seLinuxOptions)".into(),
        ));
    }
    // sysctls
    let sysctls: Vec<String> = psc["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(String::from)
        .collect();
    if !sysctls.is_empty() {
        out.push((
            "sysctls",
            format!("forbidden sysctls ({})", sysctls.join(", ")),
        ));
    }
}

/// The levels a namespace's labels ask for: (enforce, warn, audit).
fn levels(ns: &Value) -> [Option<Level>; 3] {
    let labels = &ns["metadata"]["labels"];
    let at = |mode: &str| {
        labels[format!("pod-security.kubernetes.io/{mode}")]
            .as_str()
            .and_then(Level::parse)
    };
    [at("enforce"), at("warn"), at("audit")]
}

/// `violates PodSecurity "restricted:latest": ...`.
fn verdict(level: Level, found: &[String]) -> String {
    format!(
        "violates PodSecurity \"{}:latest\": {}",
        level.name(),
        found.join(", ")
    )
}

/// `would violate PodSecurity "restricted:latest": ...` (a warning).
fn would(level: Level, found: &[String]) -> String {
    format!(
        "would violate PodSecurity \"{}:latest\": {}",
        level.name(),
        found.join(", ")
    )
}

/// The pod template of a workload object, if it has one.
fn template_spec<'a>(kind: &str, obj: &'a Value) -> Option<&'a Value> {
    match kind {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some(&obj["spec"]["template"]["spec"]),
        "CronJob" => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

impl Server {
    /// Pod Security Admission of a new pod (refused at the `enforce` level, warned at `warn`) or of a workload's
    /// pod template (warned at both). Returns the audit annotation, if the `audit` level is violated.
    pub async fn admit_pod_security(
        &self,
        kind: &str,
        ns: Option<&str>,
        obj: &Value,
        warnings: &mut Vec<String>,
    ) -> Result<Option<String>> {
        let spec = match kind {
            "Pod" => &obj["spec"],
            other => match template_spec(other, obj) {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        let Some(ns) = ns else { return Ok(None) };
        let namespaces = registry::lookup("namespaces").expect("served");
        let Ok((namespace, _)) = self.get_object(namespaces, None, ns).await else {
            return Ok(None);
        };
        let [enforce, warn, audit] = levels(&namespace);
        if let Some(level) = enforce {
            let found = violations(level, spec);
            if !found.is_empty() {
                if kind == "Pod" {
                    let name = obj["metadata"]["name"].as_str().unwrap_or("");
                    return Err(ApiError::forbidden(format!(
                        "pods \"{name}\" is forbidden: {}",
                        verdict(level, &found)
                    )));
                }
                warnings.push(would(level, &found));
            }
        }
        if let Some(level) = warn.filter(|w| Some(*w) != enforce || kind == "Pod") {
            let found = violations(level, spec);
            if !found.is_empty() {
                let w = would(level, &found);
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        Ok(audit.and_then(|level| {
            let found = violations(level, spec);
            (!found.is_empty()).then(|| verdict(level, &found))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plain_pod_passes_baseline_and_fails_restricted_in_kubernetes_words() {
        let spec = json!({"containers": [{"name": "nginx", "image": "nginx"}]});
        assert!(violations(Level::Baseline, &spec).is_empty());
        let found = violations(Level::Restricted, &spec);
        assert_eq!(
            verdict(Level::Restricted, &found),
            "violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"nginx\" \
             must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \
             \"nginx\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or \
             container \"nginx\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \
             \"nginx\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let hardened = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}]});
        assert_eq!(
            violations(Level::Restricted, &hardened),
            Vec::<String>::new()
        );
    }

    #[test]
    fn baseline_refuses_privilege_host_namespaces_paths_and_ports() {
        let spec = json!({"hostNetwork": true, "hostPID": true,
            "containers": [{"name": "c", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]});
        let found = violations(Level::Baseline, &spec);
        assert_eq!(
            found,
            [
                "non-default capabilities (container \"c\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
                "host namespaces (hostNetwork=true, hostPID=true)",
                "hostPath volumes (volume \"root\")",
                "hostPort (container \"c\" uses hostPort 8080)",
                "privileged (container \"c\" must not set securityContext.privileged=true)",
            ]
        );
        assert!(violations(Level::Privileged, &spec).is_empty());
        let restricted = violations(Level::Restricted, &spec);
        assert!(restricted.iter().any(|v| v.starts_with(
            "restricted volume types (volume \"root\" uses restricted volume type \"hostPath\")"
        )));
    }
}
